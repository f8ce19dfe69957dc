"""Request values turned into checked values, or refused with a StoreError (400).

The rules themselves are the local API's (``_naming``, ``_checks``): a value the
local API refuses is refused here for the same reason, and one it writes is
kept exactly. Metric points get a fast path of their own, since every ingest
request runs through ``series_entry``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import orjson

from .. import _checks
from .._checks import LEVELS, MAX_TEXT
from .._console_lines import MAX_LINE
from .._naming import check_field_name, metric_parts
from .._naming import check_namespace as _check_namespace
from ._errors import StoreError

MAX_INDEX = 2**62  # the largest start_index: indices fit a BIGINT column
MAX_STAMP = 2**62  # a point's ms stamp is within +-MAX_STAMP: it fits a BIGINT column


def checked(fn, *args, **kw):
    """Run one of the shared checks (``_naming``, ``_checks``); its error is a 400."""
    try:
        return fn(*args, **kw)
    except (ValueError, TypeError) as error:
        raise StoreError(str(error)) from None


def check_namespace(namespace: Any) -> str:
    """The shared rule of ``_naming.check_namespace`` (the local API uses the same), as a 400."""
    return checked(_check_namespace, namespace)


def finite(value: Any) -> float | None:
    """A finite number as a float; None for anything else (a column left empty)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def start_index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > MAX_INDEX:
        raise StoreError(f"start_index must be an integer >= 0, got {value!r}")
    return value


def json_array(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise StoreError(f"{what} must be a JSON array, not {type(value).__name__}")
    return value


def experiment_meta(meta: Any) -> dict:
    """experiment.json fields against their schema (``_checks.check_meta``, the one
    the local API writes by): one writer's ``tags: "x"`` must not break the listing
    or a run's page for every reader. The 400 names the field."""
    if not isinstance(meta, dict):
        raise StoreError(f"meta must be a JSON object, not {type(meta).__name__}")
    # Identity comes from the request, not meta.
    meta = {k: v for k, v in meta.items() if k not in ("namespace", "prefix")}
    checked(_checks.check_meta, meta)
    local_id = meta.get("local_id")
    if local_id is not None and (not isinstance(local_id, str) or not local_id or len(local_id) > 200):
        raise StoreError(f"meta.local_id must be a short string (the run's experiment.json id), got {str(local_id)[:80]!r}")
    return meta


def document(values: Any, kind: str) -> dict:
    if not isinstance(values, dict):
        raise StoreError(f"a {kind} document must be a JSON object (a flat dict), not {type(values).__name__}")
    checked(_checks.check_document, values, kind, tagged=True)  # the local API's rule, on JSON as stored
    return values


def log_level(level: Any) -> str:
    if level not in LEVELS:
        raise StoreError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    return level


def log_record(record: Any, index: int) -> dict:
    """One log record as the local API writes it: a level, a number of epoch
    seconds, a message and metadata that may hold NUL (they are stored as bytes)
    but nothing JSON cannot hold. Returns the record as stored."""
    if not isinstance(record, dict):
        raise StoreError(f"log {index} must be an object, not {type(record).__name__}")
    level = record.get("level", "info")
    if level not in _checks.LEVEL_SET:
        raise StoreError(f"log {index}: unknown log level {str(level)[:40]!r}; use one of {', '.join(LEVELS)}")
    ts = record.get("timestamp", time.time())
    if finite(ts) is None:
        raise StoreError(f"log {index}: timestamp must be a number of epoch seconds, got {str(ts)[:80]!r}")
    message = record.get("message")
    if message is not None:
        checked(_checks.check_text, message, f"log {index}: message")
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise StoreError(f"log {index}: metadata must be an object or null, not {type(metadata).__name__}")
    checked(_checks.check_json, record, f"log {index}", tagged=True)
    return {**record, "index": index, "level": level, "timestamp": ts}


CONSOLE_STREAMS = ("stdout", "stderr")


def console_record(record: Any, index: int) -> dict:
    """One console record as console/console.jsonl holds it: a timestamp (epoch
    seconds), a stream (stdout or stderr), one line of text (NUL and any Unicode,
    no lone surrogate, at most MAX_LINE characters) and ``partial`` (a bool) on a
    snapshot of a line still open. Returns the record as stored, with its index."""
    if not isinstance(record, dict):
        raise StoreError(f"console line {index} must be an object, not {type(record).__name__}")
    ts = record.get("timestamp")
    if finite(ts) is None:
        raise StoreError(f"console line {index}: timestamp must be a finite number of epoch seconds, got {str(ts)[:80]!r}")
    stream = record.get("stream")
    if stream not in CONSOLE_STREAMS:
        raise StoreError(f"console line {index}: stream must be stdout or stderr, not {str(stream)[:40]!r}")
    text = checked(_checks.check_text, record.get("text"), f"console line {index}: text")
    if len(text) > MAX_LINE:
        raise StoreError(
            f"console line {index}: text is {len(text):,} characters long; a console record holds at most {MAX_LINE:,}"
        )
    partial = record.get("partial")
    if "partial" in record and partial.__class__ is not bool:
        raise StoreError(f"console line {index}: partial must be true or false, not {str(partial)[:40]!r}")
    checked(_checks.check_json, record, f"console line {index}", tagged=True)
    record = {k: v for k, v in record.items() if k != "index"}
    return {"index": index, **record}


def checkpoint_record(record: Any, index: int) -> dict:
    """One checkpoint record (stored as bytes: NUL is fine), except that the best
    one also becomes the experiment's ``best_checkpoint``, a document (no NUL)."""
    if not isinstance(record, dict):
        raise StoreError(f"checkpoint {index} must be an object, not {type(record).__name__}")
    path = record.get("path")
    if path is not None and not isinstance(path, str):
        raise StoreError(f"checkpoint {index}: path must be a string, not {type(path).__name__}")
    checked(_checks.check_json, record, f"checkpoint {index}", tagged=True)
    if record.get("is_best"):
        try:
            _checks.check_json(record, f"checkpoint {index}", nul=False, tagged=True)
        except ValueError as error:
            raise StoreError(f"{error} (a checkpoint marked is_best becomes meta.best_checkpoint, a document)") from None
    return record


# -- metric points ---------------------------------------------------------------


class SeriesEntry(NamedTuple):
    """One checked ``{"name", "start_index", "points"}`` entry of an ingest request."""

    name: str
    start: int
    points: list
    blob: bytes  # the points' JSON lines joined by b"\n"


_LIST, _TWO, _DICT, _NUMBER = {list}, {2}, {dict}, {int, float}
_GOOD_FIELD_NAMES: set = {"value", "step", "epoch"}  # names already checked (set.add is thread-safe)


def series_entry(batch: Any) -> SeriesEntry:
    if not isinstance(batch, dict):
        raise StoreError(f"each series entry must be an object with name, start_index, points; got {type(batch).__name__}")
    name = batch.get("name")
    checked(metric_parts, name)
    start = start_index(batch.get("start_index"))
    points = json_array(batch.get("points"), f"series {name!r}: points")
    if not points:
        return SeriesEntry(name, start, points, b"")
    fields = _points_look_right(points)
    if fields is None:
        _explain_bad_point(name, points)
    try:
        blob = lines_blob(points)
    except TypeError as error:  # orjson: nesting too deep, a lone surrogate (only in process)...
        _check_fields(name, start, fields, MAX_TEXT + 1)  # says which point and why, if it can
        raise StoreError(f"series {name!r}: a point cannot be stored: {error}") from None
    _check_fields(name, start, fields, len(blob))
    return SeriesEntry(name, start, points, blob)


def lines_blob(points: list) -> bytes:
    """The points' compact JSON lines joined by b"\n", from one orjson.dumps call.

    Each point ends in "}]" and the next starts with "[", so every boundary in
    the dumped array reads "}],["; when that sequence occurs exactly once per
    boundary (nowhere inside a point), replacing it is exact. Otherwise (a
    field's string or nested value holds it) each point is dumped on its own.
    The result equals b"\n".join(orjson.dumps(p) for p in points) either way.
    """
    body = orjson.dumps(points)[1:-1]
    if body.count(b"}],[") == len(points) - 1:
        return body.replace(b"}],[", b"}]\n[")
    return b"\n".join(map(orjson.dumps, points))


def _check_fields(name: str, start: int, fields: tuple, size: int) -> None:
    """The points' fields by the local API's rules (``_naming``/``_checks``).

    Field names: each distinct one is checked once (a batch's points mostly share
    theirs). Values: any JSON the codec writes (tagged NaN and big ints are
    objects); strings may hold NUL (lines are stored as bytes, never as text)
    and cannot hold a lone surrogate (orjson refuses one while parsing); one
    longer than MAX_TEXT characters needs more than MAX_TEXT bytes, so the
    values of an ordinary batch are not walked at all.
    """
    names = set().union(*fields)
    if not names <= _GOOD_FIELD_NAMES:
        for field_name in names - _GOOD_FIELD_NAMES:
            try:
                check_field_name(field_name)
            except (TypeError, ValueError) as error:
                k = next(k for k, f in enumerate(fields) if field_name in f)
                raise StoreError(f"metric {name!r} point {start + k}: {error}") from None
            if len(_GOOD_FIELD_NAMES) < 10_000:
                _GOOD_FIELD_NAMES.add(field_name)
    if size > MAX_TEXT:
        for k, f in enumerate(fields):
            checked(_checks.check_json, f, f"metric {name!r} point {start + k}: field", tagged=True)


def _points_look_right(points: list) -> tuple | None:
    """Every point is exactly a data.jsonl line, [ms_epoch, {fields}]: checked with
    C-speed set/map/zip passes instead of a Python loop over the points.
    Returns the points' field dicts, or None when one is not."""
    if set(map(type, points)) != _LIST or set(map(len, points)) != _TWO:
        return None
    ts, fields = zip(*points)
    if not set(map(type, ts)) <= _NUMBER or set(map(type, fields)) != _DICT:
        return None
    return fields if -MAX_STAMP < min(ts) and max(ts) < MAX_STAMP else None


def _explain_bad_point(name: str, points: list) -> None:
    """Find the first bad point (slowly: only for a batch already known bad) and say what is wrong."""
    for k, point in enumerate(points):
        if (
            point.__class__ is not list
            or len(point) != 2
            or point[1].__class__ is not dict
            or point[0].__class__ not in (int, float)
            or not (-MAX_STAMP < point[0] < MAX_STAMP)
        ):
            raise StoreError(
                f"series {name!r}: points[{k}] must be [ms_epoch, {{fields}}] (a number and an object), got {str(point)[:100]}"
            )
    raise StoreError(f"series {name!r}: points must be [ms_epoch, {{fields}}] (a number and an object)")
