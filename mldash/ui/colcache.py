"""A disk cache of parsed metric columns, so a big series is parsed once, not per ``mldash ui``.

Parsing a million-line ``data.jsonl`` takes about half a second; reading its
columns back from a flat binary file takes a few milliseconds. One cache file
per series holds a JSON header (what it was parsed from) and the float64
columns back to back. It lives outside the runs (``$MLDASH_UI_CACHE``, else
``$XDG_CACHE_HOME/mldash/ui``, else ``~/.cache/mldash/ui``): the dashboard
never writes inside ROOT.

A cache file is trusted only for the same file: same device and inode, at
least as many bytes as were parsed, and the same last bytes before the parsed
offset (a replaced or rewritten file fails one of these). The caller then
parses only the lines appended since. Anything unreadable is treated as a
miss; the cache is only ever a shortcut.

The columns are a copy of the data, so the cache is private: folders 0700,
files 0600, and a file is read only when it and its folder belong to this user
and no one else may write them. Someone sharing a cache folder (say
``$MLDASH_UI_CACHE=/tmp/...``) can neither read our columns nor plant forged
ones for a file we read.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile

import numpy as np

from .series import Columns

MAGIC = b"mldash-columns-1\n"
TAIL_BYTES = 64
DEFAULT_MAX_BYTES = 2 << 30


def default_folder() -> str:
    """``$MLDASH_UI_CACHE``, else ``$XDG_CACHE_HOME/mldash/ui``, else ``~/.cache/mldash/ui``."""
    explicit = os.environ.get("MLDASH_UI_CACHE")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mldash", "ui")


class State:
    """Where a parse of one data file got to: enough to check and continue it."""

    __slots__ = ("dev", "inode", "offset", "lines", "tail")

    def __init__(self, dev: int = 0, inode: int = 0, offset: int = 0, lines: int = 0, tail: bytes = b"") -> None:
        self.dev, self.inode, self.offset, self.lines, self.tail = dev, inode, offset, lines, tail

    def still_matches(self, fd: int, st: os.stat_result) -> bool:
        """True when the open file ``fd`` is the one parsed, possibly with lines appended."""
        if (st.st_dev, st.st_ino) != (self.dev, self.inode) or st.st_size < self.offset:
            return False
        if not self.tail:
            return True
        return os.pread(fd, len(self.tail), self.offset - len(self.tail)) == self.tail


def read_tail(fd: int, offset: int) -> bytes:
    """The last bytes before ``offset``: the end of the last parsed line."""
    size = min(TAIL_BYTES, offset)
    return os.pread(fd, size, offset - size) if size else b""


def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else (POSIX; elsewhere always True)."""
    if os.name != "posix":
        return True
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


class ColumnCache:
    """Parsed columns on disk, one file per data file.

    >>> cache = ColumnCache("/tmp/mldash-cache")  # doctest: +SKIP
    >>> hit = cache.load("runs/p/x/metrics/loss/data.jsonl")  # doctest: +SKIP
    >>> None if hit is None else hit[1].offset  # bytes parsed; the caller parses the rest  # doctest: +SKIP
    59660028
    """

    def __init__(self, folder: str | os.PathLike | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = os.path.abspath(os.fspath(folder)) if folder is not None else default_folder()
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def _file(self, data_path: str) -> str:
        key = hashlib.sha1(os.path.realpath(data_path).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.folder, key[:2], key[2:] + ".cols")

    def load(self, data_path: str) -> tuple[Columns, State] | None:
        """The cached columns of ``data_path`` and how far they go, or None.

        None also when the file is not the one they were parsed from (replaced,
        rewritten, cut shorter). ``hits`` and ``misses`` count the outcomes.
        """
        path = self._file(data_path)
        found = None
        try:
            with open(path, "rb") as f:
                if not (_private(os.fstat(f.fileno())) and _private(os.stat(os.path.dirname(path)))):
                    raise ValueError("a cache file someone else could have written")
                found = _decode(_read(f), os.path.realpath(data_path))
            if found is not None:
                with open(data_path, "rb") as data:
                    if not found[1].still_matches(data.fileno(), os.fstat(data.fileno())):
                        found = None
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            found = None  # missing, damaged or from another version: a miss
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:
            pass
        return found

    def save(self, data_path: str, cols: Columns, state: State) -> bool:
        """Write ``cols`` (parsed up to ``state``) atomically; False if the folder is not writable."""
        path = self._file(data_path)
        n = cols.n
        names = list(cols.fields)
        index = cols.column("index")
        plain_index = bool(np.array_equal(index, np.arange(n)))
        header = {
            "path": os.path.realpath(data_path),
            "dev": state.dev,
            "inode": state.inode,
            "offset": state.offset,
            "lines": state.lines,
            "tail": state.tail.hex(),
            "n": n,
            "fields": names,
            "numeric": [f for f in names if f in cols.numeric],
            "plain_index": plain_index,
        }
        head = json.dumps(header).encode()
        head += b" " * (-(len(MAGIC) + 8 + len(head)) % 8)  # columns start 8-byte aligned
        arrays = [cols.column("time")] + ([] if plain_index else [index]) + [cols.column(f) for f in names]
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)  # the copies of the data are ours alone
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        except OSError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + len(head).to_bytes(8, "little") + head)
                for array in arrays:
                    f.write(memoryview(np.ascontiguousarray(array, dtype=np.float64)).cast("B"))
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        return True

    def prune(self) -> int:
        """Delete the least recently used files past ``max_bytes``; returns how many."""
        files = []
        for dirpath, _, names in os.walk(self.folder):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        removed = 0
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
            total -= size
        return removed


def _read(f) -> np.ndarray:
    """The whole file as bytes: mapped from the page cache where possible (a 32 MB file in
    about 1 ms, against 10-50 ms to copy it into fresh memory). Read-only; ``Columns``
    copies its arrays before it first grows them. The cache only ever replaces files
    (never rewrites one in place), so a mapping stays valid."""
    size = os.fstat(f.fileno()).st_size
    try:
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
        mapped = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
        return np.frombuffer(mapped, np.uint8)
    except (AttributeError, TypeError, ValueError, OSError):  # no POSIX mmap, or an empty file
        buf = np.empty(size, np.uint8)
        if f.readinto(memoryview(buf)) != size:
            raise ValueError("cut short") from None
        return buf


def _decode(buf: np.ndarray, real_path: str) -> tuple[Columns, State]:
    if buf[: len(MAGIC)].tobytes() != MAGIC:
        raise ValueError("not a column cache file")
    start = len(MAGIC)
    head_len = int.from_bytes(buf[start : start + 8].tobytes(), "little")
    start += 8
    header = json.loads(buf[start : start + head_len].tobytes())
    if header["path"] != real_path:
        raise ValueError("a hash collision or a moved cache")  # never read another file's columns
    start += head_len
    n = int(header["n"])
    names = list(header["fields"])
    count = 1 + (0 if header["plain_index"] else 1) + len(names)
    if len(buf) != start + count * n * 8:
        raise ValueError("cut short")
    arrays = [buf[start + i * n * 8 : start + (i + 1) * n * 8].view(np.float64) for i in range(count)]
    time = arrays.pop(0)
    index = np.arange(n, dtype=np.float64) if header["plain_index"] else arrays.pop(0)
    cols = Columns.from_arrays(index, time, dict(zip(names, arrays)), set(header["numeric"]))
    state = State(header["dev"], header["inode"], header["offset"], header["lines"], bytes.fromhex(header["tail"]))
    return cols, state
