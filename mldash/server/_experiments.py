"""Experiments: one row per (namespace, prefix), with its meta and its documents.

``meta`` is experiment.json as the client keeps it (status, tags, times...);
``params`` and ``summary`` are documents that each write merges into. A run is
known by the local id its client sends: a second run under a held prefix is a
Collision, never merged into the first.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from sqlalchemy import and_, func, literal, select, update
from sqlalchemy.exc import DBAPIError

from .. import _filter
from .._naming import split_path
from ._errors import Collision, NotFound, no_experiment
from ._files import file_record_count
from ._filter_sql import BadFilter, compile_filter, parse
from ._metrics import listing_series, series_totals
from ._records import checkpoint_list, console_count
from ._validation import check_namespace, checked, document, experiment_meta, finite
from .schema import experiments, series

DOCUMENT_KINDS = {"parameters": "params", "summary": "summary"}  # URL word -> column
MAX_KEYS = 10_000  # per kind, in a filter-keys answer


class Experiments:
    def __init__(self, db) -> None:
        self.db = db

    def upsert(self, namespace: Any, prefix: Any, meta: Any) -> dict:
        namespace = check_namespace(namespace)
        parts = checked(split_path, prefix, "prefix")
        if meta is None:
            meta = {}
        meta = experiment_meta(meta)
        now = time.time()
        with self.db.writing() as conn:
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
            return _merge_meta(conn, row, meta, now)

    def patch(self, exp_id: int, meta: Any) -> dict:
        meta = experiment_meta(meta)
        with self.db.writing() as conn:
            row = conn.execute(select(experiments).where(experiments.c.id == exp_id).with_for_update()).first()
            if row is None:
                raise no_experiment(exp_id)
            return _merge_meta(conn, row, meta, time.time())

    def namespace(self, exp_id: int) -> str:
        with self.db.engine.connect() as conn:
            namespace = conn.execute(select(experiments.c.namespace).where(experiments.c.id == exp_id)).scalar()
        if namespace is None:
            raise no_experiment(exp_id)
        return namespace

    def lookup(self, namespace: Any, prefix: str) -> dict:
        namespace = check_namespace(namespace)
        with self.db.reading() as conn:
            row = conn.execute(
                select(experiments).where(experiments.c.namespace == namespace, experiments.c.prefix == prefix)
            ).first()
        if row is None:
            raise NotFound(f"no experiment {prefix!r} in namespace {namespace!r}")
        return _record(row._mapping)

    def get(self, exp_id: int) -> dict:
        with self.db.reading() as conn:
            row = conn.execute(select(experiments).where(experiments.c.id == exp_id)).first()
            if row is None:
                raise no_experiment(exp_id)
            record = _record(row._mapping)
            record["params"] = row.params
            record["summary"] = row.summary
            latest, stats = listing_series(conn, [exp_id])
            record["metrics"] = latest.get(exp_id, {})
            record["metric_stats"] = stats.get(exp_id, {})
            record["checkpoints"] = checkpoint_list(conn, exp_id)
        return record

    def page(
        self,
        namespaces: list[str] | None = None,
        project: str | None = None,
        status: str | None = None,
        q: str | None = None,
        limit: int = 100,
        offset: int = 0,
        filter: str | _filter.Node | None = None,
    ) -> dict:
        """A page of experiments, newest first, and how many match. ``filter``: the
        filter language (text or parsed), run as SQL (``_filter_sql``); a bad one
        is a 400 (``BadFilter``) whose message shows the caret."""
        node = parse(filter) if isinstance(filter, str) or filter is None else filter
        cond = _scope(namespaces, project)
        if cond is None:
            return {"experiments": [], "total": 0}
        where = [cond]
        if status:
            where.append(experiments.c.status == status)
        if q:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(experiments.c.prefix.like(f"%{escaped}%", escape="\\"))
        if node is not None:
            where.append(compile_filter(node, self.db.engine.dialect.name, time.time()))
        cond = and_(*where)
        with self.db.reading() as conn, _filter_errors():
            total = conn.execute(select(func.count()).select_from(experiments).where(cond)).scalar()
            rows = conn.execute(
                select(experiments)
                .where(cond)
                .order_by(experiments.c.started_at.desc().nulls_last(), experiments.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            ids = [r.id for r in rows]
            latest, stats = listing_series(conn, ids)
        out = []
        for row in rows:
            record = _record(row._mapping)
            record["params"] = row.params
            record["summary"] = row.summary
            record["metrics"] = latest.get(row.id, {})
            record["metric_stats"] = stats.get(row.id, {})
            out.append(record)
        return {"experiments": out, "total": total}

    def filter_keys(self, namespaces: list[str] | None = None, project: str | None = None, limit: int = MAX_KEYS) -> dict:
        """The keys a filter can use over the experiments in scope (for completion):
        parameter and summary keys and metric names, sorted, at most ``limit`` of
        each (``truncated`` says whether some were left out), and ``keys``: all of
        them spelled as a filter writes them (``_filter.keys_of``)."""
        cond = _scope(namespaces, project)
        out: dict = {"params": [], "summary": [], "metrics": []}
        truncated = False
        if cond is not None:
            with self.db.reading() as conn:
                for kind in ("params", "summary"):
                    column = experiments.c[kind]
                    if self.db.is_sqlite:
                        members = func.json_each(column).table_valued("key").alias("member")
                        key = members.c.key
                        stmt = select(key).select_from(experiments).join(members, literal(True))
                    else:
                        members = func.jsonb_object_keys(column).table_valued("k").render_derived(name="member")
                        key = members.c.k
                        stmt = select(key).select_from(experiments).join(members, literal(True))
                    found = [r[0] for r in conn.execute(stmt.where(cond).distinct().order_by(key).limit(limit + 1))]
                    truncated |= len(found) > limit
                    out[kind] = found[:limit]
                stmt = (
                    select(series.c.name).join(experiments, experiments.c.id == series.c.experiment_id)
                    .where(cond).distinct().order_by(series.c.name).limit(limit + 1)
                )
                found = [r[0] for r in conn.execute(stmt)]
                truncated |= len(found) > limit
                out["metrics"] = found[:limit]
        out["keys"] = _filter.keys_of(out["params"], out["summary"], out["metrics"])
        out["truncated"] = truncated
        return out

    def projects(self, namespaces: list[str] | None = None) -> list[dict]:
        stmt = select(experiments.c.namespace, experiments.c.project, func.count()).group_by(
            experiments.c.namespace, experiments.c.project
        )
        if namespaces is not None:
            stmt = stmt.where(experiments.c.namespace.in_(namespaces))
        with self.db.reading() as conn:
            rows = conn.execute(stmt.order_by(experiments.c.namespace, experiments.c.project)).all()
        return [{"namespace": ns, "project": project, "experiments": n} for ns, project, n in rows]

    def progress(self, exp_id: int) -> dict:
        with self.db.reading() as conn:
            row = conn.execute(
                select(experiments.c.logs_count, experiments.c.checkpoints_count).where(experiments.c.id == exp_id)
            ).first()
            if row is None:
                raise no_experiment(exp_id)
            counts = series_totals(conn, exp_id)
            console_lines = console_count(conn, exp_id)
            file_lines = file_record_count(conn, exp_id)
            local_id = conn.execute(select(experiments.c.meta).where(experiments.c.id == exp_id)).scalar().get("local_id")
        held = {"metrics": counts, "logs": row.logs_count, "console": console_lines,
                "checkpoints": row.checkpoints_count, "files": file_lines}
        if local_id is not None:
            # The client's own id of the run (experiment.json "id"): a client resuming
            # from a cached server id can tell it still addresses its own run.
            held["local_id"] = local_id
        return held

    # -- documents ----------------------------------------------------------------

    def set_document(self, exp_id: int, kind: str, values: Any) -> dict:
        column = _document_column(kind)
        values = document(values, kind)
        with self.db.writing() as conn:
            row = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id).with_for_update()).first()
            if row is None:
                raise no_experiment(exp_id)
            merged = {**row[0], **values}
            conn.execute(update(experiments).where(experiments.c.id == exp_id).values({column: merged, "updated_at": time.time()}))
        return merged

    def get_document(self, exp_id: int, kind: str) -> dict:
        column = _document_column(kind)
        with self.db.reading() as conn:
            row = conn.execute(select(experiments.c[column]).where(experiments.c.id == exp_id)).first()
        if row is None:
            raise no_experiment(exp_id)
        return row[0]


def _scope(namespaces: list[str] | None, project: str | None):
    """The experiments a listing covers (namespaces None: all); None when none."""
    where = [literal(True)]
    if namespaces is not None:
        if not namespaces:
            return None
        where.append(experiments.c.namespace.in_(namespaces))
    if project:
        where.append(experiments.c.project == project)
    return and_(*where)


@contextlib.contextmanager
def _filter_errors():
    """A pattern PostgreSQL refuses when it runs (a regular expression too large for
    it) is the filter's fault: a 400, not a 500."""
    try:
        yield
    except DBAPIError as error:
        if getattr(getattr(error, "orig", None), "sqlstate", None) in ("2201B", "54001"):
            raise BadFilter(f"the server cannot run this filter's pattern: {str(error.orig).splitlines()[0]}") from None
        raise


def _merge_meta(conn, row, meta: dict, now: float) -> dict:
    stored = dict(row.meta)
    _check_same_run(row, stored, meta)
    stored.update(meta)
    values = dict(meta=stored, updated_at=now, status=stored.get("status"), started_at=finite(stored.get("started_at")))
    conn.execute(update(experiments).where(experiments.c.id == row.id).values(**values))
    return _record({**row._mapping, **values})


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


def _record(row: Any) -> dict:
    """An experiment as the API shows it: meta's fields and the row's columns, less
    the documents and record counters (callers add the parts they show)."""
    row = dict(row)
    meta = dict(row.get("meta") or {})
    if "id" in meta:
        meta["local_id"] = meta.pop("id")  # the client's own id; ours is the integer id
    for key in ("params", "summary", "logs_count", "checkpoints_count", "meta", "started_at"):
        row.pop(key, None)
    out = {**meta, **row, "status": meta.get("status")}
    # The run's own creation time (an offline run synced days later was still made then),
    # as the filter language reads it; the row's, when it has none, is when it came here.
    own = finite(meta.get("created_at"))
    if own is not None:
        out["created_at"] = own
    return out


def _document_column(kind: str) -> str:
    try:
        return DOCUMENT_KINDS[kind]
    except KeyError:
        raise NotFound(f"unknown document kind {kind!r}; use one of {', '.join(DOCUMENT_KINDS)}") from None
