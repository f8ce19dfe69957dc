"""Copying a file into (or out of) the run's files store while hashing it: the kernel
copies (``sendfile``) in pieces while a helper thread reads back what was copied and
feeds SHA-256, then the copy is fsynced and handed to the store's ``commit``
(``mldash.files.RunFiles``).
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import os
import sys
import threading

from ._filestore import track
from ._filewrite import MissingFile, NotAFile, _unlink
from ._writer import StorageError

_SMALL = 4 << 20  # copied and hashed in one go on the caller's thread
_PIECE = 16 << 20  # bytes a sendfile call copies before the hasher is told
_READ = 1 << 20  # the hasher's (and the fallback copy's) buffer: within L2, fastest for SHA-256


class _Copying:
    """One save in progress: the private copy, its hash, then the commit (``store``:
    the ``mldash.files.RunFiles`` whose ``commit`` records it)."""

    def __init__(self, store, tmp: str, prefix: str, name: str, fields: dict, content_type: str,
                 what: str) -> None:
        self.store, self.tmp, self.prefix, self.name = store, tmp, prefix, name
        self.fields, self.content_type, self.what = fields, content_type, what

    def run(self, produce, wait: bool, stream: bool = True):
        """``produce(fd, on_progress)`` fills the temp file and returns its size; with
        ``stream`` a helper thread hashes it meanwhile, else it is hashed after."""
        try:
            out = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            raise StorageError(f"mldash cannot save files in {self.store.folder}: {error}") from error
        hasher = _Hasher(out)
        try:
            if stream:
                hasher.start()
            size = produce(out, hasher.advance)
        except BaseException as error:
            hasher.stop()
            os.close(out)
            _unlink(self.tmp)
            if isinstance(error, OSError) and not isinstance(error, (MissingFile, NotAFile)):
                raise StorageError(
                    f"mldash could not copy {self.what!r} into {self.store.folder}: {error}; nothing was recorded"
                ) from error
            raise
        hasher.advance(size, final=True)
        if wait:
            try:
                try:
                    if stream:
                        os.fsync(out)  # while the hasher finishes the tail
                    else:
                        hasher.run_here()
                    checksum = hasher.result()
                    if not stream:
                        os.fsync(out)
                finally:
                    os.close(out)
            except OSError as error:
                _unlink(self.tmp)
                raise StorageError(f"mldash could not store {self.what!r} in {self.store.folder}: {error}") from error
            return self.store.commit(self.tmp, checksum, size, self.prefix, self.name, self.fields, self.content_type)
        if not stream:
            hasher.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        track(self.store.path, future)
        # Not a daemon: an interpreter exiting waits for it before it finishes the run.
        threading.Thread(target=self._finish, args=(hasher, out, size, future), name="mldash-file-save").start()
        return future

    def _finish(self, hasher: "_Hasher", out: int, size: int, future) -> None:
        try:
            try:
                checksum = hasher.result()
                os.fsync(out)
            finally:
                os.close(out)
            record = self.store.commit(self.tmp, checksum, size, self.prefix, self.name, self.fields, self.content_type)
        except BaseException as error:
            _unlink(self.tmp)
            if isinstance(error, OSError):
                error = StorageError(f"mldash could not store {self.what!r} in {self.store.folder}: {error}")
            print(f"mldash: saving {self.what!r} in {self.store.prefix} failed: {error}", file=sys.stderr)
            future.set_exception(error)
        else:
            future.set_result(record)


class _Hasher:
    """Hashes a file as it grows, reading it back through its own descriptor
    (from the page cache), on a thread of its own: the copy never waits for it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self._copied = 0
        self._final = False
        self._stopped = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self.writeback = True  # start the disk's write of each piece hashed (not for a copy out of the store)
        self._thread = threading.Thread(target=self._run, name="mldash-file-hash", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_here(self) -> None:
        """Hash on the caller's thread (a small file: no thread is worth starting)."""
        self._run()

    def advance(self, copied: int, final: bool = False) -> None:
        with self._cond:
            self._copied = copied
            self._final = self._final or final
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def result(self) -> str:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self.sha.hexdigest()

    def _run(self) -> None:
        buf = bytearray(_READ)
        view = memoryview(buf)
        done = flushed = 0
        try:
            while True:
                with self._cond:
                    while done >= self._copied and not self._final and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                    limit, final = self._copied, self._final
                while done < limit:
                    n = os.preadv(self.fd, [view[: min(_READ, limit - done)]], done)
                    if n <= 0:
                        raise OSError(errno.EIO, f"the copy is shorter than the {limit:,} bytes written")
                    self.sha.update(view[:n])
                    done += n
                    if self.writeback and done - flushed >= _PIECE:
                        start_writeback(self.fd, flushed, done - flushed)  # the fsync after waits for less
                        flushed = done
                if final and done >= limit:
                    return
        except BaseException as error:
            self._error = error


_sync_file_range = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` to the disk now,
    without waiting (Linux ``sync_file_range``): the fsync that makes a copy durable
    then waits only for what is still in flight, not for all of it. A no-op elsewhere."""
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                call = libc.sync_file_range
                call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                _sync_file_range = call
            except (OSError, AttributeError):
                pass
    if _sync_file_range:
        _sync_file_range(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


def _copy_fd(src: int, out: int, on_progress, size_hint: int, piece: int = _PIECE) -> int:
    """Copy ``src`` to ``out`` in the kernel (``sendfile``), ``piece`` bytes a call, telling
    ``on_progress`` how far it got after each; a plain read/write loop where sendfile cannot."""
    if size_hint <= _SMALL:
        return _copy_plain(src, out, on_progress, size_hint)
    offset = 0
    while True:
        try:
            n = os.sendfile(out, src, offset, piece)
        except OSError as error:
            if offset == 0 and error.errno in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP, errno.EXDEV):
                return _copy_plain(src, out, on_progress, size_hint)
            raise
        if n == 0:
            return offset
        offset += n
        on_progress(offset)


def _copy_plain(src: int, out: int, on_progress, size_hint: int) -> int:
    buf = bytearray(max(1 << 16, min(_READ, size_hint + 1)))
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(src, [view], offset)
        if n == 0:
            return offset
        written = 0
        while written < n:
            written += os.write(out, view[written:n])
        offset += n
        on_progress(offset)


def _copy_to(src: int, dest: str) -> tuple[str, int]:
    """A verified copy out of the store: (SHA-256 of what was written, size)."""
    out = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    hasher = _Hasher(out)
    hasher.writeback = False
    try:
        hasher.start()
        size = _copy_fd(src, out, hasher.advance, os.fstat(src).st_size)
        hasher.advance(size, final=True)
        return hasher.result(), size
    except BaseException:
        hasher.stop()
        _unlink(dest)
        raise
    finally:
        os.close(out)
