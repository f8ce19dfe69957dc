"""``LocalSource``: the dashboard's ``DataSource`` over a local root (what ``mldash ui`` serves).

Reads the files ``mldash.Experiment`` writes, never writes inside the root. Two
caches keep it fast on big roots and long series:

* one row per experiment, reused while its files keep their size and mtime, so
  the experiments view of 1,000 runs re-reads only the runs that changed;
* the parsed columns of every metric series viewed, grown by parsing only the
  bytes appended since (a running experiment costs its new lines per poll), and
  dropped least-recently-used past ``max_points``.

A filter (``list_experiments(filter=...)``, the dashboard's search box) reads each
run's documents from the row cache; ``metrics.<name>.min|max`` come from
``mldash._series_stats.series_stats`` (what ``mldash.runs`` uses: each series' minima and
maxima kept by the data file's identity and extended by the lines appended since, so
never a rescan per request, and the same values as ``mldash.runs(filter)``); each
listing drops those of the runs no longer found, so a long-lived dashboard whose runs
are removed keeps no more than the runs there are.

Big series are also kept on disk (``mldash.ui.colcache``, outside ROOT), so a
restarted dashboard reads their columns back instead of parsing again, and a
background thread loads the most recently written big series as soon as the
dashboard starts, and every series of a run as soon as its page is requested.
A big series the disk cache lacks is parsed by a helper process into the cache
(no contention for this process's GIL, so the page is served at full speed
meanwhile); other parsing on that thread steps aside, between ~1 MiB pieces,
while a request is being served.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable

from .. import _filter
from .._checks import check_level
from .._naming import metric_parts
from .._runfolder import (
    DATA_FILE,
    LOGS_DIR,
    META_FILE,
    METRICS_DIR,
    PARAMS_FILE,
    SUMMARY_FILE,
    find_experiments,
    last_point,
    load_meta,
    metric_folder,
    read_checkpoints,
    read_document,
    read_log_records,
    read_series,
    resolve,
)
from .._runfolder import metric_names as _metric_names
from .._series_stats import series_stats
from .._read_cache import forget_under
from .colcache import ColumnCache
from .loading import (
    CACHE_MIN_BYTES,
    COARSE_MIN_BYTES,
    SeriesEntry,
    catch_up,
    file_size,
    sample,
    scan_metrics,
    stamp,
)
from .series import view
from .source import row_lookup
from .warmer import Warmer


class LocalSource:
    """Read-only access to the experiments under ``root``.

    >>> source = LocalSource(".mldash")  # doctest: +SKIP
    >>> [row["prefix"] for row in source.list_experiments()]  # doctest: +SKIP
    ['vision/resnet/run-1']
    """

    def __init__(
        self,
        root: str | os.PathLike = ".mldash",
        *,
        max_points: int = 20_000_000,
        cache: ColumnCache | str | os.PathLike | None | bool = True,
        coarse_bytes: int | None = None,
        warm: bool | None = None,
    ) -> None:
        """``cache``: True for the default disk cache folder (``colcache.default_folder()``),
        a folder or a ``ColumnCache``, or False/None for none. ``coarse_bytes``: how much of
        a series may be left to parse before a chart gets a coarse view first (default
        ``$MLDASH_UI_COARSE_BYTES`` or ``COARSE_MIN_BYTES``; 0 turns coarse views off).
        ``warm``: load series in the background (default: unless ``$MLDASH_UI_WARM`` is 0)."""
        self.root = os.path.abspath(os.fspath(root))
        self.max_points = max_points
        if coarse_bytes is None:
            coarse_bytes = int(os.environ.get("MLDASH_UI_COARSE_BYTES") or COARSE_MIN_BYTES)
        self.coarse_bytes = coarse_bytes
        self.warms = os.environ.get("MLDASH_UI_WARM", "1") != "0" if warm is None else warm
        if cache is True:
            cache = ColumnCache()
        elif cache is False or cache is None:
            cache = None
        elif not isinstance(cache, ColumnCache):
            cache = ColumnCache(cache)
        self.cache: ColumnCache | None = cache
        self._rows: dict[str, tuple[tuple, dict]] = {}
        self._series: OrderedDict[str, SeriesEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._busy = 0  # requests being served; the warmer waits for 0
        self._warmer = Warmer(self)

    # ---- the DataSource protocol ---------------------------------------------------------
    def list_experiments(self, project: str | None = None, filter: str | None = None) -> list[dict]:
        """Every run under the root (of ``project``), or those ``filter`` matches
        (``mldash._filter``; a bad one raises its ``FilterError``)."""
        node = _filter.parse(filter)  # before any reading: a bad filter costs nothing
        with self.serving():
            return self._list_experiments(project, node)

    def _list_experiments(self, project: str | None, node=None) -> list[dict]:
        rows = []
        seen = set()
        for path in find_experiments(self.root):
            seen.add(path)
            try:
                row = self._row(path)
                if project is not None and row.get("project") != project:
                    continue
                if node is not None and not _filter.matches(node, self._lookup(path, row)):
                    continue
            except (OSError, ValueError):
                continue  # half-written or removed while we looked
            rows.append(row)
        for path in set(self._rows) - seen:
            self._rows.pop(path, None)
        forget_under(self.root, seen)  # the series statistics of removed runs, as mldash.runs()
        return rows

    def get_experiment(self, prefix: str) -> dict:
        with self.serving():
            return self._get_experiment(prefix)

    def _get_experiment(self, prefix: str) -> dict:
        path = self._path(prefix)
        row = dict(self._row(path))
        row["summary"] = read_document(os.path.join(path, SUMMARY_FILE))
        row["checkpoints"] = read_checkpoints(path)
        row["best_checkpoint"] = row.get("best_checkpoint")
        return row

    def metric_names(self, prefix: str) -> list[str]:
        return _metric_names(self._path(prefix))

    def read_metric(self, prefix: str, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        return read_series(self._metric_folder(prefix, name), start_index, limit)

    def read_logs(
        self, prefix: str, start_index: int = 0, limit: int = 1000, level: str | None = None
    ) -> dict:
        if level is not None:
            check_level(level)
        with self.serving():
            return read_log_records(os.path.join(self._path(prefix), LOGS_DIR), start_index, limit, level)

    def read_console(self, prefix: str, start_index: int = 0, limit: int = 1000) -> dict:
        from .._console import read_console

        with self.serving():
            return read_console(self._path(prefix), start_index, limit)

    # ---- optional methods the app uses when a source has them ----------------------------
    def list_files(self, prefix: str) -> list[dict]:
        """The run's saved files (``mldash._filestore.list_files``: live ones, ml-dash records)."""
        from .._filestore import list_files

        with self.serving():
            return list_files(self._path(prefix))

    def open_file(self, prefix: str, file_id: str) -> tuple[dict, str]:
        """(the record, the path of its bytes) of one live file of this run; KeyError for an
        id that is not one (another run's file included) or whose bytes are missing."""
        from .._filestore import blob_path, check_file_id, find_file

        try:
            check_file_id(file_id)
        except (TypeError, ValueError):
            raise KeyError("file") from None
        path = self._path(prefix)
        record = find_file(path, file_id)
        if record is None:
            raise KeyError("file")
        try:
            blob = blob_path(path, record.get("checksum"))
        except ValueError:
            raise KeyError("file") from None
        if not os.path.isfile(blob):
            raise KeyError("file")
        return record, blob

    def lookup(self, row: dict) -> Callable[[_filter.Key], Any]:
        """The filter's ``lookup(key)`` for one of this source's rows (``api/values``)."""
        return self._lookup(self._path(row["prefix"]), row)

    def metric_view(
        self,
        prefix: str,
        name: str,
        x: str = "index",
        lo: float | None = None,
        hi: float | None = None,
        width: int = 1000,
    ) -> dict:
        """The downsampled series for one chart (see ``mldash.ui.series.view``).

        The first time a big series is asked for while most of it is unparsed, the
        result is a coarse view (``"coarse": True``): a few lines at every data.idx
        mark, so the whole x range draws at once, while the parse goes on in the
        background; the next request waits for the parse and gets the real view.
        """
        with self.serving():  # the warmer steps aside (and lets go of this series' lock)
            folder = self._metric_folder(prefix, name)
            coarse = self._coarse_view(folder, x, lo, hi, width)
            if coarse is not None:
                coarse["name"] = name
                return coarse
            entry = self._load(folder)
            with entry.lock:
                out = view(entry.cols, x, lo, hi, width)
                out["x_choices"] = entry.cols.x_choices()
        self._warmer.save_later(entry)
        out["name"] = name
        return out

    def warm(self, prefix: str) -> None:
        """Start loading every series of ``prefix`` in the background (the charts come next).

        It goes ahead of the start-up warming (``warm_recent``).
        """
        if not self.warms:
            return
        try:
            path = self._path(prefix)
        except KeyError:
            return
        names = _metric_names(path)
        self._warmer.push([metric_folder(path, n) for n in names], urgent=True)

    def warm_recent(self, budget: int | None = None) -> None:
        """In the background: load the most recently written big series (running runs first).

        Loads series of at least ``CACHE_MIN_BYTES`` until about ``budget`` points
        (default half of ``max_points``), from the disk cache where it has them;
        ``mldash ui`` calls this at start. Also trims the disk cache.
        """
        if self.warms:
            self._warmer.push_recent(self.max_points // 2 if budget is None else budget)

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Block until the background loading has nothing left to do (tests, benchmarks)."""
        return self._warmer.wait_idle(timeout)

    def close(self) -> None:
        self._warmer.stop()

    # ---- loading, also for the warmer ---------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a request is being served (background loading waits meanwhile)."""
        return self._busy > 0

    @contextmanager
    def serving(self):
        """Held while a request is served; background loading steps aside meanwhile.

        The app holds it around every HTTP request (static files too), so the
        warmer's parsing does not slow the page down.
        """
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

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
        folder = os.path.join(self._path(prefix), METRICS_DIR, *parts)
        if not os.path.isfile(os.path.join(folder, DATA_FILE)):
            raise KeyError(name)
        return folder

    def _row(self, path: str) -> dict:
        """experiment.json + params + summary + latest metric points, cached on the files' stat."""
        series = scan_metrics(os.path.join(path, METRICS_DIR))
        names = sorted(series)
        key = (
            stamp(os.path.join(path, META_FILE)),
            stamp(os.path.join(path, PARAMS_FILE)),
            stamp(os.path.join(path, SUMMARY_FILE)),
            tuple((n, series[n]) for n in names),
        )
        cached = self._rows.get(path)
        if cached is not None and cached[0] == key:
            row = cached[1]
            if row.get("status") == "RUNNING":  # liveness is not in the files
                row = dict(row, stale=load_meta(path)["stale"])
            return row
        row = load_meta(path)
        row["params"] = read_document(os.path.join(path, PARAMS_FILE))
        row["summary"] = read_document(os.path.join(path, SUMMARY_FILE))
        metrics = {}
        for name in names:
            point = last_point(metric_folder(path, name))
            if point is not None:
                metrics[name] = point
        row["metrics"] = metrics
        row.pop("path", None)  # the browser has no use for server paths
        self._rows[path] = (key, row)
        return row

    # ---- what a filter reads --------------------------------------------------------------
    def _lookup(self, path: str, row: dict) -> Callable[[_filter.Key], Any]:
        def metric_stat(name: str, agg: str) -> Any:  # asked only for series the row lists
            try:
                stats = series_stats(metric_folder(path, name))
            except (OSError, ValueError):
                return _filter.MISSING
            return _filter.MISSING if stats is None else stats.value(agg)

        return row_lookup(row, metric_stat)

    def entry(self, folder: str) -> SeriesEntry:
        with self._lock:
            entry = self._series.get(folder)
            if entry is None:
                entry = self._series[folder] = SeriesEntry(folder)
            self._series.move_to_end(folder)
        return entry

    def _coarse_view(self, folder: str, x: str, lo, hi, width: int) -> dict | None:
        """A sampled view when much of the series is unparsed, else None (parse it now)."""
        if not self.coarse_bytes:
            return None
        data_path = os.path.join(folder, DATA_FILE)
        size = file_size(data_path)
        entry = self.entry(folder)
        if entry.coarse_sent or size - entry.state.offset < self.coarse_bytes:
            return None
        with entry.lock:  # the disk cache first: it may have (most of) the series
            self.try_cache(entry, data_path)
            if entry.coarse_sent or size - entry.state.offset < self.coarse_bytes:
                return None
            entry.coarse_sent = True
        sampled = sample(folder, size, max(10, min(int(width), 10000)) * 2)
        if sampled is None:
            return None  # no usable data.idx: parse it now
        cols, total = sampled
        if self.warms:
            self._warmer.push([folder], urgent=True)
        out = view(cols, x, lo, hi, width)
        out.update(total=total, exact=False, coarse=True, x_choices=cols.x_choices())
        return out

    def try_cache(self, entry: SeriesEntry, data_path: str) -> None:
        """Take the disk cache's columns for a series not read yet (caller holds entry.lock)."""
        if entry.tried_cache or entry.state.offset or self.cache is None:
            return
        entry.tried_cache = True
        hit = self.cache.load(data_path) if file_size(data_path) >= CACHE_MIN_BYTES else None
        if hit is not None:
            entry.cols, entry.state = hit
            entry.saved = entry.state.offset

    def _load(self, folder: str) -> SeriesEntry:
        """The series in ``folder``, parsed up to its current end."""
        return self.load_step(folder)[0]

    def load_step(self, folder: str, step_aside=None) -> tuple[SeriesEntry, bool]:
        """``_load``, except that ``step_aside()`` (the warmer's) is asked between pieces:
        when it says True the parse stops there (complete is False), to be continued
        by whoever comes next."""
        entry = self.entry(folder)
        data_path = os.path.join(folder, DATA_FILE)
        if step_aside is None:
            self._warmer.wait_parsed(folder)  # a helper process is reading it: cheaper to wait
        with entry.lock:
            self.try_cache(entry, data_path)
            complete = catch_up(entry, data_path, step_aside)
        self._evict()
        return entry, complete

    def save(self, entry: SeriesEntry) -> None:
        """Write ``entry`` to the disk cache when it is big and enough is new since the last write."""
        if self.cache is None:
            return
        with entry.lock:
            offset = entry.state.offset
            if offset < CACHE_MIN_BYTES or offset - entry.saved < max(CACHE_MIN_BYTES, entry.saved // 4):
                return
            self.cache.save(os.path.join(entry.folder, DATA_FILE), entry.cols, entry.state)
            entry.saved = offset  # also when it failed (read-only cache): retried after more growth

    def _evict(self) -> None:
        with self._lock:
            total = sum(e.cols.n for e in self._series.values())
            while total > self.max_points and len(self._series) > 1:
                _, old = self._series.popitem(last=False)
                total -= old.cols.n

