"""Each series' headline statistics, kept at ingest: what ``metrics.<name>.last|min|max`` reads.

The local reader (``mldash.runs``) shows a series by its headline field (the one
``_runfolder.headline`` picks from the newest point: ``value``, else the first
number that is not step, epoch or timestamp, else the first field); ``last`` is
that field's value in the newest point, ``min`` and ``max`` its smallest and
largest number over every point (NaN left out, ties keep the first seen). Since
the newest point decides the field, the minimum and maximum of every field that may
become it are kept, so the headline stays right whichever field it becomes.

Two columns of ``series`` hold them (JSON, NaN/inf and big ints tagged as stored):

- ``stats``: ``{"n": points folded in, "lows": {field: min}, "highs": {field: max},
  "full": [...]}``, what a batch is folded into (step, epoch and timestamp only once
  one of them is the headline, see ``Stats``);
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
from .._series_stats import headline_key

_PLAIN = {int, float}
_SKIPPED = ("step", "epoch", "timestamp")


class Stats:
    """``n`` points folded in; ``lows``/``highs`` the min and max of each field that may
    be the headline: every field but step, epoch and timestamp, and those of them in
    ``full`` (one becomes the headline only when a point has no other number; from then
    on it is kept too). ``pending`` (not stored): ``(field, upto)`` when such a field just
    became the headline, so points ``[0, upto)`` must still be read for it (``history``)."""

    __slots__ = ("n", "lows", "highs", "full", "last", "pending")

    def __init__(self, n: int = 0, lows: dict | None = None, highs: dict | None = None, full: Iterable[str] = (),
                 last: dict | None = None) -> None:
        self.n = n
        self.lows = lows if lows is not None else {}
        self.highs = highs if highs is not None else {}
        self.full = set(full)
        self.last = last  # the newest point's fields (as stored), when known
        self.pending: tuple | None = None

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
        return cls(stored["n"], dict(stored.get("lows") or {}), dict(stored.get("highs") or {}), stored.get("full") or ())

    def copy(self) -> "Stats":
        out = Stats(self.n, dict(self.lows), dict(self.highs), self.full, self.last)
        out.pending = self.pending
        return out

    def dumps(self) -> str:
        stored = {"n": self.n, "lows": self.lows, "highs": self.highs}
        if self.full:
            stored["full"] = sorted(self.full)
        return _codec.dumps(stored).decode()

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
        if tagged:
            fields = [_stored(f) for f in fields]
        last = fields[-1] if tagged else _stored(fields[-1])
        key = headline_key(last)
        if key in _SKIPPED and key not in out.full:  # kept from now on; the points before still to read
            out.full.add(key)
            if out.n:
                out.pending = (key, out.n)
        full = out.full
        out.n += len(fields)
        lows, highs = out.lows, out.highs
        first = fields[0]
        columns = None
        if not tagged and sum(map(len, fields)) == len(first) * len(fields):
            try:  # every point has the first one's fields (the usual batch): a column each, at C speed
                columns = [(name, list(map(itemgetter(name), fields))) for name in first if name not in _SKIPPED or name in full]
            except KeyError:
                columns = None
        if columns is None:
            names = [name for name in set().union(*fields) if name not in _SKIPPED or name in full]
            columns = [(name, [f[name] for f in fields if name in f]) for name in names]
        for name, column in columns:
            low, high = _extremes(column, tagged)
            if low is None:
                continue
            old = lows.get(name)
            if old is None or low < old:
                lows[name] = low
            old = highs.get(name)
            if old is None or high > old:
                highs[name] = high
        out.last = last
        return out

    def history(self, pages: Iterable[list]) -> "Stats":
        """``pending`` resolved: its field's numbers in the stored lines of points
        ``[0, upto)`` (pages of them, in order) folded in ahead of what is kept."""
        out = self.copy()
        name, _upto = out.pending
        out.pending = None
        low = high = None
        for lines in pages:
            if not lines:
                continue
            rows = orjson.loads(b"[" + b",".join(bytes(line) for line in lines) + b"]")
            tagged = any(_codec._TAG_BYTES in line for line in lines)
            page_low, page_high = _extremes([row[1][name] for row in rows if name in row[1]], tagged)
            if page_low is not None:  # an earlier page wins ties
                if low is None or page_low < low:
                    low = page_low
                if high is None or page_high > high:
                    high = page_high
        if low is not None:  # the earlier points win ties over the batch's
            if name not in out.lows or low <= out.lows[name]:
                out.lows[name] = low
            if name not in out.highs or high >= out.highs[name]:
                out.highs[name] = high
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


def _finite(value) -> bool:
    return value.__class__ is int or math.isfinite(value)


def _extremes(column: list, tagged: bool) -> tuple:
    """(min, max) of the numbers in ``column`` (NaN and bools left out; the first of
    equal ones, as a sequential scan keeps it); (None, None) without any."""
    if not tagged:
        # min() and max() over everything give the numbers' own unless a non-number or a
        # non-finite float (stored as null) is an extreme, or a type does not compare:
        # each of those takes the loop below. (A bool between the extremes changes neither.)
        try:
            low, high = min(column), max(column)
        except TypeError:
            pass
        else:
            if low.__class__ in _PLAIN and high.__class__ in _PLAIN and _finite(low) and _finite(high):
                return low, high
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
