"""Each series' headline statistics, kept at ingest: what ``metrics.<name>.last|min|max`` reads.

The local reader (``mldash.runs``) shows a series by its headline field (the one
``_runfolder.headline`` picks from the newest point: ``value``, else the first
number that is not step, epoch or timestamp, else the first field); ``last`` is
that field's value in the newest point, ``min`` and ``max`` its smallest and
largest number over every point (NaN left out, ties keep the first seen). Since
the newest point decides the field, the minimum and maximum of every numeric field
are kept, so the headline stays right whichever field it becomes.

Two columns of ``series`` hold them (JSON, NaN/inf and big ints tagged as stored):

- ``stats``: ``{"n": points folded in, "lows": {field: min}, "highs": {field: max}}``,
  what a batch is folded into;
- ``headline``: ``{"key": field, "last": v, "min": v, "max": v}`` (keys without a
  value left out, and a ``last`` holding NUL, which JSONB cannot), what the
  filter's SQL reads.

A batch costs one pass over its points in Python (C-speed ``min``/``max`` per field
when every value is a plain number) and no extra rows. ``n`` says how many points
the statistics cover: a series whose ``n`` is not its total (a database from before
these columns, or points stored by an older server) has the rest folded in when its
next batch arrives, and at startup (``Metrics.backfill_stats``).
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Any, Iterable

import orjson

from .. import _codec

_PLAIN = {int, float}
_SKIPPED = ("step", "epoch", "timestamp")


def headline_key(data: dict) -> str | None:
    """The field ``_runfolder.headline`` shows for a point with these fields."""
    if "value" in data:
        return "value"
    for key, value in data.items():
        if key not in _SKIPPED and isinstance(value, (int, float)):
            return key
    return next(iter(data), None)


class Stats:
    __slots__ = ("n", "lows", "highs", "last")

    def __init__(self, n: int = 0, lows: dict | None = None, highs: dict | None = None, last: dict | None = None) -> None:
        self.n = n
        self.lows = lows if lows is not None else {}
        self.highs = highs if highs is not None else {}
        self.last = last  # the newest point's fields (as stored), when known

    @classmethod
    def load(cls, stored: Any) -> "Stats | None":
        """From the column (text, bytes or already decoded JSON); None when empty."""
        if stored is None:
            return None
        if isinstance(stored, (str, bytes, bytearray, memoryview)):
            stored = orjson.loads(bytes(stored) if isinstance(stored, memoryview) else stored)
        stored = _codec.untag(stored)
        if not isinstance(stored, dict) or not isinstance(stored.get("n"), int):
            return None
        return cls(stored["n"], dict(stored.get("lows") or {}), dict(stored.get("highs") or {}))

    def copy(self) -> "Stats":
        return Stats(self.n, dict(self.lows), dict(self.highs), self.last)

    def dumps(self) -> str:
        return _codec.dumps({"n": self.n, "lows": self.lows, "highs": self.highs}).decode()

    def headline(self) -> dict | None:
        """The headline document; None while the newest point is unknown."""
        if self.last is None:
            return None
        key = headline_key(self.last)
        if key is None:
            return {}
        out = {"key": key}
        last = self.last.get(key)
        if not _holds_nul(last):  # JSONB cannot hold NUL: such a value reads as missing
            out["last"] = last
        if key in self.lows:
            out["min"] = self.lows[key]
            out["max"] = self.highs[key]
        return out

    def headline_json(self) -> str | None:
        headline = self.headline()
        return None if headline is None else _codec.dumps(headline).decode()

    # -- folding points in ------------------------------------------------------------

    def fold(self, fields: list, tagged: bool) -> "Stats":
        """A new Stats with these points' fields (dicts, in index order, as parsed from
        the request or a stored line) folded in. ``tagged``: some value may be a codec tag."""
        out = self.copy()
        if not fields:
            return out
        out.n += len(fields)
        if tagged:
            fields = [_stored(f) for f in fields]
        lows, highs = out.lows, out.highs
        names = set().union(*fields) if len(fields) > 1 else fields[0].keys()
        for name in names:
            try:
                column = list(map(itemgetter(name), fields))
            except KeyError:
                column = [f[name] for f in fields if name in f]
            low, high = _extremes(column, tagged)
            if low is None:
                continue
            old = lows.get(name)
            if old is None or low < old:
                lows[name] = low
            old = highs.get(name)
            if old is None or high > old:
                highs[name] = high
        last = fields[-1]
        out.last = last if tagged else _stored(last)
        return out

    def fold_lines(self, lines: Iterable[bytes]) -> "Stats":
        """Fold stored JSON lines (``[ms, {fields}]``) in."""
        lines = list(lines)
        if not lines:
            return self.copy()
        rows = orjson.loads(b"[" + b",".join(bytes(line) for line in lines) + b"]")
        tagged = any(_codec._TAG_BYTES in line for line in lines)
        return self.fold([row[1] for row in rows], tagged)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    return False


def _stored(fields: dict) -> dict:
    """Fields as a reader gets them back: tags decoded, a non-finite float that is
    not tagged (in-process callers) as the null orjson stores for it."""
    out = {}
    for key, value in fields.items():
        cls = value.__class__
        if cls is dict and _codec.is_tag(value):
            value = _codec.untag(value)
        elif cls is float and not math.isfinite(value):
            value = None
        elif cls is dict or cls is list:
            value = _codec.untag(value)
        out[key] = value
    return out


def _extremes(column: list, tagged: bool) -> tuple:
    """(min, max) of the numbers in ``column`` (NaN and bools left out; the first of
    equal ones, as a sequential scan keeps it); (None, None) without any."""
    if not tagged and set(map(type, column)) <= _PLAIN:
        try:
            finite = math.isfinite(sum(column))
        except OverflowError:
            finite = False
        if finite:
            return min(column), max(column)
    low = high = None
    for value in column:
        cls = value.__class__
        if cls is dict and _codec.is_tag(value):
            value = _codec.untag(value)
            cls = value.__class__
        if cls is float:
            if value != value or (not tagged and not math.isfinite(value)):
                continue
        elif cls is not int:
            continue
        if low is None or value < low:
            low = value
        if high is None or value > high:
            high = value
    return low, high
