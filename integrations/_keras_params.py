"""The hyperparameters MLDashCallback records at the start of each Keras ``fit``.

``fit.*`` (the call's arguments and Keras' epochs/steps), ``optimizer.*`` (its class and
config, a schedule as its own config), ``loss``, ``metrics``, ``compile.*``, ``model.*``
(name, class, parameter counts, ``get_config()``) and ``keras.*`` (version, backend).
Reads only configs and shapes: nothing here waits for the device.
"""

from __future__ import annotations

import math
from typing import Any

import keras

__all__ = ["hyperparameters"]

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


def hyperparameters(model, params: dict, fit_arguments: dict, *, steps_per_execution: int,
                    with_config: bool) -> dict:
    """Everything worth knowing about one ``fit``, nested (the core flattens it).

    ``params`` are the ones Keras gives its callbacks (epochs, steps), ``fit_arguments``
    the call's own arguments, bound by name (empty when unknown).
    """
    params = params or {}
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
    fit["steps_per_execution"] = steps_per_execution
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
    out["model"] = _model_info(model, with_config)
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
