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
"""

from __future__ import annotations

from typing import Protocol


class DataSource(Protocol):
    """Read-only access to experiments, addressed by prefix ("project/folder/name").

    Every method may raise ``KeyError`` for an unknown prefix or metric.
    """

    def list_experiments(self, project: str | None = None) -> list[dict]:
        """One dict per experiment: the experiment.json fields (prefix, project,
        folder, name, status, started_at, finished_at, duration, tags, ...) plus
        ``params`` (flat dict) and ``metrics`` ({name: last point in read() shape})."""

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
