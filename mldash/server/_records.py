"""Log, console and checkpoint records: append-only, indexed from 0 per experiment.

Each record is stored as the JSON bytes the local API writes (so NUL inside a
message is kept); the experiment row holds how many there are, and appends are
idempotent by index: a retry stores nothing twice, a gap is refused.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import func, select, update

from .. import _codec
from .._checks import LEVELS
from ._database import dialect_insert
from ._errors import Conflict, no_experiment
from ._validation import checkpoint_record, console_record, json_array, log_level, log_record, start_index
from .schema import checkpoints, console, experiments, logs


class Records:
    def __init__(self, db) -> None:
        self.db = db

    def append_logs(self, exp_id: int, start: Any, records: Any) -> dict:
        start = start_index(start)
        rows = []
        for k, record in enumerate(json_array(records, "records")):
            record = log_record(record, start + k)
            level, ts = record["level"], record["timestamp"]
            rows.append((start + k, float(ts), LEVELS.index(level), orjson.dumps(record)))
        with self.db.writing() as conn:
            count = _count_for_update(conn, exp_id, "logs_count")
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
        start: int = 0,
        limit: int = 1000,
        level: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict:
        where = [logs.c.experiment_id == exp_id, logs.c.idx >= start]
        if level is not None:
            log_level(level)
            if level != LEVELS[0]:
                where.append(logs.c.level_no >= LEVELS.index(level))
        if since is not None:
            where.append(logs.c.ts >= since)
        if until is not None:
            where.append(logs.c.ts <= until)
        with self.db.reading() as conn:
            total = conn.execute(select(experiments.c.logs_count).where(experiments.c.id == exp_id)).scalar()
            if total is None:
                raise no_experiment(exp_id)
            rows = conn.execute(select(logs.c.record).where(*where).order_by(logs.c.idx).limit(limit + 1)).all()
        return _page(rows, start, limit, total)

    def append_console(self, exp_id: int, start: Any, records: Any) -> dict:
        """Console records (console/console.jsonl's lines) from ``start``, as logs are."""
        start = start_index(start)
        rows = [orjson.dumps(console_record(record, start + k)) for k, record in enumerate(json_array(records, "records"))]
        with self.db.writing() as conn:
            _count_for_update(conn, exp_id, "logs_count")  # locks the experiment's row
            count = console_count(conn, exp_id)
            if start > count:
                raise Conflict(
                    f"console: start_index {start} would leave a gap; the server holds {count} lines, so send from index {count}"
                )
            new = rows[count - start :]
            if new:
                conn.execute(
                    dialect_insert(conn)(console).on_conflict_do_nothing(),
                    [{"experiment_id": exp_id, "idx": count + k, "record": rec} for k, rec in enumerate(new)],
                )
                count += len(new)
        return {"accepted": len(new), "total": count}

    def read_console(self, exp_id: int, start: int = 0, limit: int = 1000) -> dict:
        """Same shape as the local ``read_console``: index, timestamp, stream, text (and partial)."""
        with self.db.reading() as conn:
            if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id)).scalar() is None:
                raise no_experiment(exp_id)
            total = console_count(conn, exp_id)
            rows = conn.execute(
                select(console.c.record)
                .where(console.c.experiment_id == exp_id, console.c.idx >= start)
                .order_by(console.c.idx)
                .limit(limit + 1)
            ).all()
        return _page(rows, start, limit, total)

    def append_checkpoints(self, exp_id: int, start: Any, records: Any) -> dict:
        start = start_index(start)
        checked = [checkpoint_record(record, start + k) for k, record in enumerate(json_array(records, "records"))]
        with self.db.writing() as conn:
            count = _count_for_update(conn, exp_id, "checkpoints_count")
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


def checkpoint_list(conn, exp_id: int) -> list[dict]:
    """An experiment's checkpoint records in order, in ``conn``'s snapshot."""
    return [
        orjson.loads(r.record)
        for r in conn.execute(
            select(checkpoints.c.record).where(checkpoints.c.experiment_id == exp_id).order_by(checkpoints.c.idx)
        )
    ]


def console_count(conn, exp_id: int) -> int:
    """How many console lines the server holds (appends leave no gap: the largest index + 1)."""
    top = conn.execute(select(func.max(console.c.idx)).where(console.c.experiment_id == exp_id)).scalar()
    return 0 if top is None else int(top) + 1


def _count_for_update(conn, exp_id: int, column: str) -> int:
    count = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id).with_for_update()).scalar()
    if count is None:
        raise no_experiment(exp_id)
    return count


def _page(rows: list, start: int, limit: int, total: int) -> dict:
    """read()'s shape from stored records, ``limit + 1`` rows read to know if more follow."""
    records = [_codec.loads(bytes(r[0])) for r in rows[:limit]]
    end = records[-1]["index"] if records else start - 1
    return {"data": records, "start_index": start, "end_index": end, "total": total, "has_more": len(rows) > limit}
