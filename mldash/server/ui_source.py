"""The dashboard's DataSource (mldash/ui/source.py) over the server's storage.

``mldash server`` hands this to ``mldash.ui.app.create_app`` so the same
dashboard shows the team's experiments. Experiments are addressed by prefix;
when two namespaces hold the same prefix, "default" wins, then the first
namespace in sort order ("namespace:prefix" picks one explicitly). Every
lookup is limited to the namespaces the request's token may read, so a prefix
held only where it may not read is "not found", exactly like a missing one.
``resolve`` names the one experiment a prefix opens for this caller as
"namespace:prefix"; the dashboard keys all it keeps by that, and every row of
``list_experiments`` carries it as ``ref`` (what the page links to).
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
        """Fixed ones, else those the current dashboard request's token may read (None: all).

        Outside a dashboard request (no principal: direct use) that is every namespace;
        a principal that does not say what it may read (no ``readable()``) reads none.
        """
        if self._namespaces is not None:
            return self._namespaces
        from ..ui.app import current_principal

        scope = current_principal.get()
        if scope is None:
            return None
        readable = getattr(scope, "readable", None)
        return readable() if callable(readable) else []

    def _row(self, prefix: str):
        """(id, namespace, prefix) of the experiment ``prefix`` opens for this caller; KeyError if none."""
        namespace = None
        if ":" in prefix.split("/", 1)[0]:
            namespace, prefix = prefix.split(":", 1)
        stmt = select(experiments.c.id, experiments.c.namespace, experiments.c.prefix).where(experiments.c.prefix == prefix)
        if namespace is not None:
            stmt = stmt.where(experiments.c.namespace == namespace)
        readable = self.namespaces
        if readable is not None:
            stmt = stmt.where(experiments.c.namespace.in_(readable))
        with self.store.reading() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            raise KeyError(prefix)  # missing or unreadable: the same answer
        rows.sort(key=lambda r: (r.namespace != "default", r.namespace))
        return rows[0]

    def _id(self, prefix: str) -> int:
        return self._row(prefix).id

    def resolve(self, prefix: str) -> str:
        """"namespace:prefix" of the experiment ``prefix`` opens for the current caller."""
        row = self._row(prefix)
        return f"{row.namespace}:{row.prefix}"

    def list_experiments(self, project: str | None = None, filter: str | None = None) -> list[dict]:
        """The rows the caller may read; ``filter`` (the filter language) runs in SQL
        within those namespaces; a bad one is a ValueError whose message shows the caret
        (``_filter_sql.BadFilter``, with ``extra``: position, line and column)."""
        rows, offset = [], 0
        readable = self.namespaces
        while True:
            page = self.store.list_experiments(readable, project=project, limit=1000, offset=offset, filter=filter)
            rows.extend(page["experiments"])
            offset += 1000
            if offset >= page["total"]:
                break
        for row in rows:  # two namespaces may hold one prefix: the page links to the row's own
            row["ref"] = f"{row['namespace']}:{row['prefix']}"
        return rows

    def filter_keys(self, project: str | None = None) -> dict:
        """What the search box completes: ``params``, ``summary`` and ``metrics`` names
        over the experiments the caller may read, and ``keys`` as a filter spells them."""
        return self.store.filter_keys(self.namespaces, project)

    def get_experiment(self, prefix: str) -> dict:
        try:
            record = self.store.get_experiment(self._id(prefix))
        except NotFound:
            raise KeyError(prefix) from None
        record.setdefault("best_checkpoint", None)
        record["ref"] = f"{record['namespace']}:{record['prefix']}"
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

    def read_console(self, prefix: str, start_index: int = 0, limit: int = 1000) -> dict:
        return self.store.read_console(self._id(prefix), start_index, limit)

    def list_files(self, prefix: str) -> list[dict]:
        """The run's live saved files (ml-dash records), for the dashboard's Files section."""
        exp_id, out, offset = self._id(prefix), [], 0
        try:
            while True:
                page = self.store.files.list(exp_id, limit=10_000, offset=offset)
                out.extend(page["files"])
                offset += 10_000
                if not page.get("has_more"):
                    return out
        except NotFound:
            raise KeyError(prefix) from None

    def open_file(self, prefix: str, file_id: str):
        """(record, read(start, end)) of a live file of this run whose bytes are uploaded;
        KeyError otherwise (an id of another experiment's file included)."""
        try:
            record, key, size = self.store.files.get(self._id(prefix), file_id)
        except (NotFound, ValueError):
            raise KeyError("file") from None
        record = dict(record, sizeBytes=size)
        return record, lambda start, end: self.store.blobs.stream(key, start, end)
