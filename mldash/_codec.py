"""JSON lines that keep NaN, ±inf and big integers exactly while staying valid JSON.

orjson writes non-finite floats as ``null`` and refuses integers past 64 bits
(and JSON readers round them to floats). Both are rare, so the fast path encodes
as usual and only such values are re-encoded tagged:
``{"$float": "NaN" | "Infinity" | "-Infinity"}`` and ``{"$int": "<digits>"}``.
Decoding un-tags only lines whose bytes contain a tag (raw ``{"$`` occurs in
JSON only where an object's first key starts with "$").

Media field values (``mldash.Image``, ``mldash.Histogram``: ``_media``) are
stored tagged too, ``{"$image": {"file", "sha256", "width", "height", ...}}`` and
``{"$histogram": {"bins", "counts", "min", "max", "mean", "count"}}``, and read
back as ``{"type": "image", ...}`` / ``{"type": "histogram", ...}``. Every tag's
key is in ``TAGS``: a user's own dict may not use one (``_naming.check_not_tag``).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import orjson

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
TAG = "$float"
INT_TAG = "$int"
IMAGE_TAG = "$image"
HISTOGRAM_TAG = "$histogram"
MEDIA_TAGS = {IMAGE_TAG: "image", HISTOGRAM_TAG: "histogram"}  # tag: the "type" it reads back as
TAGS = (TAG, INT_TAG, IMAGE_TAG, HISTOGRAM_TAG)
MAX_BINS = 512  # a histogram's bins
_TAG_BYTES = b'{"$'
_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes as a number
_MAX_DIGITS = (getattr(sys, "get_int_max_str_digits", lambda: 0)() or 10**9)  # int()'s limit (0: none)


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


def _tag_int(value: int) -> Any:
    return value if _INT_MIN <= value <= _INT_MAX else {INT_TAG: str(value)}


def tag_special(obj: Any) -> Any:
    """Return ``obj`` with every non-finite float and big int replaced by its tag."""
    if isinstance(obj, float):
        return _tag_float(obj)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return _tag_int(obj)
    if isinstance(obj, dict):
        return {k: tag_special(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [tag_special(v) for v in obj]
    if isinstance(obj, orjson.Fragment):
        # Log metadata arrives pre-encoded by dumps(), already tagged; orjson
        # gives no access to a Fragment's bytes (there is no .contents).
        return obj
    item = getattr(obj, "item", None)
    if item is not None and getattr(obj, "ndim", 0) == 0:
        value = item()
        return tag_special(value) if isinstance(value, (float, int)) else value
    return obj


def _big_int(error: TypeError) -> bool:
    return "64-bit" in str(error)


def dumps(obj: Any, default=scalar_default, option: int = 0) -> bytes:
    """Encode one JSON value, keeping non-finite floats and big ints."""
    try:
        data = orjson.dumps(obj, default=default, option=OPTIONS | option)
    except TypeError as error:
        if not _big_int(error):
            raise
        return orjson.dumps(tag_special(obj), default=default, option=OPTIONS | option)
    if b"null" in data:
        data = orjson.dumps(tag_special(obj), default=default, option=OPTIONS | option)
    return data


def dumps_line(obj: Any, default=scalar_default) -> bytes:
    return dumps(obj, default, orjson.OPT_APPEND_NEWLINE)


def is_tag(obj: dict) -> bool:
    """True for exactly what ``tag_special`` and the media writer write (user dicts
    never use these keys)."""
    if len(obj) != 1:
        return False
    if TAG in obj:
        return isinstance(obj[TAG], str) and obj[TAG] in _NAMES
    if INT_TAG in obj:
        value = obj[INT_TAG]
        digits = value[1:] if isinstance(value, str) and value.startswith("-") else value
        # not "--5", nor more digits than int() reads (or str() writes): int() refuses them
        return isinstance(digits, str) and digits.isdigit() and digits.isascii() and len(digits) <= _MAX_DIGITS
    if IMAGE_TAG in obj:
        return _is_image(obj[IMAGE_TAG])
    if HISTOGRAM_TAG in obj:
        return _is_histogram(obj[HISTOGRAM_TAG])
    return False


def _is_count(value: Any, least: int = 0) -> bool:
    return value.__class__ is int and value >= least


def _is_number(value: Any) -> bool:
    return value.__class__ in (int, float) and math.isfinite(value)


def _is_image(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    sha = value.get("sha256")
    return (
        isinstance(value.get("file"), str)
        and isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        and _is_count(value.get("width"), 1) and _is_count(value.get("height"), 1)
        and isinstance(value.get("format"), str)
        and all(isinstance(value.get(k), str) for k in ("caption", "path", "filename") if k in value)
        and (_is_count(value["size"]) if "size" in value else True)
    )


def _is_histogram(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    bins, counts = value.get("bins"), value.get("counts")
    return (
        isinstance(bins, list) and isinstance(counts, list) and 1 <= len(counts) <= MAX_BINS
        and len(bins) == len(counts) + 1 and all(map(_is_number, bins)) and all(map(_is_count, counts))
        and all(_is_number(value.get(k)) for k in ("min", "max", "mean")) and _is_count(value.get("count"))
    )


def untag(obj: Any) -> Any:
    if isinstance(obj, dict):
        if is_tag(obj):
            if TAG in obj:
                return _NAMES[obj[TAG]]
            if INT_TAG in obj:
                return int(obj[INT_TAG])
            return _read_media(obj)
        return {k: untag(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [untag(v) for v in obj]
    return obj


def loads(data: bytes | str) -> Any:
    obj = orjson.loads(data)
    if (_TAG_BYTES in data) if isinstance(data, bytes) else (TAG in data):
        return untag(obj)
    return obj


def _read_media(obj: dict) -> dict:
    """A media tag as ``read()`` returns it: ``{"type": "image", ...}`` (caption None
    when there is none) or ``{"type": "histogram", ...}``."""
    (tag, value), = obj.items()
    out = {"type": MEDIA_TAGS[tag], **value}
    if tag == IMAGE_TAG:
        out.setdefault("caption", None)
    return out
