"""Compaction: a series' oldest hot points cut into chunk objects in the blob store.

Compaction (a chunk object written to the folder or bucket, then a short
transaction) runs on a background thread, off the request path, so an ingest
request costs a few rows, never an object upload. Should that thread fall
behind, the request that finds a series past MAX_HOT compacts it itself: the
hot tier stays bounded whatever the ingest rate. Several servers may compact
one store: a per-series advisory lock (PostgreSQL) or the database's single
write lock (SQLite) keeps them from duplicating work, and a re-check of
``cold_count`` under the series lock keeps them correct.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Iterator

import orjson
from sqlalchemy import text

from . import chunks
from ._metrics import INSERT_BATCH

HOT_LIMIT = chunks.CHUNK_POINTS  # a series keeps at most this many hot points after compaction
MAX_HOT = 4 * HOT_LIMIT  # past this, a request compacts its series itself (the compactor is behind)
MAX_CHUNKS_PER_PASS = 16  # chunks one compaction transaction records (bounds its memory)
COMPACTION_LOCK = 7237002  # a PostgreSQL advisory lock key (the series id is the second half)
RETRY_PAUSE = 1.0  # seconds the thread waits after a failure: don't hammer an object store that is down
log = logging.getLogger(__package__)

# Written for psycopg (Database.statements adapts them).
_SQL = {
    "series_counts": "SELECT experiment_id, total, cold_count FROM series WHERE id = %s",
    "batches_from": (
        "SELECT start_idx, n_points, first_ts, last_ts, lines FROM metric_batches "
        "WHERE series_id = %s AND start_idx >= %s AND start_idx < %s ORDER BY start_idx"
    ),
    "cold_for_update": "SELECT cold_count FROM series WHERE id = %s FOR UPDATE",
    "insert_chunk": (
        "INSERT INTO metric_chunks (series_id, chunk_no, first_index, count, key, size, first_ts, last_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    ),
    "delete_batches": "DELETE FROM metric_batches WHERE series_id = %s AND start_idx >= %s AND start_idx < %s",
    "insert_batch": INSERT_BATCH,
    "set_cold": "UPDATE series SET cold_count = %s WHERE id = %s",
    "over_hot": "SELECT id FROM series WHERE total - cold_count > %s",
}


class Compaction:
    def __init__(self, db, blobs) -> None:
        self.db = db
        self.blobs = blobs
        self._sql = db.statements(_SQL)
        self._lock = threading.Lock()  # one compaction at a time in this process
        self._worker = _Compactor(self)

    def after_append(self, hot: dict[int, int]) -> None:
        """Hand series past HOT_LIMIT hot points (series id -> hot points) to the
        background thread; compact one past MAX_HOT right here."""
        due = [s for s, n in hot.items() if n > HOT_LIMIT]
        if not due:
            return
        for series_id in [s for s in due if hot[s] > MAX_HOT]:
            self.compact(series_id)
        self._worker.submit(due)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background thread has nothing left to do (tests, benchmarks)."""
        return self._worker.wait(timeout)

    def stop(self) -> None:
        """Finish the pending compactions and end the background thread."""
        self._worker.stop()

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
        with self._lock, self._guard(series_id) as ours:
            if not ours:
                return 0  # another server process is compacting this series
            while True:
                plan = self._plan(series_id)
                if plan is None:
                    return written
                exp_id, cold, lines, first_ts, last_ts, due = plan
                n_chunks = min(len(lines) // size, due)
                records = []
                for k in range(n_chunks):
                    chunk_lines = lines[k * size : (k + 1) * size]
                    chunk_no = cold // size + k
                    key = chunks.chunk_key(exp_id, series_id, chunk_no)
                    data = chunks.encode(chunk_lines)
                    self.blobs.put(key, data)
                    ts = first_ts if k == 0 else _line_ts(chunk_lines[0])
                    records.append((series_id, chunk_no, cold + k * size, size, key, len(data), ts, _line_ts(chunk_lines[-1])))
                new_cold = cold + n_chunks * size
                rest = lines[n_chunks * size :]
                with self.db.ingesting() as cursor:
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

    def series_to_compact(self) -> list[int]:
        """Series holding more than HOT_LIMIT hot points (left so by a server that stopped)."""
        with self.db.reading() as conn:
            return [r[0] for r in conn.exec_driver_sql(self._sql["over_hot"], (HOT_LIMIT,))]

    @contextlib.contextmanager
    def _guard(self, series_id: int) -> Iterator[bool]:
        """PostgreSQL: a session advisory lock per series, so several servers
        never compact one series at once (it only saves duplicate work: the
        cold_count re-check keeps it correct). SQLite: the write lock suffices."""
        if self.db.is_sqlite:
            yield True
            return
        with self.db.engine.connect() as conn:
            got = conn.execute(text(f"SELECT pg_try_advisory_lock({COMPACTION_LOCK}, :s)"), {"s": series_id}).scalar()
            conn.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(text(f"SELECT pg_advisory_unlock({COMPACTION_LOCK}, :s)"), {"s": series_id})
                    conn.commit()

    def _plan(self, series_id: int):
        """The hot lines from ``cold_count`` on that make the chunks due now (so that at
        most HOT_LIMIT points stay hot, at most MAX_CHUNKS_PER_PASS chunks), or None."""
        size = chunks.CHUNK_POINTS
        with self.db.reading() as conn:
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

    def __init__(self, compaction: Compaction) -> None:
        self.compaction = compaction
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
            leftovers = self.compaction.series_to_compact()
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
                self.compaction.compact(series_id)
            except Exception:
                failed = True
                log.exception("compacting metric series %s failed; it is retried on its next append", series_id)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()
            if failed and not self.stopping:
                time.sleep(RETRY_PAUSE)

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
