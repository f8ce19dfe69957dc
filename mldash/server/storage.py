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
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Iterator

import orjson
from sqlalchemy import and_, create_engine, event, func, select, text, update

from .. import _codec
from .._naming import metric_parts, split_path
from ..metrics import decode_points
from . import chunks
from .blobs import open_blobs
from .schema import checkpoints, experiments, logs, metadata, metric_chunks, metric_points, series, tokens

LEVELS = ("debug", "info", "warn", "error", "fatal")
STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
DOCUMENT_KINDS = {"parameters": "params", "summary": "summary"}
HOT_LIMIT = chunks.CHUNK_POINTS  # a series keeps at most this many hot points after compaction
_NAMESPACE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status to answer with."""

    status = 400


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


def check_namespace(namespace: Any) -> str:
    if namespace is None:
        return "default"
    if not isinstance(namespace, str) or not namespace or len(namespace) > 100 or not set(namespace) <= _NAMESPACE_CHARS:
        raise StoreError(f"namespace must be 1-100 characters of letters, digits, '.', '_' or '-', got {namespace!r}")
    return namespace


def _checked(fn, *args):
    try:
        return fn(*args)
    except (ValueError, TypeError) as error:
        raise StoreError(str(error)) from None


def normalize_db_url(url: str) -> str:
    """``postgresql://`` means psycopg 3; a bare path means a SQLite file."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    if "://" not in url:
        return "sqlite:///" + os.path.abspath(url)
    return url


def _json_dumps(obj: Any) -> str:
    return _codec.dumps(obj, default=str).decode()


class Store:
    def __init__(self, db_url: str, blob_url: str, *, s3_endpoint: str | None = None, create: bool = True) -> None:
        self.db_url = normalize_db_url(db_url)
        self.blobs = open_blobs(blob_url, s3_endpoint)
        self.is_sqlite = self.db_url.startswith("sqlite")
        if self.is_sqlite:
            path = self.db_url.split(":///", 1)[-1]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.engine = create_engine(
                self.db_url,
                connect_args={"check_same_thread": False, "timeout": 60},
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=16,
                max_overflow=32,
            )
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(
                self.db_url,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=12,
                max_overflow=24,
                pool_pre_ping=True,
            )
        # SQLite has one writer at a time; queueing writers on a lock here is much
        # faster than letting them spin on SQLITE_BUSY. Other processes still
        # wait on the database's own lock (busy timeout).
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        self._headers: OrderedDict[str, Any] = OrderedDict()
        self._headers_lock = threading.Lock()
        if create:
            self.create_tables()

    # -- plumbing -------------------------------------------------------------

    def create_tables(self) -> None:
        with self._write_lock, self.engine.connect() as conn:
            if not self.is_sqlite:
                # Two servers starting at once must not both create the tables.
                with conn.begin():
                    conn.execute(text("SELECT pg_advisory_xact_lock(7237001)"))
                    metadata.create_all(conn)
            else:
                with conn.execution_options(sqlite_write=True).begin():
                    metadata.create_all(conn)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        """A write transaction (SQLite: BEGIN IMMEDIATE under the process lock)."""
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A read transaction that sees one snapshot (hot rows and chunks agree)."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    # -- experiments ----------------------------------------------------------

    def upsert_experiment(self, namespace: Any, prefix: Any, meta: Any) -> dict:
        namespace = check_namespace(namespace)
        parts = _checked(split_path, prefix, "prefix")
        if meta is None:
            meta = {}
        meta = _check_meta(meta)
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
                    started_at=_number(stored.get("started_at")), created_at=now, updated_at=now,
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
        stored.update(meta)
        values = dict(meta=stored, updated_at=now, status=stored.get("status"), started_at=_number(stored.get("started_at")))
        conn.execute(update(experiments).where(experiments.c.id == row.id).values(**values))
        return _record({**row._mapping, **values})

    def patch_experiment(self, exp_id: int, meta: Any) -> dict:
        meta = _check_meta(meta)
        with self.writing() as conn:
            row = conn.execute(select(experiments).where(experiments.c.id == exp_id).with_for_update()).first()
            if row is None:
                raise NotFound(f"no experiment with id {exp_id}")
            return self._merge_meta(conn, row, meta, time.time())

    def experiment_namespace(self, exp_id: int) -> str:
        """The namespace of an experiment (for scope checks); NotFound if unknown."""
        with self.engine.connect() as conn:
            namespace = conn.execute(select(experiments.c.namespace).where(experiments.c.id == exp_id)).scalar()
        if namespace is None:
            raise NotFound(f"no experiment with id {exp_id}")
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
                raise NotFound(f"no experiment with id {exp_id}")
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
        if not isinstance(values, dict):
            raise StoreError(f"a {kind} document must be a JSON object (a flat dict), not {type(values).__name__}")
        with self.writing() as conn:
            row = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id).with_for_update()).first()
            if row is None:
                raise NotFound(f"no experiment with id {exp_id}")
            merged = {**row[0], **values}
            conn.execute(update(experiments).where(experiments.c.id == exp_id).values({column: merged, "updated_at": time.time()}))
        return merged

    def get_document(self, exp_id: int, kind: str) -> dict:
        column = _document_column(kind)
        with self.reading() as conn:
            row = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id)).first()
        if row is None:
            raise NotFound(f"no experiment with id {exp_id}")
        return row[0]

    # -- metrics --------------------------------------------------------------

    def append_metrics(self, exp_id: int, batches: Any) -> dict:
        """Store points; ones already stored (same index) are skipped.

        ``batches`` is ``[{"name", "start_index", "points": [[ms, {fields}], ...]}]``.
        A batch must not leave a gap: its start_index is at most the number of
        points the server holds for that series (409 otherwise).
        """
        prepared = [_prepare_series(b) for b in _list_of(batches, "series")]
        accepted = 0
        counts: dict[str, int] = {}
        to_compact = []
        with self.writing() as conn:
            _require_experiment(conn, exp_id)
            for name, start, points in prepared:
                series_id, total, cold = self._series_for_update(conn, exp_id, name)
                if start > total:
                    raise Conflict(
                        f"metric {name!r}: start_index {start} would leave a gap; the server holds "
                        f"{total} points (indices 0..{total - 1}), so send from index {total}"
                    )
                new = points[total - start :]
                if new:
                    first = max(start, total)
                    lines = [orjson.dumps(p) for p in new]
                    self._insert_points(conn, series_id, first, new, lines)
                    total = first + len(new)
                    conn.execute(
                        update(series).where(series.c.id == series_id).values(total=total, last_line=lines[-1])
                    )
                    accepted += len(new)
                counts[name] = total
                if total - cold > HOT_LIMIT:
                    to_compact.append(series_id)
        for series_id in to_compact:
            self.compact(series_id)
        return {"accepted": accepted, "counts": counts}

    def _series_for_update(self, conn, exp_id: int, name: str) -> tuple[int, int, int]:
        stmt = (
            select(series.c.id, series.c.total, series.c.cold_count)
            .where(series.c.experiment_id == exp_id, series.c.name == name)
            .with_for_update()
        )
        row = conn.execute(stmt).first()
        if row is None:
            conn.execute(
                _insert(conn)(series).values(experiment_id=exp_id, name=name, total=0, cold_count=0).on_conflict_do_nothing()
            )
            row = conn.execute(stmt).first()
        return row.id, row.total, row.cold_count

    def _insert_points(self, conn, series_id: int, first: int, points: list, lines: list[bytes]) -> None:
        if self.is_sqlite:
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO metric_points (series_id, idx, ts, line) VALUES (?, ?, ?, ?)",
                [(series_id, first + k, int(p[0]), line) for k, (p, line) in enumerate(zip(points, lines))],
            )
            return
        # PostgreSQL: binary COPY is about 3x faster than any INSERT. The series row
        # is locked and these indices are past its total, so they cannot exist yet;
        # should one exist anyway, the savepoint falls back to ON CONFLICT DO NOTHING.
        import psycopg

        try:
            with conn.begin_nested():
                raw = conn.connection.driver_connection
                with raw.cursor() as cursor, cursor.copy(
                    "COPY metric_points (series_id, idx, ts, line) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int4", "int8", "int8", "bytea"])
                    write = copy.write_row
                    for k, (p, line) in enumerate(zip(points, lines)):
                        write((series_id, first + k, int(p[0]), line))
            return
        except psycopg.errors.UniqueViolation:
            pass
        conn.exec_driver_sql(
            "INSERT INTO metric_points (series_id, idx, ts, line) "
            "SELECT %(s)s, i, t, l FROM unnest(%(i)s::bigint[], %(t)s::bigint[], %(l)s::bytea[]) AS u(i, t, l) "
            "ON CONFLICT DO NOTHING",
            {"s": series_id, "i": list(range(first, first + len(points))), "t": [int(p[0]) for p in points], "l": lines},
        )

    def compact(self, series_id: int) -> int:
        """Move whole chunks of the oldest hot points into the object store.

        Returns how many chunks this call wrote. The chunk object is written
        before the transaction that records it commits, and its key is fixed by
        (series, chunk number), so a crash in between leaves at worst an object
        that the next compaction overwrites with the same bytes.
        """
        written = 0
        with self.writing() as conn:
            if not self.is_sqlite:
                got = conn.execute(text("SELECT pg_try_advisory_xact_lock(7237002, :s)"), {"s": series_id}).scalar()
                if not got:
                    return 0  # another server process is compacting this series
            row = conn.execute(
                select(series.c.experiment_id, series.c.total, series.c.cold_count).where(series.c.id == series_id)
            ).first()
            exp_id, total, cold = row
            size = chunks.CHUNK_POINTS
            while total - cold > HOT_LIMIT:
                rows = conn.exec_driver_sql(
                    "SELECT idx, ts, line FROM metric_points WHERE series_id = %s AND idx >= %s AND idx < %s ORDER BY idx"
                    if not self.is_sqlite
                    else "SELECT idx, ts, line FROM metric_points WHERE series_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
                    (series_id, cold, cold + size),
                ).fetchall()
                if len(rows) != size or rows[0][0] != cold or rows[-1][0] != cold + size - 1:  # never chunk a range with a hole
                    break
                data = chunks.encode([bytes(r[2]) for r in rows])
                chunk_no = cold // size
                key = chunk_key(exp_id, series_id, chunk_no)
                self.blobs.put(key, data)
                conn.execute(
                    _insert(conn)(metric_chunks)
                    .values(
                        series_id=series_id, chunk_no=chunk_no, first_index=cold, count=size, key=key,
                        size=len(data), first_ts=rows[0][1], last_ts=rows[-1][1],
                    )
                    .on_conflict_do_nothing()
                )
                conn.execute(
                    metric_points.delete().where(
                        metric_points.c.series_id == series_id, metric_points.c.idx >= cold, metric_points.c.idx < cold + size
                    )
                )
                cold += size
                conn.execute(update(series).where(series.c.id == series_id).values(cold_count=cold))
                written += 1
        return written

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

        Cold chunks and hot rows are read in one snapshot, so a compaction
        running at the same time can neither hide nor repeat a point.
        """
        with self.reading() as conn:
            row = conn.execute(
                select(series.c.id, series.c.total, series.c.cold_count).where(
                    series.c.experiment_id == exp_id, series.c.name == name
                )
            ).first()
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
                rows = conn.exec_driver_sql(
                    "SELECT line FROM metric_points WHERE series_id = %s AND idx >= %s AND idx < %s ORDER BY idx"
                    if not self.is_sqlite
                    else "SELECT line FROM metric_points WHERE series_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
                    (series_id, hot_from, end),
                ).fetchall()
                lines.extend(bytes(r[0]) for r in rows)
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
        start = _index(start_index)
        rows = []
        for k, record in enumerate(_list_of(records, "records")):
            if not isinstance(record, dict):
                raise StoreError(f"records[{k}] must be an object, not {type(record).__name__}")
            level = record.get("level", "info")
            if level not in LEVELS:
                raise StoreError(f"records[{k}]: unknown log level {level!r}; use one of {', '.join(LEVELS)}")
            ts = record.get("timestamp", time.time())
            if _number(ts) is None:
                raise StoreError(f"records[{k}]: timestamp must be a number of epoch seconds, got {ts!r}")
            record = {**record, "index": start + k, "level": level, "timestamp": ts}
            rows.append((start + k, float(ts), LEVELS.index(level), orjson.dumps(record)))
        with self.writing() as conn:
            count = self._count_for_update(conn, exp_id, "logs_count")
            if start > count:
                raise Conflict(f"logs: start_index {start} would leave a gap; the server holds {count} records, so send from index {count}")
            new = rows[count - start :]
            if new:
                conn.execute(
                    _insert(conn)(logs).on_conflict_do_nothing(),
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
            if level not in LEVELS:
                raise StoreError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
            if level != LEVELS[0]:
                where.append(logs.c.level_no >= LEVELS.index(level))
        if since is not None:
            where.append(logs.c.ts >= since)
        if until is not None:
            where.append(logs.c.ts <= until)
        with self.reading() as conn:
            total = conn.execute(select(experiments.c.logs_count).where(experiments.c.id == exp_id)).scalar()
            if total is None:
                raise NotFound(f"no experiment with id {exp_id}")
            rows = conn.execute(select(logs.c.record).where(*where).order_by(logs.c.idx).limit(limit + 1)).all()
        records = [_codec.loads(bytes(r[0])) for r in rows[:limit]]
        end = records[-1]["index"] if records else start_index - 1
        return {"data": records, "start_index": start_index, "end_index": end, "total": total, "has_more": len(rows) > limit}

    def append_checkpoints(self, exp_id: int, start_index: Any, records: Any) -> dict:
        start = _index(start_index)
        checked = []
        for k, record in enumerate(_list_of(records, "records")):
            if not isinstance(record, dict):
                raise StoreError(f"records[{k}] must be an object, not {type(record).__name__}")
            checked.append(record)
        with self.writing() as conn:
            count = self._count_for_update(conn, exp_id, "checkpoints_count")
            if start > count:
                raise Conflict(
                    f"checkpoints: start_index {start} would leave a gap; the server holds {count}, so send from index {count}"
                )
            new = checked[count - start :]
            if new:
                conn.execute(
                    _insert(conn)(checkpoints).on_conflict_do_nothing(),
                    [{"experiment_id": exp_id, "idx": count + k, "record": orjson.dumps(r)} for k, r in enumerate(new)],
                )
                count += len(new)
                values: dict[str, Any] = {"checkpoints_count": count}
                best = [r for r in new if r.get("is_best")]
                if best:
                    row = conn.execute(select(experiments.c.meta).where(experiments.c.id == exp_id)).first()
                    values["meta"] = {**row.meta, "best_checkpoint": best[-1]}
                conn.execute(update(experiments).where(experiments.c.id == exp_id).values(**values))
        return {"accepted": len(new), "total": count}

    def _count_for_update(self, conn, exp_id: int, column: str) -> int:
        count = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id).with_for_update()).scalar()
        if count is None:
            raise NotFound(f"no experiment with id {exp_id}")
        return count

    def progress(self, exp_id: int) -> dict:
        with self.reading() as conn:
            row = conn.execute(
                select(experiments.c.logs_count, experiments.c.checkpoints_count).where(experiments.c.id == exp_id)
            ).first()
            if row is None:
                raise NotFound(f"no experiment with id {exp_id}")
            counts = dict(conn.execute(select(series.c.name, series.c.total).where(series.c.experiment_id == exp_id)).all())
        return {"metrics": counts, "logs": row.logs_count, "checkpoints": row.checkpoints_count}

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


def _sqlite_setup(engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode loses nothing when the process dies (only on power loss).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A writer takes the write lock up front; a reader's deferred BEGIN gives a snapshot.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "BEGIN")


def _insert(conn):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _require_experiment(conn, exp_id: int) -> None:
    if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id)).first() is None:
        raise NotFound(f"no experiment with id {exp_id}")


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


def _check_meta(meta: Any) -> dict:
    if not isinstance(meta, dict):
        raise StoreError(f"meta must be a JSON object, not {type(meta).__name__}")
    status = meta.get("status")
    if status is not None and status not in STATUSES:
        raise StoreError(f"meta.status must be one of {', '.join(STATUSES)}, got {status!r}")
    for key in ("namespace", "prefix"):
        meta = {k: v for k, v in meta.items() if k != key}  # identity comes from the request, not meta
    return meta


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**62:
        raise StoreError(f"start_index must be an integer >= 0, got {value!r}")
    return value


def _list_of(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise StoreError(f"{what} must be a JSON array, not {type(value).__name__}")
    return value


def _prepare_series(batch: Any) -> tuple[str, int, list]:
    if not isinstance(batch, dict):
        raise StoreError(f"each series entry must be an object with name, start_index, points; got {type(batch).__name__}")
    name = batch.get("name")
    _checked(metric_parts, name)
    start = _index(batch.get("start_index"))
    points = _list_of(batch.get("points"), f"series {name!r}: points")
    for k, point in enumerate(points):
        # Exactly a data.jsonl line: [ms_epoch, {fields}].
        if (
            point.__class__ is not list
            or len(point) != 2
            or point[1].__class__ is not dict
            or point[0].__class__ not in (int, float)
            or not (-(2**62) < point[0] < 2**62)
        ):
            raise StoreError(
                f"series {name!r}: points[{k}] must be [ms_epoch, {{fields}}] (a number and an object), got {str(point)[:100]}"
            )
    return name, start, points
