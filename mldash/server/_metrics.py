"""Metric points: ingest into hot batch rows, reads across cold chunks and hot rows.

A series' points ``[0, cold_count)`` live in chunk objects (``chunks.py``, moved
there by ``_compaction.py``) and ``[cold_count, total)`` in ``metric_batches``
rows, one per ingested batch. Every append is idempotent by (experiment, name,
index), and series rows are locked while a batch extends them, so several
server processes may ingest into one store.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

import orjson
from sqlalchemy import ARRAY, Integer, func, literal, select

from .. import _codec
from .._runfolder import decode_points, page
from . import chunks
from ._errors import Conflict, no_experiment
from ._headline import Stats
from ._validation import SeriesEntry, json_array, lines_blob, series_entry
from .schema import experiments, series

log = logging.getLogger(__package__)
BACKFILL_PAGE = 100_000  # points read at a time when statistics catch up

INSERT_BATCH = (
    "INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) VALUES (%s, %s, %s, %s, %s, %b)"
)
# %j: a JSON document (PostgreSQL: cast to jsonb); the series' headline statistics move with its total.
_SET_TOTAL = "UPDATE series SET total = %s, last_line = %b, stats = %j, headline = %j WHERE id = %s"
HEADER_CACHE = 256  # chunk headers kept for cold reads: ~10 MB at most
STATS_CACHE = 4096  # series whose statistics this process wrote last, for the one-statement append

# The hot path's statements, written for psycopg (Database.statements adapts them).
_SQL = {
    "series_for_update": "SELECT id, total, cold_count, stats FROM series WHERE experiment_id = %s AND name = %s FOR UPDATE",
    "series_lookup": "SELECT id, total, cold_count FROM series WHERE experiment_id = %s AND name = %s",
    "insert_series": "INSERT INTO series (experiment_id, name, total, cold_count) VALUES (%s, %s, 0, 0) ON CONFLICT DO NOTHING",
    "experiment_exists": "SELECT id FROM experiments WHERE id = %s",
    "insert_batch": INSERT_BATCH,
    "set_total": _SET_TOTAL,
    "insert_batch_set_total": f"WITH b AS ({INSERT_BATCH}) {_SET_TOTAL}",  # PostgreSQL: both in one round trip
    # PostgreSQL only: lock the series row, and when the batch starts at its total,
    # insert the batch row and move the total (and the statistics, computed from
    # those this process stored at that total), all in one statement; it returns
    # the series as it was, so the caller sees whether anything was stored.
    "append_where_it_ends": (
        "WITH s AS (SELECT id, total, cold_count FROM series WHERE experiment_id = %s AND name = %s FOR UPDATE), "
        "b AS (INSERT INTO metric_batches (series_id, start_idx, n_points, first_ts, last_ts, lines) "
        "SELECT id, total, %s, %s, %s, %b FROM s WHERE total = %s), "
        "u AS (UPDATE series SET total = s.total + %s, last_line = %b, stats = %j, headline = %j "
        "FROM s WHERE series.id = s.id AND s.total = %s) "
        "SELECT id, total, cold_count FROM s"
    ),
    "set_stats": "UPDATE series SET stats = %j, headline = %j WHERE id = %s AND total = %s",
    # The row holding hot_from (the last one starting at or before it) and those after, up to end.
    "batches_overlapping": (
        "SELECT start_idx, lines FROM metric_batches WHERE series_id = %s AND start_idx >= "
        "(SELECT COALESCE(MAX(start_idx), 0) FROM metric_batches WHERE series_id = %s AND start_idx <= %s) "
        "AND start_idx < %s ORDER BY start_idx"
    ),
}


class Metrics:
    """``on_append`` hears, after each ingest, how many hot points each series
    it touched now holds (series id -> count): the compactor's cue."""

    def __init__(self, db, blobs, on_append: Callable[[dict[int, int]], None]) -> None:
        self.db = db
        self.blobs = blobs
        self.on_append = on_append
        self._sql = db.statements(_with_documents(_SQL, db.is_sqlite))
        self._headers: OrderedDict[str, Any] = OrderedDict()
        self._headers_lock = threading.Lock()
        # (experiment id, name) -> (total, Stats) as this process last stored them: a
        # batch that starts at that total (nobody wrote since) extends them in one statement.
        self._stats: OrderedDict[tuple, tuple] = OrderedDict()
        self._stats_lock = threading.Lock()

    # -- ingest -----------------------------------------------------------------

    def append(self, exp_id: int, batches: Any) -> dict:
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
        is_sqlite = self.db.is_sqlite
        if not is_sqlite and len(prepared) == 1 and prepared[0].points:
            done = self._append_where_it_ends(exp_id, prepared[0])
            if done is not None:
                return done
        accepted = 0
        counts: dict[str, int] = {}
        hot: dict[int, int] = {}
        stored: list[tuple] = []
        sql = self._sql
        with self.db.ingesting() as cursor:
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
                series_id, total, cold, stats_column = row
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
                    first_ts, last_ts = int(points[0][0]), int(points[-1][0])
                    new_total = total + len(points)
                    stats = self._caught_up(exp_id, name, Stats.load(stats_column), total)
                    stats = self._resolved(exp_id, name, stats.fold([p[1] for p in points], _codec._TAG_BYTES in blob))
                    documents = (stats.dumps(), stats.headline_json())
                    if is_sqlite:
                        cursor.execute(sql["insert_batch"], (series_id, total, len(points), first_ts, last_ts, blob))
                        cursor.execute(sql["set_total"], (new_total, last_line, *documents, series_id))
                    else:  # one round trip for both
                        cursor.execute(
                            sql["insert_batch_set_total"],
                            (series_id, total, len(points), first_ts, last_ts, blob, new_total, last_line, *documents, series_id),
                        )
                    accepted += len(points)
                    total = new_total
                    stored.append((name, total, stats))
                counts[name] = total
                hot[series_id] = total - cold
        for name, total, stats in stored:  # committed: what the next batch may start from
            self._remember(exp_id, name, total, stats)
        self.on_append(hot)
        return {"accepted": accepted, "counts": counts}

    def _append_where_it_ends(self, exp_id: int, batch: SeriesEntry) -> dict | None:
        """PostgreSQL, one series whose batch starts exactly at its stored total
        (what a client streaming points sends): lock the series, store the batch
        row and move the total in one autocommitted statement, one round trip.
        None when the series is new or the batch overlaps or leaves a gap: the
        statement then changed nothing, and the general path takes over."""
        points, blob = batch.points, batch.blob
        n = len(points)
        known = self._remembered(exp_id, batch.name, batch.start)
        if known is None:  # statistics this process did not store: the general path reads them
            return None
        stats = known.fold([p[1] for p in points], _codec._TAG_BYTES in blob)
        if stats.pending:  # a field whose earlier points must be read: the general path does
            return None
        with self.db.ingesting(autocommit=True) as cursor:
            cursor.execute(
                self._sql["append_where_it_ends"],
                (exp_id, batch.name, n, int(points[0][0]), int(points[-1][0]), blob, batch.start,
                 n, blob[blob.rfind(b"\n") + 1 :], stats.dumps(), stats.headline_json(), batch.start),
            )
            row = cursor.fetchone()
        if row is None or row[1] != batch.start:
            return None
        series_id, before, cold = row
        self._remember(exp_id, batch.name, before + n, stats)
        self.on_append({series_id: before + n - cold})
        return {"accepted": n, "counts": {batch.name: before + n}}

    # -- headline statistics ------------------------------------------------------

    def _remembered(self, exp_id: int, name: str, total: int) -> Stats | None:
        with self._stats_lock:
            hit = self._stats.get((exp_id, name))
        return hit[1] if hit is not None and hit[0] == total else None

    def _remember(self, exp_id: int, name: str, total: int, stats: Stats) -> None:
        with self._stats_lock:
            self._stats[(exp_id, name)] = (total, stats)
            self._stats.move_to_end((exp_id, name))
            while len(self._stats) > STATS_CACHE:
                self._stats.popitem(last=False)

    def _caught_up(self, exp_id: int, name: str, stats: Stats | None, total: int, need_last: bool = False) -> Stats:
        """``stats`` covering all ``total`` stored points: the ones they miss (a database
        from before the statistics, or points an older server stored) folded in.
        ``need_last``: also the newest point (for the headline when no batch follows)."""
        if stats is None or stats.n > total:
            stats = Stats()
        while stats.n < total:
            lines, _ = self.lines(exp_id, name, stats.n, min(total - stats.n, BACKFILL_PAGE))
            if not lines:
                break
            stats = self._resolved(exp_id, name, stats.fold_lines(lines))
        if need_last and stats.last is None and total:
            lines, _ = self.lines(exp_id, name, total - 1, 1)
            if lines:
                stats.last = Stats().fold_lines(lines).last
        return stats

    def _resolved(self, exp_id: int, name: str, stats: Stats) -> Stats:
        """``stats`` with its ``pending`` field's earlier points read (``Stats.history``)."""
        if not stats.pending:
            return stats
        upto = stats.pending[1]

        def pages():
            start = 0
            while start < upto:
                lines, _ = self.lines(exp_id, name, start, min(upto - start, BACKFILL_PAGE))
                if not lines:
                    return
                yield lines
                start += len(lines)

        return stats.history(pages())

    def backfill_stats(self) -> int:
        """Fill the statistics of every series that lacks them or misses points (a
        database from before them); returns how many. Each series is read outside any
        lock and written only if its total did not move meanwhile (a batch that arrives
        first catches it up itself)."""
        n_expr = "(stats->>'n')::bigint" if not self.db.is_sqlite else "json_extract(stats, '$.n')"
        with self.db.reading() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT id, experiment_id, name, total, {n_expr} FROM series WHERE total > 0"
            ).all()
        todo = [r for r in rows if r[4] != r[3]]
        for series_id, exp_id, name, total, _n in todo:
            stats = self._caught_up(exp_id, name, None, total, need_last=True)
            with self.db.ingesting() as cursor:
                cursor.execute(self._sql["set_stats"], (stats.dumps(), stats.headline_json(), series_id, total))
        if todo:
            log.warning("filled the headline statistics of %d series", len(todo))
        return len(todo)

    def _require_experiment_raw(self, cursor, exp_id: int) -> None:
        cursor.execute(self._sql["experiment_exists"], (exp_id,))
        if cursor.fetchone() is None:
            raise no_experiment(exp_id)

    # -- reads ------------------------------------------------------------------

    def totals(self, exp_id: int) -> dict[str, dict]:
        with self.db.reading() as conn:
            _require_experiment(conn, exp_id)
            rows = conn.execute(
                select(series.c.name, series.c.total, series.c.last_line, series.c.headline)
                .where(series.c.experiment_id == exp_id)
                .order_by(series.c.name)
            ).all()
        return {
            name: {"total": total, "last": _last_point(line, total), **({"headline": head} if head is not None else {})}
            for name, total, line, head in rows
        }

    def names(self, exp_id: int) -> list[str]:
        with self.db.reading() as conn:
            return sorted(r[0] for r in conn.execute(select(series.c.name).where(series.c.experiment_id == exp_id)))

    def lines(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> tuple[list[bytes], int]:
        """The stored JSON lines of points ``start_index..`` (at most ``limit``) and the series total.

        Cold chunks and hot batch rows are read in one snapshot, so a compaction
        running at the same time can neither hide nor repeat a point. Only the
        chunks and batch rows that overlap the range are read.
        """
        sql = self._sql
        with self.db.reading() as conn:
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

    def read(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        """``Metric.read()``'s shape, stitched from cold chunks and hot rows."""
        lines, total = self.lines(exp_id, name, start_index, limit)
        return page(decode_points(lines, start_index), start_index, start_index + len(lines) - 1, total)

    def read_json(self, exp_id: int, name: str, start_index: int = 0, limit: int = 1000) -> bytes:
        """``read`` already encoded as JSON, built from the stored lines
        without decoding their fields (NaN/inf stay tagged as stored)."""
        lines, total = self.lines(exp_id, name, start_index, limit)
        end_index = start_index + len(lines) - 1
        return b'{"data":[%b],"start_index":%d,"end_index":%d,"total":%d,"has_more":%b}' % (
            points_json(lines, start_index), start_index, end_index, total, b"true" if end_index + 1 < total else b"false",
        )

    def _cold_lines(self, exp_id: int, series_id: int, start: int, end: int) -> list[bytes]:
        size = chunks.CHUNK_POINTS
        out: list[bytes] = []
        for chunk_no in range(start // size, (end - 1) // size + 1):
            key = chunks.chunk_key(exp_id, series_id, chunk_no)
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
            while len(self._headers) > HEADER_CACHE:
                self._headers.popitem(last=False)
        return offsets


def _with_documents(sql: dict[str, str], is_sqlite: bool) -> dict[str, str]:
    return {k: v.replace("%j", "%s" if is_sqlite else "%s::jsonb") for k, v in sql.items()}


def latest_points(conn, exp_ids: list[int]) -> dict[int, dict]:
    """Each experiment's newest point of every series (for listings), in ``conn``'s snapshot."""
    return listing_series(conn, exp_ids)[0]


def headlines(conn, exp_ids: list[int]) -> dict[int, dict]:
    """Each experiment's series' headline statistics ``{name: {"key", "last", "min",
    "max"}}`` (``_headline``; as stored, NaN/inf tagged), in ``conn``'s snapshot."""
    return listing_series(conn, exp_ids)[1]


def listing_series(conn, exp_ids: list[int]) -> tuple[dict[int, dict], dict[int, dict]]:
    """``latest_points`` and ``headlines`` of these experiments, from one query (on
    PostgreSQL the ids travel as one array: thousands of placeholders cost more to
    send than the rows do to read)."""
    latest: dict[int, dict] = {}
    stats: dict[int, dict] = {}
    if not exp_ids:
        return latest, stats
    if conn.dialect.name == "postgresql":
        which = series.c.experiment_id == func.any(literal(list(exp_ids), ARRAY(Integer)))
    else:
        which = series.c.experiment_id.in_(exp_ids)
    rows = conn.execute(
        select(series.c.experiment_id, series.c.name, series.c.total, series.c.last_line, series.c.headline)
        .where(which)
        .order_by(series.c.name)
    ).all()
    held = [(exp_id, name, total, bytes(line)) for exp_id, name, total, line, _ in rows if line is not None and total]
    try:  # every newest point in one parse (a listing holds thousands)
        parsed = orjson.loads(b"[" + b",".join(line for *_, line in held) + b"]")
    except orjson.JSONDecodeError:  # a damaged line: each on its own, as read() does
        parsed = None
    for k, (exp_id, name, total, line) in enumerate(held):
        if parsed is None:
            point = _last_point(line, total)
        else:
            t, data = parsed[k]
            point = {"index": total - 1, "timestamp": t / 1000, "data": _codec.untag(data) if _codec._TAG_BYTES in line else data}
        if point is not None:
            latest.setdefault(exp_id, {})[name] = point
    for exp_id, name, _total, _line, headline in rows:
        if headline is not None:
            stats.setdefault(exp_id, {})[name] = headline
    return latest, stats


def series_totals(conn, exp_id: int) -> dict[str, int]:
    """Points stored per series of one experiment, in ``conn``'s snapshot."""
    return dict(conn.execute(select(series.c.name, series.c.total).where(series.c.experiment_id == exp_id)).all())


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


def _require_experiment(conn, exp_id: int) -> None:
    if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id)).first() is None:
        raise no_experiment(exp_id)


def _last_point(line: bytes | None, total: int) -> dict | None:
    points = decode_points([bytes(line)], total - 1) if line is not None and total else []
    return points[0] if points else None
