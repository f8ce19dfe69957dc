"""DataFrames: a series at full resolution, a run's history, the runs table.

pandas and pyarrow are the ``analysis`` extra, imported here only, when a frame
is asked for (``import mldash`` loads neither).

A series is read in blocks of ``BLOCK`` bytes, each turned into columns and the
blocks then concatenated, so memory stays near twice the frame's. Plain lines
(numbers under the same field names on every line) go through the compiled
parser (mldash/_frames_native.py, mldash/_pointparse.c) on two threads. Where it
was not built, or for lines it refuses, a plain block (numbers, bools and nulls,
no NaN, inf or big int) is parsed by Arrow's CSV reader in C++, after one byte
translation of the block (``[t,{"a":1,"b":2}]`` reads as ``t,"a",1,"b",2``);
any other block by orjson, one point at a time, with NaN, ±inf and integers
beyond 64 bits decoded as ``read()`` decodes them. Every way gives the same
frame.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Iterable


from . import _codec
from ._frames_native import NativeReader, plain_point
from ._native import pointparse
from ._runfolder import DATA_FILE, metric_folder, stored_rows

BLOCK = 32 << 20
FEW_LINES, FEW_BYTES = 64, 1 << 14  # fewer lines and bytes in a run: point by point (Arrow's set-up costs more)
INDEX, TIMESTAMP = "index", "timestamp"
X_CHOICES = ("step", "timestamp", "index")
EXTRA = "analysis"


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"{module} is needed for DataFrames: pip install 'mldash[{EXTRA}]' (pandas and pyarrow)"
        ) from None


def _arrow():
    _need("pyarrow")
    import pyarrow as pa
    import pyarrow.csv  # noqa: F401  (loads the submodule)

    return pa


# ---- one series -------------------------------------------------------------------------
class _Column:
    """One column as it is filled, block after block: straight into one numpy array
    while every block brings numbers or bools of one type with no gap; else as
    Arrow chunks (nulls where a point lacks the field), unified at the end."""

    __slots__ = ("array", "chunks")

    def __init__(self) -> None:
        self.array = None  # numpy, while it stays plain
        self.chunks: list | None = None


def _fresh(np, n: int, dtype):
    """A writable array of ``n`` items for a frame's column, in an anonymous mapping of
    its own (the kernel's zero pages, touched as they are filled; unmapped with the
    array). numpy's own arrays of this size ask for huge pages, and where the kernel
    makes them on demand (THP defrag "madvise") the first touch of 80 MB stalled for
    0.2 s (0.05 s this way), now and then for seconds."""
    dtype = np.dtype(dtype)
    size = max(n, 1) * dtype.itemsize
    # Private, as malloc's memory is: a forked child's writes stay its own.
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE) if hasattr(mmap, "MAP_PRIVATE") else mmap.mmap(-1, size)
    return np.frombuffer(memory, dtype=dtype)[:n]


class _Frame:
    """The columns of one series, filled block after block."""

    def __init__(self, pa, capacity: int) -> None:
        import numpy as np

        self.pa, self.np = pa, np
        self.capacity = max(capacity, 1)
        self.rows = 0
        self.stamps = _fresh(np, self.capacity, np.int64)
        self.columns: dict[str, _Column] = {}
        self.index_chunks: list = []
        self.contiguous = True  # index == row number (no damaged line skipped)

    def _grow(self, need: int) -> None:
        np = self.np
        size = max(need, self.capacity * 2)
        stamps = _fresh(np, size, np.int64)
        stamps[: self.rows] = self.stamps[: self.rows]
        self.stamps = stamps
        for column in self.columns.values():
            if column.array is not None:
                array = _fresh(np, size, column.array.dtype)
                array[: self.rows] = column.array[: self.rows]
                column.array = array
        self.capacity = size

    def _to_chunks(self, column: _Column) -> None:
        pa = self.pa
        if column.chunks is None:
            column.chunks = [pa.array(column.array[: self.rows])] if column.array is not None else (
                [pa.nulls(self.rows)] if self.rows else [])
            column.array = None

    def add(self, n: int, stamps, columns: dict[str, Any], index=None, first: int | None = None) -> None:
        """``n`` rows; their indices are ``index`` (an Arrow array) or ``first`` and on."""
        pa, np = self.pa, self.np
        if self.rows + n > self.capacity:
            self._grow(self.rows + n)
        lo, hi = self.rows, self.rows + n
        self.stamps[lo:hi] = np.asarray(stamps)
        for name, chunk in columns.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = _Column()
            if isinstance(chunk, np.ndarray):  # int64 or float64 in a buffer reused after this call
                plain, values = True, chunk
            else:
                plain = (isinstance(chunk, pa.Array) and chunk.null_count == 0
                         and chunk.type in (pa.int64(), pa.float64(), pa.bool_()))
                values = chunk.to_numpy(zero_copy_only=False) if plain else None
            if plain and column.chunks is None:
                if column.array is None and lo == 0:
                    column.array = _fresh(np, self.capacity, values.dtype)
                if column.array is not None and column.array.dtype == values.dtype:
                    column.array[lo:hi] = values
                    continue
            self._to_chunks(column)
            column.chunks.append(pa.array(values.copy()) if isinstance(chunk, np.ndarray) else chunk)
        for name, column in self.columns.items():
            if name not in columns:
                self._to_chunks(column)
                column.chunks.append(pa.nulls(n))
        first = lo if first is None else first
        if index is not None or first != lo:
            self.contiguous = False
        self.index_chunks.append(index if index is not None else (first, n))
        self.rows = hi


def _unify(pa, chunks: list):
    """One Arrow column (or a Python list, for text mixed with numbers) from its chunks."""
    types = {c.type for c in chunks if isinstance(c, pa.Array) and c.type != pa.null()}
    if any(not isinstance(c, pa.Array) for c in chunks):
        types.add(None)
    if not types:
        return pa.chunked_array(chunks, type=pa.null())
    if len(types) == 1 and None not in types:
        (kind,) = types
        return pa.chunked_array([c if c.type == kind else c.cast(kind) for c in chunks], type=kind)
    floats = _numbers_as_floats(pa, chunks)
    if floats is not None:
        return floats
    values: list = []  # mixed kinds: Python objects, as read() gives them
    for chunk in chunks:
        values.extend(chunk.to_pylist() if isinstance(chunk, pa.Array) else chunk)
    return values


# [t,{"a":1,"b":2}] reads as ,t,,"a",1,"b",2,, : columns _0, t, _1, then key, value pairs.
_TRANSLATE = bytes.maketrans(b"[]{}:", b",,,,,")


def _shown_key(key: str) -> str:
    """A field name as the translation leaves it inside its quotes."""
    return key.translate(str.maketrans("[]{}:", ",,,,,"))


def _fast_block(pa, block: bytes, cut: int, first: dict):
    """Arrow columns for the complete lines ``block[:cut]`` when its points are plain
    with the fields of ``first``, in that order, on every line; else None (then orjson
    reads the block). Plain: numbers, bools and nulls only, so the block holds exactly
    two quotes per field name per line (text, NaN and big-int tags add more)."""
    keys = list(first)
    if not keys or any(v is not None and v.__class__ not in (int, float, bool) for v in first.values()):
        return None
    if block.startswith(b"\n") or block.find(b"\n\n", 0, cut) >= 0:
        return None  # an empty line: Arrow's CSV reader skips it, read() counts it
    import pyarrow.csv as csv

    names = ["_0", "t", "_1"]
    for i in range(len(keys)):
        names += [f"k{i}", f"v{i}"]
    names += ["_2", "_3"]
    key_type = pa.dictionary(pa.int32(), pa.string())
    try:
        table = csv.read_csv(
            pa.py_buffer(block.translate(_TRANSLATE)).slice(0, cut),
            read_options=csv.ReadOptions(column_names=names, block_size=1 << 22),
            parse_options=csv.ParseOptions(quote_char='"', double_quote=False, escape_char=False),
            convert_options=csv.ConvertOptions(
                include_columns=names[1:2] + names[3:-2],
                column_types={"t": pa.int64(), **{f"k{i}": key_type for i in range(len(keys))}},
                null_values=["null"], true_values=["true"], false_values=["false"], strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # a line with other fields, or text
    rows = table.num_rows
    if block.count(b'"', 0, cut) != 2 * len(keys) * rows:
        return None
    columns = {}
    for i, key in enumerate(keys):
        cells = table.column(f"k{i}")
        if cells.null_count:
            return None
        for chunk in cells.chunks:
            if len(chunk) and chunk.dictionary.to_pylist() != [_shown_key(key)]:
                return None  # another field in this place on some line
        values = table.column(f"v{i}")
        if values.type not in (pa.int64(), pa.float64(), pa.bool_(), pa.null()):
            return None
        columns[key] = values.combine_chunks()
    return rows, table.column("t").combine_chunks(), columns


def _slow_block(pa, lines: list[bytes], tagged: bool, first_index: int):
    """Columns for any block, point by point (what ``read()`` decodes, the same way)."""
    rows = stored_rows(lines, tagged)
    kept = [(first_index + i, row) for i, row in enumerate(rows) if row is not None]
    n = len(kept)
    stamps = pa.array([row[0] for _, row in kept], type=pa.int64())
    fields: dict[str, list] = {}
    for j, (_, row) in enumerate(kept):
        for key, value in row[1].items():
            column = fields.get(key)
            if column is None:
                column = fields[key] = [None] * n
            column[j] = value
    columns = {key: _column(pa, values) for key, values in fields.items()}
    index = None if n == len(rows) else pa.array([i for i, _ in kept], type=pa.int64())
    return n, stamps, columns, index


_NONE = type(None)


def _column(pa, values: list):
    """One block's values of a field: an Arrow array where Arrow holds them as they
    are, else the values (Python objects); a bool among numbers or text stays a bool
    (Arrow would make True 1.0), and ints and floats together are left to ``_unify``,
    which sees the whole column."""
    kinds = {v.__class__ for v in values}
    if bool in kinds and kinds - {bool, _NONE}:
        return values
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return values  # text mixed with numbers, an int beyond 64 bits


def _numbers_as_floats(pa, chunks: list):
    """The column's chunks as float64 where the column is numbers with a float among
    them (as pandas makes it; an int past 2**53 rounds); else None."""
    arrow = {c.type for c in chunks if isinstance(c, pa.Array)}
    listed = {v.__class__ for c in chunks if not isinstance(c, pa.Array) for v in c}
    if not (arrow <= {pa.int64(), pa.float64(), pa.null()} and listed <= {int, float, _NONE}):
        return None
    if pa.float64() not in arrow and float not in listed:
        return None  # ints only (one beyond 64 bits): Python objects
    out = []
    for chunk in chunks:
        if isinstance(chunk, pa.Array):
            out.append(chunk.cast(pa.float64(), safe=False))
            continue
        try:
            out.append(pa.array([float(v) if v.__class__ is int else v for v in chunk], type=pa.float64()))
        except OverflowError:  # an int beyond a double
            return None
    return pa.chunked_array(out, type=pa.float64())


def _read(folder: str, block_size: int = BLOCK) -> _Frame:
    """The series in ``folder``, read block by block into a _Frame."""
    from ._series import SeriesReader

    pa = _arrow()
    path = os.path.join(folder, DATA_FILE)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return _Frame(pa, 0)
    with f:
        size = os.fstat(f.fileno()).st_size
        out = _Frame(pa, SeriesReader(folder).count())  # counted after our size: enough room
        count = 0
        native = NativeReader(lambda frame, lines, n: _add_lines(pa, frame, lines, n)) if pointparse else None
        try:
            for buf, end in _blocks(f, size, block_size):
                if native is None:
                    count = _add_lines(pa, out, bytes(memoryview(buf)[:end]), count)
                else:
                    count = native.add_block(out, buf, end, count)
        finally:
            if native is not None:
                native.close()
    return out


def _blocks(f, size: int, block_size: int):
    """The file's complete lines up to ``size``, about ``block_size`` bytes at a time,
    as (buffer, end): ``buffer[:end]``, in one buffer reused for the next block."""
    buf = bytearray(block_size)
    pos = 0
    while pos < size:
        f.seek(pos)
        want = min(len(buf), size - pos)
        with memoryview(buf) as view:
            got = f.readinto(view[:want])
        if not got:
            return
        cut = buf.rfind(b"\n", 0, got) + 1
        if not cut:
            if pos + got >= size or got < want:
                return  # a last line without its newline (still being written), or the file shrank
            buf = bytearray(2 * len(buf))  # one line longer than a block
            continue
        yield buf, cut
        pos += cut


def _add_lines(pa, out: _Frame, lines: bytes, count: int) -> int:
    """Complete lines into ``out`` by Arrow's CSV reader where they are plain, else
    point by point; returns the count of lines read so far."""
    fast = None
    few = len(lines) < FEW_BYTES and lines.count(b"\n") < FEW_LINES
    first = None if few else plain_point(lines[: lines.find(b"\n")])
    if first is not None:
        fast = _fast_block(pa, lines, len(lines), first)
    if fast is not None:
        n, stamps, columns = fast
        out.add(n, stamps, columns, first=count)
        return count + n
    split = lines[:-1].split(b"\n")
    n, stamps, columns, index = _slow_block(pa, split, _codec._TAG_BYTES in lines, count)
    out.add(n, stamps, columns, index, first=count)
    return count + len(split)


def series_frame(folder: str, block_size: int = BLOCK):
    """Every point of the series in ``folder``: a pandas DataFrame indexed by ``index``
    (the point's index, as in ``read()``), with ``timestamp`` (the write time, UTC,
    millisecond resolution) and one column per field. A field absent from a point is
    null there (NaN in a number column); a column of ints and floats is float64, as
    pandas makes it; a column mixing text and numbers, or of ints with one beyond 64
    bits, holds Python objects as ``read()`` returns them.

    A field of your own named ``timestamp`` or ``index`` keeps its name, and mldash's
    column becomes ``_timestamp`` (the index ``_index``).
    """
    _need("pandas")
    import pandas as pd

    pa = _arrow()
    data = _read(folder, block_size)
    rows = data.rows
    time_name = "_timestamp" if TIMESTAMP in data.columns else TIMESTAMP
    index_name = "_index" if INDEX in data.columns else INDEX
    stamps = data.stamps[:rows].view("M8[ms]")
    data.stamps = None
    columns = {time_name: pd.Series(stamps, copy=False).dt.tz_localize("UTC")}
    del stamps
    for name in list(data.columns):
        column = data.columns.pop(name)
        if column.chunks is None:
            columns[name] = column.array[:rows]
            continue
        unified = _unify(pa, column.chunks)
        column.chunks = None
        if isinstance(unified, list):
            columns[name] = pd.Series(unified, dtype=object)
        else:
            columns[name] = unified.to_pandas(self_destruct=True)
    frame = pd.DataFrame(columns, copy=False)
    del columns
    if data.contiguous:
        frame.index = pd.RangeIndex(rows, name=index_name)
    else:
        parts = [
            pa.array(range(chunk[0], chunk[0] + chunk[1]), type=pa.int64()) if isinstance(chunk, tuple) else chunk
            for chunk in data.index_chunks
        ]
        frame.index = pd.Index(pa.chunked_array(parts, type=pa.int64()).to_numpy(), name=index_name)
    return frame


def series_polars(folder: str):
    """The series as a polars DataFrame (``index`` a column); polars must be installed."""
    _need("polars")
    import polars as pl

    return _polars(pl, series_frame(folder), index=True)


def _polars(pl, frame, index: bool):
    """A pandas frame as polars: each column as polars converts it, but a column of
    Python objects (text mixed with numbers, ints beyond 64 bits), which Arrow cannot
    hold, becomes polars' Object column of the same values."""
    columns = []
    if index:
        columns.append(pl.Series(frame.index.name, frame.index.to_numpy()))
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            columns.append(pl.from_pandas(column).alias(str(name)))
            continue
        values = column.tolist()
        try:
            columns.append(pl.Series(str(name), values, strict=True))
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            columns.append(pl.Series(str(name), values, dtype=pl.Object))
    return pl.DataFrame(columns)


# ---- a run's series joined --------------------------------------------------------------
def history(path: str, names: Iterable[str] | None = None, x: str = "step"):
    """The series of the run at ``path`` joined on ``x`` ("step", "timestamp" or
    "index"): an outer join, indexed by ``x`` and sorted by it.

    A series' headline field (``value``, else its first number other than step,
    epoch and timestamp) is the column named after the series; its other fields
    are ``<series>.<field>``. A point logged twice at one ``x`` keeps the last one.
    Without ``names``, every series of the run that has ``x`` (with x="step": the
    series with a ``step`` field); a series named that lacks ``x`` is a ValueError.
    """
    from ._read_cache import _metric_names

    return joined_history(lambda name: series_frame(metric_folder(path, name)), _metric_names(path), names, x)


def joined_history(frame_of, all_names: list[str], names: Iterable[str] | None, x: str):
    """``history`` over any source: ``frame_of(name)`` gives a series' frame."""
    if x not in X_CHOICES:
        raise ValueError(f"x must be one of {', '.join(X_CHOICES)}; got {x!r}")
    _need("pandas")
    import pandas as pd

    from ._naming import metric_parts
    from ._series_stats import headline_key

    explicit = names is not None
    if names is None:
        names = all_names
    elif isinstance(names, str):
        names = [names]
    names = list(names)
    for name in names:
        metric_parts(name)
    frames = []
    for name in names:
        frame = frame_of(name)
        time_name = "_timestamp" if "_timestamp" in frame.columns else TIMESTAMP
        if x == "step":
            if "step" not in frame.columns:
                if explicit:
                    raise ValueError(f"series {name!r} has no step field; use x='timestamp' or x='index'")
                continue
            frame = frame[frame["step"].notna()]
            keys = frame.pop("step")
            frame = frame.drop(columns=[time_name])
        elif x == "timestamp":
            keys = frame.pop(time_name)
        else:
            keys = pd.Series(frame.index, index=frame.index)
            frame = frame.drop(columns=[time_name])
        if not len(frame.columns):
            continue
        head = headline_key({c: _first_valid(frame[c]) for c in frame.columns})
        frame.columns = [name if c == head else f"{name}.{c}" for c in frame.columns]
        frame.index = pd.Index(keys.to_numpy(), name=x)
        frame = frame[~frame.index.duplicated(keep="last")]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(index=pd.Index([], name=x))
    joined = pd.concat(frames, axis=1, join="outer", sort=True)
    joined.index.name = x
    return joined


def points_frame(points: list[dict]):
    """A frame in ``series_frame``'s shape from ``read()`` points (a server's series)."""
    import pandas as pd

    fields = [p["data"] for p in points]
    frame = pd.DataFrame.from_records(fields) if fields else pd.DataFrame()
    time_name = "_timestamp" if TIMESTAMP in frame.columns else TIMESTAMP
    stamps = pd.to_datetime(pd.Series([p["timestamp"] for p in points], dtype="float64") * 1000, unit="ms", utc=True)
    frame.insert(0, time_name, stamps.dt.floor("ms"))
    frame.index = pd.Index([p["index"] for p in points], name="_index" if INDEX in frame.columns else INDEX)
    return frame


def _first_valid(column) -> Any:
    i = column.first_valid_index()
    return None if i is None else column.loc[i]


# ---- the runs table -------------------------------------------------------------------------
RUN_COLUMNS = ("prefix", "project", "folder", "name", "status", "created", "started", "ended", "duration",
               "tags", "description")


def _run_row(run) -> dict:
    from ._filter import MISSING

    row = {
        "prefix": run.prefix, "project": run.project, "folder": run.folder, "name": run.name,
        "status": run.status, "created": run.created, "started": run.started, "ended": run.ended,
        "duration": run.duration, "tags": run.tags, "description": run.description,
    }
    for key, value in run.params.items():
        row["params." + key] = value
    for key, value in run.summary.items():
        row["summary." + key] = value
    for name, stats in run.metric_stats().items():
        for agg in ("last", "min", "max"):
            value = stats.value(agg)
            row[f"metrics.{name}.{agg}"] = None if value is MISSING else value
    return row


def runs_frame(runs: Iterable):
    """One row per run: prefix, project, folder, name, status, created, started and ended
    (UTC times), duration (seconds), tags, description, then ``params.*``,
    ``summary.*`` and ``metrics.<name>.last|min|max`` (of the series' headline field),
    each group sorted."""
    _need("pandas")
    import pandas as pd

    rows = [_run_row(run) for run in runs]
    extra = sorted({k for row in rows for k in row} - set(RUN_COLUMNS), key=_column_order)
    columns = list(RUN_COLUMNS) + extra
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for name in ("created", "started", "ended"):
        frame[name] = pd.to_datetime(frame[name].astype("float64"), unit="s", utc=True)
    frame["duration"] = frame["duration"].astype("float64")
    return frame


def _column_order(column: str) -> tuple:
    group = {"params": 0, "summary": 1, "metrics": 2}[column.split(".", 1)[0]]
    if group == 2:
        name, agg = column[len("metrics."):].rsplit(".", 1)
        return (group, name, ("last", "min", "max").index(agg))
    return (group, column, 0)


def runs_polars(runs: Iterable):
    """``runs_frame`` as a polars DataFrame; polars must be installed."""
    _need("polars")
    import polars as pl

    return _polars(pl, runs_frame(runs), index=False)
