"""``exp.files(...)``: the ml-dash SDK's files builder, over a content-addressed store
in the run's folder (layout and reading: ``_filestore``; the guide: docs/files.md).

>>> exp.files(file_path="model.pt", prefix="/models", tags=["best"]).save()  # doctest: +SKIP
{'id': '7390...', 'path': '/models', 'filename': 'model.pt', 'sizeBytes': 1048576, 'checksum': 'ab12...', ...}
>>> exp.files(prefix="/models").list()  # doctest: +SKIP
>>> exp.files(file_id="7390...").download(dest_path="out.pt")  # doctest: +SKIP
'out.pt'

How a save works: the source is copied into ``files/.tmp/`` by the kernel
(``sendfile``) in pieces while a helper thread hashes what was copied, reading
it back from the page cache, so the copy and the SHA-256 run side by side and a
file of any size passes through a few MiB of memory. The copy is fsynced, renamed
to ``files/blobs/sha256/<2>/<62>`` (or dropped when those bytes are already
stored) and only then is its record appended to ``files/files.jsonl``. So a crash
leaves at most a temp file, never a record without its bytes.

``save()`` returns the complete record: on this kind of machine a 1 GB file costs
about what its SHA-256 does (~0.6 s), a little more than a plain copy.
``save(wait=False)`` returns a ``concurrent.futures.Future`` as soon as the copy is
taken (the source may change from then on): the hash, the fsync and the record
happen on a background thread, and the future's result is the record.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
import time
from typing import Any

from . import _filecopy
from ._filecopy import _SMALL, _copy_fd, _copy_to, _Copying
from ._filehelpers import _required, _SaveHelpers
from ._filestore import (
    FILES_DIR,
    INDEX_FILE,
    SAVE,
    TMP_DIR,
    UPDATE,
    UPDATED_FIELDS,
    apply_update,
    blob_path,
    check_description,
    check_file_id,
    check_filename,
    check_labels,
    check_metadata,
    check_prefix,
    encode_record,
    files_folder,
    find_by_path,
    fold,
    index_path,
    public,
    read_records,
    select,
)
from ._filewrite import (
    MissingFile,
    NotAFile,
    _append,
    _codec_line,
    _content_type,
    _free,
    _fsync_dir,  # noqa: F401  (mldash._media's media store reaches it here)
    _new_id,
    _now_iso,
    _place,
    _sweep,
    _tombstone,
    _unlink,
)
from ._hooks import RunHooks
from ._runfolder import META_FILE, locked
from ._writer import StorageError


# ---- the builder ------------------------------------------------------------------------
class FilesAccessor:
    """``exp.files``: call it for a builder (``exp.files(prefix="/models")``), or use
    ml-dash 0.11's direct forms (``exp.files.list()``, ``exp.files.save_json(obj, to="a.json")``)."""

    def __init__(self, path: str, prefix: str, hooks: RunHooks) -> None:
        self._store = RunFiles(path, prefix, hooks)

    def __call__(self, dir: str | None = None, **options: Any) -> "FileBuilder":
        return FileBuilder(self._store, dir, **options)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(FileBuilder(self._store), name)


class FileBuilder(_SaveHelpers):
    """One files operation, ml-dash's builder: the arguments of ``exp.files(...)``, then
    ``save()``, ``list()``, ``download()``, ``delete()`` or a ``save_*`` helper.

    ``dir`` (ml-dash 0.11's first argument) is the folder to save into or list, or
    the file to download or delete (``"models/model.pt"``); ``prefix`` (0.6's
    keyword) is the folder. Every argument is checked here, at the call.
    """

    def __init__(
        self,
        store: "RunFiles",
        dir: str | None = None,
        *,
        file_path: str | os.PathLike | None = None,
        prefix: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        bindrs: list[str] | None = None,
        metadata: dict | None = None,
        file_id: str | None = None,
        dest_path: str | os.PathLike | None = None,
    ) -> None:
        self._store = store
        self._dir = check_prefix(dir) if dir is not None else None
        self._prefix = check_prefix(prefix) if prefix is not None else self._dir or "/"
        self._listing = check_prefix(prefix) if prefix is not None else self._dir  # None: every file
        self._file_path = _fspath(file_path, "file_path") if file_path is not None else None
        self._description = check_description(description)
        self._tags = check_labels(tags, "file tags")
        self._bindrs = check_labels(bindrs, "file bindrs")
        self._metadata = check_metadata(metadata)
        self._file_id = check_file_id(file_id) if file_id is not None else None
        self._dest_path = _fspath(dest_path, "dest_path") if dest_path is not None else None
        given = {"description": description, "tags": tags, "metadata": metadata}
        self._given = {key for key, value in given.items() if value is not None}

    # ---- saving ---------------------------------------------------------------------------
    def save(self, content: Any = None, *, to: str | None = None, description: str | None = None,
             tags: list[str] | None = None, metadata: dict | None = None, wait: bool = True):
        """Store a file (``file_path``, or ``content``: a path, bytes, or a dict/list
        saved as JSON) and return its record; ``to`` renames it ("best.pt", or
        "sub/best.pt" into a sub-folder). ``wait=False`` returns a Future of the record
        once the copy is taken (the hash and the record follow in the background)."""
        fields = self._fields(description, tags, metadata)
        if content is None:
            if self._file_path is None:
                raise ValueError("nothing to save: pass exp.files(file_path=...) or save(content)")
            content = self._file_path
        if isinstance(content, (str, os.PathLike)):
            source = _fspath(content, "file_path")
            prefix, name = self._target(to if to is not None else os.path.basename(source.rstrip(os.sep)) or source)
            return self._store.save_path(source, prefix, name, fields, wait)
        if isinstance(content, (bytes, bytearray, memoryview)):
            return self.save_blob(content, to=_required(to, "bytes"), wait=wait, **_as_options(fields))
        if isinstance(content, (dict, list)):
            return self.save_json(content, to=_required(to, "a dict or list"), wait=wait, **_as_options(fields))
        raise TypeError(f"save() takes a file path, bytes, or a dict/list (saved as JSON), not {type(content).__name__}")

    def upload(self, fpath: str | os.PathLike, *, to: str | None = None, description: str | None = None,
               tags: list[str] | None = None, metadata: dict | None = None, wait: bool = True):
        """ml-dash 0.11's name for saving a file from disk."""
        return self.save(_fspath(fpath, "fpath"), to=to, description=description, tags=tags, metadata=metadata, wait=wait)

    # ---- reading and deleting --------------------------------------------------------------
    def list(self, pattern: str | None = None) -> list[dict]:
        """The live files under this builder's folder (all of them with none), oldest
        first, as ml-dash records; ``pattern`` is a glob on the name or the path, and
        the builder's ``tags`` keep files with any of them."""
        if pattern is not None and not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        return select(self._store.files(), self._listing, self._tags or None, pattern)

    def download(self, pattern: str | None = None, *, to: str | os.PathLike | None = None,
                 dest_path: str | os.PathLike | None = None):
        """Copy the file (``file_id``, else this builder's path) to ``dest_path`` (default:
        its name in the working directory) and return where it went; the copy is
        verified against the record's SHA-256. With a ``pattern``, every match goes into
        the folder ``to`` and the paths come back as a list."""
        dest = dest_path if dest_path is not None else to if to is not None else self._dest_path
        dest = _fspath(dest, "dest_path") if dest is not None else None
        if pattern is not None and self._file_id is None:
            matches = self.list(pattern)
            if not matches:
                raise MissingFile(f"no file matches {pattern!r} in {self._store.prefix}")
            folder = dest or "."
            os.makedirs(folder, exist_ok=True)
            return [self._store.download(f, os.path.join(folder, f["filename"])) for f in matches]
        return self._store.download(self._one(), dest)

    def delete(self, pattern: str | None = None):
        """Delete the file (``file_id``, else this builder's path): its record is ended by a
        tombstone and its bytes are freed once no other record holds them. Returns
        ``{"id", "deletedAt"}`` (a list of those with a ``pattern``)."""
        if pattern is not None and self._file_id is None:
            matches = self.list(pattern)
            if not matches:
                raise MissingFile(f"no file matches {pattern!r} in {self._store.prefix}")
            return [self._store.delete(f["id"]) for f in matches]
        return self._store.delete(self._one()["id"])

    def read_text(self, encoding: str = "utf-8") -> str:
        """The file's (``file_id``, else this builder's path) content as text, checked
        against its SHA-256 (ml-dash's ``read_text``)."""
        # As ml-dash reads it (a file opened in text mode): universal newlines, and the
        # locale's encoding for encoding=None.
        return io.TextIOWrapper(io.BytesIO(self._store.read_bytes(self._one())), encoding=encoding).read()

    def update(self) -> dict:
        """Give the file (``file_id``, else this builder's path) the description, tags or
        metadata passed to ``exp.files(...)`` (only those passed), as ml-dash's
        ``update()``; returns its record. The change is appended to the index, as a
        save is, so it replicates the same way.

        >>> exp.files(file_id=record["id"], tags=["best"]).update()  # doctest: +SKIP
        """
        changes = {key: getattr(self, "_" + key) for key in UPDATED_FIELDS if key in self._given}
        if not changes:
            raise ValueError("nothing to update: pass description=, tags= or metadata= to exp.files(...)")
        return self._store.update(self._one()["id"], changes)

    def duplicate(self, source: str | dict, to: str) -> dict:
        """Store the file ``source`` (its id, or its record) again as ``to`` ("models/latest.pt",
        from the run's root), with this builder's description, tags and metadata, as
        ml-dash's ``duplicate()``. The bytes are kept once: only a record is added."""
        source_id = source if isinstance(source, str) else source.get("id") if isinstance(source, dict) else None
        if not source_id:
            raise ValueError("source must be a file id or a file's record (a dict with its 'id')")
        if not isinstance(to, str):
            raise TypeError(f"to must be a str, not {type(to).__name__}")
        folder, _, base = to.strip().lstrip("/").rpartition("/")
        if not base:
            raise ValueError(f"to {to!r} must end with a file name")
        prefix = check_prefix("/" + folder) if folder else "/"
        return self._store.duplicate(check_file_id(source_id), prefix, check_filename(base), self._fields(None, None, None))

    def exists(self) -> bool:
        """Whether the file (``file_id``, else this builder's path) is stored and not deleted."""
        try:
            self._one()
        except MissingFile:
            return False
        return True

    def _one(self) -> dict:
        files = self._store.files()
        if self._file_id is not None:
            found = next((f for f in files if f["id"] == self._file_id), None)
            if found is None:
                raise MissingFile(f"no file with id {self._file_id!r} in {self._store.prefix}")
            return found
        if self._dir is None or self._dir == "/":
            raise ValueError("which file? pass exp.files(file_id=...) or exp.files('folder/name.ext')")
        found = find_by_path(files, self._dir)
        if found is None:
            raise MissingFile(f"no file {self._dir.strip('/')!r} in {self._store.prefix}")
        return found

    # ---- arguments ------------------------------------------------------------------------
    def _fields(self, description, tags, metadata, extra: dict | None = None) -> dict:
        if extra:
            raise TypeError(f"unexpected keyword argument {next(iter(extra))!r}")
        return {
            "description": check_description(description) if description is not None else self._description,
            "tags": check_labels(tags, "file tags") if tags is not None else self._tags,
            "bindrs": self._bindrs,
            "metadata": check_metadata(metadata) if metadata is not None else self._metadata,
        }

    def _target(self, name: Any) -> tuple[str, str]:
        """(folder, file name) for ``name``, which may hold a sub-folder ("sub/best.pt")."""
        if not isinstance(name, str):
            raise TypeError(f"file name must be a str, not {type(name).__name__}")
        folder, _, base = name.lstrip("/").rpartition("/") if "/" in name else ("", "", name)
        prefix = self._prefix
        if folder:
            prefix = check_prefix(prefix.rstrip("/") + "/" + folder)
        return prefix, check_filename(base)


def _as_options(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k != "bindrs" and v is not None}


def _fspath(value: Any, what: str) -> str:
    try:
        path = os.fspath(value)
    except TypeError:
        raise TypeError(f"{what} must be a str or os.PathLike, not {type(value).__name__}") from None
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a str path, not {type(path).__name__}")
    if "\x00" in path:
        raise ValueError(f"{what} contains a NUL character: {path[:80]!r}")
    return path


# ---- the store ---------------------------------------------------------------------------
class RunFiles:
    """The files of one run folder: saves, deletes, reads (the remote reader's when
    the run has no local copy)."""

    def __init__(self, path: str, prefix: str, hooks: RunHooks) -> None:
        self.path = path
        self.prefix = prefix
        self._hooks = hooks
        self.folder = files_folder(path)
        self.index = index_path(path)

    # ---- reading ------------------------------------------------------------------------
    def _remote(self):
        """The server's reader when the run has no local copy (as the other reads do)."""
        if os.path.exists(self.folder) or os.path.exists(os.path.join(self.path, META_FILE)):
            return None
        return self._hooks.remote()

    def files(self) -> list[dict]:
        remote = self._remote()
        if remote is not None:
            return remote.list_files()
        return fold(read_records(self.path))

    def download(self, record: dict, dest: str | None) -> str:
        if dest is None:
            dest = record["filename"]
        elif os.path.isdir(dest):
            dest = os.path.join(dest, record["filename"])
        remote = self._remote()
        if remote is not None:
            return remote.download_file(record, dest)
        source = blob_path(self.path, record["checksum"])
        try:
            fd = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise StorageError(f"the bytes of file {record['id']} ({record['filename']}) are missing from {source}") from None
        try:
            part = f"{dest}.mldash-{os.getpid()}-{os.urandom(4).hex()}.part"
            checksum, _size = _copy_to(fd, part)
        finally:
            os.close(fd)
        if checksum != record["checksum"]:
            os.unlink(part)
            raise StorageError(
                f"the stored copy of {record['filename']} ({source}) is damaged: its SHA-256 is {checksum}, "
                f"not {record['checksum']}"
            )
        os.replace(part, dest)
        return dest

    # ---- writing ------------------------------------------------------------------------
    def _begin(self) -> str:
        """Start (or resume) the run; the temp folder for a new copy."""
        self._hooks.start()
        tmp = os.path.join(self.folder, TMP_DIR)
        try:
            os.makedirs(tmp, exist_ok=True)
        except OSError as error:
            raise StorageError(f"mldash cannot save files in {self.folder}: {error}") from error
        _sweep(tmp)
        return os.path.join(tmp, f"{os.getpid()}-{os.urandom(6).hex()}.part")

    def save_path(self, source: str, prefix: str, name: str, fields: dict, wait: bool):
        try:
            info = os.stat(source)
        except FileNotFoundError:
            raise MissingFile(errno.ENOENT, f"no such file to save: {source!r}", source) from None
        if stat.S_ISDIR(info.st_mode):
            raise NotAFile(errno.EISDIR, f"{source!r} is a directory; save the files in it one by one", source)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFile(errno.EINVAL, f"{source!r} is not a regular file (a pipe, a device...)", source)
        src = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))  # PermissionError: the caller's to fix
        try:
            tmp = self._begin()
            work = _Copying(self, tmp, prefix, name, fields, _content_type(name), source)
            # Waiting: hash while copying (the two run side by side). Not waiting: the
            # copy alone, at the page cache's speed (as shutil.copyfile: one sendfile),
            # then the hash in the background. Either way the hasher starts the disk's
            # write of what it hashed, off the caller's thread (that call may block on
            # a busy disk), so the final fsync waits for little.
            stream = wait and info.st_size > _SMALL

            def copy(out: int, on_progress) -> int:
                return _copy_fd(src, out, on_progress, info.st_size, piece=_filecopy._PIECE if stream else 1 << 30)

            return work.run(copy, wait, stream=stream)
        finally:
            os.close(src)

    def save_written(self, write, prefix: str, name: str, fields: dict, content_type: str | None, wait: bool):
        """A helper's file: ``write(f)`` writes it straight into the temp folder."""
        tmp = self._begin()
        work = _Copying(self, tmp, prefix, name, fields, content_type or _content_type(name), name)

        def produce(out: int, on_progress) -> int:
            with os.fdopen(os.dup(out), "wb", buffering=1 << 20) as f:
                write(f)
                f.flush()
                size = f.tell()
            on_progress(size)
            return size

        return work.run(produce, wait, stream=False)

    def commit(self, tmp: str, checksum: str, size: int, prefix: str, name: str, fields: dict, content_type: str) -> dict:
        """Put the finished copy in place and append its record (superseding a live file
        at the same path and name, as ml-dash does), all under the index's lock."""
        blob = blob_path(self.path, checksum)
        try:
            with locked(self.index):
                placed = _place(tmp, blob, size)
                records = read_records(self.path)
                record, lines, replaced = self._save_lines(records, prefix, name, fields, content_type, size, checksum)
                try:
                    _append(self.index, lines)
                except OSError:
                    if placed:
                        _unlink(blob)
                    raise
                _free(self.path, records + [_codec_line(line) for line in lines], replaced)
        except OSError as error:
            _unlink(tmp)
            raise StorageError(f"mldash could not store {name!r} in {self.folder}: {error}; nothing was recorded") from error
        self._hooks.changed(f"{FILES_DIR}/{INDEX_FILE}")
        return public(record)

    def _save_lines(self, records: list, prefix: str, name: str, fields: dict, content_type: str, size: int,
                    checksum: str) -> tuple[dict, list[bytes], list[str]]:
        """The record of a new save and the index lines that add it (tombstones first for
        a live file at the same path and name, which it supersedes, as ml-dash does), and
        the checksums those tombstones may free."""
        live = fold(records)
        ids = {r.get("id") for r in records}
        now = time.time()
        file_id = _new_id(now)
        while file_id in ids:
            file_id = _new_id(now)
        record = {
            "op": SAVE, "id": file_id, "experimentId": self.prefix, "path": prefix, "filename": name,
            "description": fields["description"], "tags": fields["tags"], "bindrs": fields["bindrs"],
            "contentType": content_type, "sizeBytes": size, "checksum": checksum,
            "metadata": fields["metadata"], "uploadedAt": _now_iso(now), "timestamp": now,
        }
        replaced = [f for f in live if f["path"] == prefix and f["filename"] == name]
        lines = [_tombstone(f["id"], now, replaced_by=file_id) for f in replaced] + [encode_record(record)]
        return record, lines, [f["checksum"] for f in replaced]

    def read_bytes(self, record: dict) -> bytes:
        """A file's content (checked against its SHA-256), from here or the server."""
        with tempfile.TemporaryDirectory(prefix="mldash-read-") as folder:
            with open(self.download(record, os.path.join(folder, "file")), "rb") as f:
                return f.read()

    def _live_or_missing(self, file_id: str, action: str) -> None:
        """Checked before the run starts: changing a file must not create a local run."""
        if not any(f["id"] == file_id for f in fold(read_records(self.path))):
            where = "" if self._remote() is None else f" (a run with no local copy: {action} it where it was recorded)"
            raise MissingFile(errno.ENOENT, f"no file with id {file_id!r} in {self.prefix}{where}")

    def duplicate(self, source_id: str, prefix: str, name: str, fields: dict) -> dict:
        self._live_or_missing(source_id, "duplicate")
        self._hooks.start()
        try:
            with locked(self.index):
                records = read_records(self.path)
                source = next((f for f in fold(records) if f["id"] == source_id), None)
                if source is None:
                    raise MissingFile(errno.ENOENT, f"no file with id {source_id!r} in {self.prefix}")
                if not os.path.exists(blob_path(self.path, source["checksum"])):
                    raise StorageError(f"the bytes of file {source_id} ({source['filename']}) are missing from "
                                       f"{blob_path(self.path, source['checksum'])}")
                record, lines, replaced = self._save_lines(records, prefix, name, fields, _content_type(name),
                                                           source["sizeBytes"], source["checksum"])
                _append(self.index, lines)
                _free(self.path, records + [_codec_line(line) for line in lines], replaced)
        except OSError as error:
            if isinstance(error, MissingFile):
                raise
            raise StorageError(f"mldash could not duplicate file {source_id} in {self.folder}: {error}") from error
        self._hooks.changed(f"{FILES_DIR}/{INDEX_FILE}")
        return public(record)

    def update(self, file_id: str, changes: dict) -> dict:
        # Not a write to the run (as in ml-dash, only the file's record changes): a
        # finished or failed run keeps its status; the uploader or `mldash sync` sends it.
        self._live_or_missing(file_id, "update")
        try:
            with locked(self.index):
                found = next((f for f in fold(read_records(self.path)) if f["id"] == file_id), None)
                if found is None:
                    raise MissingFile(errno.ENOENT, f"no file with id {file_id!r} in {self.prefix}")
                now = time.time()
                record = {"op": UPDATE, "id": file_id, **changes, "updatedAt": _now_iso(now), "timestamp": now}
                _append(self.index, [encode_record(record)])
        except OSError as error:
            if isinstance(error, MissingFile):
                raise
            raise StorageError(f"mldash could not update file {file_id} in {self.folder}: {error}") from error
        self._hooks.changed(f"{FILES_DIR}/{INDEX_FILE}")
        return apply_update(found, record)

    def delete(self, file_id: str) -> dict:
        self._live_or_missing(file_id, "delete")
        self._hooks.start()
        try:
            with locked(self.index):
                records = read_records(self.path)
                found = next((f for f in fold(records) if f["id"] == file_id), None)
                if found is None:
                    raise MissingFile(errno.ENOENT, f"no file with id {file_id!r} in {self.prefix}")
                now = time.time()
                line = _tombstone(file_id, now)
                _append(self.index, [line])
                _free(self.path, records + [_codec_line(line)], [found["checksum"]])
        except MissingFile:
            raise
        except OSError as error:
            raise StorageError(f"mldash could not delete file {file_id} in {self.folder}: {error}") from error
        self._hooks.changed(f"{FILES_DIR}/{INDEX_FILE}")
        return {"id": file_id, "deletedAt": _now_iso(now)}
