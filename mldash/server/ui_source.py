"""The dashboard's DataSource (mldash/ui/source.py) over the server's storage.

``mldash server`` hands this to ``mldash.ui.app.create_app`` so the same
dashboard shows the team's experiments. Experiments are addressed by prefix;
when two namespaces hold the same prefix, "default" wins, then the first
namespace in sort order ("namespace:prefix" picks one explicitly).
"""

from __future__ import annotations

from sqlalchemy import select

from .schema import experiments
from .storage import NotFound, Store


class ServerSource:
    """``DataSource`` for the dashboard, read straight from a Store.

    >>> source = ServerSource(Store("sqlite:///server.db", "chunks"))  # doctest: +SKIP
    >>> source.read_metric("proj/run1", "train/loss", 0, 100)  # doctest: +SKIP
    """

    def __init__(self, store: Store, namespaces: list[str] | None = None) -> None:
        self.store = store
        self._namespaces = namespaces

    @property
    def namespaces(self) -> list[str] | None:
        """Fixed ones, else those the current dashboard request's token may read."""
        if self._namespaces is not None:
            return self._namespaces
        try:
            from ..ui.app import current_principal
        except ImportError:
            return None
        scope = current_principal.get()
        return scope.readable() if hasattr(scope, "readable") else None

    def _id(self, prefix: str) -> int:
        namespace = None
        if ":" in prefix.split("/", 1)[0]:
            namespace, prefix = prefix.split(":", 1)
        stmt = select(experiments.c.id, experiments.c.namespace).where(experiments.c.prefix == prefix)
        if namespace is not None:
            stmt = stmt.where(experiments.c.namespace == namespace)
        if self.namespaces is not None:
            stmt = stmt.where(experiments.c.namespace.in_(self.namespaces))
        with self.store.reading() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            raise KeyError(prefix)
        rows.sort(key=lambda r: (r.namespace != "default", r.namespace))
        return rows[0].id

    def list_experiments(self, project: str | None = None) -> list[dict]:
        rows, offset = [], 0
        while True:
            page = self.store.list_experiments(self.namespaces, project=project, limit=1000, offset=offset)
            rows.extend(page["experiments"])
            offset += 1000
            if offset >= page["total"]:
                return rows

    def get_experiment(self, prefix: str) -> dict:
        try:
            record = self.store.get_experiment(self._id(prefix))
        except NotFound:
            raise KeyError(prefix) from None
        record.setdefault("best_checkpoint", None)
        return record

    def metric_names(self, prefix: str) -> list[str]:
        return self.store.metric_names(self._id(prefix))

    def read_metric(self, prefix: str, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        exp_id = self._id(prefix)
        if name not in self.store.progress(exp_id)["metrics"]:
            raise KeyError(name)
        return self.store.read_metric(exp_id, name, start_index, limit)

    def read_logs(self, prefix: str, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
        return self.store.read_logs(self._id(prefix), start_index, limit, level)
