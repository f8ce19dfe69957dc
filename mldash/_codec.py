"""JSON lines that keep NaN and ±inf while staying valid JSON.

orjson writes non-finite floats as ``null``. A line that contains ``null`` is
rare, so the fast path encodes as usual and only such lines are re-encoded with
non-finite floats tagged as ``{"$float": "NaN" | "Infinity" | "-Infinity"}``.
Decoding un-tags only lines whose bytes contain the tag.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
TAG = "$float"
_TAG_BYTES = b'"$float"'
_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def scalar_default(value: Any) -> Any:
    """orjson ``default`` for torch tensors and other objects with ``.item()``.

    Called on the writer thread, which is where a CUDA value is read.
    """
    item = getattr(value, "item", None)
    if item is not None:
        return item()
    raise TypeError(f"cannot store a value of type {type(value).__name__}")


def _tag_float(value: float) -> Any:
    if value != value:
        return {TAG: "NaN"}
    if value in (math.inf, -math.inf):
        return {TAG: "Infinity" if value > 0 else "-Infinity"}
    return value


def tag_nonfinite(obj: Any) -> Any:
    """Return ``obj`` with every non-finite float replaced by its tag."""
    if isinstance(obj, float):
        return _tag_float(obj)
    if isinstance(obj, dict):
        return {k: tag_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [tag_nonfinite(v) for v in obj]
    if isinstance(obj, orjson.Fragment):
        # Log metadata arrives pre-encoded by dumps(), already tagged; orjson
        # gives no access to a Fragment's bytes (there is no .contents).
        return obj
    item = getattr(obj, "item", None)
    if item is not None and getattr(obj, "ndim", 0) == 0:
        value = item()
        return _tag_float(value) if isinstance(value, float) else value
    return obj


def dumps(obj: Any, default=scalar_default) -> bytes:
    """Encode one JSON value, keeping non-finite floats."""
    data = orjson.dumps(obj, default=default, option=OPTIONS)
    if b"null" in data:
        data = orjson.dumps(tag_nonfinite(obj), default=default, option=OPTIONS)
    return data


def dumps_line(obj: Any, default=scalar_default) -> bytes:
    data = orjson.dumps(obj, default=default, option=OPTIONS | orjson.OPT_APPEND_NEWLINE)
    if b"null" in data:
        data = orjson.dumps(
            tag_nonfinite(obj), default=default, option=OPTIONS | orjson.OPT_APPEND_NEWLINE
        )
    return data


def untag(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and TAG in obj and obj[TAG] in _NAMES:
            return _NAMES[obj[TAG]]
        return {k: untag(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [untag(v) for v in obj]
    return obj


def loads(data: bytes | str) -> Any:
    obj = orjson.loads(data)
    if (_TAG_BYTES in data) if isinstance(data, bytes) else (TAG in data):
        return untag(obj)
    return obj
