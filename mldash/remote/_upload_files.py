"""The bytes of saved files, sent before the records that name them.

``_replicate`` sends ``files/files.jsonl`` like the other append-only files; for
each batch of its lines it first calls ``send_blobs``, so a record reaches the
server only once the server holds its bytes. Per blob:

- the server is asked which of the batch's blobs its namespace lacks
  (``POST .../blobs/missing``): a blob it holds is never sent again;
- a missing one is streamed from the run's ``files/blobs/`` (one PUT, read in
  1 MiB pieces, never whole), under an upload id kept in ``.sync/state.json``;
  after a crash, a dead server or an interrupted ``mldash sync`` the upload
  resumes from the bytes the server says it holds (``GET .../blobs/{sha256}``);
- the server checks the SHA-256 of what it received: a mismatch keeps nothing.
  The local copy is then hashed again: when it is damaged the record is refused
  (and quarantined, as any record the server refuses); when it is sound, the bytes
  were damaged on the way and the upload starts over, later.

A blob deleted locally before it was uploaded (its file deleted) is not needed:
its record goes up with its tombstone and the server never lists it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Callable

from .. import _codec
from .._filestore import DELETE, SAVE, blob_path, read_records
from ._http import Api, Conflict, Refused, Unavailable
from ._state import SyncState

_READ = 1 << 20
_ASK = 10_000  # hashes per /blobs/missing question
_PIECE_AFTER_413 = 8 << 20  # a proxy refused a whole file: send it in pieces of this


class _Body:
    """A file's bytes from ``offset`` as an iterable with a length (requests then sends a
    Content-Length and the pieces as they are read), reporting each piece sent."""

    def __init__(self, f, length: int, progress: Callable[[int], None] | None) -> None:
        self.f, self.length, self.progress = f, length, progress

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        left = self.length
        while left > 0:
            data = self.f.read(min(_READ, left))
            if not data:
                raise OSError(f"{self.f.name} is shorter than expected")
            left -= len(data)
            yield data
            if self.progress:
                self.progress(len(data))


def _parse(lines: list[bytes]) -> list[dict]:
    out = []
    for line in lines:
        try:
            record = _codec.loads(line)
        except ValueError:
            continue  # the server refuses it; the replicator isolates and quarantines it
        if isinstance(record, dict):
            out.append(record)
    return out


def send_blobs(api: Api, state: SyncState, exp_id: str, run_path: str, lines: list[bytes],
               progress: Callable[[int], None] | None = None) -> None:
    """Upload the bytes of the save records among ``lines`` that the server lacks.

    Raises ``Refused`` when a record's bytes cannot be sent (missing from the run
    folder, or damaged there), ``Unavailable`` to try again later.
    """
    saves = [r for r in _parse(lines) if r.get("op") == SAVE and isinstance(r.get("checksum"), str)]
    if not saves:
        return
    sizes: dict[str, int] = {}
    for record in saves:
        size = record.get("sizeBytes")
        sizes.setdefault(record["checksum"], size if size.__class__ is int else -1)
    wanted = list(sizes)
    missing: set[str] = set()
    for k in range(0, len(wanted), _ASK):
        answer = api.request("POST", f"/experiments/{exp_id}/blobs/missing", json={"sha256": wanted[k : k + _ASK]})
        missing.update((answer or {}).get("missing") or [])
    deleted = None
    for checksum in wanted:
        size = sizes[checksum]
        if checksum not in missing:
            if progress and size > 0:
                progress(size)  # held already: nothing to send
            continue
        path = blob_path(run_path, checksum)
        if not os.path.exists(path):
            if deleted is None:
                deleted = _deleted_ids(run_path)
            if all(r["id"] in deleted for r in saves if r["checksum"] == checksum):
                if progress and size > 0:
                    progress(size)
                continue  # deleted here before it was uploaded: its record goes up, never listed
            names = ", ".join(sorted({r.get("filename") or "?" for r in saves if r["checksum"] == checksum}))
            raise Refused(f"the bytes of {names} ({checksum}) are missing from the run folder ({path})", status=None)
        upload_blob(api, state, exp_id, path, checksum, size, progress)


def _deleted_ids(run_path: str) -> set:
    return {r.get("id") for r in read_records(run_path) if r.get("op") == DELETE}


def upload_blob(api: Api, state: SyncState, exp_id: str, path: str, checksum: str, size: int,
                progress: Callable[[int], None] | None = None) -> None:
    """Stream one blob to the server, resuming the upload ``state`` keeps for it."""
    actual = os.stat(path).st_size
    if actual != size:
        raise Refused(f"the local copy {path} holds {actual:,} bytes, not the {size:,} its record says: it is damaged",
                      status=None)
    upload_id = state.upload_id(checksum)
    if upload_id is None:
        upload_id = secrets.token_hex(16)
        state.set_upload_id(checksum, upload_id)
        state.save()
    where = f"/experiments/{exp_id}/blobs/{checksum}"
    status = api.get(where, params={"upload": upload_id}) or {}
    offset = 0 if status.get("present") else int(status.get("received") or 0)
    if progress and offset:
        progress(offset)  # held from an earlier, interrupted upload
    piece = getattr(api, "blob_piece", None)
    while not status.get("present"):
        length = size - offset if piece is None else min(piece, size - offset)
        try:
            with open(path, "rb", buffering=0) as f:
                f.seek(offset)
                status = api.send_stream("PUT", where, _Body(f, length, progress),
                                         params={"upload": upload_id, "offset": offset, "size": size}) or {}
        except Conflict as error:  # the server holds another count of bytes: go on from there
            held = (getattr(error, "body", None) or {}).get("received")
            if not isinstance(held, int):
                raise
            offset, status = held, {}
            continue
        except Refused as error:
            if error.status == 413 and piece is None:  # a proxy takes less than a file: pieces
                piece = api.blob_piece = _PIECE_AFTER_413
                continue
            state.set_upload_id(checksum, None)  # start afresh next time
            state.save()
            if _sha256(path) != checksum:
                raise Refused(f"the local copy {path} is damaged: its bytes no longer hash to {checksum}",
                              status=None) from None
            raise Unavailable(f"the upload of {path} arrived damaged ({error.detail}); it will be sent again") from None
        if not status.get("present"):
            received = status.get("received")
            if not isinstance(received, int) or received <= offset and not status.get("disconnected"):
                raise Unavailable(f"the server took nothing of {path} (it holds {received!r} bytes)")
            offset = received
    state.set_upload_id(checksum, None)
    state.save()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(_READ)
            if not data:
                return h.hexdigest()
            h.update(data)
