"""``LocalSource``: the dashboard's ``DataSource`` over a local root (what ``mldash ui`` serves).

Reads the files ``mldash.Experiment`` writes, never writes. Two caches keep it
fast on big roots and long series:

* one row per experiment, reused while its files keep their size and mtime, so
  the experiments view of 1,000 runs re-reads only the runs that changed;
* the parsed columns of every metric series viewed, grown by parsing only the
  bytes appended since (a running experiment costs its new lines per poll), and
  dropped least-recently-used past ``max_points``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from .. import _codec
from .._naming import metric_parts
from .._series import SeriesReader
from ..experiment import META_FILE, read_log_records
from ..metrics import last_point, read_series
from ..params import read_document
from ..store import find_experiments, load_meta, resolve
from ..store import metric_names as _metric_names
from .series import Columns, parse_lines, parse_uniform, view

LEVELS = ("debug", "info", "warn", "error", "fatal")
_READ_BLOCK = 64 << 20  # parse a huge file in pieces so memory stays flat


class _Series:
    """One metric file's parsed columns and how far into the file they go."""

    __slots__ = ("cols", "offset", "lines", "inode", "lock")

    def __init__(self) -> None:
        self.cols = Columns()
        self.offset = 0
        self.lines = 0
        self.inode = None
        self.lock = threading.Lock()


class LocalSource:
    """Read-only access to the experiments under ``root``.

    >>> source = LocalSource(".mldash")  # doctest: +SKIP
    >>> [row["prefix"] for row in source.list_experiments()]  # doctest: +SKIP
    ['vision/resnet/run-1']
    """

    def __init__(self, root: str | os.PathLike = ".mldash", *, max_points: int = 20_000_000) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.max_points = max_points
        self._rows: dict[str, tuple[tuple, dict]] = {}
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._lock = threading.Lock()
        self._warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mldash-ui-warm")

    # ---- the DataSource protocol ---------------------------------------------------------
    def list_experiments(self, project: str | None = None) -> list[dict]:
        rows = []
        seen = set()
        for path in find_experiments(self.root):
            seen.add(path)
            try:
                row = self._row(path)
            except (OSError, ValueError):
                continue  # half-written or removed while we looked
            if project is None or row.get("project") == project:
                rows.append(row)
        for path in set(self._rows) - seen:
            self._rows.pop(path, None)
        return rows

    def get_experiment(self, prefix: str) -> dict:
        path = self._path(prefix)
        row = dict(self._row(path))
        row["summary"] = read_document(os.path.join(path, "summary.json"))
        lines, _ = SeriesReader(os.path.join(path, "checkpoints"), "checkpoints").lines()
        row["checkpoints"] = [_codec.loads(line) for line in lines if line]
        row["best_checkpoint"] = row.get("best_checkpoint")
        return row

    def metric_names(self, prefix: str) -> list[str]:
        return _metric_names(self._path(prefix))

    def read_metric(self, prefix: str, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        return read_series(self._metric_folder(prefix, name), start_index, limit)

    def read_logs(
        self, prefix: str, start_index: int = 0, limit: int = 1000, level: str | None = None
    ) -> dict:
        if level is not None and level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        return read_log_records(os.path.join(self._path(prefix), "logs"), start_index, limit, level)

    # ---- optional methods the app uses when a source has them ----------------------------
    def metric_view(
        self,
        prefix: str,
        name: str,
        x: str = "index",
        lo: float | None = None,
        hi: float | None = None,
        width: int = 1000,
    ) -> dict:
        """The downsampled series for one chart (see ``mldash.ui.series.view``)."""
        entry = self._load(self._metric_folder(prefix, name))
        with entry.lock:
            out = view(entry.cols, x, lo, hi, width)
            out["x_choices"] = entry.cols.x_choices()
        out["name"] = name
        return out

    def warm(self, prefix: str) -> None:
        """Start parsing every series of ``prefix`` in the background (the charts come next)."""
        try:
            path = self._path(prefix)
        except KeyError:
            return
        for name in _metric_names(path):
            self._warmer.submit(self._load, os.path.join(path, "metrics", *name.split("/")))

    def close(self) -> None:
        self._warmer.shutdown(wait=False, cancel_futures=True)

    # ---- internals -----------------------------------------------------------------------
    def _path(self, prefix: str) -> str:
        try:
            return resolve(self.root, prefix)
        except (FileNotFoundError, ValueError, TypeError):
            raise KeyError(prefix) from None

    def _metric_folder(self, prefix: str, name: str) -> str:
        try:
            parts = metric_parts(name)
        except (ValueError, TypeError):
            raise KeyError(name) from None
        folder = os.path.join(self._path(prefix), "metrics", *parts)
        if not os.path.isfile(os.path.join(folder, "data.jsonl")):
            raise KeyError(name)
        return folder

    def _row(self, path: str) -> dict:
        """experiment.json + params + latest metric points, cached on the files' stat."""
        series = _scan_metrics(os.path.join(path, "metrics"))
        names = sorted(series)
        key = (
            _stamp(os.path.join(path, META_FILE)),
            _stamp(os.path.join(path, "parameters", "parameters.json")),
            tuple((n, series[n]) for n in names),
        )
        cached = self._rows.get(path)
        if cached is not None and cached[0] == key:
            row = cached[1]
            if row.get("status") == "RUNNING":  # liveness is not in the files
                row = dict(row, stale=load_meta(path)["stale"])
            return row
        row = load_meta(path)
        row["params"] = read_document(os.path.join(path, "parameters", "parameters.json"))
        metrics = {}
        for name in names:
            point = last_point(os.path.join(path, "metrics", *name.split("/")))
            if point is not None:
                metrics[name] = point
        row["metrics"] = metrics
        row.pop("path", None)  # the browser has no use for server paths
        self._rows[path] = (key, row)
        return row

    def _load(self, folder: str) -> _Series:
        """The series in ``folder``, parsed up to its current end."""
        with self._lock:
            entry = self._series.get(folder)
            if entry is None:
                entry = self._series[folder] = _Series()
            self._series.move_to_end(folder)
        with entry.lock:
            _catch_up(entry, os.path.join(folder, "data.jsonl"))
        self._evict()
        return entry

    def _evict(self) -> None:
        with self._lock:
            total = sum(e.cols.n for e in self._series.values())
            while total > self.max_points and len(self._series) > 1:
                _, old = self._series.popitem(last=False)
                total -= old.cols.n


def _scan_metrics(base: str, prefix: str = "") -> dict[str, tuple[int, int]]:
    """``{metric name: (size, mtime_ns) of its data.jsonl}``; one scandir per folder."""
    found: dict[str, tuple[int, int]] = {}
    try:
        entries = list(os.scandir(base))
    except OSError:
        return found
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            found.update(_scan_metrics(entry.path, prefix + entry.name + "/"))
        elif entry.name == "data.jsonl" and prefix:
            st = entry.stat()
            found[prefix[:-1]] = (st.st_size, st.st_mtime_ns)
    return found


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _catch_up(entry: _Series, data_path: str) -> None:
    """Parse the complete lines appended since the last call (all of them the first time)."""
    try:
        f = open(data_path, "rb")
    except FileNotFoundError:
        return
    with f:
        st = os.fstat(f.fileno())
        if st.st_ino != entry.inode or st.st_size < entry.offset:
            entry.cols, entry.offset, entry.lines, entry.inode = Columns(), 0, 0, st.st_ino
        while entry.offset < st.st_size:
            f.seek(entry.offset)
            chunk = f.read(min(_READ_BLOCK, st.st_size - entry.offset))
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                break  # a line still being written
            chunk = chunk[:cut]
            fast = parse_uniform(chunk)
            if fast is not None:
                entry.cols.extend_matrix(entry.lines, *fast)
                entry.lines += len(fast[0])
            else:
                indices, times, rows, count = parse_lines(chunk, entry.lines)
                entry.cols.extend(indices, times, rows)
                entry.lines += count
            entry.offset += cut
