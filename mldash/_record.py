"""The run's record (``experiment.json``): what a start and a finish change in it.

Pure functions of the record as read, for ``update_document``, which reads, changes and
writes it under the run's lock, so that a resumed run keeps what earlier sessions wrote.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterable

from ._runfolder import RUNNING


def started(meta: dict, identity: dict, *, now: float, info: dict, description: str | None,
            tags: Iterable[str] | None, remote: str | None) -> dict:
    """A (re)start: a new session. ``identity``: project, folder, name, prefix, namespace
    (kept from the first session); ``info``: the process, machine and environment."""
    if "id" not in meta:  # new (other keys may already be there: an early error)
        meta.update(id=uuid.uuid4().hex, **identity, created_at=now, started_at=now, sessions=0,
                    tags=[], description=None)
    meta.update(info)
    meta["status"] = RUNNING
    meta["sessions"] = meta.get("sessions", 0) + 1
    meta["resumed_at"] = now if meta["sessions"] > 1 else None
    meta["finished_at"] = None
    meta["updated_at"] = now
    if description is not None:
        meta["description"] = description
    if tags is not None:
        meta["tags"] = sorted(set(meta.get("tags") or []) | set(tags))
    if remote:
        meta["remote"] = remote
    return meta


def ended(meta: dict, final: str, now: float) -> dict[str, Any]:
    """The changes of a finish: its status, and this session's time added to the duration."""
    began = meta.get("resumed_at") or meta.get("started_at") or now
    duration = (meta.get("duration") or 0) + (now - began)
    return {"status": final, "finished_at": now, "updated_at": now, "duration": duration}
