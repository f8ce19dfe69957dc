"""Keras 3: ``model.fit(..., callbacks=[MLDashCallback(...)])``.

Works the same under every Keras 3 backend (tensorflow, torch, jax) and needs
nothing but ``keras`` itself: TensorFlow is only imported when it is the backend.

What it records:

- parameters at train begin (``fit.*``, ``optimizer.*``, ``loss``, ``metrics``,
  ``model.*`` with the model's config and parameter counts, ``keras.*``);
- every epoch metric under its Keras name (``loss``, ``val_loss``, ``accuracy``,
  ...) at ``step=epoch``, plus ``learning_rate`` when Keras did not log it;
- every ``log_every_n_batches`` batches, the batch metrics under ``batch/`` at the
  global batch step (the optimizer's iteration count), with ``batch/learning_rate``
  as the schedule gives it for that batch;
- every evaluation (``evaluate(callbacks=[...])`` and fit's own validation), as
  Keras' TensorBoard callback writes it: each metric under ``evaluation/`` at the
  optimizer's iteration count;
- the end of fit: status COMPLETED, a summary (runtime, global step, last metrics);
  an exception inside fit gives FAILED with an error log, Ctrl-C gives CANCELLED.
  An ``evaluate`` or ``predict`` outside fit resumes the experiment and ends it again.

Hyperparameter extraction lives in ``_keras_params``, the failure guard's shared
part in ``_guard``.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras

import mldash
from mldash._naming import safe_metric_name

from ._guard import RecordFailures, record_failure
from ._keras_order import BatchWriter
from ._keras_params import hyperparameters

__all__ = ["MLDashCallback"]

_PLAIN = (float, int, bool)
# How long a failed fit waits for the batch ends Keras had queued (normally
# milliseconds: each only waits for values already computed).
_DRAIN_SECONDS = 10.0


class MLDashCallback(keras.callbacks.Callback):
    """Track a Keras ``fit`` in an mldash experiment.

    >>> from mldash.integrations.keras import MLDashCallback
    >>> callback = MLDashCallback("mnist/mlp", root=".mldash")  # doctest: +SKIP
    >>> model.fit(x, y, epochs=3, callbacks=[callback])  # doctest: +SKIP

    Args:
        prefix, **experiment_kwargs: passed to :class:`mldash.Experiment`
            (``project``, ``name``, ``folder``, ``root``, ``remote``, ``token``,
            ``description``, ``tags``, ...).
        experiment: an existing :class:`mldash.Experiment` to write to instead.
        log_every_n_batches: log the batch metrics every N training batches
            (default 10); ``0`` or ``None`` logs epoch metrics only.
        log_learning_rate: also log the learning rate (default True).
        log_model_config: store ``model.get_config()`` under ``model.config.*``
            (default True; turn off for very large models).
        finish: finish the experiment when ``fit`` (or an ``evaluate`` or
            ``predict`` outside fit) ends. Default: True when the callback created
            the experiment, False for ``experiment=`` (its owner finishes it). A
            failed or interrupted fit always finishes it.

    One callback may serve several ``fit``, ``evaluate`` and ``predict`` calls: each
    one resumes the same experiment, and the batch step keeps counting the
    optimizer's iterations.
    """

    # Keras 3 runs ``on_train_batch_end`` on a worker thread (and converts the
    # logs' tensors to floats there) only when every callback is async-safe; a
    # callback without this flag forces a device sync on the training thread for
    # every batch. Ours is: it only reads state fixed at epoch begin and appends
    # to the core's thread-safe series.
    async_safe = True

    def __init__(
        self,
        prefix: str | None = None,
        *,
        experiment: mldash.Experiment | None = None,
        log_every_n_batches: int | None = 10,
        log_learning_rate: bool = True,
        log_model_config: bool = True,
        finish: bool | None = None,
        **experiment_kwargs: Any,
    ) -> None:
        super().__init__()
        if experiment is not None and (prefix is not None or experiment_kwargs):
            raise TypeError("pass either experiment= or the Experiment's arguments, not both")
        if log_every_n_batches is not None and (
            not isinstance(log_every_n_batches, int) or log_every_n_batches < 0
        ):
            raise ValueError(f"log_every_n_batches must be an int >= 0 or None, got {log_every_n_batches!r}")
        self._owns = experiment is None
        self._experiment = experiment if experiment is not None else mldash.Experiment(prefix, **experiment_kwargs)
        self.log_every_n_batches = log_every_n_batches or 0
        self.log_learning_rate = log_learning_rate
        self.log_model_config = log_model_config
        self.finish_on_end = self._owns if finish is None else finish
        self._fit_arguments: dict = {}
        self._in_fit = False
        self._callback_list: weakref.ref | None = None  # the CallbackList running this fit
        self._fits = 0
        self._epoch = 0
        self._epoch_base = 0  # optimizer iterations before the current epoch
        self._steps_per_execution = 1
        self._lr_cache: float | None = None
        self._lr_pending = False
        self._batches = BatchWriter()  # step order, and the gate a failed fit closes
        self._batch_series: dict[str, Any] = {}
        self._epoch_series: dict[str, Any] = {}
        self._eval_series: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._deferred: ThreadPoolExecutor | None = None
        self._deferred_futures: list = []
        self._deferred_lock = threading.Lock()
        self._started_at = 0.0
        self._stage_started = 0.0

    @property
    def _keras_model(self):
        # Not ``self.model``: under JAX that property writes the whole training
        # state back into the model's variables (``jax_state_sync``). From a batch
        # end on Keras' worker thread that races with the next training step (it
        # can hand the step buffers that were already donated), and even on the
        # training thread it costs a copy of every variable. We only read the
        # optimizer's counters and config, at points where Keras has synced.
        model = self._model
        if model is not None and not hasattr(model, "optimizer") and hasattr(model, "module"):
            model = model.module  # torch DistributedDataParallel, as Callback.model does
        return model

    @property
    def experiment(self) -> mldash.Experiment:
        """The :class:`mldash.Experiment` this callback writes to."""
        return self._experiment

    # ---- fit lifecycle ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._fits += 1
        self._started_at = time.perf_counter()
        self._callback_list = _calling_callback_list(self)
        self._batches.reopen()
        self._steps_per_execution = int(getattr(self._keras_model, "steps_per_execution", 1) or 1)
        exp = self._experiment
        exp.params.set(
            hyperparameters(
                self._keras_model, self.params, self._fit_arguments,
                steps_per_execution=self._steps_per_execution, with_config=self.log_model_config,
            )
        )
        exp.log(
            f"fit {self._fits} started",
            metadata={"epochs": (self.params or {}).get("epochs"), "steps": (self.params or {}).get("steps")},
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        # Read once per epoch, where Keras has just synchronised anyway (the
        # previous epoch's logs were converted to floats): the batch step is this
        # base plus the batch index, so batch ends never read a device value.
        self._epoch_base = self._iterations()
        if self.log_every_n_batches:
            self._batches.start_epoch(self._epoch_base, self.log_every_n_batches, self._steps_per_execution)
        else:
            self._batches.release()
        self._lr_cache = None
        self._lr_pending = self.log_learning_rate and bool(self.log_every_n_batches)

    def on_train_batch_begin(self, batch, logs=None):
        if self._lr_pending:
            # A fixed learning rate only changes between epochs (LearningRateScheduler
            # at epoch begin, ReduceLROnPlateau at epoch end), so it is read once,
            # here: after every callback's on_epoch_begin, on the training thread,
            # while the device is idle and (under JAX) the optimizer's variables
            # still hold their values; mid-epoch JAX purges them.
            self._lr_pending = False
            if not self._lr_is_schedule():
                self._lr_cache = self._current_learning_rate()

    def on_train_batch_end(self, batch, logs=None):
        # Hot path: with async dispatch this runs on a Keras worker thread, maybe
        # concurrently with the next batch's end; everything it reads was fixed at
        # epoch begin. ``batch`` is the last step of the executed chunk.
        n = self.log_every_n_batches
        if not n or not self._batches.open:
            return
        step = self._epoch_base + batch + 1
        if step // n == (step - self._steps_per_execution) // n:
            return
        if logs:
            for value in logs.values():
                if value.__class__ not in _PLAIN and _needs_deferral(value):
                    self._defer(self._log_batch, step, batch, dict(logs))
                    return
        self._log_batch(step, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._wait_deferred()
        self._batches.release()
        logs = dict(logs or {})
        exp = self._experiment
        global_step = self._iterations()
        if self.log_learning_rate and "learning_rate" not in logs:
            lr = self._current_learning_rate()
            if lr is not None:
                logs["learning_rate"] = lr
        for key, value in logs.items():
            value = self._scalar(key, value)
            if value is not _SKIP:
                series = self._epoch_series.get(key)
                if series is None:
                    series = self._epoch_series[key] = exp.metrics(safe_metric_name(key))
                series.append(value=value, step=epoch, global_step=global_step)

    def on_train_end(self, logs=None):
        self._wait_deferred()
        self._batches.release()
        self._in_fit = False
        exp = self._experiment
        summary = {
            "train_runtime": round(time.perf_counter() - self._started_at, 3),
            "global_step": self._iterations(),
            "epoch": self._epoch,
        }
        for key, value in (logs or {}).items():
            value = _to_number(value)
            if value is not None:
                summary[key] = value
        exp.summary.set(summary)
        exp.log(f"fit {self._fits} ended", metadata={"epoch": self._epoch, "global_step": summary["global_step"]})
        self._end_stage()

    # ---- evaluate and predict ---------------------------------------------------------
    # Keras calls these from fit's validation too (same CallbackList), so only a call
    # outside fit logs its end and finishes the experiment, as fit does.
    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._stage_started = time.perf_counter()

    def on_test_end(self, logs=None):
        # What Keras' TensorBoard callback writes as evaluation_<name>_vs_iterations:
        # every evaluation's metrics, validation included, at optimizer.iterations.
        # Called on the training thread once Keras has synchronised (and, under JAX,
        # put the state back into the variables), so reading the counter is free.
        exp = self._experiment
        step = self._iterations()
        metrics = {}
        for key, value in (logs or {}).items():
            value = self._scalar(key, value)
            if value is _SKIP or value is None:
                continue
            metrics[key] = value
            series = self._eval_series.get(key)
            if series is None:
                series = self._eval_series[key] = exp.metrics(safe_metric_name(f"evaluation/{key}"))
            if self._in_fit:
                series.append(value=value, step=step, epoch=self._epoch)
            else:
                series.append(value=value, step=step)
        if not self._in_fit:
            runtime = round(time.perf_counter() - self._stage_started, 3)
            exp.log("evaluate ended", metadata={"global_step": step, "runtime": runtime, "metrics": metrics})
            self._end_stage()

    def on_predict_begin(self, logs=None):
        if not self._in_fit:
            self._stage_started = time.perf_counter()

    def on_predict_end(self, logs=None):
        # Predictions have no metrics (TensorBoard records nothing for them): the
        # log says that a predict ran, on how many batches, for how long.
        if self._in_fit:
            return
        metadata = {
            "steps": (self.params or {}).get("steps"),
            "global_step": self._iterations(),
            "runtime": round(time.perf_counter() - self._stage_started, 3),
        }
        self._experiment.log("predict ended", metadata=metadata)
        self._end_stage()

    def _end_stage(self) -> None:
        if self.finish_on_end:
            self._experiment.finish()
        else:
            self._experiment.flush()  # the owner's experiment: visible now, they end it

    # ---- failures (called by the fit guard) --------------------------------------
    def _before_fit(self, arguments: dict) -> None:
        self._fit_arguments = arguments
        self._callback_list = None  # set again at on_train_begin; fit may fail before

    def _fit_failed(self, exc: BaseException) -> None:
        # With async dispatch (torch, jax) Keras runs batch ends on its worker threads
        # and, when fit raises, neither waits for the ones still queued nor shuts its
        # pool down: they run after this, and a point they wrote would resume the
        # finished run (RUNNING again, then COMPLETED at exit, sessions 2). So first
        # let them run (their points belong to batches that did complete), then close
        # the gate every batch write checks: whatever still comes for this fit is
        # dropped, and the status recorded below holds.
        self._drain_queued_batch_ends()
        self._wait_deferred(raise_errors=False)
        self._batches.close()
        self._in_fit = False
        record_failure(self._experiment, exc)

    def _drain_queued_batch_ends(self) -> None:
        # The futures are on the CallbackList (private, and not exposed by fit): a
        # best effort, bounded; the gate keeps the status right without it.
        ref, self._callback_list = self._callback_list, None
        callback_list = ref() if ref is not None else None
        futures = list(getattr(callback_list, "_futures", None) or ())
        deadline = time.monotonic() + _DRAIN_SECONDS
        for future in futures:
            try:
                future.exception(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # timed out or cancelled: dropped by the gate if it comes
                pass

    # ---- helpers ----------------------------------------------------------------
    def _log_batch(self, step: int, batch: int, logs) -> None:
        exp = self._experiment
        epoch = self._epoch
        series = self._batch_series
        points = []
        for key, value in (logs or {}).items():
            if value.__class__ is not float:
                value = self._scalar(key, value, batch_end=True)
                if value is _SKIP:
                    continue
            metric = series.get(key)
            if metric is None:
                metric = series[key] = exp.metrics(safe_metric_name(f"batch/{key}"))
            points.append((metric, {"value": value, "step": step, "epoch": epoch}))
        if self.log_learning_rate:
            lr = self._learning_rate_at(self._epoch_base + batch)
            if lr is not None:
                metric = series.get(" lr")
                if metric is None:
                    metric = series[" lr"] = exp.metrics("batch/learning_rate")
                points.append((metric, {"value": lr, "step": step, "epoch": epoch}))
        self._batches.write(step, points)

    def _scalar(self, key: str, value: Any, batch_end: bool = False) -> Any:
        """A value the core can store, or _SKIP (with one warning per key; from a
        batch end, only while the batch writer's gate is open)."""
        if value.__class__ in _PLAIN or value is None:
            return value
        module = value.__class__.__module__
        if module.startswith("torch"):
            # The core stores one-element torch tensors lazily: a CUDA value is
            # read on its writer thread, never here.
            if value.numel() == 1:
                return value
        elif _needs_deferral(value):
            # Only reached on a worker thread (see on_train_batch_end) or at
            # epoch end, where Keras has synchronised already.
            value = keras.ops.convert_to_numpy(value)
            module = "numpy"
        if module.startswith("numpy") and getattr(value, "size", 0) == 1:
            return value.reshape(()).item() if hasattr(value, "reshape") else value.item()
        if isinstance(value, (int, float)):
            return value
        if key not in self._warned:
            if batch_end:
                self._batches.if_open(functools.partial(self._warn_not_scalar, key, value))
            else:
                self._warn_not_scalar(key, value)
        return _SKIP

    def _warn_not_scalar(self, key: str, value: Any) -> None:
        self._warned.add(key)
        self._experiment.log(
            f"metric {key!r} is not a scalar ({type(value).__name__}); not logged",
            level="warn",
            metadata={"metric": key, "type": type(value).__name__},
        )

    def _iterations(self) -> int:
        """The optimizer's raw iteration count (one per batch)."""
        optimizer = getattr(self._keras_model, "optimizer", None)
        counter = getattr(optimizer, "_iterations", None)
        if counter is None:
            counter = getattr(optimizer, "iterations", None)
        if counter is None:
            return 0
        try:
            return int(keras.ops.convert_to_numpy(counter))
        except Exception:
            return 0

    def _learning_rate_at(self, iteration: int) -> float | None:
        """The rate the optimizer applied at ``iteration`` (0-based).

        A ``LearningRateSchedule`` is evaluated at that iteration; a fixed rate
        (a variable that callbacks such as ReduceLROnPlateau change between
        epochs) is read once per epoch.
        """
        optimizer = getattr(self._keras_model, "optimizer", None)
        rate = getattr(optimizer, "_learning_rate", None)
        if rate is None:
            return None
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            try:
                return float(keras.ops.convert_to_numpy(rate(iteration)))
            except Exception:
                return None
        return self._lr_cache

    def _lr_is_schedule(self) -> bool:
        optimizer = getattr(self._keras_model, "optimizer", None)
        rate = getattr(optimizer, "_learning_rate", None)
        return isinstance(rate, keras.optimizers.schedules.LearningRateSchedule)

    def _current_learning_rate(self) -> float | None:
        """``optimizer.learning_rate`` now, as Keras' own callbacks report it."""
        optimizer = getattr(self._keras_model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "learning_rate"):
            return None
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except Exception:
            return None

    # Logs that hold TensorFlow or JAX tensors only reach us from hand-written
    # loops that call the callback directly (Keras' CallbackList converts them
    # first). Reading such a value waits for the device, so, like Keras' own
    # async dispatch, the conversion and the append run on one worker thread;
    # both kinds of tensor are immutable, so reading them later is exact.
    def _defer(self, fn, *args) -> None:
        with self._deferred_lock:
            if self._deferred is None:
                self._deferred = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mldash-keras")
            self._deferred_futures = [f for f in self._deferred_futures if not f.done() or f.exception()]
            self._deferred_futures.append(self._deferred.submit(fn, *args))

    def _wait_deferred(self, raise_errors: bool = True) -> None:
        if not self._deferred_futures:
            return
        with self._deferred_lock:
            futures, self._deferred_futures = self._deferred_futures, []
        for future in futures:
            error = future.exception()
            if error is not None and raise_errors:
                raise error

    def __getstate__(self):
        # Keras may deepcopy/pickle callbacks (e.g. in some distribution paths);
        # the worker pool and lock cannot travel.
        state = self.__dict__.copy()
        state["_deferred"] = None
        state["_deferred_futures"] = []
        state["_deferred_lock"] = None
        state["_callback_list"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._deferred_lock = threading.Lock()


_SKIP = object()


def _needs_deferral(value: Any) -> bool:
    module = value.__class__.__module__
    return module.startswith(("tensorflow", "jax", "jaxlib"))


def _to_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else None
    try:
        number = float(keras.ops.convert_to_numpy(value))
    except Exception:
        return None
    return number if math.isfinite(number) else None


# ---- the fit guard --------------------------------------------------------------------
# Keras has no hook for an exception that escapes ``fit``: in the trainers of the
# tensorflow, torch and jax backends callbacks only see the normal path (on error,
# ``on_train_end`` is skipped; jax's ``finally`` only syncs its state), and
# CallbackList has no error hook. Nothing narrower than the method itself would do:
# Keras calls ``set_model``/``on_train_begin`` from inside the call already in
# progress, too late to wrap it; in ``model.fit(callbacks=[MLDashCallback()])``
# Python looks ``model.fit`` up before it builds the callback, so wrapping the
# instance at construction would miss that call; ``traceback_utils.filter_traceback``
# is applied when the class is defined; and ``sys.excepthook`` misses exceptions a
# script, notebook or test catches. So importing this module wraps
# ``keras.Model.fit`` once per process (the import always precedes the callback).
# The wrapper binds the call's arguments by name and does nothing more for a fit
# without an MLDashCallback; with one, _guard.RecordFailures hands an escaping
# exception to each of ours (FAILED with the traceback, CANCELLED for Ctrl-C or a
# pruned trial) and re-raises it unchanged. An error before training begins (a bad
# input shape) is recorded too; a subclass that overrides ``fit`` is covered as long
# as it calls ``super().fit``. ``evaluate`` and ``predict`` are not wrapped: ours
# writes only at their very end, so a failure in them leaves the run as it was.
_guard_lock = threading.Lock()


def _install_fit_guard() -> None:
    with _guard_lock:
        original = keras.Model.fit
        if getattr(original, "_mldash_original", None) is not None:
            return  # already wrapped (this module was reloaded)
        signature = inspect.signature(original)

        @functools.wraps(original)
        def fit(self, *args, **kwargs):
            try:
                arguments = signature.bind(self, *args, **kwargs).arguments
            except TypeError:  # fit itself rejects the call; still record that
                arguments = dict(kwargs)
            ours = _our_callbacks(arguments.get("callbacks"))
            if not ours:
                return original(self, *args, **kwargs)
            arguments.pop("self", None)
            for callback in ours:
                callback._before_fit(arguments)
            with RecordFailures(*(callback._fit_failed for callback in ours)):
                return original(self, *args, **kwargs)

        fit._mldash_original = original
        keras.Model.fit = fit


def _our_callbacks(callbacks: Any) -> list[MLDashCallback]:
    if not callbacks:
        return []
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    found = []
    stack = [callbacks]
    while stack:
        item = stack.pop()
        if isinstance(item, MLDashCallback):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
    return found


def _calling_callback_list(callback: MLDashCallback) -> weakref.ref | None:
    """The CallbackList that is calling ``callback.on_train_begin``, from the call stack.

    fit builds it and keeps it to itself; it holds the futures of the batch ends
    queued on Keras' worker threads, which a failed fit waits for.
    """
    frame = sys._getframe(2)  # 0: here, 1: on_train_begin, 2: its caller
    for _ in range(4):  # a subclass's on_train_begin calling super() adds frames
        if frame is None:
            return None
        caller = frame.f_locals.get("self")
        if isinstance(caller, keras.callbacks.CallbackList) and any(cb is callback for cb in caller.callbacks):
            return weakref.ref(caller)
        frame = frame.f_back
    return None


_install_fit_guard()
