"""Object storage for cold chunks and saved files: a local folder or an S3-compatible bucket.

Both offer ``put(key, data)`` (atomic: a reader sees the whole object or none)
and ``read(key, start, end)`` (a byte range), which is all the chunk format needs.
Files also need ``stream(key, start, end)`` (a range, in pieces) and an upload
that arrives in pieces over several requests and resumes after a crash
(``upload(...)``): a temp file renamed into place, or an S3 multipart upload.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Iterator
from urllib.parse import urlparse

from .._filecopy import start_writeback


class LocalBlobs:
    """Chunks as files under one folder (the embedded server's default).

    >>> blobs = LocalBlobs("/tmp/chunks")  # doctest: +SKIP
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.url = self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic: never a half-written chunk under the real name

    def read(self, key: str, start: int, end: int) -> bytes:
        fd = os.open(self._path(key), os.O_RDONLY)
        try:
            return os.pread(fd, end - start, start)
        finally:
            os.close(fd)

    def stream(self, key: str, start: int, end: int, piece: int = 1 << 20) -> Iterator[bytes]:
        """Bytes ``start..end`` of ``key`` in pieces (a file may be larger than memory)."""
        with open(self._path(key), "rb", buffering=0) as f:
            f.seek(start)
            left = end - start
            while left > 0:
                data = f.read(min(piece, left))
                if not data:
                    raise OSError(f"{key} ends before byte {end}")
                left -= len(data)
                yield data

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def upload(self, key: str, upload_id: str, state: dict) -> "LocalUpload":
        return LocalUpload(self, key, upload_id)


class LocalUpload:
    """A blob arriving in pieces into ``.uploads/<id>`` beside the store; ``durable()``
    fsyncs what came, ``complete()`` renames it to its key and upload id (after the
    caller checked its hash). The bytes received so far can be read back (``readback``)."""

    part_size = 0  # no parts: every byte written is kept
    can_readback = True
    write_here = True  # a write only copies into the page cache: no need for a thread

    def __init__(self, blobs: LocalBlobs, key: str, upload_id: str) -> None:
        # Its own object, as on S3: `mldash gc` freeing an older copy of the same bytes
        # at that moment never removes this one.
        self.blobs, self.key = blobs, f"{key}.{upload_id}"
        folder = os.path.join(blobs.root, ".uploads")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, upload_id)
        self.fd: int | None = None
        self.state: dict = {}

    def open(self, received: int) -> None:
        """Continue after ``received`` durable bytes (dropping anything beyond them)."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self.fd, received)
        os.lseek(self.fd, received, os.SEEK_SET)
        self.received = received

    def readback(self, end: int) -> Iterator:
        return self.read_range(0, end)

    def read_range(self, start: int, end: int, piece: int = 1 << 20) -> Iterator:
        """Bytes ``start..end`` received so far, as views of one reused 1 MiB buffer (each
        valid until the next): hashing them costs no allocation."""
        buf = bytearray(piece)
        view = memoryview(buf)
        offset = start
        while offset < end:
            n = os.preadv(self.fd, [view[: min(piece, end - offset)]], offset)
            if n <= 0:
                raise OSError(f"upload {self.path} holds fewer than {end} bytes")
            offset += n
            yield view[:n]

    def write(self, data) -> list:
        """Keep ``data``; returns the pieces now durable-to-be (to hash: all of it here)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.received += len(data)
        return [data]

    def writeback(self, offset: int, length: int) -> None:
        """Start the disk's write of these bytes (off the event loop: it may block), so
        that the fsync at the end waits for little."""
        start_writeback(self.fd, offset, length)

    def durable(self, final: bool = False) -> list:
        """fsync: ``received`` bytes survive a crash from now on. Returns the pieces that
        only now became durable (none here: ``write`` already handed them out)."""
        os.fsync(self.fd)
        return []

    def complete(self) -> str:
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        path = self.blobs._path(self.key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(self.path, path)
        _fsync_dir(os.path.dirname(path))
        return self.key

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def abort(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Blobs:
    """Chunks as objects in ``s3://bucket/prefix`` (any S3-compatible endpoint).

    Credentials come from the usual boto3 sources (environment, config files).
    """

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"blob URL must look like s3://bucket/prefix, got {url!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = url
        endpoint_url = endpoint_url or os.environ.get("MLDASH_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        # No SHA-256 of each chunk for the signature (botocore already skips it on
        # https; on plain http it costs ~1 ms of CPU per chunk); the request
        # checksum (CRC32) still guards the bytes in transit.
        config = Config(
            max_pool_connections=64, retries={"max_attempts": 5, "mode": "standard"}, s3={"payload_signing_enabled": False}
        )
        self._local = threading.local()
        self._make = lambda: boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        self.client  # fail at start, not at the first compaction, on bad settings

    @property
    def client(self):
        # boto3 clients are thread-safe, sessions are not: one session per thread is the documented way.
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
        return client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def read(self, key: str, start: int, end: int) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")
        return response["Body"].read()

    def stream(self, key: str, start: int, end: int, piece: int = 1 << 20) -> Iterator[bytes]:
        if end <= start:
            return
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")
        body = response["Body"]
        try:
            yield from body.iter_chunks(piece)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def upload(self, key: str, upload_id: str, state: dict) -> "S3Upload":
        return S3Upload(self, key, upload_id, state)


def s3_part_size(size: int) -> int:
    """Parts of $MLDASH_S3_PART_SIZE (default 16 MiB, at least S3's 5 MiB), larger when
    a file would need more than S3's 10,000 parts. A part is held in memory until it
    is sent, and is what a broken upload may have to send again."""
    base = max(5 << 20, int(os.environ.get("MLDASH_S3_PART_SIZE") or 16 << 20))
    return max(base, -(-size // 9_000))


class S3Upload:
    """A blob arriving in pieces as an S3 multipart upload. Bytes are durable once a
    whole part is uploaded (``state["parts"]``); a piece of a part that a request
    leaves unfinished is dropped, and the client sends it again. Parts cannot be
    read back before the upload completes (``can_readback`` False)."""

    can_readback = False
    write_here = False  # a write may send a part over the network

    def __init__(self, blobs: S3Blobs, key: str, upload_id: str, state: dict) -> None:
        self.blobs = blobs
        self.key = f"{key}.{upload_id}"  # its own object: a bad upload never replaces a good one
        self.state = state
        self.part_size = s3_part_size(int(state.get("size") or 0))
        self.buffer = bytearray()

    def open(self, received: int) -> None:
        parts = self.state.setdefault("parts", [])
        if sum(p[2] for p in parts) != received:
            raise OSError(f"upload {self.key}: the parts hold {sum(p[2] for p in parts)} bytes, not {received}")
        self.received = received
        if "upload" not in self.state and self.state.get("size", 0) > self.part_size:
            made = self.blobs.client.create_multipart_upload(Bucket=self.blobs.bucket, Key=self.blobs._key(self.key))
            self.state["upload"] = made["UploadId"]

    def write(self, data) -> list:
        """Buffer ``data``; returns the pieces that became durable (whole parts uploaded)."""
        self.buffer += data
        done = []
        while len(self.buffer) >= self.part_size and "upload" in self.state:
            part = bytes(self.buffer[: self.part_size])
            del self.buffer[: self.part_size]
            self._put_part(part)
            done.append(part)
        return done

    def _put_part(self, part: bytes) -> None:
        number = len(self.state["parts"]) + 1
        answer = self.blobs.client.upload_part(
            Bucket=self.blobs.bucket, Key=self.blobs._key(self.key), UploadId=self.state["upload"],
            PartNumber=number, Body=part,
        )
        self.state["parts"].append([number, answer["ETag"], len(part)])
        self.received += len(part)

    def durable(self, final: bool = False) -> list:
        """Upload what is buffered if it may be a part (>= 5 MiB, or the last): then
        ``received`` bytes survive. Returns the pieces that just became durable (for a
        small file, ``final``: the whole of it, kept for ``complete``)."""
        if "upload" not in self.state:
            if final:
                self.received = len(self.buffer)
                return [bytes(self.buffer)]
            return []
        if self.buffer and (final or len(self.buffer) >= 5 << 20):
            part = bytes(self.buffer)
            self.buffer.clear()
            self._put_part(part)
            return [part]
        return []

    def complete(self) -> str:
        if "upload" not in self.state:  # small: one object
            self.blobs.put(self.key, bytes(self.buffer))
            return self.key
        parts = [{"PartNumber": n, "ETag": etag} for n, etag, _size in self.state["parts"]]
        self.blobs.client.complete_multipart_upload(
            Bucket=self.blobs.bucket, Key=self.blobs._key(self.key), UploadId=self.state["upload"],
            MultipartUpload={"Parts": parts},
        )
        return self.key

    def close(self) -> None:
        self.buffer = bytearray()

    def abort(self) -> None:
        if "upload" in self.state:
            try:
                self.blobs.client.abort_multipart_upload(
                    Bucket=self.blobs.bucket, Key=self.blobs._key(self.key), UploadId=self.state["upload"]
                )
            except Exception:
                pass


def open_blobs(url: str, endpoint_url: str | None = None):
    """A blob store from ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    if url.startswith("s3://"):
        return S3Blobs(url, endpoint_url)
    if url.startswith("file://"):
        url = urlparse(url).path
    return LocalBlobs(url)
