"""Images and histograms from the frameworks, the way their users log them (docs/media.md):
a LightningModule through ``self.logger.experiment``, a Keras callback and a Hugging
Face ``TrainerCallback`` through the mldash callback's ``experiment``. Real tiny
models on synthetic data; what is stored is read back and compared with what the
model computed."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import mldash

pytestmark = [pytest.mark.slow]


def as_pixels(x) -> np.ndarray:
    """What a float CHW/HW tensor in [0, 1] is stored as (HWC or HW uint8)."""
    x = x.detach().float().clamp(0, 1)
    x = (x * 255 + 0.5).to(torch.uint8)
    return (x.permute(1, 2, 0) if x.ndim == 3 else x).numpy()


def stored_pixels(exp, value) -> np.ndarray:
    return np.asarray(mldash.Image.read(exp, value))


@pytest.mark.timeout(180)
def test_a_lightning_module_logs_images_and_histograms_through_logger_experiment(root):
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from mldash.integrations.lightning import MLDashLogger
    from _lightning_support import trainer

    expected: list[tuple[int, np.ndarray, np.ndarray]] = []

    class Samples(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.decoder = torch.nn.Linear(4, 3 * 8 * 8)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            out = self.decoder(x)
            loss = out.pow(2).mean()
            self.log("train_loss", loss)
            if batch_idx == 0:
                image = torch.sigmoid(out[0]).reshape(3, 8, 8)  # CHW, still part of the graph
                exp = self.logger.experiment
                exp.metrics("samples").append(image=mldash.Image(image, caption=f"epoch {self.current_epoch}"),
                                              step=self.global_step)
                exp.metrics("weights").append(decoder=mldash.Histogram(self.decoder.weight, bins=16),
                                              step=self.global_step)
                expected.append((self.global_step, as_pixels(image), self.decoder.weight.detach().numpy().copy()))
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(32, 4, generator=torch.Generator().manual_seed(0))), batch_size=8)
    logger = MLDashLogger("media/lightning", root=root)
    trainer("lightning.pytorch", logger=logger, max_epochs=3).fit(Samples(), data)

    exp = logger.experiment
    assert exp.status == "COMPLETED"
    images = [p["data"] for p in exp.metrics("samples").read()["data"]]
    hists = [p["data"] for p in exp.metrics("weights").read()["data"]]
    assert [d["step"] for d in images] == [s for s, _, _ in expected] == [0, 4, 8]
    for data_point, hist, (step, pixels, weight) in zip(images, hists, expected):
        value = data_point["image"]
        assert value["type"] == "image" and value["caption"] == f"epoch {step // 4}"
        assert np.array_equal(stored_pixels(exp, value), pixels)
        h = hist["decoder"]
        assert h["type"] == "histogram" and h["count"] == weight.size
        assert h["counts"] == np.histogram(weight, bins=16, range=(weight.min(), weight.max()))[0].tolist()
    assert {f["path"] for f in exp.files().list()} == {"/media/samples"}


KERAS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    import mldash
    from mldash.integrations.keras import MLDashCallback

    root, report = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.random((32, 4), dtype=np.float32)
    y = rng.random((32, 64), dtype=np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64, name="decoder")])
    model.compile(optimizer="adam", loss="mse")
    tracker = MLDashCallback("media/keras", root=root)
    seen = []

    class Samples(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            exp = tracker.experiment
            pred = self.model.predict(x[:2], verbose=0)                       # numpy
            sample = keras.ops.reshape(keras.ops.sigmoid(pred[0]), (8, 8))  # the backend's tensor
            kernel = self.model.get_layer("decoder").kernel                  # a keras.Variable
            exp.metrics("samples").append(
                image=mldash.Image(sample, caption=f"epoch {epoch}"),
                raw=mldash.Image(np.clip(pred[1].reshape(8, 8), 0, 1)),
                step=epoch,
            )
            exp.metrics("weights").append(kernel=mldash.Histogram(kernel, bins=8), step=epoch)
            seen.append({
                "image": keras.ops.convert_to_numpy(sample).tolist(),
                "raw": np.clip(pred[1].reshape(8, 8), 0, 1).tolist(),
                "kernel": keras.ops.convert_to_numpy(kernel).tolist(),
            })

    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[tracker, Samples()])
    with open(report, "w") as f:
        json.dump({"backend": keras.backend.backend(), "seen": seen}, f)
    """
)


@pytest.mark.timeout(300)
def test_a_keras_callback_logs_images_and_histograms_through_the_callbacks_experiment(root, tmp_path):
    pytest.importorskip("keras")
    backend = "tensorflow" if importlib.util.find_spec("tensorflow") else "torch"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0",
           "CUDA_VISIBLE_DEVICES": ""}
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(root), str(report)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(report.read_text())
    assert result["backend"] == backend

    exp = mldash.Experiment("media/keras", root=root)
    assert exp.status == "COMPLETED"
    points = [p["data"] for p in exp.metrics("samples").read()["data"]]
    hists = [p["data"]["kernel"] for p in exp.metrics("weights").read()["data"]]
    assert [p["step"] for p in points] == [0, 1] and len(hists) == 2
    for point, hist, seen in zip(points, hists, result["seen"]):
        for field in ("image", "raw"):
            want = (np.clip(np.array(seen[field]), 0, 1) * 255 + 0.5).astype(np.uint8)
            assert np.array_equal(stored_pixels(exp, point[field]), want), field
        kernel = np.array(seen["kernel"], dtype=np.float32)
        assert hist["count"] == kernel.size == 4 * 64
        assert hist["min"] == pytest.approx(float(kernel.min())) and hist["max"] == pytest.approx(float(kernel.max()))


@pytest.mark.timeout(300)
def test_a_hugging_face_callback_logs_images_and_histograms_through_the_callbacks_experiment(root, tmp_path):
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainerCallback

    from mldash.integrations.transformers import MLDashCallback
    from _transformers_support import dataset, tiny_model, training_args

    tracker = MLDashCallback(project="media", name="hf", root=str(root))
    expected = []

    class Samples(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            exp = tracker.experiment
            embeddings = torch.sigmoid(model.bert.embeddings.word_embeddings.weight[:16])  # HW
            exp.metrics("samples").append(embeddings=mldash.Image(embeddings, caption=f"step {state.global_step}"),
                                          step=state.global_step)
            exp.metrics("weights").append(classifier=mldash.Histogram(model.classifier.weight, bins=8),
                                          step=state.global_step)
            expected.append((as_pixels(embeddings), model.classifier.weight.detach().numpy().copy()))

    trainer = Trainer(model=tiny_model(), args=training_args(tmp_path / "out"), train_dataset=dataset(),
                      callbacks=[tracker, Samples()])
    trainer.train()

    exp = mldash.Experiment("media/hf", root=root)
    points = [p["data"] for p in exp.metrics("samples").read()["data"]]
    hists = [p["data"]["classifier"] for p in exp.metrics("weights").read()["data"]]
    assert [p["step"] for p in points] == [1, 2, 3, 4]
    for point, hist, (pixels, weight) in zip(points, hists, expected):
        assert np.array_equal(stored_pixels(exp, point["embeddings"]), pixels)
        assert hist["count"] == weight.size and hist["min"] == pytest.approx(float(weight.min()))
