"""Everything the server stores, behind one class: ``Store(db_url, blob_url)``.

SQLite (WAL) or PostgreSQL through SQLAlchemy Core, and cold metric chunks in a
local folder or an S3 bucket. Several server processes may share one store:
every append is idempotent by (experiment, name, index), series rows are locked
while a batch extends them, and compaction holds a per-series advisory lock
(PostgreSQL) or the database's single write lock (SQLite).

``Store`` is the one door app.py, auth.py, the dashboard and the command line
use; the work is done by one module per resource:

- ``_database``: the engine, its transactions, the tables;
- ``_experiments``: experiments, their meta and documents, the collision check;
- ``_metrics``: ingest of hot batch rows, reads across hot rows and cold chunks;
- ``_compaction``: hot points cut into chunk objects, on a background thread;
- ``_records``: logs, console and checkpoints;
- ``_files``: saved files, their blobs and resumable uploads (``store.files``);
- ``_validation``: request values checked by the local API's rules (400s);
- ``_errors``: what the store refuses, as HTTP statuses.

>>> store = Store("sqlite:///server.db", "chunks")  # doctest: +SKIP
>>> exp = store.upsert_experiment("default", "proj/run1", {"status": "RUNNING"})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ContextManager

from .._checks import LEVELS, STATUSES
from ._compaction import HOT_LIMIT, MAX_CHUNKS_PER_PASS, MAX_HOT, Compaction
from ._database import Database, normalize_db_url
from ._errors import Collision, Conflict, NotFound, StoreError
from ._experiments import DOCUMENT_KINDS, Experiments
from ._files import Files
from ._metrics import Metrics, points_json
from ._records import Records
from ._validation import MAX_INDEX, check_namespace
from .blobs import open_blobs
from .chunks import chunk_key

__all__ = [
    "DOCUMENT_KINDS", "HOT_LIMIT", "LEVELS", "MAX_CHUNKS_PER_PASS", "MAX_HOT", "MAX_INDEX", "STATUSES",
    "Collision", "Conflict", "NotFound", "Store", "StoreError",
    "check_namespace", "chunk_key", "normalize_db_url", "points_json",
]


class Store:
    def __init__(self, db_url: str, blob_url: str, *, s3_endpoint: str | None = None, create: bool = True) -> None:
        self.blobs = open_blobs(blob_url, s3_endpoint)
        self._db = Database(db_url)
        self.db_url, self.engine, self.is_sqlite = self._db.url, self._db.engine, self._db.is_sqlite
        self._compaction = Compaction(self._db, self.blobs)
        self._experiments = Experiments(self._db)
        self._metrics = Metrics(self._db, self.blobs, on_append=self._compaction.after_append)
        self._records = Records(self._db)
        self.files = Files(self._db, self.blobs)
        if create:
            self.create_tables()

    # -- plumbing -------------------------------------------------------------

    def create_tables(self) -> None:
        """Create what is missing (tables, columns added since), then fill the headline
        statistics of series stored before them (``Metrics.backfill_stats``)."""
        self._db.create_tables()
        self._metrics.backfill_stats()

    def close(self) -> None:
        """Finish pending compactions, then release the database connections."""
        self._compaction.stop()
        self._db.close()

    def writing(self) -> ContextManager[Any]:
        """A write transaction (SQLite: BEGIN IMMEDIATE under the process lock)."""
        return self._db.writing()

    def ingesting(self, autocommit: bool = False) -> ContextManager[Any]:
        """A raw DBAPI cursor in a write transaction, for the ingest hot path."""
        return self._db.ingesting(autocommit)

    def reading(self) -> ContextManager[Any]:
        """A read transaction that sees one snapshot (hot rows and chunks agree)."""
        return self._db.reading()

    # -- experiments and documents --------------------------------------------

    def upsert_experiment(self, namespace: Any, prefix: Any, meta: Any) -> dict:
        """Create the experiment at namespace+prefix or merge ``meta`` into it (Collision for another run)."""
        return self._experiments.upsert(namespace, prefix, meta)

    def patch_experiment(self, exp_id: int, meta: Any) -> dict:
        return self._experiments.patch(exp_id, meta)

    def collect_garbage(self, older_than: float, dry_run: bool = False) -> dict:
        """Free file blobs nothing holds and abandoned uploads (``_files_gc``)."""
        from ._files_gc import collect

        return collect(self._db, self.blobs, older_than, dry_run)

    def experiment_namespace(self, exp_id: int) -> str:
        """The namespace of an experiment (for scope checks); NotFound if unknown."""
        return self._experiments.namespace(exp_id)

    def lookup(self, namespace: Any, prefix: str) -> dict:
        return self._experiments.lookup(namespace, prefix)

    def get_experiment(self, exp_id: int) -> dict:
        return self._experiments.get(exp_id)

    def list_experiments(
        self,
        namespaces: list[str] | None = None,
        project: str | None = None,
        status: str | None = None,
        q: str | None = None,
        limit: int = 100,
        offset: int = 0,
        filter: str | None = None,
    ) -> dict:
        """Experiments, newest first; ``namespaces=None`` means every namespace.
        ``filter``: the filter language, run as SQL (a bad one is a 400 with the caret)."""
        return self._experiments.page(namespaces, project, status, q, limit, offset, filter)

    def filter_keys(self, namespaces: list[str] | None = None, project: str | None = None) -> dict:
        """The params and summary keys and metric names a filter can use over these
        experiments, and ``keys``: all of them as a filter spells them."""
        return self._experiments.filter_keys(namespaces, project)

    def projects(self, namespaces: list[str] | None = None) -> list[dict]:
        return self._experiments.projects(namespaces)

    def progress(self, exp_id: int) -> dict:
        """How much of each stream the server holds, for an uploader that resumes."""
        return self._experiments.progress(exp_id)

    def set_document(self, exp_id: int, kind: str, values: Any) -> dict:
        return self._experiments.set_document(exp_id, kind, values)

    def get_document(self, exp_id: int, kind: str) -> dict:
        return self._experiments.get_document(exp_id, kind)

    # -- metrics --------------------------------------------------------------

    def append_metrics(self, exp_id: int, batches: Any) -> dict:
        """Store points; ones already stored (same index) are skipped (see ``Metrics.append``)."""
        return self._metrics.append(exp_id, batches)

    def metric_totals(self, exp_id: int) -> dict[str, dict]:
        return self._metrics.totals(exp_id)

    def metric_names(self, exp_id: int) -> list[str]:
        return self._metrics.names(exp_id)

    def metric_lines(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> tuple[list[bytes], int]:
        """The stored JSON lines of points ``start_index..`` (at most ``limit``) and the series total."""
        return self._metrics.lines(exp_id, name, start_index, limit)

    def read_metric(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        """``Metric.read()``'s shape, stitched from cold chunks and hot rows."""
        return self._metrics.read(exp_id, name, start_index, limit)

    def read_metric_json(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> bytes:
        """``read_metric`` already encoded as JSON."""
        return self._metrics.read_json(exp_id, name, start_index, limit)

    # -- compaction -----------------------------------------------------------

    def compact(self, series_id: int) -> int:
        """Move whole chunks of a series' oldest hot points into the object store; returns how many."""
        return self._compaction.compact(series_id)

    def series_to_compact(self) -> list[int]:
        """Series holding more than HOT_LIMIT hot points (left so by a server that stopped)."""
        return self._compaction.series_to_compact()

    def wait_for_compaction(self, timeout: float | None = None) -> bool:
        """Block until the background compactor has nothing left to do (tests, benchmarks)."""
        return self._compaction.wait(timeout)

    # -- logs and checkpoints -------------------------------------------------

    def append_logs(self, exp_id: int, start_index: Any, records: Any) -> dict:
        return self._records.append_logs(exp_id, start_index, records)

    def read_logs(
        self,
        exp_id: int,
        start_index: int = 0,
        limit: int = 1000,
        level: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict:
        return self._records.read_logs(exp_id, start_index, limit, level, since, until)

    def append_console(self, exp_id: int, start_index: Any, records: Any) -> dict:
        return self._records.append_console(exp_id, start_index, records)

    def read_console(self, exp_id: int, start_index: int = 0, limit: int = 1000) -> dict:
        return self._records.read_console(exp_id, start_index, limit)

    def append_checkpoints(self, exp_id: int, start_index: Any, records: Any) -> dict:
        return self._records.append_checkpoints(exp_id, start_index, records)
