"""Saved files on the server: their records, their state, their blobs and uploads.

- ``file_records``: the run's ``files/files.jsonl`` lines as sent, indexed from 0
  like the logs (a retry stores nothing twice, a gap is refused), each checked by
  the local API's own rule (``_filestore.check_record``);
- ``files``: what those records say of each file (a save inserts it, a tombstone
  marks it deleted);
- ``file_blobs``: each distinct content once per namespace (content-addressed:
  a blob the namespace holds is never sent again), present only once its bytes
  are complete and their SHA-256 checked. A file is listed and served only when
  it is live and its blob is present, so no answer points at a partial file;
- ``file_uploads``: uploads in progress, resumable (``received`` bytes durable).

Blobs are namespaced so that no token can reach another namespace's bytes by
naming their hash. The HTTP side (streaming, ranges) is ``_file_routes``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update

from .. import _codec, _filestore
from ._database import dialect_insert
from ._errors import Conflict, NotFound, StoreError, no_experiment
from ._validation import checked, json_array, start_index
from .schema import experiments, file_blobs, file_records, file_uploads, files

MAX_LIST = 10_000


def blob_key(namespace: str, sha256: str) -> str:
    """Where a namespace's blob lives in the object store."""
    return f"files/{namespace}/sha256/{sha256[:2]}/{sha256[2:]}"


def file_record_count(conn, exp_id: int) -> int:
    top = conn.execute(select(func.max(file_records.c.idx)).where(file_records.c.experiment_id == exp_id)).scalar()
    return 0 if top is None else int(top) + 1


class Files:
    def __init__(self, db, blobs) -> None:
        self.db = db
        self.blobs = blobs

    # -- records ------------------------------------------------------------------
    def append(self, exp_id: int, start: Any, records: Any) -> dict:
        """Records from index ``start`` (files.jsonl's lines), as logs are appended."""
        start = start_index(start)
        rows = [checked(_filestore.check_record, r, start + k) for k, r in enumerate(json_array(records, "records"))]
        with self.db.writing() as conn:
            if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id).with_for_update()).scalar() is None:
                raise no_experiment(exp_id)
            count = file_record_count(conn, exp_id)
            if start > count:
                raise Conflict(
                    f"files: start_index {start} would leave a gap; the server holds {count} records, so send from index {count}"
                )
            new = rows[count - start :]
            if new:
                conn.execute(
                    dialect_insert(conn)(file_records).on_conflict_do_nothing(),
                    [{"experiment_id": exp_id, "idx": count + k, "record": orjson.dumps(r)} for k, r in enumerate(new)],
                )
                for k, record in enumerate(new):
                    self._apply(conn, exp_id, count + k, record)
                count += len(new)
        return {"accepted": len(new), "total": count}

    @staticmethod
    def _apply(conn, exp_id: int, idx: int, record: dict) -> None:
        if record["op"] == _filestore.SAVE:
            conn.execute(
                dialect_insert(conn)(files).on_conflict_do_nothing(),
                [{"experiment_id": exp_id, "file_id": record["id"], "idx": idx, "path": record["path"],
                  "filename": record["filename"], "sha256": record["checksum"], "size": record["sizeBytes"],
                  "deleted_at": None, "record": orjson.dumps(record)}],
            )
        elif record["op"] == _filestore.UPDATE:
            where = (files.c.experiment_id == exp_id, files.c.file_id == record["id"], files.c.deleted_at.is_(None))
            row = conn.execute(select(files.c.record).where(*where)).first()
            if row is not None:  # an update of a file the server never saw, or deleted: nothing to change
                merged = _filestore.apply_update(orjson.loads(bytes(row.record)), record)  # both as sent: tagged
                conn.execute(update(files).where(*where).values(record=orjson.dumps(merged)))
        elif record["op"] == _filestore.DELETE:
            when = record.get("deletedAt") if isinstance(record.get("deletedAt"), str) else None
            conn.execute(
                update(files)
                .where(files.c.experiment_id == exp_id, files.c.file_id == record["id"], files.c.deleted_at.is_(None))
                .values(deleted_at=(when or "deleted")[:40])
            )

    # -- reading ------------------------------------------------------------------
    def _live(self, conn, exp_id: int, file_id: str | None = None) -> list:
        """(record, key, size) of the live files whose bytes are present, in save order."""
        stmt = (
            select(files.c.record, file_blobs.c.key, file_blobs.c.size)
            .select_from(
                files.join(experiments, experiments.c.id == files.c.experiment_id).join(
                    file_blobs,
                    (file_blobs.c.namespace == experiments.c.namespace) & (file_blobs.c.sha256 == files.c.sha256),
                )
            )
            .where(files.c.experiment_id == exp_id, files.c.deleted_at.is_(None))
            .order_by(files.c.idx)
        )
        if file_id is not None:
            stmt = stmt.where(files.c.file_id == file_id)
        return conn.execute(stmt).all()

    def list(self, exp_id: int, prefix: str | None = None, tags: list[str] | None = None,
             pattern: str | None = None, limit: int = 1000, offset: int = 0) -> dict:
        """The live files (ml-dash records), as the local ``exp.files(...).list()`` gives them."""
        if prefix is not None:
            prefix = checked(_filestore.check_prefix, prefix)
        with self.db.reading() as conn:
            if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id)).scalar() is None:
                raise no_experiment(exp_id)
            rows = self._live(conn, exp_id)
        found = _filestore.select([_filestore.public(_codec.loads(bytes(r.record))) for r in rows], prefix, tags, pattern)
        page = found[offset : offset + limit]
        return {"files": page, "total": len(found), "has_more": offset + len(page) < len(found)}

    def get(self, exp_id: int, file_id: str) -> tuple[dict, str, int]:
        """(record, blob key, size) of a live file whose bytes are present; NotFound otherwise."""
        checked(_filestore.check_file_id, file_id)
        with self.db.reading() as conn:
            if conn.execute(select(experiments.c.id).where(experiments.c.id == exp_id)).scalar() is None:
                raise no_experiment(exp_id)
            rows = self._live(conn, exp_id, file_id)
            if not rows:
                held = conn.execute(
                    select(files.c.deleted_at).where(files.c.experiment_id == exp_id, files.c.file_id == file_id)
                ).first()
        if not rows:
            if held is None:
                raise NotFound(f"no file with id {file_id} in experiment {exp_id}")
            if held.deleted_at is not None:
                raise NotFound(f"file {file_id} of experiment {exp_id} was deleted")
            raise NotFound(f"the bytes of file {file_id} of experiment {exp_id} are not uploaded yet")
        row = rows[0]
        return _filestore.public(_codec.loads(bytes(row.record))), row.key, int(row.size)

    def count(self, conn, exp_id: int) -> int:
        return file_record_count(conn, exp_id)

    # -- blobs and uploads --------------------------------------------------------
    def missing(self, namespace: str, hashes: Any) -> list[str]:
        """Of ``hashes``, those the namespace does not hold (to upload)."""
        hashes = json_array(hashes, "sha256")
        if len(hashes) > MAX_LIST:
            raise StoreError(f"ask about at most {MAX_LIST:,} blobs at once, not {len(hashes):,}")
        for h in hashes:
            checked(_filestore.check_checksum, h)
        held = self._held(namespace, set(hashes))
        return [h for h in dict.fromkeys(hashes) if h not in held]

    def present(self, namespace: str, sha256: str) -> bool:
        return bool(self._held(namespace, {sha256}))

    def _held(self, namespace: str, hashes: set) -> set:
        """Which of ``hashes`` the namespace holds, each marked used first, in the same
        transaction: a client told a blob is here may send a record for it instead of
        its bytes, so ``mldash gc`` must not free it for its grace period from now (its
        delete re-checks the mark; one that committed first leaves nothing to answer)."""
        if not hashes:
            return set()
        which = (file_blobs.c.namespace == namespace, file_blobs.c.sha256.in_(hashes))
        with self.db.writing() as conn:
            conn.execute(update(file_blobs).where(*which).values(used_at=time.time()))
            return {r[0] for r in conn.execute(select(file_blobs.c.sha256).where(*which))}

    def upload_row(self, upload_id: str) -> dict | None:
        with self.db.reading() as conn:
            row = conn.execute(select(file_uploads).where(file_uploads.c.upload_id == upload_id)).first()
        return dict(row._mapping) if row is not None else None

    def open_upload(self, namespace: str, sha256: str, size: int, upload_id: str) -> dict:
        """The upload ``upload_id`` of this blob (created when new); refused when the id
        names another blob or namespace (404: ids are not probed across namespaces)."""
        now = time.time()
        with self.db.writing() as conn:
            row = conn.execute(select(file_uploads).where(file_uploads.c.upload_id == upload_id).with_for_update()).first()
            if row is not None and row.namespace == namespace:
                conn.execute(update(file_uploads).where(file_uploads.c.upload_id == upload_id).values(updated_at=now))
            if row is None:
                values = dict(upload_id=upload_id, namespace=namespace, sha256=sha256, size=size, received=0,
                              state={"size": size}, created_at=now, updated_at=now)
                conn.execute(dialect_insert(conn)(file_uploads).on_conflict_do_nothing(), [values])
                row = conn.execute(select(file_uploads).where(file_uploads.c.upload_id == upload_id)).first()
        row = dict(row._mapping)
        if row["namespace"] != namespace:
            raise NotFound(f"no upload {upload_id}")
        if (row["sha256"], row["size"]) != (sha256, size):
            raise StoreError(
                f"upload {upload_id} is of a {row['size']:,}-byte blob {row['sha256']}, not of {size:,} bytes {sha256}"
            )
        return row

    def touch_upload(self, upload_id: str) -> None:
        """An upload still receiving bytes: ``mldash gc`` leaves it be."""
        with self.db.writing() as conn:
            conn.execute(update(file_uploads).where(file_uploads.c.upload_id == upload_id).values(updated_at=time.time()))

    def save_progress(self, upload_id: str, received: int, state: dict) -> None:
        with self.db.writing() as conn:
            conn.execute(
                update(file_uploads).where(file_uploads.c.upload_id == upload_id)
                .values(received=received, state=state, updated_at=time.time())
            )

    def drop_upload(self, upload_id: str) -> None:
        with self.db.writing() as conn:
            conn.execute(delete(file_uploads).where(file_uploads.c.upload_id == upload_id))

    def add_blob(self, namespace: str, sha256: str, size: int, key: str, upload_id: str) -> bool:
        """Record a complete, verified blob (and end its upload); False when another
        upload of the same bytes got there first (its object is then ours to remove)."""
        with self.db.writing() as conn:
            inserted = conn.execute(
                dialect_insert(conn)(file_blobs).on_conflict_do_nothing(),
                [{"namespace": namespace, "sha256": sha256, "size": size, "key": key, "created_at": time.time(),
                  "used_at": time.time()}],
            ).rowcount
            conn.execute(delete(file_uploads).where(file_uploads.c.upload_id == upload_id))
        return bool(inserted)
