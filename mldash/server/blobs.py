"""Object storage for cold chunks: a local folder or an S3-compatible bucket.

Both offer ``put(key, data)`` (atomic: a reader sees the whole object or none)
and ``read(key, start, end)`` (a byte range), which is all the chunk format needs.
"""

from __future__ import annotations

import os
import threading
import uuid
from urllib.parse import urlparse


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


def open_blobs(url: str, endpoint_url: str | None = None):
    """A blob store from ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    if url.startswith("s3://"):
        return S3Blobs(url, endpoint_url)
    if url.startswith("file://"):
        url = urlparse(url).path
    return LocalBlobs(url)
