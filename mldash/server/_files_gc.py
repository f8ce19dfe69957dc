"""``mldash gc``: free the team server's file storage that nothing holds any more.

Two kinds of leftovers, each left alone for a grace period (``older_than``,
default a day) so that no client still using it loses it:

- blobs no live file of their namespace holds (every file with those bytes was
  deleted, or replaced by a save of the same name): their row, then their object;
  "used" counts from the last time a client was told the server holds them
  (``missing``/``present``: it may send a record for them next, not the bytes);
- uploads nobody went on with (a client that died mid-file): their S3 multipart
  upload is aborted (S3 keeps, and bills, its parts until then) or their temp file
  removed.

A row goes first, in a transaction that checks again that nothing holds it; its
object after. A crash between leaves an object no row names (bytes, never a
record without them). Each step is safe to run while the server serves.
"""

from __future__ import annotations

import time

from sqlalchemy import and_, delete, exists, func, select

from ._files import blob_key
from .schema import experiments, file_blobs, file_uploads, files

DEFAULT_GRACE = 24 * 3600.0


def collect(db, blobs, older_than: float = DEFAULT_GRACE, dry_run: bool = False) -> dict:
    """Free what nothing holds (see the module); returns what was freed (or, with
    ``dry_run``, what would be): ``{"blobs", "blob_bytes", "uploads", "upload_bytes"}``,
    and ``not_in_store``: unheld blobs whose object this blob store lacks (left alone)."""
    cutoff = time.time() - older_than
    found = {"blobs": 0, "blob_bytes": 0, "uploads": 0, "upload_bytes": 0, "not_in_store": 0}
    stale = file_uploads.c.updated_at < cutoff
    with db.reading() as conn:
        uploads = conn.execute(select(file_uploads).where(stale)).all()
    for row in uploads:
        if not dry_run:
            with db.writing() as conn:
                if not conn.execute(delete(file_uploads).where(file_uploads.c.upload_id == row.upload_id, stale)).rowcount:
                    continue  # resumed meanwhile
            blobs.upload(blob_key(row.namespace, row.sha256), row.upload_id, dict(row.state)).abort()
        found["uploads"] += 1
        found["upload_bytes"] += int(row.received)

    held = exists().where(
        files.c.sha256 == file_blobs.c.sha256, files.c.deleted_at.is_(None),
        experiments.c.id == files.c.experiment_id, experiments.c.namespace == file_blobs.c.namespace,
    )
    unused = and_(func.coalesce(file_blobs.c.used_at, file_blobs.c.created_at) < cutoff, ~held)
    with db.reading() as conn:
        rows = conn.execute(select(file_blobs.c.namespace, file_blobs.c.sha256, file_blobs.c.key, file_blobs.c.size)
                            .where(unused)).all()
    for row in rows:
        if not blobs.exists(row.key):
            # Not in this blob store: another one (a wrong --blob?), or gone already.
            # Its row stays: freeing it here would leave the object nobody could free.
            found["not_in_store"] += 1
            continue
        if not dry_run:
            with db.writing() as conn:
                one = and_(file_blobs.c.namespace == row.namespace, file_blobs.c.sha256 == row.sha256)
                if not conn.execute(delete(file_blobs).where(one, unused)).rowcount:
                    continue  # held again meanwhile
            blobs.delete(row.key)
        found["blobs"] += 1
        found["blob_bytes"] += int(row.size)
    return found


def parse_age(text: str) -> float:
    """Seconds in ``"90"``, ``"30m"``, ``"24h"`` or ``"7d"``; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not an age: give seconds, or a number with s, m, h or d (24h)") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not an age: it must be 0 or more, and finite")
    return value
