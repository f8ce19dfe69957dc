"""A run's saved files: where they live, what a record holds, the checks, and reading them.

```
{run}/files/
  files.jsonl                  the index: one record a line, append-only (INDEX_FILE)
  blobs/sha256/ab/cdef...      each distinct content once, named by its SHA-256 (blob_path)
  .tmp/                        copies being made; never read, removed when they fail
```

A record is a save or a delete (a tombstone): deleting appends a line, so the
index only ever grows and replicates like the logs. The public view of a file is
the ml-dash SDK's record (``id``, ``path``, ``filename``, ``contentType``,
``sizeBytes``, ``checksum`` = the SHA-256 in hex, ``uploadedAt`` ...); ``fold``
turns the index into those. A record is appended only once its blob is complete
and durable, so no record ever points at a partial file.

The write side is ``mldash.files``; this module is what readers use (the
dashboard, the server's checks, the uploader), and it imports no write side.

>>> list_files("/tmp/runs/vision/resnet", prefix="/models")  # doctest: +SKIP
[{'id': '7390...', 'path': '/models', 'filename': 'model.pt', 'sizeBytes': 1048576, 'checksum': 'ab12...', ...}]
>>> blob_path("/tmp/runs/vision/resnet", record["checksum"])  # the bytes, to serve  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import threading
from typing import Any, Iterable

from . import _codec
from ._checks import MAX_RECORD, RECORD_DEPTH, check_json, check_text
from ._naming import MAX_NAME, check_label, check_part

FILES_DIR = "files"
INDEX_STEM = "files"
INDEX_FILE = INDEX_STEM + ".jsonl"  # files/files.jsonl
BLOBS_DIR = "blobs"
ALGORITHM = "sha256"
TMP_DIR = ".tmp"
SAVE, DELETE, SKIPPED = "save", "delete", "skipped"  # "skipped": a server's stand-in, never listed
UPDATE = "update"  # new description, tags or metadata of a saved file (ml-dash's update())
UPDATED_FIELDS = ("description", "tags", "metadata")
# ml-dash's record keys, in its order; ``experimentId`` is the run's prefix here.
PUBLIC_KEYS = (
    "id", "experimentId", "path", "filename", "description", "tags", "bindrs", "contentType", "sizeBytes",
    "checksum", "metadata", "uploadedAt", "updatedAt", "deletedAt",
)
MAX_FILE_SIZE = 5 * 1024**4  # 5 TiB: S3's largest object
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


# ---- the layout ----------------------------------------------------------------------
def files_folder(run_path: str) -> str:
    return os.path.join(run_path, FILES_DIR)


def index_path(run_path: str) -> str:
    """``{run}/files/files.jsonl``."""
    return os.path.join(run_path, FILES_DIR, INDEX_FILE)


def blob_relpath(checksum: str) -> str:
    """Where the bytes of ``checksum`` live, relative to the run folder."""
    check_checksum(checksum)
    return f"{FILES_DIR}/{BLOBS_DIR}/{ALGORITHM}/{checksum[:2]}/{checksum[2:]}"


def blob_path(run_path: str, checksum: str) -> str:
    """The file holding the bytes of a record's ``checksum`` (what a dashboard serves)."""
    return os.path.join(run_path, *blob_relpath(checksum).split("/"))


# ---- the checks: one set for the local API and the server ------------------------------
def check_prefix(prefix: Any) -> str:
    """A file's logical folder, ml-dash style: ``"/models"``, ``"models/"`` and
    ``"/models"`` are one folder; None, "" and "/" the top. Each part is a folder
    name by the shared rule (``_naming.check_part``: no "..", no "\\", no control
    character, no leading "."), so no prefix can point outside the run."""
    if prefix is None:
        return "/"
    if not isinstance(prefix, str):
        raise TypeError(f"file prefix must be a str, not {type(prefix).__name__}")
    if len(prefix) > MAX_NAME:
        raise ValueError(f"file prefix is {len(prefix)} characters long; at most {MAX_NAME} are allowed")
    inner = prefix[1:] if prefix.startswith("/") else prefix
    inner = inner[:-1] if inner.endswith("/") else inner
    if not inner:
        if prefix not in ("", "/"):
            raise ValueError(f"file prefix {prefix!r} must not hold an empty folder name")
        return "/"
    for part in inner.split("/"):
        if not part:
            raise ValueError(f"file prefix {prefix!r} must not hold an empty folder name ('//')")
        check_part(part, "file prefix part")
    return "/" + inner


def check_filename(name: Any) -> str:
    """A file's name: one file name by the shared rule (no "/", no "..", no NUL,
    at most 255 bytes in UTF-8, ...)."""
    return check_part(name, "file name")


def check_labels(values: Any, what: str) -> list[str]:
    """Tags (or ml-dash's bindrs): a list of labels (``_naming.check_label``)."""
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{what} must be a list of str, not {type(values).__name__}")
    return [check_label(v, f"{what[:-1] if what.endswith('s') else what}") for v in values]


def check_description(description: Any) -> str | None:
    if description is None:
        return None
    return check_text(description, "file description", nul=False)


def check_metadata(metadata: Any) -> dict | None:
    """A dict of JSON values (numpy and torch scalars become numbers); anything
    else, a set or an object, is refused rather than turned into text."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"file metadata must be a dict, not {type(metadata).__name__}")
    metadata = _plain(metadata, "file metadata", 0)
    check_json(metadata, "file metadata", nul=False, depth=RECORD_DEPTH)
    return metadata


def _plain(value: Any, what: str, depth: int) -> Any:
    if value is None or value.__class__ in (str, bool, int, float):
        return value
    if depth > 64:
        raise ValueError(f"{what} nests more than 64 levels deep")
    if isinstance(value, dict):
        return {k: _plain(v, f"{what}.{str(k)[:40]}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{what}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (bool, int, float, str)):  # subclasses (IntEnum, numpy.float64)
        return str(value) if isinstance(value, str) else _number(value)
    item = getattr(value, "item", None)
    shape = getattr(value, "shape", None)
    if callable(item) and (shape == () or shape is None and not hasattr(value, "__len__")):
        try:
            return _plain(item(), what, depth + 1)  # a numpy or torch scalar
        except Exception:
            pass
    raise TypeError(f"{what} holds a {type(value).__name__}, which is not a JSON value (convert it first)")


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    return float(value)


def check_file_id(file_id: Any) -> str:
    if not isinstance(file_id, str):
        raise TypeError(f"file_id must be a str, not {type(file_id).__name__}")
    if not _ID.fullmatch(file_id):
        raise ValueError(f"file_id must be 1-64 letters, digits, '_' or '-', got {file_id[:80]!r}")
    return file_id


def check_checksum(checksum: Any) -> str:
    if not isinstance(checksum, str) or not _SHA256.fullmatch(checksum):
        raise ValueError(f"checksum must be a SHA-256 in lowercase hex (64 characters), got {str(checksum)[:80]!r}")
    return checksum


def _check_size(size: Any) -> int:
    if size.__class__ is not int or not 0 <= size <= MAX_FILE_SIZE:
        raise ValueError(f"sizeBytes must be an integer from 0 to {MAX_FILE_SIZE:,}, got {str(size)[:40]!r}")
    return size


def check_record(record: Any, index: int) -> dict:
    """One line of ``files.jsonl`` as the local API writes it; the server takes
    exactly these (its 400 names the record and the field)."""
    where = f"file record {index}"
    if not isinstance(record, dict):
        raise TypeError(f"{where} must be an object, not {type(record).__name__}")
    op = record.get("op")
    if op not in (SAVE, DELETE, UPDATE, SKIPPED):
        raise ValueError(f"{where}: op must be {SAVE!r}, {DELETE!r}, {UPDATE!r} or {SKIPPED!r}, not {str(op)[:40]!r}")
    ts = record.get("timestamp")
    if ts.__class__ not in (int, float) or not math.isfinite(ts):
        raise ValueError(f"{where}: timestamp must be a finite number of epoch seconds, got {str(ts)[:40]!r}")
    try:
        if op != SKIPPED:
            check_file_id(record.get("id"))
        if op == SAVE:
            if check_prefix(record.get("path")) != record.get("path"):
                raise ValueError(f"path must be written as {check_prefix(record.get('path'))!r}")
            check_filename(record.get("filename"))
            check_checksum(record.get("checksum"))
            _check_size(record.get("sizeBytes"))
            check_labels(record.get("tags"), "file tags")
            check_labels(record.get("bindrs"), "file bindrs")
            check_description(record.get("description"))
            if record.get("metadata") is not None and not isinstance(record.get("metadata"), dict):
                raise TypeError("metadata must be an object or null")
            for key in ("contentType", "uploadedAt", "experimentId"):
                if not isinstance(record.get(key), (str, type(None))):
                    raise TypeError(f"{key} must be a string")
        if op == UPDATE:
            if not any(key in record for key in UPDATED_FIELDS):
                raise ValueError("an update names at least one of description, tags, metadata")
            if "tags" in record:
                check_labels(record["tags"], "file tags")
            if "description" in record:
                check_description(record["description"])
            if record.get("metadata") is not None and not isinstance(record.get("metadata"), dict):
                raise TypeError("metadata must be an object or null")
            if not isinstance(record.get("updatedAt"), (str, type(None))):
                raise TypeError("updatedAt must be a string")
        check_json(record, "record", nul=False, tagged=True)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None
    return record


def encode_record(record: dict) -> bytes:
    data = _codec.dumps(record)
    if len(data) > MAX_RECORD:
        raise ValueError(f"the file's record is {len(data):,} bytes as JSON; at most {MAX_RECORD:,} are allowed")
    return data


# ---- reading ---------------------------------------------------------------------------
def read_records(run_path: str) -> list[dict]:
    """Every record of the index, in order; a damaged or half-written line is skipped."""
    try:
        with open(index_path(run_path), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            record = _codec.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def fold(records: Iterable[dict], include_deleted: bool = False) -> list[dict]:
    """The files the records describe, in the order they were saved, as ml-dash
    records; a deleted one (unless ``include_deleted``) is left out."""
    files: dict[str, dict] = {}
    for record in records:
        op, file_id = record.get("op"), record.get("id")
        if op == SAVE and isinstance(file_id, str):
            files[file_id] = public(record)
        elif op == DELETE and file_id in files and files[file_id]["deletedAt"] is None:
            when = record.get("deletedAt")
            files[file_id]["deletedAt"] = files[file_id]["updatedAt"] = when
        elif op == UPDATE and file_id in files and files[file_id]["deletedAt"] is None:
            files[file_id] = apply_update(files[file_id], record)
    return [f for f in files.values() if include_deleted or f["deletedAt"] is None]


def apply_update(saved: dict, update: dict) -> dict:
    """A file's record (saved, or as the API returns it) with an update's fields."""
    out = dict(saved)
    for key in UPDATED_FIELDS:
        if key in update:
            out[key] = list(update[key] or []) if key == "tags" else update[key]
    out["updatedAt"] = update.get("updatedAt")
    return out


def public(record: dict) -> dict:
    """A save record as the API returns it: ml-dash's keys, in its order."""
    out = {key: record.get(key) for key in PUBLIC_KEYS}
    out["tags"] = list(record.get("tags") or [])
    out["bindrs"] = list(record.get("bindrs") or [])
    out["updatedAt"] = record.get("updatedAt") or record.get("uploadedAt")
    out["deletedAt"] = None
    return out


def select(files: list[dict], prefix: str | None = None, tags: list[str] | None = None,
           pattern: str | None = None) -> list[dict]:
    """Files under ``prefix`` (the folder and those below it), with any of ``tags``,
    whose name or path matches the glob ``pattern`` (as ml-dash's ``list``)."""
    if prefix is not None and prefix != "/":
        files = [f for f in files if f["path"] == prefix or f["path"].startswith(prefix + "/")]
    if tags:
        wanted = set(tags)
        files = [f for f in files if wanted.intersection(f.get("tags") or ())]
    if pattern:
        pattern = pattern.lstrip("/")
        files = [f for f in files if fnmatch.fnmatch(f["filename"], pattern) or fnmatch.fnmatch(full_path(f), pattern)]
    return files


def full_path(record: dict) -> str:
    """``models/model.pt`` for a file in ``/models``."""
    folder = (record.get("path") or "/").strip("/")
    return f"{folder}/{record['filename']}" if folder else record["filename"]


def list_files(run_path: str, prefix: str | None = None, tags: list[str] | None = None,
               pattern: str | None = None, include_deleted: bool = False) -> list[dict]:
    """The files saved in the run at ``run_path``: what a dashboard lists (then
    ``blob_path(run_path, record["checksum"])`` is the file to serve)."""
    prefix = check_prefix(prefix) if prefix is not None else None
    return select(fold(read_records(run_path), include_deleted), prefix, tags, pattern)


def find_file(run_path: str, file_id: str, include_deleted: bool = False) -> dict | None:
    check_file_id(file_id)
    for record in fold(read_records(run_path), include_deleted=True):
        if record["id"] == file_id and (include_deleted or record["deletedAt"] is None):
            return record
    return None


def find_by_path(files: list[dict], path: str) -> dict | None:
    """The newest live file at ``path`` ("models/model.pt"), else the newest named ``path``."""
    wanted = path.strip("/")
    for record in reversed(files):
        if full_path(record) == wanted:
            return record
    for record in reversed(files):
        if record["filename"] == wanted:
            return record
    return None


# ---- saves still running in the background (``save(wait=False)``) ------------------------
_pending: dict[str, set] = {}
_pending_lock = threading.Lock()


def track(run_path: str, future) -> None:
    """Note a background save of the run at ``run_path`` until it completes."""
    with _pending_lock:
        _pending.setdefault(run_path, set()).add(future)

    def done(_f) -> None:
        with _pending_lock:
            left = _pending.get(run_path)
            if left is not None:
                left.discard(future)
                if not left:
                    _pending.pop(run_path, None)

    future.add_done_callback(done)


def pending_saves(run_path: str) -> list:
    """The futures of this run's saves still running (the uploader waits for them)."""
    with _pending_lock:
        return list(_pending.get(run_path, ()))
