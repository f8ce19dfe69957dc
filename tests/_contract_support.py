"""Every scenario of tests/integrations/test_all.py for one integration, in its own process.

``python tests/_contract_support.py lightning|keras|transformers ROOT REPORT`` trains a
tiny model (synthetic data, built from a config) once per scenario, each into its
own experiment ``contract/<scenario>`` under ROOT, and writes to REPORT which
exception each scenario's training call raised (None, or the type's name).
A process of its own: Keras picks its backend once per process, and the
process-wide hooks (excepthook, atexit) must be mldash's as a user's script has them.

Scenarios: ``ok`` (a normal run), ``error`` (a RuntimeError("boom in training")
raised in the training loop), ``interrupt`` (KeyboardInterrupt there), ``rank1``
(a normal run as a process whose rank is not zero).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")  # no TensorFlow to import: faster

LR = 0.05
SCENARIOS = ("ok", "error", "interrupt", "rank1")


def _raise(scenario: str) -> None:
    if scenario == "error":
        raise RuntimeError("boom in training")
    if scenario == "interrupt":
        raise KeyboardInterrupt()


def lightning(root: str, scenario: str) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from _lightning_support import classes, trainer
    from mldash.integrations.lightning import MLDashLogger

    TinyModule, TinyData = classes()

    class Module(TinyModule):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2:
                _raise(scenario)
            return super().training_step(batch, batch_idx)

    previous = rank_zero_only.rank
    rank_zero_only.rank = 1 if scenario == "rank1" else 0
    try:
        logger = MLDashLogger(f"contract/{scenario}", root=root)
        trainer(logger=logger, max_epochs=1).fit(Module(lr=LR), TinyData())
    finally:
        rank_zero_only.rank = previous
    assert pl  # the package under test


def keras(root: str, scenario: str) -> None:
    import keras

    from mldash.integrations.keras import MLDashCallback

    if scenario == "rank1":
        raise _NotApplicable()

    class RaiseAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                _raise(scenario)

    import numpy as np

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), loss="mse")
    model.fit(x, x.sum(axis=1), batch_size=8, epochs=1, verbose=0,
              callbacks=[MLDashCallback(f"contract/{scenario}", root=root), RaiseAt()])


def transformers(root: str, scenario: str) -> None:
    import transformers as hf

    from _transformers_support import dataset, tiny_model, training_args
    from mldash.integrations.transformers import MLDashCallback

    class RaiseAt(hf.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                _raise(scenario)

    args = training_args(os.path.join(root, "..", f"hf-{scenario}"), learning_rate=LR)
    trainer = hf.Trainer(model=tiny_model(), args=args, train_dataset=dataset(),
                         callbacks=[MLDashCallback(f"contract/{scenario}", root=root), RaiseAt()])
    if scenario == "rank1":  # as transformers reports a process that is not rank zero
        trainer.is_world_process_zero = lambda: False
        trainer.is_local_process_zero = lambda: False
    trainer.train()


class _NotApplicable(Exception):
    pass


def main(kind: str, root: str, report_path: str) -> None:
    run = {"lightning": lightning, "keras": keras, "transformers": transformers}[kind]
    report = {}
    for scenario in SCENARIOS:
        try:
            run(root, scenario)
            report[scenario] = None
        except _NotApplicable:
            report[scenario] = "not applicable"
        except BaseException as exc:  # KeyboardInterrupt too: it is what is tested
            report[scenario] = type(exc).__name__
    with open(report_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(*sys.argv[1:4])
