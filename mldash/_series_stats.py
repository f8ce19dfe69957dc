"""Per-series statistics for ``mldash.runs`` and the dashboard's filter: how many
points a series has, its last one, and each numeric field's min and max, without
keeping its points.

They are kept (``mldash._read_cache``) with the offset they were computed up to, and
only the lines appended since are read; a data file rewritten (other lines where the
read ones were, or shorter than what was read) is read again from the start.
"""

from __future__ import annotations

import os
from typing import Any


from . import _codec, _filter
from ._read_cache import _cache, _recent
from ._runfolder import DATA_FILE, stored_rows

_BLOCK = 16 << 20
_TAIL = 64


class SeriesStats:
    """What a filter and the runs table need of one series, without keeping its points:
    how many there are, the last one, and each numeric field's min and max (NaN left out)."""

    __slots__ = ("dev", "ino", "size", "mtime_ns", "offset", "tail", "count", "last", "lows", "highs")

    def __init__(self) -> None:
        self.dev = self.ino = self.size = self.mtime_ns = self.offset = self.count = 0
        self.tail = b""
        self.last: dict | None = None
        self.lows: dict[str, Any] = {}
        self.highs: dict[str, Any] = {}

    def headline_key(self) -> str | None:
        """The field shown for the series: ``headline`` in _runfolder, by name."""
        return headline_key(self.last["data"]) if self.last else None

    def value(self, agg: str) -> Any:
        key = self.headline_key()
        if key is None:
            return _filter.MISSING
        if agg == "last":
            return self.last["data"].get(key, _filter.MISSING)
        table = self.lows if agg == "min" else self.highs
        return table.get(key, _filter.MISSING)


def headline_key(data: dict) -> str | None:
    """The field ``_runfolder.headline`` shows: ``value``, else the first number that is
    not step, epoch or timestamp, else the first field."""
    if "value" in data:
        return "value"
    for key, value in data.items():
        if key not in ("step", "epoch", "timestamp") and isinstance(value, (int, float)):
            return key
    return next(iter(data), None)


def series_stats(folder: str) -> SeriesStats | None:
    """The statistics of the series in ``folder`` (None when it has no data file),
    reading only what was appended since the last call."""
    path = folder + os.sep + DATA_FILE
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _cache.series.pop(path, None)
        return None
    stats = _cache.series.get(path)
    if stats is not None and (stats.dev, stats.ino) == (st.st_dev, st.st_ino):
        if st.st_size == stats.size and st.st_mtime_ns == stats.mtime_ns and (stats.offset == st.st_size or not _recent(st)):
            return stats
    else:
        stats = None
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        st = os.fstat(f.fileno())
        if stats is not None:
            if st.st_size < stats.offset:
                stats = None  # rewritten shorter: the lines we read are gone
            elif stats.offset >= len(stats.tail):
                f.seek(stats.offset - len(stats.tail))
                if f.read(len(stats.tail)) != stats.tail:
                    stats = None  # not the lines we read: a rewritten file
        if stats is None:
            stats = SeriesStats()
            stats.dev, stats.ino = st.st_dev, st.st_ino
        else:
            stats = _copy_stats(stats)  # a reader in another thread may hold the old one
        _scan(f, stats, st.st_size)
        stats.size, stats.mtime_ns = st.st_size, st.st_mtime_ns
    _cache.series[path] = stats
    return stats


def _copy_stats(old: SeriesStats) -> SeriesStats:
    new = SeriesStats()
    for name in SeriesStats.__slots__:
        setattr(new, name, getattr(old, name))
    new.lows, new.highs = dict(old.lows), dict(old.highs)
    return new


def _scan(f, stats: SeriesStats, size: int) -> None:
    """Fold the complete lines from ``stats.offset`` to ``size`` into ``stats``."""
    f.seek(stats.offset)
    pos = stats.offset
    rest = b""
    lows, highs = stats.lows, stats.highs
    while pos < size:
        block = f.read(min(_BLOCK, size - pos))
        if not block:
            break
        pos += len(block)
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        if not cut:
            continue
        complete = block[:cut]
        lines = complete[:-1].split(b"\n")
        rows = stored_rows(lines, _codec._TAG_BYTES in complete)
        first = stats.count
        stats.count += len(lines)
        for row in rows:
            if row is None:
                continue
            for key, value in row[1].items():
                cls = value.__class__
                if (cls is float or cls is int) and value == value:
                    low = lows.get(key)
                    if low is None or value < low:
                        lows[key] = value
                    high = highs.get(key)
                    if high is None or value > high:
                        highs[key] = value
        for i in range(len(rows) - 1, -1, -1):
            if rows[i] is not None:
                t, data = rows[i]
                stats.last = {"index": first + i, "timestamp": t / 1000, "data": data}
                break
        stats.offset += cut
        stats.tail = complete[-_TAIL:] if len(complete) >= _TAIL else (stats.tail + complete)[-_TAIL:]
