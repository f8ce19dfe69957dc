"""Loading one metric series' columns from its file, for the local dashboard source.

A ``SeriesEntry`` holds the parsed columns of one ``data.jsonl`` and how far into
the file they go; ``catch_up`` parses what was appended since, in ~1 MiB pieces
(asking between pieces whether to step aside), ``sample`` gives a coarse view
from ``data.idx`` marks. Shared by ``local.LocalSource`` and its ``warmer``.
"""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np
import orjson

from .. import _codec
from .._runfolder import DATA_FILE, METRICS_DIR, find_experiments
from .._series import STRIDE
from .colcache import ColumnCache, State, read_tail
from .series import Columns, parse_lines, parse_uniform

_READ_BLOCK = 64 << 20  # read a huge file in pieces so memory stays flat
# Parse in pieces of about this size: they stay in the CPU cache (faster than one big
# piece), a line that needs the slow parser slows only its piece, and the warmer can
# step aside between pieces.
_PARSE_BLOCK = 1 << 20
# Series files at least this big go to the disk cache and are loaded at start-up; smaller
# ones parse in a few milliseconds.
CACHE_MIN_BYTES = 1 << 20
# A chart first asked for while more than this much of its file is still unparsed (a first
# view with no disk cache) gets a coarse view at once: lines sampled across the whole file
# via data.idx, marked "coarse", while the rest is parsed in the background; the page asks
# again at once and that request waits for the parse.
COARSE_MIN_BYTES = 16 << 20
_SAMPLE_LINES = 4  # lines read at each sampled data.idx mark


class SeriesEntry:
    """One metric file's parsed columns and how far into the file they go."""

    __slots__ = ("folder", "cols", "state", "lock", "saved", "tried_cache", "coarse_sent")

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.cols = Columns()
        self.state = State()
        self.lock = threading.Lock()
        self.saved = 0  # bytes of the file that the disk cache holds
        self.tried_cache = False
        self.coarse_sent = False  # one coarse view; the next request waits for the parse


def scan_metrics(base: str, prefix: str = "") -> dict[str, tuple[int, int]]:
    """``{metric name: (size, mtime_ns) of its data.jsonl}``; one scandir per folder."""
    found: dict[str, tuple[int, int]] = {}
    try:
        entries = list(os.scandir(base))
    except OSError:
        return found
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            found.update(scan_metrics(entry.path, prefix + entry.name + "/"))
        elif entry.name == DATA_FILE and prefix:
            st = entry.stat()
            found[prefix[:-1]] = (st.st_size, st.st_mtime_ns)
    return found


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def catch_up(entry: SeriesEntry, data_path: str, step_aside=None) -> bool:
    """Parse the complete lines appended since the last call (all of them the first time).

    Returns False when ``step_aside()`` stopped it early.
    """
    complete = True
    try:
        f = open(data_path, "rb")
    except FileNotFoundError:
        return complete
    with f:
        fd = f.fileno()
        st = os.fstat(fd)
        state = entry.state
        if not state.inode or not state.still_matches(fd, st):  # new, replaced or rewritten
            entry.cols, entry.saved = Columns(), 0
            state = entry.state = State(st.st_dev, st.st_ino)
        start = state.offset
        while state.offset < st.st_size:
            f.seek(state.offset)
            chunk = f.read(min(_READ_BLOCK, st.st_size - state.offset))
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                break  # a line still being written
            pos = 0
            while pos < cut:
                end = cut if cut - pos <= _PARSE_BLOCK else chunk.rfind(b"\n", pos, pos + _PARSE_BLOCK) + 1
                if end <= pos:  # one line longer than a piece
                    end = chunk.find(b"\n", pos) + 1
                _parse_piece(entry, chunk[pos:end])
                state.offset += end - pos
                pos = end
                if step_aside is not None and pos < cut and step_aside():
                    complete = False
                    break
            if not complete:
                break
        if state.offset != start:
            state.tail = read_tail(fd, state.offset)
    return complete


def sample(folder: str, size: int, want: int) -> tuple[Columns, int] | None:
    """``_SAMPLE_LINES`` lines at up to ``want`` evenly spread data.idx marks, plus the last
    lines; and the series' line count. None when data.idx is missing or does not fit."""
    data_path = os.path.join(folder, DATA_FILE)
    try:
        with open(os.path.join(folder, "data.idx"), "rb") as f:
            raw = f.read()
        f = open(data_path, "rb")
    except OSError:
        return None
    with f:
        marks = np.frombuffer(raw[: len(raw) // 8 * 8], "<u8")
        marks = marks[marks < size]
        if len(marks) < 2 or marks[0] != 0 or np.any(np.diff(marks.astype(np.int64)) <= 0):
            return None
        try:  # slices of a mapping: no system call (and no GIL hand-over) per sample
            data = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        except (AttributeError, TypeError, ValueError, OSError):
            return None
        with data:
            last = int(marks[-1])
            if data[last - 1 : last] != b"\n":
                return None  # not this file's index
            rest = data[last:size]
            rest = rest[: rest.rfind(b"\n") + 1]
            total = (len(marks) - 1) * STRIDE + rest.count(b"\n")
            indices, lines = [], []
            picks = np.unique(np.linspace(0, len(marks) - 1, min(want, len(marks))).astype(np.int64))
            for k in picks.tolist():
                start = int(marks[k])
                if start and data[start - 1 : start] != b"\n":
                    return None
                got = data[start : start + 512 * _SAMPLE_LINES].split(b"\n")[:-1][:_SAMPLE_LINES]  # whole lines
                indices.extend(range(k * STRIDE, k * STRIDE + len(got)))
                lines.extend(got)
        tail = rest.split(b"\n")[:-1][-_SAMPLE_LINES:]
        indices.extend(range(total - len(tail), total))
        lines.extend(tail)
    keep, rows = [], []
    for i, line in zip(indices, lines):
        try:
            rows.append(orjson.loads(line))
            keep.append(i)
        except orjson.JSONDecodeError:
            continue
    cols = Columns()
    if rows:
        order = np.unique(keep, return_index=True)[1]  # the tail may repeat a sampled line
        rows = [rows[j] for j in order]
        cols.extend([keep[j] for j in order], [r[0] / 1000 for r in rows], [_codec.untag(r[1]) for r in rows])
    return cols, total


def _parse_piece(entry: SeriesEntry, piece: bytes) -> None:
    state = entry.state
    fast = parse_uniform(piece)
    if fast is not None:
        entry.cols.extend_matrix(state.lines, *fast)
        state.lines += len(fast[0])
    else:
        indices, times, rows, count = parse_lines(piece, state.lines)
        entry.cols.extend(indices, times, rows)
        state.lines += count


def parse_into_cache(data_path: str, cache_folder: str) -> int:
    """Parse ``data_path`` (after what the cache has) and write it to the cache; the
    helper process runs this. Returns the bytes parsed."""
    cache = ColumnCache(cache_folder)
    entry = SeriesEntry(os.path.dirname(data_path))
    hit = cache.load(data_path)
    if hit is not None:
        entry.cols, entry.state = hit
    catch_up(entry, data_path)
    cache.save(data_path, entry.cols, entry.state)
    return entry.state.offset


def recent_big_series(root: str, budget: int, pause) -> list[str]:
    """Metric folders whose data.jsonl is at least CACHE_MIN_BYTES, newest first, about ``budget`` points."""
    found = []
    for path in find_experiments(root):
        pause()
        base = os.path.join(path, METRICS_DIR)
        for name, (size, mtime) in scan_metrics(base).items():
            if size >= CACHE_MIN_BYTES:
                found.append((mtime, size, os.path.join(base, *name.split("/"))))
    found.sort(reverse=True)
    chosen, points = [], 0
    for _, size, folder in found:
        points += size // 60  # about 60 bytes a {value, step} point
        if points > budget and chosen:
            break
        chosen.append(folder)
    return chosen
