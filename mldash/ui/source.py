"""Where the dashboard reads from: a local root or the team server's storage.

The dashboard app (``mldash.ui.app``) talks only to a ``DataSource``; ``mldash ui``
passes a ``LocalSource`` and ``mldash server`` passes its own implementation, so
both serve the same dashboard.

Optional methods the app uses when a source has them (``getattr``; none is required):

* ``metric_view(prefix, name, x="index", lo=None, hi=None, width=1000) -> dict``: the
  chart's points, downsampled keeping spikes: ``mldash.ui.series.view(columns, ...)``
  plus ``"x_choices"``, and ``"coarse": True`` when it is only a quick sample (the page
  then asks again at once). Without it the app reads the series once through
  ``read_metric`` pages, keeps it as ``mldash.ui.series.Columns`` and extends it as
  the series grows.
* ``resolve(prefix) -> str``: the address of the one experiment ``prefix`` opens for the
  current caller (``KeyError`` when there is none it may read, exactly as for a missing
  one); the server's is "namespace:prefix". The app then reads only through that address
  and keys everything it keeps by it, so an address must name the same experiment for
  every caller that gets it, and be given only to callers that may read it. Without
  ``resolve`` the app keys what it keeps by the caller (``current_principal``) and prefix.
* ``read_console(prefix, start_index=0, limit=1000) -> dict``: the run's console records in
  ``mldash._console.read_console``'s shape (``api/console``; without it that route is 404).
* ``warm(prefix) -> None``: called when a run is opened, to start loading its series.
* ``serving() -> context manager``: held around every HTTP request, so that the
  source's own background work can step aside while one is being served.
* ``lookup(row) -> Callable[[mldash._filter.Key], Any]``: the filter's view of one of its
  rows (``list_experiments`` or ``get_experiment``): the run's value for a key, or
  ``mldash._filter.MISSING``. The app uses it for ``api/values`` (the scatter and the
  parallel coordinates) and to filter the rows of a source whose ``list_experiments``
  takes no ``filter``; without it the app reads the rows with ``row_lookup`` (below),
  which knows each metric's last value but not its min or max.

* ``list_files(prefix) -> list[dict]``: the run's saved files (live ones, in the order they
  were saved) as ``mldash._filestore.list_files`` gives them: the ml-dash records (``id``,
  ``path``, ``filename``, ``contentType``, ``sizeBytes``, ``checksum``, ``tags``,
  ``metadata``, ``uploadedAt`` ...). Without it ``api/files`` and ``api/file`` are 404.
* ``open_file(prefix, file_id) -> (record, reader)``: one of those files, to serve. The
  reader is a path (a local file the app streams, seeking for a Range) or a callable
  ``read(start, end) -> Iterable[bytes]`` (end exclusive). ``KeyError`` for an id that is
  not a live file of *this* run (an id of another run's file is a 404, never its bytes).

A source written before filters existed may lack ``list_experiments``'s ``filter``
argument; the app then lists every row and filters them itself (``row_lookup`` or the
source's ``lookup``), which is correct but not fast on a big server.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from .. import _codec, _filter
from .._series_stats import headline_key  # the field a series is shown and filtered by, as mldash.runs


class DataSource(Protocol):
    """Read-only access to experiments, addressed by prefix ("project/folder/name").

    Every method may raise ``KeyError`` for an unknown prefix or metric.
    """

    def list_experiments(self, project: str | None = None, filter: str | None = None) -> list[dict]:
        """One dict per experiment: the experiment.json fields (prefix, project,
        folder, name, status, started_at, finished_at, duration, tags, ...) plus
        ``params`` (flat dict) and ``metrics`` ({name: last point in read() shape}),
        and ``summary`` (dict) where the source has it cheaply.

        ``filter``: the filter language's text (``mldash._filter``; None or blank: every
        run): only the experiments it matches, evaluated with the module's semantics
        (``metrics.<name>.min|max`` over each series' headline field). A filter that
        does not parse raises ``mldash._filter.FilterError`` (a ValueError: 400)."""

    def get_experiment(self, prefix: str) -> dict:
        """The same dict as one ``list_experiments`` row, plus ``summary`` (dict),
        ``checkpoints`` (list of dicts) and ``best_checkpoint``."""

    def metric_names(self, prefix: str) -> list[str]:
        """Every metric series of the experiment, sorted."""

    def read_metric(self, prefix: str, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        """Exactly ``Metric.read()``'s shape: data, start_index, end_index, total, has_more."""

    def read_logs(
        self, prefix: str, start_index: int = 0, limit: int = 1000, level: str | None = None
    ) -> dict:
        """Exactly ``Experiment.read_logs()``'s shape."""


def last_value(point: Any) -> Any:
    """``metrics.<name>.last`` of a series whose last point (read() shape) is ``point``."""
    data = point.get("data") if isinstance(point, dict) else None
    if not isinstance(data, dict):
        return _filter.MISSING
    key = headline_key(data)
    return _filter.MISSING if key is None else data.get(key, _filter.MISSING)


# The filter's run keys and the row fields they read (DataSource rows are experiment.json's).
_RUN_FIELDS = {"created": "created_at", "started": "started_at", "ended": "finished_at"}


def run_value(row: dict, name: str) -> Any:
    """A run key (``mldash._filter.RUN_KEYS``) of a row: prefix, status, tags, times
    (epoch seconds), duration (counting up while the run runs, as ``mldash.runs``)."""
    if name == "tags":
        tags = row.get("tags")
        return list(tags) if isinstance(tags, (list, tuple)) else []
    if name == "duration":
        stored = row.get("duration")
        since = row.get("resumed_at") or row.get("started_at")
        if row.get("status") == "RUNNING" and not row.get("stale") and isinstance(since, (int, float)):
            return (stored or 0.0) + max(0.0, time.time() - since)
        value = stored
    else:
        value = row.get(_RUN_FIELDS.get(name, name))
    return _filter.MISSING if value is None else value


def row_lookup(row: dict, metric_stat: Callable[[str, str], Any] | None = None) -> Callable[[_filter.Key], Any]:
    """The filter's ``lookup(key)`` over a ``list_experiments`` row: its params, its
    ``summary`` (when the row has one), its run keys and each metric's last value.
    ``metric_stat(name, agg)`` gives ``min`` and ``max``; it is asked only for series
    the row lists. Without it they come from the row's ``metric_stats`` when it has
    them (``{name: {"last", "min", "max"}}``, as the team server's rows carry them,
    NaN and big ints tagged), else they are missing (a filter on them matches nothing)."""
    params = row.get("params") or {}
    summary = row.get("summary") or {}
    metrics = row.get("metrics") or {}
    if metric_stat is None and isinstance(row.get("metric_stats"), dict):
        stats = row["metric_stats"]

        def metric_stat(name: str, agg: str) -> Any:
            entry = stats.get(name)
            if not isinstance(entry, dict) or entry.get(agg) is None:
                return _filter.MISSING
            return _codec.untag(entry[agg])

    def lookup(key: _filter.Key) -> Any:
        scope = key.scope
        if scope == "params":
            return params.get(key.name, _filter.MISSING)
        if scope == "summary":
            return summary.get(key.name, _filter.MISSING)
        if scope == "metrics":
            point = metrics.get(key.name)
            if point is None:
                return _filter.MISSING
            if key.agg == "last":
                return last_value(point)
            return _filter.MISSING if metric_stat is None else metric_stat(key.name, key.agg)
        return run_value(row, key.name)

    return lookup
