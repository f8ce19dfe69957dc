"""An append-only JSON-lines file whose line number is the point's index.

``data.jsonl`` holds one record a line. ``data.idx`` beside it holds the byte
offset of every STRIDE-th line as little-endian uint64, so a read near the end
of a ten-million-line file seeks straight there. The index is a cache: it is
checked against the data on every open and rebuilt from the data when stale.

Appends take ``flock`` on the data file, so several processes can append to
one file: under the lock a writer notices a size it did not write, repairs a
line cut by a crashed writer and recounts from the index before appending.
Readers take no lock and skip a last line that has no newline yet.
"""

from __future__ import annotations

import fcntl
import os
from array import array
from typing import Any, Callable, Iterator

STRIDE = 1024
_CHUNK = 1 << 16


class SeriesFile:
    """The writer's handle on one JSON-lines file (one thread uses it)."""

    def __init__(self, folder: str, stem: str = "data") -> None:
        os.makedirs(folder, exist_ok=True)
        self.data_path = os.path.join(folder, stem + ".jsonl")
        self.index_path = os.path.join(folder, stem + ".idx")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(self.data_path, flags, 0o644)
        self.index_fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = -1  # bytes of data this handle knows about; -1 forces a resync
        self.count = 0

    def append(self, build: Callable[[int], Any]) -> int:
        """Append the lines that ``build(first_index)`` returns (a ``_lines.Lines``,
        which knows this module's STRIDE); return how many.

        ``build`` runs under the lock, so records that carry their own index
        (logs) get the right one. On an OSError the file is cut back to where it
        was, so a failed batch can be retried whole.
        """
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self.fd).st_size
            if size != self.size:
                self._resync(size)
            lines = build(self.count)
            if not lines.count:
                return 0
            try:
                _write_all(self.fd, lines.chunks, lines.size)
            except OSError:
                _truncate_quietly(self.fd, self.size)
                raise
            if lines.marks:
                marks = array("Q", [self.size + m for m in lines.marks])
                os.pwrite(self.index_fd, marks.tobytes(), -(-self.count // STRIDE) * 8)
            self.size += lines.size
            self.count += lines.count
            return lines.count
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def sync(self) -> None:
        os.fsync(self.fd)
        os.fsync(self.index_fd)

    def close(self) -> None:
        for fd in (self.fd, self.index_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _resync(self, size: int) -> None:
        """Bring size, count and index in line with the file as it is now."""
        if size and _last_byte(self.data_path, size) != b"\n":
            size = _cut_partial_line(self.fd, self.data_path, size)
        marks = _load_index(self.index_fd, self.data_path, size)
        start = marks[-1] if marks else 0
        count = (len(marks) - 1) * STRIDE if marks else 0
        new_marks = array("Q")
        with open(self.data_path, "rb") as f:
            for offset in _line_starts(f, start, size):
                if count % STRIDE == 0 and (count // STRIDE) >= len(marks):
                    new_marks.append(offset)
                count += 1
        index_entries = len(marks)
        os.ftruncate(self.index_fd, index_entries * 8)
        if new_marks:
            os.pwrite(self.index_fd, new_marks.tobytes(), index_entries * 8)
        self.size, self.count = size, count


_IOV_MAX = 1024


def _write_all(fd: int, chunks: list[bytes], size: int) -> None:
    """Write the chunks in order with as few system calls as the OS allows,
    without first copying them into one buffer."""
    if len(chunks) <= _IOV_MAX:
        written = os.writev(fd, chunks)
        if written == size:
            return
    else:
        written = 0
    view = memoryview(b"".join(chunks))[written:]  # a short write: finish it plainly
    while view:
        view = view[os.write(fd, view) :]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def _last_byte(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def _cut_partial_line(fd: int, path: str, size: int) -> int:
    """Drop a last line that a crashed writer left without its newline."""
    with open(path, "rb") as f:
        pos = size
        while pos > 0:
            step = min(_CHUNK, pos)
            f.seek(pos - step)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                break
            pos -= step
        else:
            keep = 0
    os.ftruncate(fd, keep)
    return keep


def _load_index(index_fd: int, data_path: str, size: int) -> array:
    """The index marks that are still right for ``size`` bytes of data."""
    raw = os.pread(index_fd, os.fstat(index_fd).st_size // 8 * 8, 0)
    marks = array("Q")
    marks.frombytes(raw)
    while marks and marks[-1] >= size:
        marks.pop()
    if not marks:
        return marks
    if marks[0] != 0 or not _starts_line(data_path, marks[-1]):
        return array("Q")  # not ours or damaged: rebuild from the data
    return marks


def _starts_line(path: str, offset: int) -> bool:
    if offset == 0:
        return True
    with open(path, "rb") as f:
        f.seek(offset - 1)
        return f.read(1) == b"\n"


def _line_starts(f, start: int, end: int) -> Iterator[int]:
    """Offsets of the complete lines between ``start`` and ``end``."""
    f.seek(start)
    pos = start
    line_start = start
    while pos < end:
        block = f.read(min(_CHUNK, end - pos))
        if not block:
            break
        i = block.find(b"\n")
        while i >= 0:
            yield line_start
            line_start = pos + i + 1
            i = block.find(b"\n", i + 1)
        pos += len(block)


class SeriesReader:
    """Random access to the complete lines of a series file, without locking."""

    def __init__(self, folder: str, stem: str = "data") -> None:
        self.data_path = os.path.join(folder, stem + ".jsonl")
        self.index_path = os.path.join(folder, stem + ".idx")

    def marks(self, size: int) -> array:
        """Byte offsets of lines 0, STRIDE, 2*STRIDE, ... within the first ``size`` bytes,
        from data.idx where it agrees with the data (a cache: may be shorter)."""
        marks = array("Q")
        try:
            with open(self.index_path, "rb") as idx:
                raw = idx.read()
        except FileNotFoundError:
            return marks
        marks.frombytes(raw[: len(raw) // 8 * 8])
        while marks and marks[-1] >= size:
            marks.pop()
        if marks and (marks[0] != 0 or not _starts_line(self.data_path, marks[-1])):
            return array("Q")
        return marks

    def lines(self, start: int = 0, limit: int | None = None) -> tuple[list[bytes], int]:
        """Lines ``start .. start+limit`` (without newlines) and the line count.

        A negative ``start`` counts from the end: ``lines(-1, 1)`` is the last line.
        """
        try:
            f = open(self.data_path, "rb")
        except FileNotFoundError:
            return [], 0
        with f:
            size = os.fstat(f.fileno()).st_size
            marks = self.marks(size)
            last_mark = len(marks) - 1
            total = last_mark * STRIDE + _count_lines(f, marks[-1], size) if marks else _count_lines(f, 0, size)
            if start < 0:
                start = max(0, total + start)
            if limit is not None and limit <= 0 or start >= total:
                return [], total
            k = min(start // STRIDE, last_mark) if marks else -1
            offset = marks[k] if k >= 0 else 0
            skip = start - (k * STRIDE if k >= 0 else 0)
            want = total - start if limit is None else min(limit, total - start)
            return _read_lines(f, offset, size, skip, want), total

    def count(self) -> int:
        return self.lines(0, 0)[1]


def _count_lines(f, start: int, end: int) -> int:
    f.seek(start)
    n = 0
    pos = start
    while pos < end:
        block = f.read(min(_CHUNK, end - pos))
        if not block:
            break
        n += block.count(b"\n")
        pos += len(block)
    return n


def _read_lines(f, offset: int, size: int, skip: int, want: int) -> list[bytes]:
    f.seek(offset)
    out: list[bytes] = []
    rest = b""
    pos = offset
    while pos < size and len(out) < want:
        block = f.read(min(_CHUNK, size - pos))
        if not block:
            break
        pos += len(block)
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        if skip:
            dropped = min(skip, len(parts))
            del parts[:dropped]
            skip -= dropped
        out.extend(parts)
    return out[:want]
