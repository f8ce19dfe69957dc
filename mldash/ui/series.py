"""Metric series as numpy columns, and the spike-keeping downsampling the charts draw.

A chart is a few hundred pixels wide, so sending it a million points wastes the
network and the browser's time. ``view()`` picks, for every pixel-wide bucket of
the requested x range, the points holding the smallest and the largest y of each
field (plus the first and last point), so a one-point spike survives any zoom
level; once a range holds few enough points it returns them all, exactly.

``Columns`` is the parsed form of one ``data.jsonl`` (or of pages read from any
``DataSource``): it grows by appending, so a running experiment's new lines are
parsed once, not the whole file on every poll.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import orjson

from .. import _codec
from .._frames_native import field_columns
from .._native import pointparse
from .._runfolder import stored_rows

# Fields that are usually an x axis, not a value to plot.
AXIS_FIELDS = ("step", "epoch", "timestamp", "time")
# Below this many points per pixel bucket a view is sent exactly.
EXACT_POINTS_PER_PIXEL = 2


class Columns:
    """A growable table: ``index``, ``time`` (epoch seconds) and one float column per field.

    Missing values and non-numbers are NaN; ``numeric`` remembers which fields
    ever held a number, so a text field is never offered as a y axis.
    """

    def __init__(self) -> None:
        self.n = 0
        self._cap = 0
        self.index = np.empty(0)
        self.time = np.empty(0)
        self.fields: dict[str, np.ndarray] = {}
        self.numeric: set[str] = set()
        self._sorted: dict[str, tuple[int, np.ndarray | None]] = {}

    @classmethod
    def from_arrays(
        cls, index: np.ndarray, time: np.ndarray, fields: dict[str, np.ndarray], numeric: set[str]
    ) -> "Columns":
        """Columns over existing float64 arrays of one length (e.g. read from the disk cache).

        They are used as they are, even read-only; the first ``extend`` copies them
        into bigger ones.
        """
        cols = cls()
        cols.n = cols._cap = len(index)
        cols.index, cols.time = index, time
        cols.fields = dict(fields)
        cols.numeric = set(numeric) & set(fields)
        return cols

    def _grow(self, extra: int) -> None:
        need = self.n + extra
        if need <= self._cap:
            return
        cap = max(need, self._cap * 2, 1024)
        self.index = _resized(self.index, cap)
        self.time = _resized(self.time, cap)
        for key, col in self.fields.items():
            self.fields[key] = _resized(col, cap)
        self._cap = cap

    def extend(self, indices: list[int], times: list[float], rows: list[dict]) -> None:
        """Append points: their indices, write times (s) and field dicts."""
        count = len(rows)
        if not count:
            return
        self._grow(count)
        start, stop = self.n, self.n + count
        self.index[start:stop] = indices
        self.time[start:stop] = times
        keys = dict.fromkeys(rows[0])
        keys.update(dict.fromkeys(set().union(*rows)))  # C speed, first row's order first
        nan = math.nan
        for key in keys:
            col = self.fields.get(key)
            if col is None:
                col = np.full(self._cap, np.nan)
                self.fields[key] = col
            values = [row.get(key, nan) for row in rows]
            try:
                col[start:stop] = values
                self.numeric.add(key)
            except (TypeError, ValueError):  # strings, None, nested values
                numbers = [_number(v) for v in values]
                col[start:stop] = numbers
                if any(not math.isnan(v) for v in numbers):
                    self.numeric.add(key)
        for key, col in self.fields.items():
            if key not in keys:
                col[start:stop] = np.nan
        self.n = stop

    def extend_matrix(self, first_index: int, matrix: np.ndarray, keys: list[str]) -> None:
        """Append ``parse_uniform``'s result: time in ms, then one column per key."""
        count = len(matrix)
        if not count:
            return
        self._grow(count)
        start, stop = self.n, self.n + count
        self.index[start:stop] = np.arange(first_index, first_index + count)
        self.time[start:stop] = matrix[:, 0] / 1000
        for key in keys:
            if key not in self.fields:
                self.fields[key] = np.full(self._cap, np.nan)
        for j, key in enumerate(keys, 1):
            self.fields[key][start:stop] = matrix[:, j]
            self.numeric.add(key)
        for key, col in self.fields.items():
            if key not in keys:
                col[start:stop] = np.nan
        self.n = stop

    def extend_points(self, points: Iterable[dict]) -> None:
        """Append points in ``Metric.read()`` shape."""
        points = list(points)
        self.extend([p["index"] for p in points], [p["timestamp"] for p in points], [p["data"] for p in points])

    def column(self, name: str) -> np.ndarray:
        """``index``, ``time`` or a field, as a view of the first ``n`` values."""
        if name == "index":
            return self.index[: self.n]
        if name == "time":
            return self.time[: self.n]
        return self.fields[name][: self.n]

    def x_choices(self) -> list[str]:
        axes = [f for f in ("step", "epoch") if f in self.numeric]
        return ["index", *axes, "time"]

    def y_fields(self, x: str) -> list[str]:
        """The fields worth plotting against ``x``: numbers that are not an axis."""
        fields = [f for f in self.fields if f in self.numeric and f not in AXIS_FIELDS and f != x]
        if not fields:
            fields = [f for f in self.fields if f in self.numeric and f != x]
        return fields

    def order(self, x: str) -> np.ndarray | None:
        """Positions that sort rows by ``x`` (None when already sorted); cached per size."""
        cached = self._sorted.get(x)
        if cached is not None and cached[0] == self.n:
            return cached[1]
        xs = self.column(x)
        order = None
        if self.n > 1 and not bool(np.all(xs[1:] >= xs[:-1])):  # NaN compares False: sorts too
            order = np.argsort(xs, kind="stable")  # NaN last
        self._sorted[x] = (self.n, order)
        return order


def _resized(array: np.ndarray, cap: int) -> np.ndarray:
    out = np.full(cap, np.nan)
    out[: len(array)] = array
    return out


def _number(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def parse_lines(chunk: bytes, first_index: int) -> tuple[list[int], list[float], list[dict], int]:
    """Parse complete ``[ms_epoch, {fields}]`` lines; returns indices, times, rows, line count.

    ``chunk`` ends with a newline. A damaged line keeps its index (line number)
    but yields no point, as in ``mldash._runfolder.decode_points``.
    """
    if not chunk:
        return [], [], [], 0
    lines = chunk[:-1].split(b"\n")
    kept = [(first_index + i, row) for i, row in enumerate(stored_rows(lines, _codec._TAG_BYTES in chunk)) if row]
    return [i for i, _ in kept], [row[0] / 1000 for _, row in kept], [row[1] for _, row in kept], len(lines)


_NUMBER_BYTES = b"0123456789.eE+-, "
_FLATTEN = bytes.maketrans(b"[]}\n", b"   ,")


def parse_uniform(chunk: bytes) -> tuple[np.ndarray, list[str]] | None:
    """Fast path: when every line has the first line's numeric fields in its order.

    Turns ``[1712000000000,{"value":0.5,"step":3}]`` lines into a float matrix
    (time ms, then one column per field): ``bytes.replace`` drops the keys, so
    the chunk becomes one flat JSON array of numbers that orjson reads (with
    correct rounding) about three times as fast as a dict per line, and twice
    as fast as numpy's text parser. Returns None whenever any line differs (the
    caller then takes ``parse_lines``): strings, bools, null, tagged NaN, other
    keys or another key order all leave letters or quotes behind, and a missing
    field changes the count.
    """
    end = chunk.find(b"\n")
    if end < 0:
        return None
    try:
        first = orjson.loads(chunk[:end])
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(first, list) and len(first) == 2 and isinstance(first[1], dict) and first[1]):
        return None
    keys = list(first[1])
    for key, value in first[1].items():
        if value.__class__ not in (int, float) or orjson.dumps(key) != b'"' + key.encode() + b'"':
            return None
    lines = chunk.count(b"\n")
    if pointparse is not None:  # the DataFrames' exact line parser: the writer's shape or nothing
        out = np.empty((len(keys) + 1, lines), dtype=np.int64)
        kinds = bytearray(len(keys))
        taken, used = pointparse.parse_points(chunk, tuple(orjson.dumps(k) for k in keys), out, kinds)
        if taken != lines or used != len(chunk):
            return None
        matrix = np.empty((lines, len(keys) + 1), dtype=float)
        matrix[:, 0] = out[0]
        for j, column in enumerate(field_columns(np, out, kinds, lines)):
            matrix[:, j + 1] = column
        return matrix, keys
    # Every line "[t,{...}]": one of each bracket a line, and nothing after the "}]".
    if not (chunk.startswith(b"[") and chunk.count(b"\n[") == lines - 1 and chunk.count(b"}]\n") == lines
            and all(chunk.count(c) == lines for c in (b"[", b"]", b"{", b"}"))):
        return None
    text = chunk.replace(b",{" + orjson.dumps(keys[0]) + b":", b",")
    for key in keys[1:]:
        text = text.replace(b"," + orjson.dumps(key) + b":", b",")
    text = text.translate(_FLATTEN)
    if text.translate(None, _NUMBER_BYTES):
        return None  # strings, bools, null, tagged NaN, other keys: not uniform
    try:
        values = orjson.loads(b"[" + text[:-1] + b"]")  # the last newline became a comma
        matrix = np.array(values, dtype=float)
    except (orjson.JSONDecodeError, ValueError, TypeError, OverflowError):
        return None
    if matrix.ndim != 1 or matrix.size != lines * (len(keys) + 1):
        return None  # a line lacks a field
    times = values[:: len(keys) + 1]
    if not all(t.__class__ is int and -(2**63) <= t < 2**63 for t in times):
        return None  # a time that is not an int64 of milliseconds: not a point (stored_rows)
    return matrix.reshape(lines, len(keys) + 1), keys


def view(
    cols: Columns,
    x: str = "index",
    lo: float | None = None,
    hi: float | None = None,
    width: int = 1000,
    fields: list[str] | None = None,
) -> dict:
    """The points to draw ``fields`` against ``x`` over ``[lo, hi]`` on ``width`` pixels.

    Returns ``{"x", "fields", "exact", "in_range", "total", "x_min", "x_max",
    "points": {"x": [...], "index": [...], field: [...]}}``; NaN and ±inf are
    sent as null (a gap in the line).

    >>> cols = Columns(); cols.extend([0, 1, 2], [0.0, 1.0, 2.0], [{"value": 1}, {"value": 5}, {"value": 2}])
    >>> view(cols, "index", width=100)["points"]["value"]
    [1.0, 5.0, 2.0]
    """
    if x not in ("index", "time") and x not in cols.fields:
        raise KeyError(f"no field {x!r} in this series")
    width = max(10, min(int(width), 10000))
    if fields is None:
        fields = cols.y_fields(x)
    fields = [f for f in fields if f in cols.fields]
    xs = cols.column(x)
    order = cols.order(x)
    if order is not None:
        xs = xs[order]
    finite = int(np.count_nonzero(~np.isnan(xs)))  # sorted: NaN x values are last
    xs = xs[:finite]
    out = {"x": x, "fields": fields, "total": cols.n, "x_min": None, "x_max": None}
    if finite:
        out["x_min"], out["x_max"] = _json_number(xs[0]), _json_number(xs[-1])
    lo = xs[0] if lo is None and finite else lo
    hi = xs[-1] if hi is None and finite else hi
    if not finite or lo is None or hi is None or hi < lo:
        out.update(exact=True, in_range=0, points={"x": [], "index": [], **{f: [] for f in fields}})
        return out
    i0 = int(np.searchsorted(xs, lo, "left"))
    i1 = int(np.searchsorted(xs, hi, "right"))
    count = i1 - i0
    # One point beyond each edge, so a zoomed line runs to the border.
    e0, e1 = max(0, i0 - 1), min(finite, i1 + 1)
    if count <= width * EXACT_POINTS_PER_PIXEL or hi == lo:
        picked = np.arange(e0, e1)
        exact = True
    else:
        picked = _minmax_positions(xs, i0, i1, lo, hi, width, [_sorted_field(cols, f, order) for f in fields])
        picked = np.union1d(picked, [e0, e1 - 1])
        exact = False
    rows = picked if order is None else order[picked]
    points = {"x": _json_list(xs[picked]), "index": cols.index[rows].astype(np.int64).tolist()}
    for f in fields:
        points[f] = _json_list(cols.fields[f][rows])
    out.update(exact=exact, in_range=count, points=points)
    return out


def _sorted_field(cols: Columns, field: str, order: np.ndarray | None) -> np.ndarray:
    col = cols.column(field)
    return col if order is None else col[order]


def _minmax_positions(xs, i0, i1, lo, hi, buckets, ys) -> np.ndarray:
    """For each of ``buckets`` equal x slices of ``xs[i0:i1]``: where each y is smallest and largest."""
    edges = lo + (hi - lo) * (np.arange(buckets) / buckets)
    starts = np.searchsorted(xs[i0:i1], edges, "left")
    starts = np.unique(starts[starts < i1 - i0])  # drop empty buckets
    n = i1 - i0
    counts = np.diff(np.append(starts, n))
    owner = np.repeat(np.arange(len(starts)), counts)
    positions = np.arange(n)
    picked = [starts + i0]  # the first point of every bucket keeps the x spacing honest
    for y in ys:
        seg = y[i0:i1]
        bad = ~np.isfinite(seg)
        for reduce, fill in ((np.minimum, np.inf), (np.maximum, -np.inf)):
            values = np.where(bad, fill, seg)
            best = reduce.reduceat(values, starts)
            hit = np.where(values == best[owner], positions, n)
            first_hit = np.minimum.reduceat(hit, starts)
            picked.append(first_hit[first_hit < n] + i0)
    return np.unique(np.concatenate(picked))


def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_list(values: np.ndarray) -> list:
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values)
    out = values.tolist()
    if bad.any():
        for i in np.flatnonzero(bad):
            out[i] = None
    return out
