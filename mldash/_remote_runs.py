"""``mldash.runs(..., remote=URL)``: a server's experiments in the shapes of local runs.

The server runs the filter (in SQL, from ``_filter``'s grammar) and lists each
run with its parameters, summary, the last point of each series and each
series' headline statistics (``metric_stats``: key, last, min, max), so the
runs table needs no further request. Series points, logs and the console are
read from the server when asked for. A server too old to send ``metric_stats``
has a series' min and max computed here, from the whole series.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from . import _filter
from ._runfolder import SUMMARY_FILE, iter_points

_PAGE = 100_000


class _RemoteStats:
    """A series' last, min and max as ``_runs.SeriesStats.value`` gives them."""

    def __init__(self, metric: "RemoteMetric", last: dict | None, stats: dict | None = None) -> None:
        self.metric = metric
        self.last = last
        self.stats = stats if isinstance(stats, dict) and "key" in stats else None
        self._lows: dict | None = None
        self._highs: dict | None = None

    def value(self, agg: str) -> Any:
        from ._series_stats import headline_key

        if self.stats is not None:  # the server's own headline statistics
            value = self.stats.get(agg)
            return _filter.MISSING if value is None else value
        if not self.last:
            return _filter.MISSING
        key = headline_key(self.last.get("data") or {})
        if key is None:
            return _filter.MISSING
        if agg == "last":
            return self.last["data"].get(key, _filter.MISSING)
        if self._lows is None:
            self._lows, self._highs = {}, {}
            for point in self.metric.points():
                for field, value in point["data"].items():
                    cls = value.__class__
                    if (cls is float or cls is int) and value == value:
                        if field not in self._lows or value < self._lows[field]:
                            self._lows[field] = value
                        if field not in self._highs or value > self._highs[field]:
                            self._highs[field] = value
        table = self._lows if agg == "min" else self._highs
        return table.get(key, _filter.MISSING)


class RemoteMetric:
    """One series of a run on the server: ``read()``, ``to_pandas()``, ``len()``."""

    def __init__(self, run: "RemoteRun", name: str) -> None:
        self.run, self.name = run, name

    def read(self, start_index: int = 0, limit: int = 1000) -> dict:
        return self.run._reader().read_metric(self.name, start_index, limit)

    def points(self) -> Iterable[dict]:
        return iter_points(self.read, _PAGE)

    def to_pandas(self):
        from ._frames import _need, points_frame

        _need("pandas")
        return points_frame(list(self.points()))

    def __len__(self) -> int:
        return self.read(0, 0)["total"]

    def __repr__(self) -> str:
        return f"RemoteMetric({self.name!r})"


class RemoteRun:
    """A run on the server, read-only, with the interface of ``_runs.Run``."""

    def __init__(self, row: dict, url: str, token: str | None) -> None:
        self._row = row
        self.url, self.token = url, token
        self.path = None
        self._summary: dict | None = None
        self._reader_obj = None
        self._stats: dict[str, _RemoteStats] = {}

    def _reader(self):
        if self._reader_obj is None:
            from .remote._http import RunAddress
            from .remote.client import RemoteReader

            address = RunAddress(self.url, self.token, self._row.get("namespace") or "default", self.prefix, "", "")
            self._reader_obj = RemoteReader(address)
        return self._reader_obj

    prefix = property(lambda self: self._row.get("prefix"))
    project = property(lambda self: self._row.get("project"))
    folder = property(lambda self: self._row.get("folder"))
    name = property(lambda self: self._row.get("name"))
    status = property(lambda self: self._row.get("status"))
    stale = property(lambda self: bool(self._row.get("stale")))
    tags = property(lambda self: list(self._row.get("tags") or []))
    description = property(lambda self: self._row.get("description"))
    created = property(lambda self: self._row.get("created_at"))
    started = property(lambda self: self._row.get("started_at"))
    ended = property(lambda self: self._row.get("finished_at"))
    duration = property(lambda self: self._row.get("duration"))

    def info(self) -> dict:
        return copy.deepcopy(self._row)

    @property
    def params(self) -> dict:
        return copy.deepcopy(self._row.get("params") or {})

    def _summary_document(self) -> dict:
        if self._summary is None:
            summary = self._row.get("summary")
            self._summary = summary if "metric_stats" in self._row else self._reader().read_document(SUMMARY_FILE)
        return self._summary

    @property
    def summary(self) -> dict:
        return copy.deepcopy(self._summary_document())

    def metric_names(self) -> list[str]:
        return sorted(self._row.get("metrics") or {})

    def metrics(self, name: str) -> RemoteMetric:
        return RemoteMetric(self, name)

    def history(self, names: Iterable[str] | None = None, x: str = "step"):
        from ._frames import joined_history

        return joined_history(lambda n: self.metrics(n).to_pandas(), self.metric_names(), names, x)

    def read_logs(self, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
        return self._reader().read_logs(start_index, limit, level)

    def read_console(self, start_index: int = 0, limit: int = 1000) -> dict:
        return self._reader().read_console(start_index, limit)

    def value(self, key):
        from ._runs import Run

        return Run.value(self, key)  # the same parsing of the key, our _lookup

    def keys(self) -> list[str]:
        return _filter.keys_of(self._row.get("params") or {}, self._summary_document(), self.metric_names())

    def _series(self, name: str) -> _RemoteStats:
        stats = self._stats.get(name)
        if stats is None:
            last = (self._row.get("metrics") or {}).get(name)
            headline = (self._row.get("metric_stats") or {}).get(name)
            stats = self._stats[name] = _RemoteStats(self.metrics(name), last, headline)
        return stats

    def metric_stats(self) -> dict:
        return {name: self._series(name) for name in self.metric_names()}

    def _lookup(self, key: _filter.Key) -> Any:
        if key.scope == "params":
            return (self._row.get("params") or {}).get(key.name, _filter.MISSING)
        if key.scope == "summary":
            return self._summary_document().get(key.name, _filter.MISSING)
        if key.scope == "metrics":
            if key.name not in (self._row.get("metrics") or {}):
                return _filter.MISSING
            return self._series(key.name).value(key.agg)
        value = getattr(self, key.name)
        return _filter.MISSING if value is None and key.name != "tags" else value

    def __repr__(self) -> str:
        return f"RemoteRun({self.prefix!r}, status={self.status!r})"


def remote_runs(text: str | None, url: str, token: str | None, project: str | None) -> list[RemoteRun]:
    """The server's runs (of ``project``) that pass the filter ``text``, in prefix order;
    the server evaluates it."""
    from .remote.client import list_remote_experiments

    has_filter = text is not None and text.strip()
    rows = list_remote_experiments(url, token, project=project, filter=text if has_filter else None)
    return sorted((RemoteRun(row, url, token) for row in rows), key=lambda run: run.prefix or "")

