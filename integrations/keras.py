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
- the end of fit: status COMPLETED, a summary (runtime, global step, last metrics);
  an exception inside fit gives FAILED with an error log, Ctrl-C gives CANCELLED.
"""

from __future__ import annotations

import functools
import heapq
import inspect
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import keras

import mldash
from mldash._naming import safe_metric_name

__all__ = ["MLDashCallback"]

_PLAIN = (float, int, bool)
_MAX_HELD = 64


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
        finish: finish the experiment when ``fit`` ends. Default: True when the
            callback created the experiment, False for ``experiment=`` (its owner
            finishes it). A failed or interrupted fit always finishes it.

    One callback may serve several ``fit`` calls: each one resumes the same
    experiment, and the batch step keeps counting the optimizer's iterations.
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
        self._fits = 0
        self._epoch = 0
        self._epoch_base = 0  # optimizer iterations before the current epoch
        self._steps_per_execution = 1
        self._lr_cache: float | None = None
        self._lr_pending = False
        self._order_lock = threading.Lock()
        self._held: list = []
        self._held_seq = 0
        self._expected = 0
        self._batch_series: dict[str, Any] = {}
        self._epoch_series: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._deferred: ThreadPoolExecutor | None = None
        self._deferred_futures: list = []
        self._deferred_lock = threading.Lock()
        self._started_at = 0.0
        _install_fit_guard()

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
        self._steps_per_execution = int(getattr(self._keras_model, "steps_per_execution", 1) or 1)
        exp = self._experiment
        exp.params.set(_hyperparameters(self, self._fit_arguments))
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
        self._release_held()
        if self.log_every_n_batches:
            self._expected = self._next_logged(self._epoch_base)
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
        if not n:
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
        self._release_held()
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
        self._release_held()
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
        if self.finish_on_end:
            exp.finish()

    # ---- failures (called by the fit guard) --------------------------------------
    def _before_fit(self, arguments: dict) -> None:
        self._fit_arguments = arguments

    def _fit_failed(self, exc: BaseException) -> None:
        self._wait_deferred(raise_errors=False)
        self._release_held()
        self._in_fit = False
        exp = self._experiment
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            exp.finish()
            return
        exp.log_exception(exc)
        exp.finish()

    # ---- helpers ----------------------------------------------------------------
    def _log_batch(self, step: int, batch: int, logs) -> None:
        exp = self._experiment
        epoch = self._epoch
        series = self._batch_series
        points = []
        for key, value in (logs or {}).items():
            if value.__class__ is not float:
                value = self._scalar(key, value)
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
        self._write_in_order(step, points)

    # Keras' worker threads finish batch ends in any order (each first waits for
    # its own batch's values), so a small reorder buffer keeps every series in
    # step order: a batch's points are written once every earlier logged step of
    # the epoch is written. The logged steps are known in advance, so nothing
    # waits on a guess; anything still held is written, sorted, at epoch end, and
    # the buffer never holds more than _MAX_HELD steps.
    def _write_in_order(self, step: int, points: list) -> None:
        with self._order_lock:
            held = self._held
            if step == self._expected and not held:
                for metric, fields in points:
                    metric.append(**fields)
                self._expected = self._next_logged(step)
                return
            heapq.heappush(held, (step, self._held_seq, points))
            self._held_seq += 1
            while held and (held[0][0] <= self._expected or len(held) > _MAX_HELD):
                first, _, first_points = heapq.heappop(held)
                for metric, fields in first_points:
                    metric.append(**fields)
                if first >= self._expected:
                    self._expected = self._next_logged(first)

    def _release_held(self) -> None:
        with self._order_lock:
            held, self._held = self._held, []
            for _step, _seq, points in sorted(held, key=lambda item: item[:2]):
                for metric, fields in points:
                    metric.append(**fields)

    def _next_logged(self, step: int) -> int:
        """The first logged batch step after ``step`` (a chunk end)."""
        n, chunk = self.log_every_n_batches, self._steps_per_execution
        if chunk == 1:
            return (step // n + 1) * n
        candidate = step + chunk
        while candidate // n == (candidate - chunk) // n:
            candidate += chunk
        return candidate

    def _scalar(self, key: str, value: Any) -> Any:
        """A value the core can store, or _SKIP (with one warning per key)."""
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
            self._warned.add(key)
            self._experiment.log(
                f"metric {key!r} is not a scalar ({type(value).__name__}); not logged",
                level="warn",
                metadata={"metric": key, "type": type(value).__name__},
            )
        return _SKIP

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
        state["_order_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._deferred_lock = threading.Lock()
        self._order_lock = threading.Lock()


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


# ---- hyperparameters ---------------------------------------------------------------
_FIT_KEYS = (
    "batch_size",
    "epochs",
    "initial_epoch",
    "steps_per_epoch",
    "validation_split",
    "validation_steps",
    "validation_batch_size",
    "validation_freq",
    "shuffle",
    "class_weight",
)


def _hyperparameters(callback: MLDashCallback, fit_arguments: dict) -> dict:
    model = callback._keras_model
    params = callback.params or {}
    out: dict[str, Any] = {"keras": {"version": keras.__version__, "backend": keras.backend.backend()}}

    fit: dict[str, Any] = {"epochs": params.get("epochs"), "steps": params.get("steps")}
    for key in _FIT_KEYS:
        value = fit_arguments.get(key)
        if value is not None and key not in fit:
            fit[key] = value
    if fit_arguments:
        fit["validation"] = fit_arguments.get("validation_data") is not None or bool(
            fit_arguments.get("validation_split")
        )
        if "batch_size" not in fit:
            batch_size = _batch_size_of(fit_arguments.get("x"))
            if batch_size is not None:
                fit["batch_size"] = batch_size
    fit["steps_per_execution"] = callback._steps_per_execution
    out["fit"] = {k: v for k, v in fit.items() if v is not None}

    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        out["optimizer"] = _optimizer_config(optimizer)
    compile_config = _safe(model.get_compile_config) if hasattr(model, "get_compile_config") else None
    if compile_config:
        if compile_config.get("loss") is not None:
            out["loss"] = _simplify(compile_config["loss"])
        metrics = compile_config.get("metrics")
        if metrics:
            out["metrics"] = _names(metrics)
        if compile_config.get("loss_weights") is not None:
            out["loss_weights"] = compile_config["loss_weights"]
        out["compile"] = {
            k: compile_config.get(k) for k in ("run_eagerly", "jit_compile") if compile_config.get(k) is not None
        }
    out["model"] = _model_info(model, callback.log_model_config)
    return out


def _batch_size_of(x: Any) -> int | None:
    if x is None:
        return None
    size = getattr(x, "batch_size", None)  # torch DataLoader, PyDataset
    if isinstance(size, int):
        return size
    if hasattr(x, "shape") or isinstance(x, (list, tuple, dict)) and x and all(
        hasattr(v, "shape") for v in (x.values() if isinstance(x, dict) else x)
    ):
        return 32  # Keras' default for arrays
    return None


def _optimizer_config(optimizer) -> dict:
    config = _safe(optimizer.get_config) or {}
    out: dict[str, Any] = {"class": type(optimizer).__name__}
    for key, value in config.items():
        if value is None:
            continue
        out[key] = _simplify(value)
    return out


def _simplify(value: Any) -> Any:
    """Turn Keras' serialized objects into ``{"class": ..., **config}``."""
    if isinstance(value, dict):
        if "class_name" in value and "config" in value:
            config = value.get("config")
            simple = {"class": value["class_name"]}
            if isinstance(config, dict):
                simple.update({k: _simplify(v) for k, v in config.items() if k != "dtype" and v is not None})
            return simple
        return {k: _simplify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_simplify(v) for v in value]
    if isinstance(value, float):
        return _float32(value)
    return value


def _names(metrics: Any) -> Any:
    """Compiled metrics as names: ``["accuracy", "root_mean_squared_error"]``."""
    if isinstance(metrics, dict) and not ("class_name" in metrics and "config" in metrics):
        return {k: _names(v) for k, v in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [_names(m) for m in metrics]
    if isinstance(metrics, dict):
        config = metrics.get("config")
        if isinstance(config, dict) and config.get("name"):
            return config["name"]
        return metrics.get("class_name")
    return metrics if isinstance(metrics, (str, int, float, bool)) or metrics is None else str(metrics)


def _model_info(model, with_config: bool) -> dict:
    info: dict[str, Any] = {"name": getattr(model, "name", None), "class": type(model).__name__}
    total = _safe(model.count_params)
    if total is not None:
        trainable = sum(_count(w) for w in model.trainable_weights)
        info["params"] = {"total": total, "trainable": trainable, "non_trainable": total - trainable}
    info["layers"] = len(getattr(model, "layers", []) or [])
    if with_config:
        config = _safe(model.get_config)
        if isinstance(config, dict):
            info["config"] = config
    return info


def _count(weight) -> int:
    n = 1
    for dim in weight.shape:
        n *= int(dim)
    return n


def _float32(value: float) -> float:
    """0.0010000000474974513 (a float32 read as a float64) -> 0.001."""
    try:
        import numpy as np
    except ImportError:
        return value
    single = np.float32(value)
    if not math.isfinite(value) or float(single) != value:
        return value  # not a float32 value: keep every digit
    return float(str(single))


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None


# ---- failures ------------------------------------------------------------------------
# Keras has no hook for an exception that escapes ``fit``: callbacks only see the
# normal path (``on_train_end`` is simply never called). So importing this module
# wraps ``keras.Model.fit`` once per process. The wrapper looks for
# MLDashCallbacks among the call's callbacks and, when ``fit`` raises, records the
# exception on their experiments (FAILED with the traceback; KeyboardInterrupt
# gives CANCELLED) before re-raising it unchanged.
# Why the class and why at import: Keras calls ``set_model`` from inside ``fit``,
# too late to wrap the call in progress, and in ``model.fit(callbacks=[
# MLDashCallback()])`` Python looks ``model.fit`` up before it builds the
# callback, so patching in the constructor would miss the first call. The import
# always comes first. This works in plain scripts, notebooks and under pytest
# alike (no excepthook needed, a caught exception is still recorded, and an error
# before training begins, such as a bad input shape, is recorded too). Models
# whose class overrides ``fit`` are covered as long as they call ``super().fit``;
# for anything else the core's excepthook still marks an uncaught error. A fit
# without our callback pays one scan of its callbacks list.
_guard_lock = threading.Lock()
_guarded = False


def _install_fit_guard() -> None:
    global _guarded
    if _guarded:
        return
    with _guard_lock:
        if _guarded:
            return
        original = keras.Model.fit
        signature = inspect.signature(original)

        @functools.wraps(original)
        def fit(self, *args, **kwargs):
            ours = _our_callbacks(args[5] if len(args) > 5 else kwargs.get("callbacks"))
            if not ours:
                return original(self, *args, **kwargs)
            try:
                arguments = signature.bind(self, *args, **kwargs).arguments
                arguments.pop("self", None)
            except TypeError:
                arguments = {}
            for callback in ours:
                callback._before_fit(arguments)
            try:
                return original(self, *args, **kwargs)
            except BaseException as exc:
                for callback in ours:
                    try:
                        callback._fit_failed(exc)
                    except Exception as error:  # never mask the training error
                        import sys

                        print(f"mldash: recording the failed fit failed: {error!r}", file=sys.stderr)
                raise

        fit._mldash_original = original
        keras.Model.fit = fit
        _guarded = True


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


_install_fit_guard()
