"""MLDashLogger: Trainer(logger=MLDashLogger(...)) with real tiny models on the CPU."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import signal
import subprocess
import sys
from argparse import Namespace
from collections.abc import Iterable

import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("pytorch_lightning")

import mldash  # noqa: E402
from mldash.integrations.lightning import MLDashLogger  # noqa: E402

from _lightning_support import PACKAGES, classes, trainer  # noqa: E402

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_lightning_support.py")


def points(exp, name):
    return [p["data"] for p in exp.metrics(name).read(0, 10_000)["data"]]


def steps(exp, name):
    return [p.get("step") for p in points(exp, name)]


# ---- 1. the Logger interface ---------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.parametrize("package", PACKAGES)
def test_checkpoints_land_in_the_experiment_directory_and_are_recorded(root, package):
    callbacks = importlib.import_module(f"{package}.callbacks")
    TinyModule, TinyData = classes(package)
    logger = MLDashLogger("vision/folder/run-1", root=root)
    assert isinstance(logger, importlib.import_module(f"{package}.loggers").Logger)
    assert (logger.name, logger.version) == ("vision", "folder/run-1")
    assert logger.save_dir == str(root)
    assert logger.root_dir == str(root / "vision")
    assert logger.log_dir == str(root / "vision" / "folder" / "run-1")
    checkpoint = callbacks.ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=-1, save_last=True)
    trainer(package, logger=logger, callbacks=[checkpoint], max_epochs=3).fit(TinyModule(), TinyData())

    exp = logger.experiment
    assert exp.path == logger.log_dir and exp.status == "COMPLETED"
    assert os.path.dirname(checkpoint.best_model_path) == os.path.join(exp.path, "checkpoints")
    # Lightning's own tests expect the checkpoint folder to hold checkpoints only.
    assert all(f.endswith(".ckpt") for f in os.listdir(os.path.join(exp.path, "checkpoints")))
    records = exp.checkpoints()
    saved = [r for r in records if not r.get("last")]
    assert [r["epoch"] for r in saved] == [0, 1, 2]
    assert [r["step"] for r in saved] == [4, 8, 12]
    assert all(r["monitor"] == "val_loss" and r["mode"] == "min" for r in saved)
    assert all(os.path.isabs(r["path"]) and r["path"].startswith(exp.path) for r in records)
    assert any(r.get("last") and r["path"] == checkpoint.last_model_path for r in records)
    best = exp.best_checkpoint
    assert best["path"] == checkpoint.best_model_path
    assert best["score"] == pytest.approx(float(checkpoint.best_model_score))
    assert best["score"] == min(r["score"] for r in saved)


def test_constructing_writes_nothing_and_other_ranks_never_write(root):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    logger = MLDashLogger(project="p", root=root)
    assert logger.version and logger.log_dir.startswith(str(root))  # known before any I/O
    assert not root.exists()
    previous = rank_zero_only.rank
    rank_zero_only.rank = 1
    try:
        assert not isinstance(logger.experiment, mldash.Experiment)  # Lightning's no-op stand-in
        logger.log_hyperparams({"lr": 1})
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.finalize("success")
    finally:
        rank_zero_only.rank = previous
    assert not root.exists()
    assert isinstance(logger.experiment, mldash.Experiment)  # rank zero: created on first use
    assert logger.experiment is logger.experiment
    assert logger.experiment.status == "RUNNING"


def test_the_logger_is_not_iterable_and_survives_pickling(root):
    logger = MLDashLogger("p/pickled", root=root)
    assert not hasattr(logger, "__iter__") and not isinstance(logger, Iterable)  # Trainer would unpack it
    logger.log_metrics({"loss": 1.0}, step=0)  # started: holds a writer thread and files
    logger.experiment.flush()  # two writers on one series append in flush order
    clone = pickle.loads(pickle.dumps(logger))
    assert (clone.name, clone.version, clone.log_dir) == (logger.name, logger.version, logger.log_dir)
    clone.log_metrics({"loss": 0.5}, step=1)
    clone.finalize("success")
    logger.finalize("success")
    assert steps(mldash.Experiment("p/pickled", root=root), "loss") == [0, 1]


def test_an_existing_experiment_is_used_and_left_open_on_success(root):
    TinyModule, TinyData = classes()
    exp = mldash.Experiment("mine/run", root=root)
    exp.params.set(owner="me")
    logger = MLDashLogger(experiment=exp)
    assert logger.log_dir == exp.path and logger.experiment is exp
    trainer(logger=logger, max_epochs=1).fit(TinyModule(), TinyData())
    assert exp.status == "RUNNING"  # the user's experiment: the user finishes it
    assert exp.params.get()["owner"] == "me" and exp.params.get()["lr"] == 0.05
    assert len(points(exp, "train_loss_step")) == 4
    exp.finish()
    assert exp.status == "COMPLETED"
    with pytest.raises(ValueError, match="either experiment= or"):
        MLDashLogger(experiment=exp, project="other")


# ---- 2. hyperparameters ----------------------------------------------------------
@dataclasses.dataclass
class Optim:
    name: str = "sgd"
    betas: tuple = (0.9, 0.99)


def test_hyperparameters_in_every_form_are_flattened_without_truncation(root):
    from omegaconf import OmegaConf

    TinyModule, TinyData = classes()
    long_text = "x" * 1000
    model = TinyModule(
        lr=0.01,
        optim=Optim(),
        net={"layers": [4, 1], "act": {"name": "relu", "slope": 0.1}},
        args=Namespace(seed=7),
        cfg=OmegaConf.create({"data": {"path": "/d", "aug": True}}),
        loss_cls=torch.nn.MSELoss,
        init=torch.nn.init.xavier_uniform_,
        scale=torch.tensor([1.0, 2.0]),
        note=long_text,
    )
    logger = MLDashLogger("hp/run", root=root)
    t = trainer(logger=logger, max_epochs=1)
    t.fit(model, TinyData(batch_size=4, n=8))
    t.validate(model, TinyData(batch_size=4, n=8))  # logs the same hparams again
    t.test(model, TinyData(batch_size=4, n=8))
    params = logger.experiment.params.get()
    assert params["lr"] == 0.01
    assert params["optim.name"] == "sgd" and params["optim.betas"] == [0.9, 0.99]
    assert params["net.layers"] == [4, 1] and params["net.act.slope"] == 0.1
    assert params["args.seed"] == 7
    assert params["cfg.data.path"] == "/d" and params["cfg.data.aug"] is True
    assert params["loss_cls"] == "torch.nn.modules.loss.MSELoss"
    assert params["init"].endswith("xavier_uniform_")
    assert params["scale"] == [1.0, 2.0]
    assert params["note"] == long_text
    assert params["batch_size"] == 4 and params["n"] == 8  # the datamodule's
    assert logger.experiment.status == "COMPLETED"


def test_hyperparameter_objects_passed_directly(root):
    from lightning.fabric.utilities.data import AttributeDict
    from omegaconf import OmegaConf

    logger = MLDashLogger("hp/direct", root=root)
    logger.log_hyperparams(Namespace(a=1, b=Namespace(c=2)))
    logger.log_hyperparams(AttributeDict(d={"e": 3}))
    logger.log_hyperparams(OmegaConf.create({"f": {"g": 4}}))
    logger.log_hyperparams(Optim(name="adam"))
    logger.log_hyperparams({"h": 5}, {"hp_metric": 0.5})
    params = logger.experiment.params.get()
    assert {k: params[k] for k in ("a", "b.c", "d.e", "f.g", "name", "h")} == {
        "a": 1, "b.c": 2, "d.e": 3, "f.g": 4, "name": "adam", "h": 5}
    assert logger.experiment.summary.get()["hp_metric"] == 0.5


# ---- 3. metrics and steps --------------------------------------------------------
def test_metrics_keep_lightnings_steps_and_epochs(root):
    from lightning.pytorch.callbacks import LearningRateMonitor

    TinyModule, TinyData = classes()
    logger = MLDashLogger("m/run", root=root)
    t = trainer(logger=logger, max_epochs=2, callbacks=[LearningRateMonitor(logging_interval="step")])
    t.fit(TinyModule(), TinyData())  # 4 train batches and 2 val batches per epoch
    exp = logger.experiment
    train = points(exp, "train_loss_step")
    assert [p["step"] for p in train] == list(range(8))
    assert [p["epoch"] for p in train] == [0] * 4 + [1] * 4
    epoch_end = points(exp, "train_loss_epoch")
    assert [p["epoch"] for p in epoch_end] == [0, 1] and [p["step"] for p in epoch_end] == [3, 7]
    assert [p["epoch"] for p in points(exp, "val_loss")] == [0, 1]
    assert steps(exp, "val_step_loss") == [0, 1, 2, 3]  # the evaluation loop's own batch count
    t.validate(TinyModule(), TinyData())  # ...which restarts in a new evaluation run
    assert steps(exp, "val_step_loss") == [0, 1, 2, 3, 0, 1]
    assert steps(exp, "lr-SGD") == list(range(8))
    assert {p["value"] for p in points(exp, "lr-SGD")} == {0.05}
    assert "epoch" not in exp.metric_names()  # epoch is a field of the points


def test_repeated_and_backward_steps_are_all_stored(root):
    logger = MLDashLogger("m/steps", root=root)
    for step, value in [(5, 1.0), (3, 2.0), (3, 3.0), (0, 4.0), (None, 5.0)]:
        logger.log_metrics({"loss": value}, step=step)
        logger.save()
    logger.log_metrics({"epoch": 2}, step=9)  # alone, epoch is a series
    logger.finalize("success")
    exp = logger.experiment
    assert points(exp, "loss") == [
        {"value": 1.0, "step": 5}, {"value": 2.0, "step": 3}, {"value": 3.0, "step": 3},
        {"value": 4.0, "step": 0}, {"value": 5.0}]
    assert points(exp, "epoch") == [{"value": 2, "step": 9}]


def test_save_leaves_writing_to_the_background_and_finalize_makes_it_durable(root):
    logger = MLDashLogger("m/save", root=root, flush_interval=60)
    for step in range(100):
        logger.log_metrics({"a": step, "b": -step, "epoch": 0}, step=step)
        logger.save()
    data = os.path.join(logger.log_dir, "metrics", "a", "data.jsonl")
    assert not os.path.exists(data)  # save() did not force a write
    logger.finalize("success")
    with open(data) as f:
        assert len(f.readlines()) == 100


def test_metric_prefix_group_separator_and_odd_names(root):
    from lightning.pytorch.utilities import grad_norm

    logger = MLDashLogger("m/names", root=root, metric_prefix="fold1", group_separator=".")
    assert logger.group_separator == "."
    layer = torch.nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    norms = grad_norm(layer, 2, group_separator=logger.group_separator)
    logger.log_metrics({"loss": 1.0, **norms}, step=0)
    with pytest.warns(UserWarning, match="stored as"):
        logger.log_metrics({"odd//name": 2.0, "nested": {"train": 3.0}}, step=1)
    names = logger.experiment.metric_names()
    assert "fold1-loss" in names
    assert "fold1-grad_2/0_norm/weight" in names  # "." grouped into folders
    assert "fold1-odd/_/name" in names
    assert "fold1-nested/train" in names
    plain = MLDashLogger("m/dots", root=root)
    with pytest.warns(UserWarning, match="stored as"):
        plain.log_metrics({".hidden": 1.0, "a/.b": 2.0}, step=0)
    assert plain.experiment.metric_names() == ["_.hidden", "a/_.b"]


# ---- 5. failures -----------------------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.parametrize("hook, at", [("training_step", 2), ("validation_step", 4),
                                      ("on_validation_epoch_end", 0), ("configure_optimizers", 0)])
def test_an_exception_in_any_hook_fails_the_run_with_its_traceback(root, hook, at):
    TinyModule, TinyData = classes()
    logger = MLDashLogger("f/run", root=root)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(logger=logger, max_epochs=3).fit(TinyModule(fail_in=hook, fail_at=at), TinyData())
    exp = logger.experiment
    assert exp.status == "FAILED"
    errors = exp.read_logs(level="error")["data"]
    assert len(errors) == 1
    meta = errors[0]["metadata"]
    assert meta["error_type"] == "RuntimeError" and meta["message"].startswith(f"boom in {hook}")
    assert meta["traceback"].startswith("Traceback") and f"in {hook}" in meta["traceback"]


@pytest.mark.parametrize("package", PACKAGES)
def test_keyboard_interrupt_cancels_the_run(root, package):
    TinyModule, TinyData = classes(package)

    class Interrupted(TinyModule):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

    logger = MLDashLogger("f/interrupted", root=root)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown exits with 1
            trainer(package, logger=logger).fit(Interrupted(), TinyData())
    finally:
        signal.signal(signal.SIGINT, sigint)
    exp = logger.experiment
    assert exp.status == "CANCELLED"
    assert exp.read_logs(level="error")["total"] == 1 and not exp.read_logs(level="error")["data"]
    assert len(points(exp, "train_loss_step")) == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_cancels_the_run_after_lightnings_graceful_stop(root):
    proc = subprocess.run([sys.executable, SUPPORT, "sigterm", str(root)], capture_output=True,
                          text=True, timeout=280)
    assert "Received SIGTERM" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    exp = mldash.Experiment("sig/run", root=root)
    assert exp.status == "CANCELLED"
    warnings = exp.read_logs(level="warn")["data"]
    assert [w["message"] for w in warnings] == ["Run cancelled: terminated by SIGTERM"]
    # Lightning stopped at the end of the batch and ran its on_exception hooks
    assert os.path.isfile(os.path.join(root, "on_exception.ckpt"))
    assert steps(exp, "train_loss_step") == [0, 1, 2, 3]


def test_fit_then_test_completes_the_run(root):
    TinyModule, TinyData = classes()
    logger = MLDashLogger("c/run", root=root)
    model, data = TinyModule(), TinyData()
    t = trainer(logger=logger, max_epochs=1)
    t.fit(model, data)
    exp = logger.experiment
    assert exp.status == "COMPLETED"
    t.test(model, data)
    assert exp.status == "COMPLETED"
    assert len(points(exp, "test_loss")) == 1 and points(exp, "test_loss")[0]["step"] == 4
    assert exp.info()["sessions"] == 2 and exp.read_logs()["total"] == 0


# ---- 6. distributed --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ddp_on_two_cpu_processes_writes_one_experiment_once(root):
    proc = subprocess.run([sys.executable, SUPPORT, "ddp", str(root)], capture_output=True,
                          text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(root) == ["ddp"]
    (name,) = os.listdir(root / "ddp")  # every rank built a logger; one experiment exists
    exp = mldash.Experiment(f"ddp/{name}", root=root)
    assert exp.status == "COMPLETED"
    assert steps(exp, "train_loss_step") == [0, 1, 2, 3]  # 2 steps an epoch, 2 epochs, once each
    assert steps(exp, "val_step_loss") == [0, 1]  # one batch a rank, in each of 2 epochs
    assert len(points(exp, "test_loss")) == 1
    assert [c["epoch"] for c in exp.checkpoints()] == [0, 1]
    assert exp.params.get()["lr"] == 0.05
    assert exp.read_logs()["total"] == 0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_nodes_record_both_machines_in_the_one_experiment(root):
    # Two torchrun "nodes" on this machine: node 1's process is rank 1 and local rank 0,
    # the first process of its machine, so it records that machine into rank zero's run.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLDASH_SYSTEM_METRICS": "0.2", "CUDA_VISIBLE_DEVICES": ""}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={n}",
         "--master_addr=127.0.0.1", f"--master_port={port}", SUPPORT, "nodes", str(root)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in (0, 1)]
    outputs = [node.communicate(timeout=380)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert os.listdir(root / "nodes") == ["run"]
    exp = mldash.Experiment("nodes/run", root=root)
    assert exp.status == "COMPLETED" and exp.info()["sessions"] == 1
    names = exp.metric_names()
    assert {"sys/cpu", "sys/memory", "sys/rank/1/cpu", "sys/rank/1/memory"} <= set(names)
    ranks = {p["data"]["rank"] for p in exp.metrics("sys/rank/1/memory").read()["data"]}
    assert ranks == {1} and {p["data"]["rank"] for p in exp.metrics("sys/memory").read()["data"]} == {0}
    assert steps(exp, "train_loss_step") == [0, 1]  # the metrics: rank zero's only, once


# ---- checkpoint files (log_model) -------------------------------------------------
def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_log_model_all_keeps_every_checkpoint_file_as_it_is_saved(root):
    from lightning.pytorch.callbacks import ModelCheckpoint

    TinyModule, TinyData = classes()
    logger = MLDashLogger("files/all", root=root, log_model="all")
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=1)  # top-1: older files are deleted
    trainer(logger=logger, callbacks=[checkpoint], max_epochs=3).fit(TinyModule(), TinyData())
    exp = logger.experiment
    records = exp.checkpoints()
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert all(len(r["files"]) == 1 and r["files"][0]["path"] == "/checkpoints" for r in records)
    best = next(r for r in records if r["path"] == checkpoint.best_model_path)
    assert best["files"][0]["checksum"] == _sha256(checkpoint.best_model_path)
    # Lightning deleted the other two files; the run kept their bytes.
    assert len({r["files"][0]["checksum"] for r in records}) == 3 and len(os.listdir(os.path.dirname(best["path"]))) == 1


def test_log_model_true_keeps_the_best_and_the_last_at_the_end(root):
    from lightning.pytorch.callbacks import ModelCheckpoint

    TinyModule, TinyData = classes()
    logger = MLDashLogger("files/end", root=root, log_model=True)
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    trainer(logger=logger, callbacks=[checkpoint], max_epochs=3).fit(TinyModule(), TinyData())
    exp = logger.experiment
    assert all("files" not in r for r in exp.checkpoints())
    files = {f["path"]: f for f in exp.files.list()}
    assert set(files) == {"/checkpoints/best", "/checkpoints/last"}
    assert files["/checkpoints/best"]["checksum"] == _sha256(checkpoint.best_model_path)
    assert files["/checkpoints/last"]["checksum"] == _sha256(checkpoint.last_model_path)
    assert files["/checkpoints/best"]["metadata"]["monitor"] == "val_loss"
    assert files["/checkpoints/best"]["metadata"]["best_score"] == pytest.approx(float(checkpoint.best_model_score))


def test_log_model_off_keeps_no_files_and_bad_values_fail_at_construction(root):
    TinyModule, TinyData = classes()
    logger = MLDashLogger("files/off", root=root)
    trainer(logger=logger, max_epochs=1).fit(TinyModule(), TinyData())
    assert logger.experiment.checkpoints() and logger.experiment.files.list() == []
    with pytest.raises(ValueError, match="log_model must be False, True or 'all'"):
        MLDashLogger("files/bad", root=root, log_model="best")


# ---- 7. resume -------------------------------------------------------------------
def test_resuming_from_a_checkpoint_continues_the_same_experiment(root):
    from lightning.pytorch.callbacks import ModelCheckpoint

    TinyModule, TinyData = classes()
    first = MLDashLogger("r/run", root=root)
    checkpoint = ModelCheckpoint(save_last=True)
    trainer(logger=first, max_epochs=1, callbacks=[checkpoint]).fit(TinyModule(), TinyData())
    last = checkpoint.last_model_path

    second = MLDashLogger("r/run", root=root)
    trainer(logger=second, max_epochs=2, callbacks=[ModelCheckpoint(save_last=True)]).fit(
        TinyModule(), TinyData(), ckpt_path=last)
    exp = second.experiment
    assert exp.path == first.experiment.path and exp.status == "COMPLETED"
    assert exp.info()["sessions"] == 2
    train = exp.metrics("train_loss_step").read()["data"]
    assert [p["index"] for p in train] == list(range(8))
    assert [p["data"]["step"] for p in train] == list(range(8))
    assert [p["data"]["epoch"] for p in train] == [0] * 4 + [1] * 4
    assert [c["epoch"] for c in exp.checkpoints() if not c.get("last")] == [0, 1]


# ---- 7. what Lightning's own tests expect of a logger ---------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("package", PACKAGES)
def test_lightning_cli_takes_the_logger_by_import_path_and_two_runs_share_a_root(root, package):
    """jsonargparse checks the class before any instance exists; the config of each
    run is saved in that run's own folder, so a second run needs no overwrite flag."""
    for name in ("cli-1", "cli-2"):
        result = subprocess.run(
            [sys.executable, SUPPORT, f"cli:{package}", str(root), "fit",
             "--trainer.logger=mldash.integrations.lightning.MLDashLogger",
             f"--trainer.logger.root={root}", "--trainer.logger.project=cli", f"--trainer.logger.name={name}",
             "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false", "--model.lr=0.01"],
            capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        exp = mldash.Experiment(f"cli/{name}", root=root)
        assert exp.status == "COMPLETED"
        assert "lr: 0.01" in (root / "cli" / name / "config.yaml").read_text()
        assert exp.params.get()["lr"] == 0.01
    assert not (root / "config.yaml").exists()


@pytest.mark.parametrize("package", PACKAGES)
def test_the_logger_is_a_logger_of_both_packages_from_the_first_import(package):
    code = (
        "import importlib, sys\n"
        "from mldash.integrations.lightning import MLDashLogger\n"  # before the package
        f"base = importlib.import_module('{package}.loggers.logger').Logger\n"
        "assert issubclass(MLDashLogger, base), base\n"
        f"csv = importlib.import_module('{package}.loggers').CSVLogger\n"
        "assert issubclass(MLDashLogger, csv)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_hyperparameter_metrics_given_as_tensors_are_stored_as_numbers(root):
    import numpy as np

    logger = MLDashLogger("m/hp", root=root)
    logger.log_hyperparams({"lr": 1}, metrics={"abc": torch.tensor([0.54]), "n": np.array([[3]]), "t": torch.tensor(2)})
    summary = logger.experiment.summary.get()
    assert summary["abc"] == pytest.approx(0.54) and summary["n"] == 3 and summary["t"] == 2


@pytest.mark.parametrize("package", PACKAGES)
def test_other_ranks_get_the_dummy_experiment_of_the_trainers_package(root, package):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    dummy = importlib.import_module(f"{package}.loggers.logger").DummyExperiment
    logger = MLDashLogger(project="p", root=root)
    previous, rank_zero_only.rank = rank_zero_only.rank, 1
    try:
        exp = logger.experiment
        assert isinstance(exp, dummy)  # as Lightning's own code checks
        exp.log("nothing")  # every call a no-op
    finally:
        rank_zero_only.rank = previous
    assert not root.exists()
