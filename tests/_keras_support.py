"""Real Keras fits with MLDashCallback under one backend, for tests/integrations/test_keras.py.

Keras picks its backend from KERAS_BACKEND when it is first imported, so each
backend runs in its own process: ``python tests/_keras_support.py ROOT REPORT``.
Every scenario trains a tiny model on synthetic data and writes to an experiment
under ROOT; REPORT receives a JSON object of what only this process can see
(caught exceptions, Keras' async-dispatch flags). The tests read the stored
experiments back and assert.
"""

from __future__ import annotations

import json
import os
import sys
import time

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND != "tensorflow":
    # Prove the callback needs no TensorFlow: any import of it now fails.
    sys.modules["tensorflow"] = None  # type: ignore[assignment]

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mldash  # noqa: E402
from mldash.integrations.keras import MLDashCallback  # noqa: E402

ROOT, REPORT_PATH = sys.argv[1], sys.argv[2]
report: dict = {"backend": keras.backend.backend()}


def data(n=64, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, features), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


def tiny_model(optimizer=None, loss="mse", metrics=("mae",), extra_layer=None, **compile_kwargs):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((4,)), keras.layers.Dense(8, activation="relu")]
    if extra_layer is not None:
        layers.append(extra_layer)
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers, name="tiny")
    model.compile(optimizer=optimizer or "adam", loss=loss, metrics=list(metrics), **compile_kwargs)
    return model


def caught(fn):
    """Run fn, return the exception type name it raised (None if none)."""
    try:
        fn()
    except BaseException as exc:  # KeyboardInterrupt included, on purpose
        return type(exc).__name__
    return None


class RaisingLayer(keras.layers.Layer):
    def call(self, inputs, training=False):
        if training:
            raise RuntimeError("layer exploded")
        return inputs


def raising_loss(y_true, y_pred):
    raise ValueError("loss is undefined here")


class RaiseAtEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("callback failed at epoch 1")


class InterruptAtBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises on the main thread


class PlainBatchCallback(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


class SlowBatchEnd(keras.callbacks.Callback):
    """Sleeps in one batch end; async-safe, so Keras keeps running batch ends on its
    worker threads (torch, jax): that batch end is still queued when fit fails."""

    async_safe = True

    def __init__(self, batch, seconds=0.5):
        super().__init__()
        self.batch, self.seconds = batch, seconds

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            time.sleep(self.seconds)


class RaiseAtBatchBegin(keras.callbacks.Callback):
    """Raises on the training thread just before batch ``batch`` trains."""

    async_safe = True

    def __init__(self, batch, exc):
        super().__init__()
        self.batch, self.exc = batch, exc

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            raise self.exc


def fit_with_a_late_batch_end(prefix, exc):
    """Batch 2's end sleeps 0.5 s on a Keras worker; batch 3 raises ``exc`` meanwhile."""
    callback = MLDashCallback(prefix, root=ROOT, log_every_n_batches=1)
    callbacks = [SlowBatchEnd(2), callback, RaiseAtBatchBegin(3, exc)]
    model = tiny_model()
    seen = {"async": keras.callbacks.CallbackList(callbacks, model=model)._async_train}
    seen["raised"] = caught(
        lambda: model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
    )
    seen["status_at_once"] = callback.experiment.status
    time.sleep(1.0)  # the sleeping batch end has long run by now
    seen["status_later"] = callback.experiment.status
    seen["running_later"] = callback.experiment.running
    return seen


x, y = data()
val = data(16, seed=1)

# basic: a schedule, validation data, batch metrics every 2 batches (8 per epoch)
model = tiny_model(keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.01, 1, 0.9)))
callback = MLDashCallback(project="keras", name="basic", root=ROOT, log_every_n_batches=2, tags=["tiny"])
model.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_data=val, callbacks=[callback])

# defaults: no options but the experiment's, 40 batches in one epoch
model = tiny_model()
model.fit(*data(160), batch_size=4, epochs=1, verbose=0, callbacks=[MLDashCallback("keras/defaults", root=ROOT)])

# two fits, one callback: the second continues the first
model = tiny_model("sgd")
callback = MLDashCallback("keras/two-fits", root=ROOT, log_every_n_batches=4)
model.fit(x[:32], y[:32], batch_size=8, epochs=2, verbose=0, callbacks=[callback])
report["two_fits_status_between"] = callback.experiment.status
model.fit(x[:32], y[:32], batch_size=8, epochs=4, initial_epoch=2, verbose=0, callbacks=[callback])

# experiment= an Experiment the script owns and finishes itself
with mldash.Experiment("keras/owned", root=ROOT) as exp:
    tiny_model().fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[MLDashCallback(experiment=exp)])
    report["owned_status_after_fit"] = exp.status
    exp.metrics("test/score").append(value=1.0, step=0)

# a fixed learning rate changed by LearningRateScheduler (listed after ours)
model = tiny_model(keras.optimizers.SGD(0.1))
halve = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
callback = MLDashCallback("keras/constant-lr", root=ROOT, log_every_n_batches=4)
model.fit(x[:32], y[:32], batch_size=8, epochs=3, verbose=0, callbacks=[callback, halve])

# failures inside fit; the script catches them, so no excepthook is involved
model = tiny_model(extra_layer=RaisingLayer())
report["layer_error"] = caught(
    lambda: model.fit(x, y, epochs=1, verbose=0, callbacks=[MLDashCallback("keras/layer-error", root=ROOT)])
)
model = tiny_model(loss=raising_loss)
report["loss_error"] = caught(
    lambda: model.fit(x, y, epochs=1, verbose=0, callbacks=[MLDashCallback("keras/loss-error", root=ROOT)])
)
model = tiny_model()
report["callback_error"] = caught(
    lambda: model.fit(
        x, y, epochs=3, verbose=0,
        callbacks=[MLDashCallback("keras/callback-error", root=ROOT), RaiseAtEpochEnd()],
    )
)
model = tiny_model()
report["interrupt"] = caught(
    lambda: model.fit(
        x, y, batch_size=8, epochs=2, verbose=0,
        callbacks=[MLDashCallback("keras/interrupt", root=ROOT, log_every_n_batches=1), InterruptAtBatch()],
    )
)
# the same callback after a failure: the next fit resumes and completes
callback = MLDashCallback("keras/recovered", root=ROOT)
model = tiny_model(loss=raising_loss)
caught(lambda: model.fit(x, y, epochs=1, verbose=0, callbacks=[callback]))
report["recovered_status_after_failure"] = callback.experiment.status
tiny_model().fit(x, y, epochs=1, verbose=0, callbacks=[callback])

# a batch end Keras had queued runs after fit failed: it must not reopen the run
report["late_failed"] = fit_with_a_late_batch_end("keras/late-failed", RuntimeError("data went bad"))
report["late_cancelled"] = fit_with_a_late_batch_end("keras/late-cancelled", KeyboardInterrupt())

# optuna's pruning (its Keras callback raises TrialPruned inside fit) is a cancellation
try:
    import optuna
except ImportError:
    report["pruned"] = None
else:
    report["pruned"] = caught(
        lambda: tiny_model().fit(
            x, y, epochs=1, verbose=0,
            callbacks=[MLDashCallback("keras/pruned", root=ROOT), RaiseAtBatchBegin(1, optuna.TrialPruned())],
        )
    )

# evaluate and predict after fit: recorded, and the run is COMPLETED again at once
model = tiny_model()
callback = MLDashCallback("keras/evaluate", root=ROOT)
model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=val, callbacks=[callback])
result = model.evaluate(*val, batch_size=8, verbose=0, callbacks=[callback], return_dict=True)
report["evaluate_result"] = result
report["after_evaluate"] = [callback.experiment.status, callback.experiment.running]
model.predict(x, batch_size=16, verbose=0, callbacks=[callback])
report["after_predict"] = [callback.experiment.status, callback.experiment.running]

# ... and with experiment= the owner still decides when the run ends
with mldash.Experiment("keras/evaluate-owned", root=ROOT) as exp:
    callback = MLDashCallback(experiment=exp)
    model.evaluate(*val, batch_size=8, verbose=0, callbacks=[callback])
    report["owned_after_evaluate"] = [exp.status, exp.running]

# Keras' asynchronous batch dispatch stays on with our callback
model = tiny_model()
report["thread_safe_backend"] = bool(keras.src.backend.IS_THREAD_SAFE)
ours = MLDashCallback("keras/async", root=ROOT)
report["async_with_ours"] = keras.callbacks.CallbackList([ours], model=model)._async_train
report["async_with_plain"] = keras.callbacks.CallbackList([ours, PlainBatchCallback()], model=model)._async_train

# a hand-written loop that passes the backend's own tensors
model = tiny_model()
callback = MLDashCallback("keras/tensors", root=ROOT, log_every_n_batches=1)
callback.set_model(model)
callback.on_train_begin()
callback.on_epoch_begin(0)
for batch, loss in enumerate([0.5, 0.25]):
    callback.on_train_batch_begin(batch)
    callback.on_train_batch_end(batch, {"loss": keras.ops.convert_to_tensor(loss)})
callback.on_epoch_end(0, {"loss": keras.ops.convert_to_tensor(0.125), "vector": keras.ops.ones((3,))})
callback.on_train_end({})

# bad arguments fail at construction, before any fit
errors = []
for kwargs in ({"experiment": mldash.Experiment("keras/x", root=ROOT), "project": "p"}, {"log_every_n_batches": -1}):
    try:
        MLDashCallback(**kwargs)
    except (TypeError, ValueError) as exc:
        errors.append(type(exc).__name__)
report["bad_arguments"] = errors

report["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
with open(REPORT_PATH, "w") as f:
    json.dump(report, f)
