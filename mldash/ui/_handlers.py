"""What the dashboard API's request handlers share (``mldash.ui.app._Api`` and the
route groups mixed into it, ``_filter_api`` and ``_files_api``): reading a request's
query parameters, and the cache key of what must not be kept.
"""

from __future__ import annotations

_NOT_KEPT = object()  # a cache key for what must not be kept (see mldash.ui.app._Api._key)


def _int(params, key: str, default: int | None, low: int = 0, high: int = 1 << 62) -> int | None:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None
    return max(low, min(value, high))


def _float(params, key: str) -> float | None:
    raw = params.get(key)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None


def _need(params, key: str) -> str:
    value = params.get(key)
    if not value:
        raise ValueError(f"the {key} parameter is needed")
    return value
