"""The files endpoints of the API v1 (store side: ``_files``).

```
POST /experiments/{id}/files                 records of files/files.jsonl, from start_index (as /logs)
GET  /experiments/{id}/files                 the live files: {"files": [...ml-dash records], "total", "has_more"}
GET  /experiments/{id}/files/{file_id}       the bytes, with HTTP Range (206) and the SHA-256 in X-Checksum-Sha256
GET  /experiments/{id}/files/{file_id}/record   the file's record
POST /experiments/{id}/blobs/missing         {"sha256": [...]} -> {"missing": [...]}: what to upload
GET  /experiments/{id}/blobs/{sha256}?upload=U          {"present", "received"}: where an upload resumes
PUT  /experiments/{id}/blobs/{sha256}?upload=U&offset=K&size=N   bytes K.. of the blob, streamed
```

An upload is streamed: the body goes to the store in pieces (a temp file, or
S3 parts) while a worker thread hashes it, never held whole in memory; it is
resumable (``received`` bytes are durable; a PUT continues from there, a
wrong ``offset`` gets 409 with ``received``), and once all ``size`` bytes are
in their SHA-256 must be the one named, else nothing is kept (400). Reads and
writes take the same scopes as the other endpoints: an experiment the token may
not read is a 404 worded as for a missing id.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .. import _filestore
from .._http_files import content_disposition, parse_range
from ._errors import StoreError, Unavailable
from ._files import blob_key

API = "/api/v1"
MAX_ID = 2**31 - 1
# Bytes of a body handed to the worker at a time (to hash, or to send as S3 parts).
_PIECE = 16 << 20
_CHECKPOINT = 256 << 20  # bytes between two records of an upload's progress
# Seconds between two marks that an upload still receives (`mldash gc` leaves it be);
# $MLDASH_UPLOAD_ALIVE_S for tests.
_ALIVE = float(os.environ.get("MLDASH_UPLOAD_ALIVE_S") or 60.0)
_DEPTH = 4  # pieces received ahead of the worker, at most
# Types served as themselves (a preview can show them); anything else is octet-stream,
# so a saved .html or .svg never runs as a page of this origin.
_SAFE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "text/plain", "text/csv",
               "application/json", "application/pdf", "audio/wav", "audio/mpeg", "video/mp4"}
_UPLOAD_ID = r"^[0-9A-Za-z_-]{8,64}$"
_SHA = r"^[0-9a-f]{64}$"


class _Hashes:
    """The SHA-256 state of uploads between requests, in this process (a hash cannot
    be saved): an upload resumed here goes on hashing; elsewhere it is rebuilt from
    the bytes received (a local temp file) or checked once complete (S3)."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict = OrderedDict()
        self.size = size

    def take(self, upload_id: str, received: int):
        item = self._items.pop(upload_id, None)
        return item[1] if item is not None and item[0] == received else None

    def put(self, upload_id: str, received: int, hasher) -> None:
        self._items[upload_id] = (received, hasher)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._items.pop(upload_id, None)


def add_file_routes(app: FastAPI, store, *, caller, for_experiment, read_json, records_body: dict) -> None:
    files = store.files
    blobs = store.blobs
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mldash-files")
    hashes = _Hashes()
    locks: dict[str, asyncio.Lock] = {}
    ExpId = Path(..., ge=1, le=MAX_ID, description="the id returned by POST /experiments")
    FileId = Path(..., min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")

    async def work(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    @app.post(f"{API}/experiments/{{exp_id}}/files",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": records_body}}}})
    async def append_files(request: Request, exp_id: int = ExpId, scope=Depends(caller)):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise StoreError(f"the request body must be a JSON object, not {type(body).__name__}")
        await run_in_threadpool(for_experiment, scope, exp_id, "write")
        return await run_in_threadpool(files.append, exp_id, body.get("start_index"), body.get("records"))

    @app.get(f"{API}/experiments/{{exp_id}}/files")
    def list_files(
        exp_id: int = ExpId,
        prefix: Optional[str] = Query(None, max_length=1000, description="a folder: /models lists /models and below"),
        tag: Optional[list[str]] = Query(None, description="files with any of these tags"),
        pattern: Optional[str] = Query(None, max_length=1000, description="a glob on the name or the path"),
        limit: int = Query(1000, ge=0, le=10_000),
        offset: int = Query(0, ge=0),
        scope=Depends(caller),
    ):
        for_experiment(scope, exp_id, "read")
        return files.list(exp_id, prefix, tag, pattern, limit, offset)

    @app.get(f"{API}/experiments/{{exp_id}}/files/{{file_id}}/record")
    def file_record(exp_id: int = ExpId, file_id: str = FileId, scope=Depends(caller)):
        for_experiment(scope, exp_id, "read")
        return files.get(exp_id, file_id)[0]

    @app.get(f"{API}/experiments/{{exp_id}}/files/{{file_id}}")
    def file_bytes(request: Request, exp_id: int = ExpId, file_id: str = FileId, inline: bool = False,
                   scope=Depends(caller)):
        for_experiment(scope, exp_id, "read")
        record, key, size = files.get(exp_id, file_id)
        kind = record.get("contentType") or "application/octet-stream"
        kind = kind if kind in _SAFE_TYPES else "application/octet-stream"
        headers = {
            "Accept-Ranges": "bytes",
            "X-Checksum-Sha256": record["checksum"],
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": content_disposition(
                "inline" if inline and kind != "application/octet-stream" else "attachment", record["filename"]),
        }
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", **headers})
        start, end = wanted or (0, size)
        headers["Content-Length"] = str(end - start)
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return StreamingResponse(blobs.stream(key, start, end), status_code=status, media_type=kind, headers=headers)

    @app.post(f"{API}/experiments/{{exp_id}}/blobs/missing")
    async def missing(request: Request, exp_id: int = ExpId, scope=Depends(caller)):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise StoreError("the body must be {\"sha256\": [...]}")
        await run_in_threadpool(for_experiment, scope, exp_id, "write")
        namespace = await run_in_threadpool(store.experiment_namespace, exp_id)
        return {"missing": await run_in_threadpool(files.missing, namespace, body.get("sha256"))}

    @app.get(f"{API}/experiments/{{exp_id}}/blobs/{{sha256}}")
    def blob_status(exp_id: int = ExpId, sha256: str = Path(..., pattern=_SHA),
                    upload: Optional[str] = Query(None, pattern=_UPLOAD_ID), scope=Depends(caller)):
        for_experiment(scope, exp_id, "write")
        namespace = store.experiment_namespace(exp_id)
        if files.present(namespace, sha256):
            return {"present": True, "received": None}
        row = files.upload_row(upload) if upload else None
        held = row is not None and row["namespace"] == namespace and row["sha256"] == sha256
        return {"present": False, "received": row["received"] if held else 0}

    @app.put(f"{API}/experiments/{{exp_id}}/blobs/{{sha256}}",
             openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}})
    async def put_blob(
        request: Request,
        exp_id: int = ExpId,
        sha256: str = Path(..., pattern=_SHA),
        upload: str = Query(..., pattern=_UPLOAD_ID, description="the client's id for this upload (resume with it)"),
        offset: int = Query(..., ge=0, description="where this body starts in the blob"),
        size: int = Query(..., ge=0, le=_filestore.MAX_FILE_SIZE, description="the whole blob's size"),
        scope=Depends(caller),
    ):
        if request.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            raise StoreError("send a blob's bytes as they are (no Content-Encoding)")  # 400, not 415: a client bug
        if offset > size:
            raise StoreError(f"offset {offset} is past the blob's size {size}")
        await run_in_threadpool(for_experiment, scope, exp_id, "write")
        namespace = await run_in_threadpool(store.experiment_namespace, exp_id)
        if await run_in_threadpool(files.present, namespace, sha256):
            return {"present": True, "received": size}
        lock = locks.setdefault(upload, asyncio.Lock())
        try:
            async with lock:
                return await _receive(request, namespace, sha256, upload, offset, size)
        finally:
            if not lock.locked():
                locks.pop(upload, None)

    async def _receive(request: Request, namespace: str, sha256: str, upload_id: str, offset: int, size: int):
        row = await run_in_threadpool(files.open_upload, namespace, sha256, size, upload_id)
        if row["received"] != offset:
            detail = {"detail": f"upload {upload_id} holds {row['received']:,} bytes: send from there",
                      "code": "offset", "received": row["received"]}
            return Response(orjson.dumps(detail), status_code=409, media_type="application/json")
        up = blobs.upload(blob_key(namespace, sha256), upload_id, dict(row["state"]))
        try:
            await work(up.open, offset)
            hasher = hashes.take(upload_id, offset)
            if hasher is None:
                if offset == 0:
                    hasher = hashlib.sha256()
                elif up.can_readback:
                    hasher = await work(_rebuild, up, offset)
            written, saved, disconnected = offset, offset, False
            # One worker thread per upload hashes the pieces (and sends them to S3) in
            # order, up to _DEPTH of them behind the network: receiving never waits for
            # the hash unless it falls that far behind.
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mldash-upload")
            loop = asyncio.get_running_loop()
            inflight: deque = deque()

            async def submit(fn, *args) -> None:
                inflight.append(loop.run_in_executor(worker, fn, *args))
                while len(inflight) > _DEPTH:
                    await inflight.popleft()

            def checkpoint() -> None:
                _durable(up, hasher, False)
                files.save_progress(upload_id, up.received, up.state)

            piece = bytearray()
            alive_at = loop.time()
            hashed = offset  # a local upload: bytes up to here are handed to the worker
            try:
                try:
                    async for chunk in request.stream():
                        if not chunk:
                            continue
                        written += len(chunk)
                        if written > size:
                            raise StoreError(f"the body runs past the blob's size {size:,} (offset {offset:,})")
                        if up.write_here:
                            # Written at once, as it comes (into the page cache); the worker
                            # hashes it back from there, 16 MiB at a time: no copy is kept here.
                            up.write(chunk)
                            if written - hashed >= _PIECE:
                                await submit(_hash_range, up, hasher, hashed, written)
                                hashed = written
                        else:  # S3: the worker sends whole parts
                            piece += chunk
                            if len(piece) >= _PIECE:
                                await submit(_write, up, hasher, piece)
                                piece = bytearray()
                        if written - saved >= _CHECKPOINT:
                            await submit(checkpoint)
                            saved, alive_at = written, loop.time()
                        elif loop.time() - alive_at >= _ALIVE:  # only the time: a flush here would cut short parts
                            await submit(files.touch_upload, upload_id)
                            alive_at = loop.time()
                except ClientDisconnect:
                    disconnected = True
                if up.write_here and written > hashed:
                    await submit(_hash_range, up, hasher, hashed, written)
                if piece:
                    await submit(_write, up, hasher, piece)
            finally:  # everything submitted is done before anything else happens to the upload
                done = await asyncio.gather(*inflight, return_exceptions=True)
                worker.shutdown(wait=False)
            failed = [r for r in done if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
            final = written == size
            await work(_durable, up, hasher, final)
            if final and up.received == size:
                return await _complete(up, hasher, namespace, sha256, upload_id, size)
            await run_in_threadpool(files.save_progress, upload_id, up.received, up.state)
            if hasher is not None:
                hashes.put(upload_id, up.received, hasher)
            return {"present": False, "received": up.received, "disconnected": disconnected}
        except OSError as error:
            raise Unavailable(f"the server could not store the upload: {error}") from None
        finally:
            await work(up.close)

    async def _complete(up, hasher, namespace: str, sha256: str, upload_id: str, size: int) -> dict:
        hashes.drop(upload_id)
        if hasher is not None and hasher.hexdigest() != sha256:
            await work(up.abort)
            await run_in_threadpool(files.drop_upload, upload_id)
            raise StoreError(f"the {size:,} bytes received hash to {hasher.hexdigest()}, not {sha256}: nothing was kept")
        stored = await work(up.complete)
        if hasher is None:  # resumed where the hash could not follow: check the object itself
            digest = await work(_hash_object, stored, size)
            if digest != sha256:
                await work(blobs.delete, stored)
                await run_in_threadpool(files.drop_upload, upload_id)
                raise StoreError(f"the {size:,} bytes received hash to {digest}, not {sha256}: nothing was kept")
        if not await run_in_threadpool(files.add_blob, namespace, sha256, size, stored, upload_id):
            if stored != blob_key(namespace, sha256):
                await work(blobs.delete, stored)  # another upload of the same bytes was recorded first
        return {"present": True, "received": size}

    def _hash_object(key: str, size: int) -> str:
        h = hashlib.sha256()
        for data in blobs.stream(key, 0, size):
            h.update(data)
        return h.hexdigest()


def _write(up, hasher, data) -> None:
    for piece in up.write(data):
        if hasher is not None:
            hasher.update(piece)


def _hash_range(up, hasher, start: int, end: int) -> None:
    """Hash bytes ``start..end`` of a local upload back from the page cache, and start
    their write to the disk."""
    if hasher is not None:
        for data in up.read_range(start, end):
            hasher.update(data)
    up.writeback(start, end - start)


def _durable(up, hasher, final: bool) -> None:
    for piece in up.durable(final):
        if hasher is not None:
            hasher.update(piece)


def _rebuild(up, received: int):
    h = hashlib.sha256()
    for data in up.readback(received):
        h.update(data)
    return h
