"""What ``mldash.runs`` and the dashboard keep between calls, by path: parsed
documents, series statistics (``mldash._series_stats``) and the names of a run's series.

Each is kept with its file's identity (device, inode, size, times), so a second
``runs()`` over 10,000 runs costs a few ``stat`` calls a run. A file whose identity
changed is read again, so nothing stale is returned; a file changed in the last two
seconds is always read again (a change within one tick of the file system's clock
keeps its time). What was kept for a run a listing no longer finds is dropped
(``forget_under``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from . import _codec
from ._runfolder import DATA_FILE, METRICS_DIR

_RECENT_NS = 2_000_000_000  # files changed this recently are read again


def _identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _recent(st: os.stat_result) -> bool:
    return st.st_mtime_ns > time.time_ns() - _RECENT_NS


class _Cache:
    """Parsed documents, series statistics and metric names, by path."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[tuple, dict]] = {}
        self.series: dict[str, Any] = {}  # data file -> _series_stats.SeriesStats
        self.names: dict[str, tuple[tuple, list[str]]] = {}
        self.known: set[str] = set()  # run folders seen by the last listings
        self.lock = threading.Lock()

    def clear(self) -> None:
        with self.lock:
            self.documents.clear()
            self.series.clear()
            self.names.clear()
            self.known.clear()

    def forget_under(self, base: str, seen: set[str]) -> None:
        """Drop what was kept for runs under ``base`` that are gone."""
        base = base.rstrip(os.sep) + os.sep
        with self.lock:
            gone = {run for run in self.known if run.startswith(base) and run not in seen}
            self.known.difference_update(gone)
            self.known.update(seen)
            if not gone:
                return
            for table in (self.documents, self.series, self.names):
                # list(): a reader in another thread may add to the table meanwhile
                for path in [p for p in list(table) if _owner(p, gone)]:
                    table.pop(path, None)


_cache = _Cache()


def _owner(path: str, runs: set[str]) -> bool:
    """Whether ``path`` lies in one of the run folders ``runs``."""
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if parent in runs:
            return True
        parent = os.path.dirname(parent)
    return False


def forget_under(base: str, seen: set[str]) -> None:
    """Drop what was kept for the runs under ``base`` that a listing no longer finds
    (``seen``: the run folders it found), as ``runs()`` does: a long-lived reader that
    lists runs itself (the dashboard) keeps nothing of the runs removed meanwhile."""
    _cache.forget_under(base, seen)


def clear_cache() -> None:
    """Forget everything kept between calls (tests; a long-lived process that wants memory back)."""
    _cache.clear()


def _document(path: str, st: os.stat_result | None = None) -> dict:
    """A JSON document, from memory while the file is the one read; {} when absent.
    ``st``: the file's stat, when the caller just took it."""
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            _cache.documents.pop(path, None)
            return {}
    hit = _cache.documents.get(path)
    if hit is not None and hit[0] == _identity(st) and not _recent(st):
        return hit[1]
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return {}
    document = _codec.loads(data) if data else {}
    if not isinstance(document, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    _cache.documents[path] = (_identity(st), document)
    return document


def _metric_names(path: str) -> list[str]:
    """Every series in the run at ``path``, sorted; the folders' times say when to look again."""
    base = os.path.join(path, METRICS_DIR)
    hit = _cache.names.get(base)
    if hit is not None:
        stamps, names = hit
        try:
            if all(os.stat(folder).st_mtime_ns == mtime for folder, mtime in stamps):
                return names
        except FileNotFoundError:
            pass
    stamps_list: list[tuple[str, int]] = []
    names = []
    trusted = True
    limit = time.time_ns() - _RECENT_NS
    todo = [base]
    while todo:
        folder = todo.pop()
        try:
            mtime = os.stat(folder).st_mtime_ns
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        trusted = trusted and mtime < limit
        stamps_list.append((folder, mtime))
        for entry in entries:
            if entry.name == DATA_FILE and folder != base:
                names.append(os.path.relpath(folder, base).replace(os.sep, "/"))
            elif not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                todo.append(entry.path)
    names.sort()
    if trusted:
        _cache.names[base] = (tuple(stamps_list), names)
    else:
        _cache.names.pop(base, None)
    return names
