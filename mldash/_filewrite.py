"""The write side's primitives of a run's files store (``mldash.files`` saves and
deletes with them; the layout is ``_filestore``'s): the errors it raises, record ids
and timestamps, appending to the index, tombstones, placing and freeing blobs, and
sweeping the copies of dead savers.
"""

from __future__ import annotations

import mimetypes
import os
from datetime import datetime, timezone

from ._filestore import DELETE, blob_path, encode_record, fold
from ._runfolder import pid_alive


class MissingFile(FileNotFoundError, ValueError):
    """No such file (a ValueError too, as ml-dash raises)."""


class NotAFile(IsADirectoryError, ValueError):
    """A directory or another thing that is not a regular file (a ValueError too, as ml-dash raises)."""


def _now_iso(now: float) -> str:
    # ml-dash's format: naive UTC, ISO 8601, a trailing Z.
    return datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def _new_id(now: float) -> str:
    # A Snowflake-like id, as ml-dash's: milliseconds, then 22 random bits; sorts by time.
    return str((int(now * 1000) << 22) | int.from_bytes(os.urandom(3), "big") >> 2)


def _place(tmp: str, blob: str, size: int) -> bool:
    """Move the finished copy to its content address; True when it was not there yet."""
    try:
        if os.stat(blob).st_size == size:
            _unlink(tmp)  # the same bytes are stored already
            return False
    except FileNotFoundError:
        pass
    folder = os.path.dirname(blob)
    os.makedirs(folder, exist_ok=True)
    os.replace(tmp, blob)
    for path in (folder, os.path.dirname(folder)):
        _fsync_dir(path)
    return True


def _append(index: str, lines: list[bytes]) -> None:
    """Append whole lines to the index (under its lock), repairing a line a crashed
    writer left without its newline, and fsync."""
    fd = os.open(index, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A record is at most 8 MiB: the last newline is within the last 16.
            data = os.pread(fd, min(size, 16 << 20), max(0, size - (16 << 20)))
            cut = size - len(data) + data.rfind(b"\n") + 1
            os.ftruncate(fd, cut if b"\n" in data or size <= len(data) else size)
            size = os.fstat(fd).st_size
        payload = b"".join(line + b"\n" for line in lines)
        written = 0
        while written < len(payload):
            written += os.write(fd, payload[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if size == 0:
        _fsync_dir(os.path.dirname(index))


def _tombstone(file_id: str, now: float, replaced_by: str | None = None) -> bytes:
    record = {"op": DELETE, "id": file_id, "deletedAt": _now_iso(now), "timestamp": now}
    if replaced_by is not None:
        record["replacedBy"] = replaced_by
    return encode_record(record)


def _codec_line(line: bytes) -> dict:
    from . import _codec

    return _codec.loads(line)


def _free(run_path: str, records: list[dict], checksums: list[str]) -> None:
    """Remove the bytes of ``checksums`` that no live record holds any more."""
    if not checksums:
        return
    held = {f["checksum"] for f in fold(records)}
    for checksum in set(checksums) - held:
        blob = blob_path(run_path, checksum)
        _unlink(blob)
        try:
            os.rmdir(os.path.dirname(blob))  # its two-letter folder, once empty
        except OSError:
            pass


def _sweep(tmp: str) -> None:
    """Remove copies left by processes of this host that died mid-save."""
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        pid = name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            _unlink(os.path.join(tmp, name))


# What training runs save, which the system's tables get wrong (.pt is not a "page table").
_BINARY = {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".npy", ".npz", ".pkl", ".pickle", ".h5", ".hdf5",
           ".onnx", ".tflite", ".keras", ".msgpack", ".joblib", ".parquet", ".arrow", ".feather"}


def _content_type(name: str) -> str:
    if os.path.splitext(name)[1].lower() in _BINARY:
        return "application/octet-stream"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
