"""``LocalSource``: the dashboard's ``DataSource`` over a local root (what ``mldash ui`` serves).

Reads the files ``mldash.Experiment`` writes, never writes inside the root. Two
caches keep it fast on big roots and long series:

* one row per experiment, reused while its files keep their size and mtime, so
  the experiments view of 1,000 runs re-reads only the runs that changed;
* the parsed columns of every metric series viewed, grown by parsing only the
  bytes appended since (a running experiment costs its new lines per poll), and
  dropped least-recently-used past ``max_points``.

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

import mmap
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from contextlib import contextmanager

import numpy as np
import orjson

from .. import _codec
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
from .._series import STRIDE
from .colcache import ColumnCache, State, read_tail
from .series import Columns, parse_lines, parse_uniform, view

_READ_BLOCK = 64 << 20  # read a huge file in pieces so memory stays flat
# Parse in pieces of about this size: they stay in the CPU cache (faster than one big
# piece), a line that needs the slow parser slows only its piece, and the warmer can
# step aside between pieces.
_PARSE_BLOCK = 1 << 20
# Series files at least this big go to the disk cache and are loaded at start-up; smaller
# ones parse in a few milliseconds.
CACHE_MIN_BYTES = 1 << 20
# A chart first asked for while more than this much of its file is still unparsed (a first
# view with no disk cache) gets a coarse view at once: lines sampled across the whole file
# via data.idx, marked "coarse", while the rest is parsed in the background; the page asks
# again at once and that request waits for the parse.
COARSE_MIN_BYTES = 16 << 20
_SAMPLE_LINES = 4  # lines read at each sampled data.idx mark


class _Series:
    """One metric file's parsed columns and how far into the file they go."""

    __slots__ = ("folder", "cols", "state", "lock", "saved", "tried_cache", "coarse_sent")

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.cols = Columns()
        self.state = State()
        self.lock = threading.Lock()
        self.saved = 0  # bytes of the file that the disk cache holds
        self.tried_cache = False
        self.coarse_sent = False  # one coarse view; the next request waits for the parse


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
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._lock = threading.Lock()
        self._busy = 0  # requests being served; the warmer waits for 0
        self._warmer = _Warmer(self)

    # ---- the DataSource protocol ---------------------------------------------------------
    def list_experiments(self, project: str | None = None) -> list[dict]:
        with self.serving():
            return self._list_experiments(project)

    def _list_experiments(self, project: str | None) -> list[dict]:
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

    # ---- internals -----------------------------------------------------------------------
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
        """experiment.json + params + latest metric points, cached on the files' stat."""
        series = _scan_metrics(os.path.join(path, METRICS_DIR))
        names = sorted(series)
        key = (
            _stamp(os.path.join(path, META_FILE)),
            _stamp(os.path.join(path, PARAMS_FILE)),
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
        metrics = {}
        for name in names:
            point = last_point(metric_folder(path, name))
            if point is not None:
                metrics[name] = point
        row["metrics"] = metrics
        row.pop("path", None)  # the browser has no use for server paths
        self._rows[path] = (key, row)
        return row

    def _entry(self, folder: str) -> _Series:
        with self._lock:
            entry = self._series.get(folder)
            if entry is None:
                entry = self._series[folder] = _Series(folder)
            self._series.move_to_end(folder)
        return entry

    def _coarse_view(self, folder: str, x: str, lo, hi, width: int) -> dict | None:
        """A sampled view when much of the series is unparsed, else None (parse it now)."""
        if not self.coarse_bytes:
            return None
        data_path = os.path.join(folder, DATA_FILE)
        size = _size(data_path)
        entry = self._entry(folder)
        if entry.coarse_sent or size - entry.state.offset < self.coarse_bytes:
            return None
        with entry.lock:  # the disk cache first: it may have (most of) the series
            self._try_cache(entry, data_path)
            if entry.coarse_sent or size - entry.state.offset < self.coarse_bytes:
                return None
            entry.coarse_sent = True
        sample = _sample(folder, size, max(10, min(int(width), 10000)) * 2)
        if sample is None:
            return None  # no usable data.idx: parse it now
        cols, total = sample
        if self.warms:
            self._warmer.push([folder], urgent=True)
        out = view(cols, x, lo, hi, width)
        out.update(total=total, exact=False, coarse=True, x_choices=cols.x_choices())
        return out

    def _try_cache(self, entry: _Series, data_path: str) -> None:
        """Take the disk cache's columns for a series not read yet (caller holds entry.lock)."""
        if entry.tried_cache or entry.state.offset or self.cache is None:
            return
        entry.tried_cache = True
        hit = self.cache.load(data_path) if _size(data_path) >= CACHE_MIN_BYTES else None
        if hit is not None:
            entry.cols, entry.state = hit
            entry.saved = entry.state.offset

    def _load(self, folder: str) -> _Series:
        """The series in ``folder``, parsed up to its current end."""
        return self._load_step(folder)[0]

    def _load_step(self, folder: str, step_aside=None) -> tuple[_Series, bool]:
        """``_load``, except that ``step_aside()`` (the warmer's) is asked between pieces:
        when it says True the parse stops there (complete is False), to be continued
        by whoever comes next."""
        entry = self._entry(folder)
        data_path = os.path.join(folder, DATA_FILE)
        if step_aside is None:
            self._warmer.wait_parsed(folder)  # a helper process is reading it: cheaper to wait
        with entry.lock:
            self._try_cache(entry, data_path)
            complete = _catch_up(entry, data_path, step_aside)
        self._evict()
        return entry, complete

    def _save(self, entry: _Series) -> None:
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
        elif entry.name == DATA_FILE and prefix:
            st = entry.stat()
            found[prefix[:-1]] = (st.st_size, st.st_mtime_ns)
    return found


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _catch_up(entry: _Series, data_path: str, step_aside=None) -> bool:
    """Parse the complete lines appended since the last call (all of them the first time).

    Returns False when ``step_aside()`` stopped it early.
    """
    complete = True
    try:
        f = open(data_path, "rb")
    except FileNotFoundError:
        return complete
    with f:
        fd = f.fileno()
        st = os.fstat(fd)
        state = entry.state
        if not state.inode or not state.still_matches(fd, st):  # new, replaced or rewritten
            entry.cols, entry.saved = Columns(), 0
            state = entry.state = State(st.st_dev, st.st_ino)
        start = state.offset
        while state.offset < st.st_size:
            f.seek(state.offset)
            chunk = f.read(min(_READ_BLOCK, st.st_size - state.offset))
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                break  # a line still being written
            pos = 0
            while pos < cut:
                end = cut if cut - pos <= _PARSE_BLOCK else chunk.rfind(b"\n", pos, pos + _PARSE_BLOCK) + 1
                if end <= pos:  # one line longer than a piece
                    end = chunk.find(b"\n", pos) + 1
                _parse_piece(entry, chunk[pos:end])
                state.offset += end - pos
                pos = end
                if step_aside is not None and pos < cut and step_aside():
                    complete = False
                    break
            if not complete:
                break
        if state.offset != start:
            state.tail = read_tail(fd, state.offset)
    return complete


def _sample(folder: str, size: int, want: int) -> tuple[Columns, int] | None:
    """``_SAMPLE_LINES`` lines at up to ``want`` evenly spread data.idx marks, plus the last
    lines; and the series' line count. None when data.idx is missing or does not fit."""
    data_path = os.path.join(folder, DATA_FILE)
    try:
        with open(os.path.join(folder, "data.idx"), "rb") as f:
            raw = f.read()
        f = open(data_path, "rb")
    except OSError:
        return None
    with f:
        marks = np.frombuffer(raw[: len(raw) // 8 * 8], "<u8")
        marks = marks[marks < size]
        if len(marks) < 2 or marks[0] != 0 or np.any(np.diff(marks.astype(np.int64)) <= 0):
            return None
        try:  # slices of a mapping: no system call (and no GIL hand-over) per sample
            data = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        except (AttributeError, TypeError, ValueError, OSError):
            return None
        with data:
            last = int(marks[-1])
            if data[last - 1 : last] != b"\n":
                return None  # not this file's index
            rest = data[last:size]
            rest = rest[: rest.rfind(b"\n") + 1]
            total = (len(marks) - 1) * STRIDE + rest.count(b"\n")
            indices, lines = [], []
            picks = np.unique(np.linspace(0, len(marks) - 1, min(want, len(marks))).astype(np.int64))
            for k in picks.tolist():
                start = int(marks[k])
                if start and data[start - 1 : start] != b"\n":
                    return None
                got = data[start : start + 512 * _SAMPLE_LINES].split(b"\n")[:-1][:_SAMPLE_LINES]  # whole lines
                indices.extend(range(k * STRIDE, k * STRIDE + len(got)))
                lines.extend(got)
        tail = rest.split(b"\n")[:-1][-_SAMPLE_LINES:]
        indices.extend(range(total - len(tail), total))
        lines.extend(tail)
    keep, rows = [], []
    for i, line in zip(indices, lines):
        try:
            rows.append(orjson.loads(line))
            keep.append(i)
        except orjson.JSONDecodeError:
            continue
    cols = Columns()
    if rows:
        order = np.unique(keep, return_index=True)[1]  # the tail may repeat a sampled line
        rows = [rows[j] for j in order]
        cols.extend([keep[j] for j in order], [r[0] / 1000 for r in rows], [_codec.untag(r[1]) for r in rows])
    return cols, total


def _parse_piece(entry: _Series, piece: bytes) -> None:
    state = entry.state
    fast = parse_uniform(piece)
    if fast is not None:
        entry.cols.extend_matrix(state.lines, *fast)
        state.lines += len(fast[0])
    else:
        indices, times, rows, count = parse_lines(piece, state.lines)
        entry.cols.extend(indices, times, rows)
        state.lines += count


class _Warmer:
    """One daemon thread that loads series ahead of the requests for them.

    Two queues: ``warm(prefix)`` (a page being opened) before start-up warming.
    Between pieces of a parse it steps aside while the source serves a request;
    a request for the series being warmed simply continues its parse.
    """

    def __init__(self, source: "LocalSource") -> None:
        self.source = source
        self.urgent: deque = deque()
        self.later: deque = deque()
        self.cond = threading.Condition()
        self.working = False
        self.stopped = False
        self.thread: threading.Thread | None = None
        self.parsing: dict = {}  # folder -> the helper process parsing it

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="mldash-ui-warm", daemon=True)
            self.thread.start()

    def push(self, folders: list[str], urgent: bool = False) -> None:
        with self.cond:
            if self.stopped:
                return
            if urgent:  # a page polls its run: requeue what is still queued, ahead of the rest
                moved = set(folders)
                kept = [t for t in self.urgent if not (t[0] == "load" and t[1] in moved)]
                self.urgent = deque(("load", f) for f in folders)
                self.urgent.extend(kept)
                self.later = deque(t for t in self.later if not (t[0] == "load" and t[1] in moved))
            else:
                self.later.extend(("load", f) for f in folders)
            self._start()
            self.cond.notify()

    def push_recent(self, budget: int) -> None:
        with self.cond:
            if self.stopped:
                return
            self.later.append(("recent", budget))
            self._start()
            self.cond.notify()

    def save_later(self, entry: _Series) -> None:
        if self.source.cache is None or entry.state.offset - entry.saved < CACHE_MIN_BYTES:
            return  # the common case, decided without the thread
        with self.cond:
            if self.stopped or ("save", entry) in self.urgent:
                return
            self.urgent.append(("save", entry))
            self._start()
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.urgent.clear()
            self.later.clear()
            self.cond.notify_all()
            for proc in self.parsing.values():  # the helpers this server started
                proc.terminate()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.urgent or self.later or self.working:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _busy(self) -> bool:
        return self.source._busy > 0 or self.stopped

    def _parse_elsewhere(self, folder: str) -> None:
        """Parse a big series that the disk cache lacks in a helper process, into the cache.

        A separate process does not hold this one's GIL, so the page and its requests
        (the experiments list, say) are served at full speed meanwhile; the columns
        then come back from the cache in milliseconds.
        """
        source = self.source
        if source.cache is None:
            return
        data_path = os.path.join(folder, DATA_FILE)
        entry = source._entry(folder)
        with entry.lock:
            source._try_cache(entry, data_path)
            if _size(data_path) - entry.state.offset < CACHE_MIN_BYTES:
                return  # in memory or in the cache already, or small: parse the rest here
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from mldash.ui.local import parse_into_cache; parse_into_cache(sys.argv[2], sys.argv[3])"
        )
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with self.cond:
            if self.stopped:
                return
            try:  # a plain child (not multiprocessing): nothing of this server is inherited
                proc = subprocess.Popen(
                    [sys.executable, "-c", code, package_parent, data_path, source.cache.folder],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            except OSError:
                return  # parsed here instead
            self.parsing[folder] = proc
        try:
            proc.wait()
        finally:
            with self.cond:
                self.parsing.pop(folder, None)
                self.cond.notify_all()
        with entry.lock:
            entry.tried_cache = entry.state.offset > 0  # not read yet: look again, the helper wrote it

    def wait_parsed(self, folder: str) -> None:
        """Block while a helper process is parsing ``folder`` (cheaper than parsing it twice)."""
        with self.cond:
            proc = self.parsing.get(folder)
        if proc is None:
            return
        proc.wait()
        entry = self.source._entry(folder)
        with entry.lock:
            entry.tried_cache = entry.state.offset > 0

    def _wait_quiet(self) -> None:
        """Let requests go first: wait while one is being served (re-checked every 5 ms)."""
        while self._busy() and not self.stopped:
            time.sleep(0.005)

    def _between_runs(self) -> None:
        """The start-up scan's pause: requests first, then a page just opened (``warm``)."""
        self._wait_quiet()
        while True:
            with self.cond:
                if self.stopped or not self.urgent:
                    return
                task = self.urgent.popleft()
            try:
                self._do(task)
            except Exception:
                pass

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.urgent or self.later or self.stopped):
                    self.working = False
                    self.cond.notify_all()
                    self.cond.wait()
                if self.stopped:
                    self.working = False
                    self.cond.notify_all()
                    return
                task = (self.urgent or self.later).popleft()
                self.working = True
            try:
                self._do(task)
            except Exception:  # a series that fails to load will fail again, visibly, on request
                pass

    def _do(self, task) -> None:
        kind, arg = task
        source = self.source
        if kind == "save":
            source._save(arg)
        elif kind == "load":
            self._parse_elsewhere(arg)
            while not self.stopped:
                self._wait_quiet()
                entry, complete = source._load_step(arg, self._busy)
                if complete:
                    source._save(entry)
                    break
        elif kind == "recent":
            folders = _recent_big_series(source.root, arg, self._between_runs)
            self.push(folders)
            if source.cache is not None:
                source.cache.prune()


def parse_into_cache(data_path: str, cache_folder: str) -> int:
    """Parse ``data_path`` (after what the cache has) and write it to the cache; the
    helper process runs this. Returns the bytes parsed."""
    cache = ColumnCache(cache_folder)
    entry = _Series(os.path.dirname(data_path))
    hit = cache.load(data_path)
    if hit is not None:
        entry.cols, entry.state = hit
    _catch_up(entry, data_path)
    cache.save(data_path, entry.cols, entry.state)
    return entry.state.offset


def _recent_big_series(root: str, budget: int, pause) -> list[str]:
    """Metric folders whose data.jsonl is at least CACHE_MIN_BYTES, newest first, about ``budget`` points."""
    found = []
    for path in find_experiments(root):
        pause()
        base = os.path.join(path, METRICS_DIR)
        for name, (size, mtime) in _scan_metrics(base).items():
            if size >= CACHE_MIN_BYTES:
                found.append((mtime, size, os.path.join(base, *name.split("/"))))
    found.sort(reverse=True)
    chosen, points = [], 0
    for _, size, folder in found:
        points += size // 60  # about 60 bytes a {value, step} point
        if points > budget and chosen:
            break
        chosen.append(folder)
    return chosen
