"""The SQL database behind a Store: the engine, its transactions and its tables.

SQLite (WAL) or PostgreSQL (psycopg 3) through SQLAlchemy Core. The resource
modules take their connections from one ``Database``: ``writing()`` and
``reading()`` for SQLAlchemy work, ``ingesting()`` for a raw DBAPI cursor on
the hot paths, whose statements they write for psycopg and adapt with
``statements()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, Iterator

import orjson
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from .. import _codec
from ._filter_sql import register_sqlite
from .schema import file_blobs, files, metadata, metric_batches, series

log = logging.getLogger(__package__)
CREATE_TABLES_LOCK = 7237001  # a PostgreSQL advisory lock key
RAW_FREE_MAX = 8  # DBAPI connections ingesting() keeps out of the pool


def normalize_db_url(url: str) -> str:
    """``postgresql://`` means psycopg 3; a bare path means a SQLite file."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    if "://" not in url:
        return "sqlite:///" + os.path.abspath(url)
    return url


def dialect_insert(conn):
    """The dialect's ``insert`` (it has ``on_conflict_do_nothing``; the generic one has not)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _json_dumps(obj: Any) -> str:
    return _codec.dumps(obj, default=str).decode()


class Database:
    def __init__(self, db_url: str) -> None:
        self.url = normalize_db_url(db_url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = self.url.split(":///", 1)[-1]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 60},
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=16,
                max_overflow=32,
            )
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(
                self.url,
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
        self._raw_free: list = []

    def statements(self, sql: dict[str, str]) -> dict[str, str]:
        """Statements written for psycopg (``%s``; ``%b`` sends bytes in binary), for
        the dialect in use: SQLite takes ``?`` and has no FOR UPDATE (its
        transactions already hold the one write lock)."""
        if self.is_sqlite:
            return {k: v.replace(" FOR UPDATE", "").replace("%s", "?").replace("%b", "?") for k, v in sql.items()}
        return dict(sql)

    def create_tables(self) -> None:
        with self._write_lock, self.engine.connect() as conn:
            if not self.is_sqlite:
                # Two servers starting at once must not both create the tables.
                with conn.begin():
                    conn.execute(text(f"SELECT pg_advisory_xact_lock({CREATE_TABLES_LOCK})"))
                    new_batches = not inspect(conn).has_table("metric_batches")
                    metadata.create_all(conn)
                    if new_batches:
                        # pglz, TOAST's default, costs more CPU per batch row than all of
                        # our ingest work; lz4 (PostgreSQL 14+, when built with it) is
                        # cheaper than storing the bytes raw and a third of the size.
                        try:
                            with conn.begin_nested():
                                conn.exec_driver_sql("ALTER TABLE metric_batches ALTER COLUMN lines SET COMPRESSION lz4")
                        except DBAPIError:
                            conn.exec_driver_sql("ALTER TABLE metric_batches ALTER COLUMN lines SET STORAGE EXTERNAL")
                    _migrate_point_rows(conn)
                    _add_missing_columns(conn)
            else:
                with conn.execution_options(sqlite_write=True).begin():
                    metadata.create_all(conn)
                    _migrate_point_rows(conn)
                    _add_missing_columns(conn)

    def close(self) -> None:
        while self._raw_free:
            self._raw_free.pop().close()
        self.engine.dispose()

    @contextlib.contextmanager
    def writing(self) -> Iterator[Any]:
        """A write transaction (SQLite: BEGIN IMMEDIATE under the process lock)."""
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def ingesting(self, autocommit: bool = False) -> Iterator[Any]:
        """A raw DBAPI cursor in a write transaction, for the ingest hot path.

        SQLAlchemy's Connection costs about as much CPU per statement as SQLite
        needs to store a whole 1,000-point batch row, so ingest talks to the
        driver directly. Connections come from the engine's pool (so they get
        its connect-time setup) and are kept on a short free list instead of
        being returned, which also skips the pool's per-checkout ping; one that
        fails is invalidated, and since ingest is idempotent the client's retry
        is safe.
        """
        with self._write_lock:
            try:
                fairy = self._raw_free.pop()
            except IndexError:
                fairy = self.engine.raw_connection()
            raw = fairy.driver_connection
            try:
                cursor = raw.cursor()
                if autocommit and not self.is_sqlite:  # one statement, its own transaction
                    raw.autocommit = True
                    try:
                        yield cursor
                    finally:
                        raw.autocommit = False
                    return
                if self.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                if self.is_sqlite:
                    cursor.execute("COMMIT")
                else:
                    raw.commit()
            except BaseException:
                try:
                    if self.is_sqlite:
                        if raw.in_transaction:
                            raw.execute("ROLLBACK")
                    else:
                        raw.rollback()
                except Exception:
                    fairy.invalidate()
                    fairy = None
                raise
            finally:
                if fairy is not None:
                    if len(self._raw_free) < RAW_FREE_MAX:
                        self._raw_free.append(fairy)
                    else:
                        fairy.close()  # back to the engine's pool

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A read transaction that sees one snapshot (hot rows and chunks agree)."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn


def _sqlite_setup(engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode loses nothing when the process dies (only on power loss).
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Some builds (Debian's) zero every freed page; compaction frees a batch's
        # overflow pages every 10,000 points, and those points live on in chunks.
        cursor.execute("PRAGMA secure_delete=FAST")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()
        register_sqlite(dbapi_conn)  # what compiled filters call: Python's glob and regex

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A writer takes the write lock up front; a reader's deferred BEGIN gives a snapshot.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "BEGIN")


def _add_missing_columns(conn) -> None:
    """Columns and indexes added since a database was created: ``series.stats`` and
    ``series.headline`` (filled by ``Metrics.backfill_stats``), ``file_blobs.used_at``
    (null: ``created_at`` counts), ``ix_files_sha256``."""
    for index in files.indexes:
        index.create(conn, checkfirst=True)
    for table in (series, file_blobs):
        have = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for column in table.c:
            if column.name not in have:
                kind = column.type.dialect_impl(conn.dialect).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                log.warning("added the column %s.%s", table.name, column.name)


def _migrate_point_rows(conn) -> None:
    """Stores written before batch rows held one metric_points row per point:
    fold those into batch rows (of up to 1,000 points) and drop the old table."""
    if not inspect(conn).has_table("metric_points"):
        return
    insert = dialect_insert(conn)(metric_batches)
    run: list = []

    def flush() -> None:
        if run:
            lines = [bytes(r[3]) for r in run]
            conn.execute(
                insert.values(
                    series_id=run[0][0], start_idx=run[0][1], n_points=len(run), first_ts=run[0][2],
                    last_ts=run[-1][2], lines=b"\n".join(lines),
                )
            )
            run.clear()

    rows = conn.exec_driver_sql("SELECT series_id, idx, ts, line FROM metric_points ORDER BY series_id, idx").fetchall()
    for row in rows:
        if run and (row[0] != run[0][0] or row[1] != run[-1][1] + 1 or len(run) >= 1000):
            flush()
        run.append(row)
    flush()
    conn.exec_driver_sql("DROP TABLE metric_points")
    log.warning("moved %d hot metric points into batch rows", len(rows))
