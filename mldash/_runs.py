"""``mldash.runs(filter)``: the experiments matching a filter, as read-only runs.

>>> runs = mldash.runs("params.lr < 1e-3 and status = COMPLETED")  # doctest: +SKIP
>>> runs[0].params["lr"], runs[0].metrics("val/loss").read()["total"]  # doctest: +SKIP
(0.0001, 120)
>>> runs.to_pandas()  # doctest: +SKIP

A reader: it never imports the write side (experiment.py, _writer.py) and never
writes inside the root. What it reads it keeps in memory, keyed by each file's
identity (device, inode, size, times), so a second ``runs()`` over 10,000 runs
costs a few ``stat`` calls a run (``mldash._read_cache``); a series' min and max are
kept with the offset they were computed up to, and only lines appended since are
read (``mldash._series_stats``). A file whose identity changed is read again, so
nothing stale is returned.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from typing import Any, Iterable, Iterator, Sequence

from . import _filter, _settings
from ._naming import check_part, metric_parts
from ._read_cache import _cache, _document, _metric_names
from ._runfolder import (
    LOGS_DIR,
    META_FILE,
    METRICS_DIR,
    PARAMS_FILE,
    RUNNING,
    SUMMARY_FILE,
    check_range,
    metric_folder,
    pid_alive,
    read_checkpoints,
    read_log_records,
    read_series,
)
from ._series import SeriesReader
from ._series_stats import SeriesStats, series_stats

_HOST = socket.gethostname()
_PARAMS_TAIL = os.sep + PARAMS_FILE.replace("/", os.sep)
_SUMMARY_TAIL = os.sep + SUMMARY_FILE


def _copy(document: dict) -> dict:
    """A copy a caller may change: values that are lists or dicts are copied too."""
    return {k: copy.deepcopy(v) if isinstance(v, (list, dict)) else v for k, v in document.items()}


def _series_folder(path: str, name: str) -> str:
    """``_runfolder.metric_folder``, spelled for speed (a name from a filter or a listing)."""
    return path + os.sep + METRICS_DIR + os.sep + name.replace("/", os.sep)


def _find_runs(base: str) -> Iterator[tuple[str, os.stat_result]]:
    """The run folders under ``base`` (as ``_runfolder.find_experiments``: sorted, no
    dot folders, no run inside a run), each with its experiment.json's stat."""
    meta_name = os.sep + META_FILE
    try:
        st = os.stat(base + meta_name)
        yield base, st
        return
    except (FileNotFoundError, NotADirectoryError):
        pass
    todo = [base]
    while todo:
        folder = todo.pop()
        try:
            children = sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        below = []
        for child in children:
            path = folder + os.sep + child
            try:
                st = os.stat(path + meta_name)
            except (FileNotFoundError, NotADirectoryError):
                below.append(path)
                continue
            if below:  # keep the sorted order: folders before this run come first
                yield from _find_sorted(below)
                below = []
            yield path, st
        if below:
            yield from _find_sorted(below)


def _find_sorted(folders: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    for folder in folders:
        yield from _find_runs(folder)


# ---- one run --------------------------------------------------------------------------
class Run:
    """One experiment, read-only: what ``mldash.runs()`` returns a sequence of.

    ``params``, ``summary`` and ``info()`` are copies; ``metrics(name)`` has
    ``read()`` (as ``Metric.read``), ``to_pandas()`` and ``len()``.
    """

    __slots__ = ("path", "root", "_meta", "_meta_stat")

    def __init__(self, path: str, root: str | None = None, _meta_stat: os.stat_result | None = None) -> None:
        self.path = os.path.abspath(path)
        self.root = os.path.abspath(root) if root is not None else None
        self._meta: dict | None = None
        self._meta_stat = _meta_stat

    # ---- identity and status ------------------------------------------------------
    def _info(self) -> dict:
        if self._meta is None:
            meta = _document(self.path + os.sep + META_FILE, self._meta_stat)
            self._meta_stat = None
            if not meta:
                raise FileNotFoundError(f"no experiment in {self.path}")
            self._meta = meta
        return self._meta

    @property
    def prefix(self) -> str:
        meta = self._info()
        prefix = meta.get("prefix")
        if isinstance(prefix, str):
            return prefix
        if self.root is not None:
            return os.path.relpath(self.path, self.root).replace(os.sep, "/")
        return os.path.basename(self.path)

    @property
    def project(self) -> str | None:
        return self._info().get("project")

    @property
    def folder(self) -> str | None:
        return self._info().get("folder")

    @property
    def name(self) -> str:
        return self._info().get("name") or os.path.basename(self.path)

    @property
    def status(self) -> str | None:
        return self._info().get("status")

    @property
    def stale(self) -> bool:
        """True for a RUNNING run whose process (on this host) is gone."""
        meta = self._info()
        return bool(
            meta.get("status") == RUNNING and meta.get("host") == _HOST
            and isinstance(meta.get("pid"), int) and not pid_alive(meta["pid"])
        )

    @property
    def tags(self) -> list[str]:
        return list(self._info().get("tags") or [])

    @property
    def description(self) -> str | None:
        return self._info().get("description")

    @property
    def created(self) -> float | None:
        """Epoch seconds (as in experiment.json's created_at)."""
        return self._info().get("created_at")

    @property
    def started(self) -> float | None:
        return self._info().get("started_at")

    @property
    def ended(self) -> float | None:
        """When the run last finished (None while it runs)."""
        return self._info().get("finished_at")

    @property
    def duration(self) -> float | None:
        """Seconds run, over every session; a run still running counts up to now."""
        meta = self._info()
        stored = meta.get("duration")
        if meta.get("status") == RUNNING and not self.stale:
            since = meta.get("resumed_at") or meta.get("started_at")
            if isinstance(since, (int, float)):
                return (stored or 0.0) + max(0.0, time.time() - since)
        return stored

    def info(self) -> dict:
        """experiment.json, with ``path`` and ``stale`` (as ``mldash ls`` reads it)."""
        meta = copy.deepcopy(self._info())
        meta["path"] = self.path
        meta["stale"] = self.stale
        return meta

    # ---- documents and series ---------------------------------------------------------
    @property
    def params(self) -> dict:
        """The flat parameters (a copy)."""
        return _copy(_document(self.path + _PARAMS_TAIL))

    @property
    def summary(self) -> dict:
        return _copy(_document(self.path + _SUMMARY_TAIL))

    def metric_names(self) -> list[str]:
        return list(_metric_names(self.path))

    def metrics(self, name: str) -> "RunMetric":
        metric_parts(name)
        return RunMetric(self.path, name)

    def history(self, names: Iterable[str] | None = None, x: str = "step"):
        """The run's series joined on ``x`` (see ``mldash._frames.history``)."""
        from ._frames import history

        return history(self.path, names, x)

    def read_logs(self, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
        from ._checks import check_level

        check_range(start_index, limit)
        if level is not None:
            check_level(level)
        return read_log_records(os.path.join(self.path, LOGS_DIR), start_index, limit, level)

    def read_console(self, start_index: int = 0, limit: int = 1000) -> dict:
        from ._console import read_console

        check_range(start_index, limit)
        return read_console(self.path, start_index, limit)

    def checkpoints(self) -> list[dict]:
        return read_checkpoints(self.path)

    # ---- as the filter sees it --------------------------------------------------------
    def value(self, key: str | _filter.Key) -> Any:
        """A filter key's value for this run (``"params.lr"``, ``"metrics.loss.min"``,
        ``"duration"``); None when the run has none."""
        if isinstance(key, str):
            node = _filter.parse(f"{key} = null")
            if not isinstance(node, _filter.Compare):
                raise ValueError(f"not one key: {key!r}")
            key = node.key
        value = self._lookup(key)
        return None if value is _filter.MISSING else copy.deepcopy(value)

    def keys(self) -> list[str]:
        """The keys this run offers a filter, spelled as a filter writes them."""
        return _filter.keys_of(
            _document(os.path.join(self.path, PARAMS_FILE)),
            _document(os.path.join(self.path, SUMMARY_FILE)),
            _metric_names(self.path),
        )

    def _lookup(self, key: _filter.Key) -> Any:
        scope = key.scope
        if scope == "params" or scope == "summary":
            document = _document(self.path + (_PARAMS_TAIL if scope == "params" else _SUMMARY_TAIL))
            return document.get(key.name, _filter.MISSING)
        if scope == "metrics":
            stats = series_stats(_series_folder(self.path, key.name))
            return _filter.MISSING if stats is None else stats.value(key.agg)
        value = getattr(self, key.name)
        return _filter.MISSING if value is None and key.name != "tags" else value

    def metric_stats(self) -> dict[str, SeriesStats]:
        """Every series' statistics: ``{name: SeriesStats}``."""
        out = {}
        for name in _metric_names(self.path):
            stats = series_stats(_series_folder(self.path, name))
            if stats is not None:
                out[name] = stats
        return out

    def __repr__(self) -> str:
        try:
            return f"Run({self.prefix!r}, status={self.status!r})"
        except (OSError, ValueError):
            return f"Run({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


class RunMetric:
    """One series of a run, read-only: ``read()``, ``to_pandas()``, ``len()``."""

    __slots__ = ("path", "name", "folder")

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name
        self.folder = metric_folder(path, name)

    def read(self, start_index: int = 0, limit: int = 1000) -> dict:
        check_range(start_index, limit)
        return read_series(self.folder, start_index, limit)

    def to_pandas(self):
        """Every point at full resolution: see ``mldash._frames.series_frame``."""
        from ._frames import series_frame

        return series_frame(self.folder)

    def to_polars(self):
        from ._frames import series_polars

        return series_polars(self.folder)

    def __len__(self) -> int:
        return SeriesReader(self.folder).count()

    def __repr__(self) -> str:
        return f"RunMetric({self.name!r})"


# ---- many runs --------------------------------------------------------------------------
class Runs(Sequence):
    """The runs a filter matched, in prefix order; ``to_pandas()`` makes the runs table."""

    def __init__(self, runs: list, filter: str | None = None) -> None:
        self._runs = list(runs)
        self.filter = filter

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Runs(self._runs[index], self.filter)
        if isinstance(index, str):  # by prefix
            for run in self._runs:
                if run.prefix == index:
                    return run
            raise KeyError(index)
        return self._runs[index]

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator:
        return iter(self._runs)

    @property
    def prefixes(self) -> list[str]:
        return [run.prefix for run in self._runs]

    def to_pandas(self):
        """One row per run: see ``mldash._frames.runs_frame``."""
        from ._frames import runs_frame

        return runs_frame(self._runs)

    def to_polars(self):
        from ._frames import runs_polars

        return runs_polars(self._runs)

    def __repr__(self) -> str:
        shown = ", ".join(repr(p) for p in self.prefixes[:5])
        more = f", ... ({len(self)} runs)" if len(self) > 5 else ""
        return f"Runs([{shown}{more}])"


def runs(
    filter: str | None = None,
    *,
    project: str | None = None,
    root: str | os.PathLike | None = None,
    remote: str | None = None,
    token: str | None = None,
) -> Runs:
    """The experiments that match ``filter`` (all of them without one), read-only.

    ``project`` keeps one project's runs; ``root`` is where the runs are (default
    ``$MLDASH_ROOT``, else ``.mldash``, as for the Experiment); ``remote`` a server's
    URL to read from instead (``token`` default ``$MLDASH_TOKEN``). A filter that
    does not parse is a ValueError with a caret under the place (docs/analysis.md).
    """
    node = _filter.parse(filter)
    if project is not None:
        check_part(project, "project")
    if remote is not None:
        from ._remote_runs import remote_runs

        return Runs(remote_runs(filter, _settings.remote(remote), _settings.token(token), project), filter)
    root_path = _settings.root(root)
    if not os.path.isdir(root_path):
        raise FileNotFoundError(f"no runs under {root_path}: the folder does not exist (root= or $MLDASH_ROOT)")
    base = os.path.join(root_path, project) if project is not None else root_path
    found, seen = [], set()
    for path, st in _find_runs(base) if os.path.isdir(base) else ():
        seen.add(path)
        run = Run(path, root_path, st)
        try:
            run._info()  # a run without a readable experiment.json is not listed
            if _filter.matches(node, run._lookup):
                found.append(run)
        except (OSError, ValueError):
            continue  # half-written, or removed while we looked
    _cache.forget_under(base, seen)
    return Runs(found, filter)
