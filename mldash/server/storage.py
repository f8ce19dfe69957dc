"""Everything the server stores, behind one class: ``Store(db_url, blob_url)``.

SQLite (WAL) or PostgreSQL through SQLAlchemy Core, and cold metric chunks in a
local folder or an S3 bucket. Several server processes may share one store:
every append is idempotent by (experiment, name, index), series rows are locked
while a batch extends them, and compaction holds a per-series advisory lock
(PostgreSQL) or the database's single write lock (SQLite).

>>> store = Store("sqlite:///server.db", "chunks")  # doctest: +SKIP
>>> exp = store.upsert_experiment("default", "proj/run1", {"status": "RUNNING"})  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, ContextManager

import orjson
from sqlalchemy import and_, func, select, update

from .. import _codec
from .._checks import LEVELS, STATUSES
from .._naming import split_path
from ._compaction import HOT_LIMIT, MAX_CHUNKS_PER_PASS, MAX_HOT, Compaction
from ._database import Database, dialect_insert, normalize_db_url
from ._errors import Collision, Conflict, NotFound, StoreError, no_experiment
from ._metrics import Metrics, latest_points, points_json, series_totals
from ._validation import check_namespace, checked, checkpoint_record, document, experiment_meta
from ._validation import finite, json_array, log_level, log_record
from ._validation import start_index as checked_start_index
from .blobs import open_blobs
from .chunks import chunk_key
from .schema import checkpoints, experiments, logs

__all__ = [
    "DOCUMENT_KINDS", "HOT_LIMIT", "LEVELS", "MAX_CHUNKS_PER_PASS", "MAX_HOT", "STATUSES", "Collision", "Conflict",
    "NotFound", "Store", "StoreError", "check_namespace", "chunk_key", "normalize_db_url", "points_json",
]

DOCUMENT_KINDS = {"parameters": "params", "summary": "summary"}


class Store:
    def __init__(self, db_url: str, blob_url: str, *, s3_endpoint: str | None = None, create: bool = True) -> None:
        self.blobs = open_blobs(blob_url, s3_endpoint)
        self._db = Database(db_url)
        self.db_url, self.engine, self.is_sqlite = self._db.url, self._db.engine, self._db.is_sqlite
        self._compaction = Compaction(self._db, self.blobs)
        self._metrics = Metrics(self._db, self.blobs, on_append=self._compaction.after_append)
        if create:
            self.create_tables()

    # -- plumbing -------------------------------------------------------------

    def create_tables(self) -> None:
        self._db.create_tables()

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

    # -- experiments ----------------------------------------------------------

    def upsert_experiment(self, namespace: Any, prefix: Any, meta: Any) -> dict:
        namespace = check_namespace(namespace)
        parts = checked(split_path, prefix, "prefix")
        if meta is None:
            meta = {}
        meta = experiment_meta(meta)
        now = time.time()
        with self.writing() as conn:
            row = conn.execute(
                select(experiments).where(experiments.c.namespace == namespace, experiments.c.prefix == prefix).with_for_update()
            ).first()
            if row is None:
                stored = {"project": parts[0], "name": parts[-1], "folder": "/".join(parts[1:-1]) or None}
                stored.update(meta)
                values = dict(
                    namespace=namespace, prefix=prefix, project=parts[0], status=stored.get("status"),
                    started_at=finite(stored.get("started_at")), created_at=now, updated_at=now,
                    meta=stored, params={}, summary={}, logs_count=0, checkpoints_count=0,
                )
                try:
                    with conn.begin_nested():
                        exp_id = conn.execute(experiments.insert().values(**values)).inserted_primary_key[0]
                except Exception:  # another server created it between our SELECT and INSERT
                    row = conn.execute(
                        select(experiments).where(experiments.c.namespace == namespace, experiments.c.prefix == prefix).with_for_update()
                    ).first()
                    if row is None:
                        raise
                else:
                    return _record({**values, "id": exp_id})
            return self._merge_meta(conn, row, meta, now)

    def _merge_meta(self, conn, row, meta: dict, now: float) -> dict:
        stored = dict(row.meta)
        _check_same_run(row, stored, meta)
        stored.update(meta)
        values = dict(meta=stored, updated_at=now, status=stored.get("status"), started_at=finite(stored.get("started_at")))
        conn.execute(update(experiments).where(experiments.c.id == row.id).values(**values))
        return _record({**row._mapping, **values})

    def patch_experiment(self, exp_id: int, meta: Any) -> dict:
        meta = experiment_meta(meta)
        with self.writing() as conn:
            row = conn.execute(select(experiments).where(experiments.c.id == exp_id).with_for_update()).first()
            if row is None:
                raise no_experiment(exp_id)
            return self._merge_meta(conn, row, meta, time.time())

    def experiment_namespace(self, exp_id: int) -> str:
        """The namespace of an experiment (for scope checks); NotFound if unknown."""
        with self.engine.connect() as conn:
            namespace = conn.execute(select(experiments.c.namespace).where(experiments.c.id == exp_id)).scalar()
        if namespace is None:
            raise no_experiment(exp_id)
        return namespace

    def lookup(self, namespace: Any, prefix: str) -> dict:
        namespace = check_namespace(namespace)
        with self.reading() as conn:
            row = conn.execute(
                select(experiments).where(experiments.c.namespace == namespace, experiments.c.prefix == prefix)
            ).first()
        if row is None:
            raise NotFound(f"no experiment {prefix!r} in namespace {namespace!r}")
        return _record(row._mapping)

    def get_experiment(self, exp_id: int) -> dict:
        with self.reading() as conn:
            row = conn.execute(select(experiments).where(experiments.c.id == exp_id)).first()
            if row is None:
                raise no_experiment(exp_id)
            record = _record(row._mapping)
            record["params"] = row.params
            record["summary"] = row.summary
            record["metrics"] = latest_points(conn, [exp_id]).get(exp_id, {})
            record["checkpoints"] = [
                orjson.loads(r.record)
                for r in conn.execute(
                    select(checkpoints.c.record).where(checkpoints.c.experiment_id == exp_id).order_by(checkpoints.c.idx)
                )
            ]
        return record

    def list_experiments(
        self,
        namespaces: list[str] | None = None,
        project: str | None = None,
        status: str | None = None,
        q: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict:
        """Experiments, newest first; ``namespaces=None`` means every namespace."""
        where = []
        if namespaces is not None:
            if not namespaces:
                return {"experiments": [], "total": 0}
            where.append(experiments.c.namespace.in_(namespaces))
        if project:
            where.append(experiments.c.project == project)
        if status:
            where.append(experiments.c.status == status)
        if q:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(experiments.c.prefix.like(f"%{escaped}%", escape="\\"))
        cond = and_(*where) if where else True
        with self.reading() as conn:
            total = conn.execute(select(func.count()).select_from(experiments).where(cond)).scalar()
            rows = conn.execute(
                select(experiments)
                .where(cond)
                .order_by(experiments.c.started_at.desc().nulls_last(), experiments.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            latest = latest_points(conn, [r.id for r in rows])
        out = []
        for row in rows:
            record = _record(row._mapping)
            record["params"] = row.params
            record["metrics"] = latest.get(row.id, {})
            out.append(record)
        return {"experiments": out, "total": total}

    def projects(self, namespaces: list[str] | None = None) -> list[dict]:
        stmt = select(experiments.c.namespace, experiments.c.project, func.count()).group_by(
            experiments.c.namespace, experiments.c.project
        )
        if namespaces is not None:
            stmt = stmt.where(experiments.c.namespace.in_(namespaces))
        with self.reading() as conn:
            rows = conn.execute(stmt.order_by(experiments.c.namespace, experiments.c.project)).all()
        return [{"namespace": ns, "project": project, "experiments": n} for ns, project, n in rows]

    # -- documents ------------------------------------------------------------

    def set_document(self, exp_id: int, kind: str, values: Any) -> dict:
        column = _document_column(kind)
        values = document(values, kind)
        with self.writing() as conn:
            row = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id).with_for_update()).first()
            if row is None:
                raise no_experiment(exp_id)
            merged = {**row[0], **values}
            conn.execute(update(experiments).where(experiments.c.id == exp_id).values({column: merged, "updated_at": time.time()}))
        return merged

    def get_document(self, exp_id: int, kind: str) -> dict:
        column = _document_column(kind)
        with self.reading() as conn:
            row = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id)).first()
        if row is None:
            raise no_experiment(exp_id)
        return row[0]

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
        start = checked_start_index(start_index)
        rows = []
        for k, record in enumerate(json_array(records, "records")):
            record = log_record(record, start + k)
            level, ts = record["level"], record["timestamp"]
            rows.append((start + k, float(ts), LEVELS.index(level), orjson.dumps(record)))
        with self.writing() as conn:
            count = self._count_for_update(conn, exp_id, "logs_count")
            if start > count:
                raise Conflict(f"logs: start_index {start} would leave a gap; the server holds {count} records, so send from index {count}")
            new = rows[count - start :]
            if new:
                conn.execute(
                    dialect_insert(conn)(logs).on_conflict_do_nothing(),
                    [{"experiment_id": exp_id, "idx": i, "ts": ts, "level_no": lv, "record": rec} for i, ts, lv, rec in new],
                )
                count = new[-1][0] + 1
                conn.execute(update(experiments).where(experiments.c.id == exp_id).values(logs_count=count))
        return {"accepted": len(new), "total": count}

    def read_logs(
        self,
        exp_id: int,
        start_index: int = 0,
        limit: int = 1000,
        level: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict:
        where = [logs.c.experiment_id == exp_id, logs.c.idx >= start_index]
        if level is not None:
            log_level(level)
            if level != LEVELS[0]:
                where.append(logs.c.level_no >= LEVELS.index(level))
        if since is not None:
            where.append(logs.c.ts >= since)
        if until is not None:
            where.append(logs.c.ts <= until)
        with self.reading() as conn:
            total = conn.execute(select(experiments.c.logs_count).where(experiments.c.id == exp_id)).scalar()
            if total is None:
                raise no_experiment(exp_id)
            rows = conn.execute(select(logs.c.record).where(*where).order_by(logs.c.idx).limit(limit + 1)).all()
        records = [_codec.loads(bytes(r[0])) for r in rows[:limit]]
        end = records[-1]["index"] if records else start_index - 1
        return {"data": records, "start_index": start_index, "end_index": end, "total": total, "has_more": len(rows) > limit}

    def append_checkpoints(self, exp_id: int, start_index: Any, records: Any) -> dict:
        start = checked_start_index(start_index)
        checked = [checkpoint_record(record, start + k) for k, record in enumerate(json_array(records, "records"))]
        with self.writing() as conn:
            count = self._count_for_update(conn, exp_id, "checkpoints_count")
            if start > count:
                raise Conflict(
                    f"checkpoints: start_index {start} would leave a gap; the server holds {count}, so send from index {count}"
                )
            new = checked[count - start :]
            if new:
                conn.execute(
                    dialect_insert(conn)(checkpoints).on_conflict_do_nothing(),
                    [{"experiment_id": exp_id, "idx": count + k, "record": orjson.dumps(r)} for k, r in enumerate(new)],
                )
                count += len(new)
                values: dict[str, Any] = {"checkpoints_count": count}
                best = [r for r in new if r.get("is_best")]
                if best:
                    row = conn.execute(select(experiments.c.meta).where(experiments.c.id == exp_id)).first()
                    # As the local API keeps it in experiment.json: the record without its index.
                    values["meta"] = {**row.meta, "best_checkpoint": {k: v for k, v in best[-1].items() if k != "index"}}
                conn.execute(update(experiments).where(experiments.c.id == exp_id).values(**values))
        return {"accepted": len(new), "total": count}

    def _count_for_update(self, conn, exp_id: int, column: str) -> int:
        count = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id).with_for_update()).scalar()
        if count is None:
            raise no_experiment(exp_id)
        return count

    def progress(self, exp_id: int) -> dict:
        with self.reading() as conn:
            row = conn.execute(
                select(experiments.c.logs_count, experiments.c.checkpoints_count).where(experiments.c.id == exp_id)
            ).first()
            if row is None:
                raise no_experiment(exp_id)
            counts = series_totals(conn, exp_id)
            local_id = conn.execute(select(experiments.c.meta).where(experiments.c.id == exp_id)).scalar().get("local_id")
        held = {"metrics": counts, "logs": row.logs_count, "checkpoints": row.checkpoints_count}
        if local_id is not None:
            # The client's own id of the run (experiment.json "id"): a client resuming
            # from a cached server id can tell it still addresses its own run.
            held["local_id"] = local_id
        return held

# -- helpers ------------------------------------------------------------------


def _record(row: Any) -> dict:
    row = dict(row)
    meta = dict(row.get("meta") or {})
    if "id" in meta:
        meta["local_id"] = meta.pop("id")  # the client's own id; ours is the integer id
    for key in ("params", "summary", "logs_count", "checkpoints_count", "meta", "started_at"):
        row.pop(key, None)
    return {**meta, **row, "status": meta.get("status")}


def _document_column(kind: str) -> str:
    try:
        return DOCUMENT_KINDS[kind]
    except KeyError:
        raise NotFound(f"unknown document kind {kind!r}; use one of {', '.join(DOCUMENT_KINDS)}") from None


def _check_same_run(row: Any, stored: dict, meta: dict) -> None:
    """Refuse (409) a run whose local id differs from the one that created this
    namespace+prefix: two runs that did not resume each other never merge.
    Every process of one run (a resume, several writers of one folder) sends the
    same id; a writer that sends none is not checked."""
    held, incoming = stored.get("local_id"), meta.get("local_id")
    if held and incoming and held != incoming:
        raise Collision(
            f"{row.prefix!r} in namespace {row.namespace!r} already holds another run (local id {held}); "
            f"this run's local id is {incoming}. Two runs that did not resume each other are never merged: "
            "upload this one under another name or namespace, or delete the server's copy first"
        )

