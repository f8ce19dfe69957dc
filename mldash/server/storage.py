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

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, ContextManager, Iterator

import orjson
from sqlalchemy import and_, func, select, text, update

from .. import _codec
from .._checks import LEVELS, STATUSES
from .._naming import split_path
from .._runfolder import decode_points
from . import chunks
from ._database import Database, dialect_insert, normalize_db_url
from ._errors import Collision, Conflict, NotFound, StoreError, no_experiment
from ._validation import SeriesEntry, check_namespace, checked, checkpoint_record, document, experiment_meta
from ._validation import finite, json_array, lines_blob, log_level, log_record, series_entry
from ._validation import start_index as checked_start_index
from .blobs import open_blobs
from .schema import checkpoints, experiments, logs, series

__all__ = [
    "DOCUMENT_KINDS", "HOT_LIMIT", "LEVELS", "MAX_CHUNKS_PER_PASS", "MAX_HOT", "STATUSES", "Collision", "Conflict",
    "NotFound", "Store", "StoreError", "check_namespace", "chunk_key", "normalize_db_url", "points_json",
]

DOCUMENT_KINDS = {"parameters": "params", "summary": "summary"}
HOT_LIMIT = chunks.CHUNK_POINTS  # a series keeps at most this many hot points after compaction
MAX_HOT = 4 * HOT_LIMIT  # past this, a request compacts its series itself (the compactor is behind)
MAX_CHUNKS_PER_PASS = 16  # chunks one compaction transaction records (bounds its memory)
log = logging.getLogger("mldash.server")

# The hot path's statements, written for psycopg (Database.statements adapts them).
_SQL = {
    "series_for_update": "SELECT id, total, cold_count FROM series WHERE experiment_id = %s AND name = %s FOR UPDATE",
    "series_lookup": "SELECT id, total, cold_count FROM series WHERE experiment_id = %s AND name = %s",
    "insert_series": "INSERT INTO series (experiment_id, name, total, cold_count) VALUES (%s, %s, 0, 0) ON CONFLICT DO NOTHING",
    "experiment_exists": "SELECT id FROM experiments WHERE id = %s",
    "series_counts": "SELECT experiment_id, total, cold_count FROM series WHERE id = %s",
    "insert_batch": "INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) VALUES (%s, %s, %s, %s, %s, %b)",
    "set_total": "UPDATE series SET total = %s, last_line = %b WHERE id = %s",
    "insert_batch_set_total": (
        "WITH b AS (INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) "
        "VALUES (%s, %s, %s, %s, %s, %b)) UPDATE series SET total = %s, last_line = %b WHERE id = %s"
    ),
    # PostgreSQL only: lock the series row, and when the batch starts at its total,
    # insert the batch row and move the total, all in one statement; it returns
    # the series as it was, so the caller sees whether anything was stored.
    "append_where_it_ends": (
        "WITH s AS (SELECT id, total, cold_count FROM series WHERE experiment_id = %s AND name = %s FOR UPDATE), "
        "b AS (INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) "
        "SELECT id, total, %s, %s, %s, %b FROM s WHERE total = %s), "
        "u AS (UPDATE series SET total = s.total + %s, last_line = %b FROM s WHERE series.id = s.id AND s.total = %s) "
        "SELECT id, total, cold_count FROM s"
    ),
    "cold_for_update": "SELECT cold_count FROM series WHERE id = %s FOR UPDATE",
    "insert_chunk": (
        "INSERT INTO metric_chunks (series_id, chunk_no, first_index, count, key, size, first_ts, last_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ),
    "delete_batches": "DELETE FROM metric_batches WHERE series_id = %s AND start_idx >= %s AND start_idx < %s",
    "set_cold": "UPDATE series SET cold_count = %s WHERE id = %s",
    "batches_from": (
        "SELECT start_idx, n_points, first_ts, last_ts, lines FROM metric_batches "
        "WHERE series_id = %s AND start_idx >= %s AND start_idx < %s ORDER BY start_idx"
    ),
    # The row holding hot_from (the last one starting at or before it) and those after, up to end.
    "batches_overlapping": (
        "SELECT start_idx, lines FROM metric_batches WHERE series_id = %s AND start_idx >= "
        "(SELECT COALESCE(MAX(start_idx), 0) FROM metric_batches WHERE series_id = %s AND start_idx <= %s) "
        "AND start_idx < %s ORDER BY start_idx"
    ),
    "over_hot": "SELECT id FROM series WHERE total - cold_count > %s",
}


class Store:
    def __init__(self, db_url: str, blob_url: str, *, s3_endpoint: str | None = None, create: bool = True) -> None:
        self.blobs = open_blobs(blob_url, s3_endpoint)
        self._db = Database(db_url)
        self.db_url, self.engine, self.is_sqlite = self._db.url, self._db.engine, self._db.is_sqlite
        self._headers: OrderedDict[str, Any] = OrderedDict()
        self._headers_lock = threading.Lock()
        self._sql = self._db.statements(_SQL)
        self._compact_lock = threading.Lock()  # one compaction at a time in this process
        self._compactor = _Compactor(self)
        if create:
            self.create_tables()

    # -- plumbing -------------------------------------------------------------

    def create_tables(self) -> None:
        self._db.create_tables()

    def close(self) -> None:
        """Finish pending compactions, then release the database connections."""
        self._compactor.stop()
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
            record["metrics"] = self._latest(conn, [exp_id]).get(exp_id, {})
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
            latest = self._latest(conn, [r.id for r in rows])
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

    def _latest(self, conn, exp_ids: list[int]) -> dict[int, dict]:
        out: dict[int, dict] = {}
        if not exp_ids:
            return out
        rows = conn.execute(
            select(series.c.experiment_id, series.c.name, series.c.total, series.c.last_line)
            .where(series.c.experiment_id.in_(exp_ids))
            .order_by(series.c.name)
        )
        for exp_id, name, total, line in rows:
            if line is not None and total:
                out.setdefault(exp_id, {})[name] = decode_points([bytes(line)], total - 1)[0]
        return out

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
        """Store points; ones already stored (same index) are skipped.

        ``batches`` is ``[{"name", "start_index", "points": [[ms, {fields}], ...]}]``.
        A batch must not leave a gap: its start_index is at most the number of
        points the server holds for that series (409 otherwise). Each series'
        new points become one ``metric_batches`` row, whatever their number.
        """
        # Checked and serialized before any lock is taken; sorted by name (stable,
        # so one name's entries keep their order) so that two requests always lock
        # series rows in the same order and can never deadlock each other.
        prepared = sorted((series_entry(b) for b in json_array(batches, "series")), key=lambda p: p.name)
        if not self.is_sqlite and len(prepared) == 1 and prepared[0].points:
            done = self._append_where_it_ends(exp_id, prepared[0])
            if done is not None:
                return done
        accepted = 0
        counts: dict[str, int] = {}
        hot: dict[int, int] = {}
        sql = self._sql
        with self.ingesting() as cursor:
            if not prepared:
                self._require_experiment_raw(cursor, exp_id)
            for batch in prepared:
                name, start, points = batch.name, batch.start, batch.points
                cursor.execute(sql["series_for_update"], (exp_id, name))
                row = cursor.fetchone()
                if row is None:  # a new series
                    self._require_experiment_raw(cursor, exp_id)
                    cursor.execute(sql["insert_series"], (exp_id, name))
                    cursor.execute(sql["series_for_update"], (exp_id, name))
                    row = cursor.fetchone()
                series_id, total, cold = row
                if start > total:
                    raise Conflict(
                        f"metric {name!r}: start_index {start} would leave a gap; the server holds "
                        f"{total} points (indices 0..{total - 1}), so send from index {total}"
                    )
                skip = total - start  # already stored: a retry, or an overlap
                if skip < len(points):
                    if skip > 0:
                        points = points[skip:]
                        blob = lines_blob(points)
                    else:
                        blob = batch.blob
                    last_line = blob[blob.rfind(b"\n") + 1 :]
                    first_ts, last_ts = _ts(points[0][0]), _ts(points[-1][0])
                    new_total = total + len(points)
                    if self.is_sqlite:
                        cursor.execute(sql["insert_batch"], (series_id, total, len(points), first_ts, last_ts, blob))
                        cursor.execute(sql["set_total"], (new_total, last_line, series_id))
                    else:  # one round trip for both
                        cursor.execute(
                            sql["insert_batch_set_total"],
                            (series_id, total, len(points), first_ts, last_ts, blob, new_total, last_line, series_id),
                        )
                    accepted += len(points)
                    total = new_total
                counts[name] = total
                hot[series_id] = total - cold
        self._after_append(hot)
        return {"accepted": accepted, "counts": counts}

    def _append_where_it_ends(self, exp_id: int, batch: SeriesEntry) -> dict | None:
        """PostgreSQL, one series whose batch starts exactly at its stored total
        (what a client streaming points sends): lock the series, store the batch
        row and move the total in one autocommitted statement, one round trip.
        None when the series is new or the batch overlaps or leaves a gap: the
        statement then changed nothing, and the general path takes over."""
        points, blob = batch.points, batch.blob
        n = len(points)
        with self.ingesting(autocommit=True) as cursor:
            cursor.execute(
                self._sql["append_where_it_ends"],
                (exp_id, batch.name, n, _ts(points[0][0]), _ts(points[-1][0]), blob, batch.start,
                 n, blob[blob.rfind(b"\n") + 1 :], batch.start),
            )
            row = cursor.fetchone()
        if row is None or row[1] != batch.start:
            return None
        series_id, before, cold = row
        self._after_append({series_id: before + n - cold})
        return {"accepted": n, "counts": {batch.name: before + n}}

    def _require_experiment_raw(self, cursor, exp_id: int) -> None:
        cursor.execute(self._sql["experiment_exists"], (exp_id,))
        if cursor.fetchone() is None:
            raise no_experiment(exp_id)

    def _after_append(self, hot: dict[int, int]) -> None:
        """Hand series past HOT_LIMIT hot points to the background compactor.

        Compaction (a chunk object written to the folder or bucket, then a short
        transaction) runs off the request path, so an ingest request costs a few
        rows, never an object upload. Should the compactor fall behind, the
        request that finds a series past MAX_HOT compacts it itself: the hot tier
        stays bounded whatever the ingest rate.
        """
        due = [s for s, n in hot.items() if n > HOT_LIMIT]
        if not due:
            return
        for series_id in [s for s in due if hot[s] > MAX_HOT]:
            self.compact(series_id)
        self._compactor.submit(due)

    def wait_for_compaction(self, timeout: float | None = None) -> bool:
        """Block until the background compactor has nothing left to do (tests, benchmarks)."""
        return self._compactor.wait(timeout)

    def compact(self, series_id: int) -> int:
        """Move whole chunks of a series' oldest hot points into the object store.

        Returns how many chunks this call wrote. A pass reads the hot rows it
        needs in one snapshot, cuts them into chunks of CHUNK_POINTS points
        (a batch row straddling a chunk edge is split, its tail stays hot) and
        writes each chunk as an object (its key is fixed by series and chunk
        number, its bytes by the points, so writing it twice is harmless). One
        short transaction then records them, re-checking ``cold_count`` under
        the series lock: if another compactor got there first, ours changes
        nothing. The series row is locked only for that last step, so ingest
        carries on while objects upload.
        """
        written = 0
        size = chunks.CHUNK_POINTS
        sql = self._sql
        with self._compact_lock, self._compaction_guard(series_id) as ours:
            if not ours:
                return 0  # another server process is compacting this series
            while True:
                plan = self._chunk_plan(series_id)
                if plan is None:
                    return written
                exp_id, cold, lines, first_ts, last_ts, due = plan
                n_chunks = min(len(lines) // size, due)
                records = []
                for k in range(n_chunks):
                    chunk_lines = lines[k * size : (k + 1) * size]
                    chunk_no = cold // size + k
                    key = chunk_key(exp_id, series_id, chunk_no)
                    data = chunks.encode(chunk_lines)
                    self.blobs.put(key, data)
                    ts = first_ts if k == 0 else _line_ts(chunk_lines[0])
                    records.append((series_id, chunk_no, cold + k * size, size, key, len(data), ts, _line_ts(chunk_lines[-1])))
                new_cold = cold + n_chunks * size
                rest = lines[n_chunks * size :]
                with self.ingesting() as cursor:
                    cursor.execute(sql["cold_for_update"], (series_id,))
                    if cursor.fetchone()[0] != cold:
                        return written  # someone else recorded these chunks meanwhile
                    cursor.executemany(sql["insert_chunk"], records)
                    cursor.execute(sql["delete_batches"], (series_id, cold, new_cold))
                    if rest:  # the part of the last batch row beyond the chunks stays hot
                        cursor.execute(
                            sql["insert_batch"], (series_id, new_cold, len(rest), _line_ts(rest[0]), last_ts, b"\n".join(rest))
                        )
                    cursor.execute(sql["set_cold"], (new_cold, series_id))
                written += n_chunks

    @contextlib.contextmanager
    def _compaction_guard(self, series_id: int) -> Iterator[bool]:
        """PostgreSQL: a session advisory lock per series, so several servers
        never compact one series at once (it only saves duplicate work: the
        cold_count re-check keeps it correct). SQLite: the write lock suffices."""
        if self.is_sqlite:
            yield True
            return
        with self.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(7237002, :s)"), {"s": series_id}).scalar()
            conn.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(7237002, :s)"), {"s": series_id})
                    conn.commit()

    def _chunk_plan(self, series_id: int):
        """The hot lines from ``cold_count`` on that make the chunks due now (so that at
        most HOT_LIMIT points stay hot, at most MAX_CHUNKS_PER_PASS chunks), or None."""
        size = chunks.CHUNK_POINTS
        with self.reading() as conn:
            row = conn.exec_driver_sql(self._sql["series_counts"], (series_id,)).first()
            if row is None:
                return None
            exp_id, total, cold = row
            due = min(-(-(total - cold - HOT_LIMIT) // size), MAX_CHUNKS_PER_PASS)
            if due <= 0:
                return None
            rows = conn.exec_driver_sql(self._sql["batches_from"], (series_id, cold, cold + due * size)).fetchall()
        lines: list[bytes] = []
        expected = cold
        for start, n, _first_ts, _last_ts, blob in rows:
            parts = bytes(blob).split(b"\n")
            if start != expected or len(parts) != n:  # never chunk a range with a hole
                log.error("metric series %s: hot rows do not tile from %s (row at %s); not compacting", series_id, expected, start)
                return None
            lines.extend(parts)
            expected += n
        if len(lines) < size:
            return None
        return exp_id, cold, lines, rows[0][2], rows[-1][3], due

    def series_to_compact(self) -> list[int]:
        """Series holding more than HOT_LIMIT hot points (left so by a server that stopped)."""
        with self.reading() as conn:
            return [r[0] for r in conn.exec_driver_sql(self._sql["over_hot"], (HOT_LIMIT,))]

    def metric_totals(self, exp_id: int) -> dict[str, dict]:
        with self.reading() as conn:
            _require_experiment(conn, exp_id)
            rows = conn.execute(
                select(series.c.name, series.c.total, series.c.last_line)
                .where(series.c.experiment_id == exp_id)
                .order_by(series.c.name)
            ).all()
        return {
            name: {"total": total, "last": decode_points([bytes(line)], total - 1)[0] if line is not None and total else None}
            for name, total, line in rows
        }

    def metric_lines(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> tuple[list[bytes], int]:
        """The stored JSON lines of points ``start_index..`` (at most ``limit``) and the series total.

        Cold chunks and hot batch rows are read in one snapshot, so a compaction
        running at the same time can neither hide nor repeat a point. Only the
        chunks and batch rows that overlap the range are read.
        """
        sql = self._sql
        with self.reading() as conn:
            row = conn.exec_driver_sql(sql["series_lookup"], (exp_id, name)).first()
            if row is None:
                _require_experiment(conn, exp_id)
                return [], 0
            series_id, total, cold = row
            end = min(start_index + limit, total)
            lines: list[bytes] = []
            if start_index < min(end, cold):
                lines.extend(self._cold_lines(exp_id, series_id, start_index, min(end, cold)))
            hot_from = max(start_index, cold)
            if hot_from < end:
                for start, blob in conn.exec_driver_sql(sql["batches_overlapping"], (series_id, series_id, hot_from, end)):
                    parts = bytes(blob).split(b"\n")
                    lines.extend(parts[max(hot_from - start, 0) : end - start])
        return lines, total

    def read_metric(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        """``Metric.read()``'s shape, stitched from cold chunks and hot rows."""
        lines, total = self.metric_lines(exp_id, name, start_index, limit)
        end_index = start_index + len(lines) - 1
        return {
            "data": decode_points(lines, start_index),
            "start_index": start_index,
            "end_index": end_index,
            "total": total,
            "has_more": end_index + 1 < total,
        }

    def read_metric_json(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> bytes:
        """``read_metric`` already encoded as JSON, built from the stored lines
        without decoding their fields (NaN/inf stay tagged as stored)."""
        lines, total = self.metric_lines(exp_id, name, start_index, limit)
        end_index = start_index + len(lines) - 1
        return b'{"data":[%b],"start_index":%d,"end_index":%d,"total":%d,"has_more":%b}' % (
            points_json(lines, start_index), start_index, end_index, total, b"true" if end_index + 1 < total else b"false",
        )

    def _cold_lines(self, exp_id: int, series_id: int, start: int, end: int) -> list[bytes]:
        size = chunks.CHUNK_POINTS
        out: list[bytes] = []
        for chunk_no in range(start // size, (end - 1) // size + 1):
            key = chunk_key(exp_id, series_id, chunk_no)
            base = chunk_no * size
            first, last = max(start, base) - base, min(end, base + size) - base
            offsets = self._chunk_header(key)
            hsize = chunks.header_size(len(offsets) - 1)
            body = self.blobs.read(key, hsize + offsets[first], hsize + offsets[last])
            out.extend(chunks.split_lines(body, offsets, first, last))
        return out

    def _chunk_header(self, key: str):
        with self._headers_lock:
            offsets = self._headers.get(key)
            if offsets is not None:
                self._headers.move_to_end(key)
                return offsets
        offsets = chunks.parse_header(self.blobs.read(key, 0, chunks.header_size(chunks.CHUNK_POINTS)))
        with self._headers_lock:
            self._headers[key] = offsets
            while len(self._headers) > 256:  # ~10 MB of headers at most
                self._headers.popitem(last=False)
        return offsets

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
            counts = dict(conn.execute(select(series.c.name, series.c.total).where(series.c.experiment_id == exp_id)).all())
            local_id = conn.execute(select(experiments.c.meta).where(experiments.c.id == exp_id)).scalar().get("local_id")
        held = {"metrics": counts, "logs": row.logs_count, "checkpoints": row.checkpoints_count}
        if local_id is not None:
            # The client's own id of the run (experiment.json "id"): a client resuming
            # from a cached server id can tell it still addresses its own run.
            held["local_id"] = local_id
        return held

    def metric_names(self, exp_id: int) -> list[str]:
        with self.reading() as conn:
            return sorted(r[0] for r in conn.execute(select(series.c.name).where(series.c.experiment_id == exp_id)))


def points_json(lines: list[bytes], first_index: int) -> bytes:
    """Stored lines ``[ms, {fields}]`` as read() points, comma-joined, by slicing bytes.

    Lines are compact orjson output (written by append_metrics), so the first
    comma ends the timestamp and the fields object runs to the closing bracket.
    """
    out = []
    dumps, loads = orjson.dumps, orjson.loads
    for i, line in enumerate(lines, first_index):
        cut = line.index(b",")
        out.append(b'{"index":%d,"timestamp":%b,"data":%b}' % (i, dumps(loads(line[1:cut]) / 1000), line[cut + 1 : -1]))
    return b",".join(out)


def chunk_key(exp_id: int, series_id: int, chunk_no: int) -> str:
    return f"metrics/{exp_id}/{series_id}/{chunk_no:09d}.mldc"


# -- helpers ------------------------------------------------------------------


def _require_experiment(conn, exp_id: int) -> None:
    if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id)).first() is None:
        raise no_experiment(exp_id)


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


def _ts(value: Any) -> int:
    return int(value)


def _line_ts(line: bytes) -> int:
    """The ms timestamp at the start of a stored line ``[ms,{...}]``."""
    return int(orjson.loads(line[1 : line.index(b",")]))


class _Compactor:
    """One background thread per Store that compacts series handed to it.

    A series is queued at most once however many requests ask; on start it
    also picks up series a stopped server left past HOT_LIMIT. A failed
    compaction (object store down, say) is logged and retried when that series
    next receives points.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[int, None] = {}  # an ordered set
        self.busy = False
        self.stopping = False
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def submit(self, series_ids: list[int]) -> None:
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="mldash-compactor", daemon=True)
                self.thread.start()
            for series_id in series_ids:
                self.pending[series_id] = None
            self.cond.notify_all()

    def _run(self) -> None:
        try:
            leftovers = self.store.series_to_compact()
        except Exception:
            log.exception("could not list series left to compact")
            leftovers = []
        with self.cond:
            for series_id in leftovers:
                self.pending.setdefault(series_id, None)
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if not self.pending:
                    return
                series_id = next(iter(self.pending))
                del self.pending[series_id]
                self.busy = True
            failed = False
            try:
                self.store.compact(series_id)
            except Exception:
                failed = True
                log.exception("compacting metric series %s failed; it is retried on its next append", series_id)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()
            if failed and not self.stopping:
                time.sleep(1.0)  # don't hammer an object store that is down

    def wait(self, timeout: float | None = None) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: not self.pending and not self.busy, timeout)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
            thread = self.thread
        if thread is not None:
            thread.join()
