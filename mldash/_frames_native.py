"""Series lines into a frame through the compiled parser (mldash/_pointparse.c).

The parser reads plain lines (numbers under the same field names, in the same
order, on every line) into 8-byte columns without the GIL, so a block is cut
into segments at line ends and parsed on two threads while this thread copies
the finished ones into the frame, in order. It stops at the first line that is
not plain; from there the caller's Python way (Arrow's CSV reader, or orjson
point by point) takes over for a run of lines that doubles in length while the
parser keeps refusing or takes only short runs (fields that come and go), so a
series of text costs little more than it did without the parser, and a single
odd line costs one short run.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import orjson

from ._native import pointparse

SEGMENT = 1 << 20  # bytes of lines per parser call
DEPTH = 4  # segments parsed ahead of the copying
FIRST_MISS = 1 << 16  # bytes of lines the Python way takes when the parser refuses again soon
MIN_RUN = 1024  # lines: a shorter plain run costs more in calls than it saves (fields that change often)
MAX_KEYS = 256  # _pointparse.c's MAX_KEYS
INT, FLOAT = 1, 2  # _pointparse.c's kinds


def field_columns(np, buffer, kinds, n: int) -> list:
    """The fields' columns that ``parse_points`` wrote into ``buffer`` (rows 1..; row 0
    holds the times): the first ``n`` cells of each, int64 or float64 by its kind."""
    return [buffer[j + 1, :n] if kind == INT else buffer[j + 1, :n].view(np.float64) for j, kind in enumerate(kinds)]


def plain_point(line) -> dict | None:
    """The fields of one line ``[t, {...}]``, or None where it is not such a line."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(row, list) and len(row) == 2 and isinstance(row[1], dict):
        return row[1]
    return None


class NativeReader:
    """Adds blocks of complete lines to a frame; ``python_way(frame, lines, count)``
    reads lines (bytes) the parser refused and returns the new line count."""

    def __init__(self, python_way: Callable[[Any, bytes, int], int]) -> None:
        import numpy as np

        self.np = np
        self.python_way = python_way
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="mldash-frames") if (os.cpu_count() or 1) > 1 else None
        self.free: dict[int, list] = {}  # idle buffers by their field count

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def add_block(self, frame, buf: bytearray, end: int, count: int) -> int:
        """Lines ``buf[:end]`` (complete) into ``frame``; returns the new line count."""
        pos, miss = 0, FIRST_MISS  # miss: bytes the Python way takes next; 0: the one line refused
        while pos < end:
            n, pos = self._plain_run(frame, buf, pos, end, count)
            count += n
            if pos >= end:
                break
            if n >= MIN_RUN:
                miss = 0  # after a long run only the odd line goes the Python way
            next_line = buf.find(b"\n", pos, end) + 1
            stop = next_line if not miss else buf.rfind(b"\n", pos, min(end, pos + miss)) + 1 or next_line
            count = self.python_way(frame, bytes(memoryview(buf)[pos:stop]), count)
            pos = stop
            miss = miss * 2 if miss else FIRST_MISS
        return count

    def _plain_run(self, frame, buf: bytearray, pos: int, end: int, count: int) -> tuple[int, int]:
        """The plain lines from ``pos`` (line ``count``) on with the first one's field
        names, segment by segment; returns how many were added and where they end."""
        first = plain_point(memoryview(buf)[pos : buf.find(b"\n", pos, end)])
        if not first or len(first) > MAX_KEYS or any(v.__class__ not in (int, float) for v in first.values()):
            return 0, pos
        keys = tuple(orjson.dumps(k) for k in first)
        # a line holds at least "[0,{", each "key":0 and its comma, and "}]\n"
        rows = SEGMENT // (4 + sum(len(k) + 3 for k in keys) + 2) + 2
        segments = self._segments(buf, pos, end)
        pending: deque = deque()
        added = 0
        try:
            for segment in segments:
                pending.append(self._start(buf, segment, keys, rows))
                if len(pending) < DEPTH:
                    continue
                n, pos, whole = self._finish(frame, first, pending.popleft(), count + added)
                added += n
                if not whole:
                    return added, pos
            while pending:
                n, pos, whole = self._finish(frame, first, pending.popleft(), count + added)
                added += n
                if not whole:
                    return added, pos
            return added, pos
        finally:
            for job in pending:  # parsed past a refused line: wait, then reuse the buffers
                job[3].result()
                self.free.setdefault(len(keys), []).append(job[2])

    @staticmethod
    def _segments(buf: bytearray, pos: int, end: int):
        while pos < end:
            stop = buf.find(b"\n", min(pos + SEGMENT, end) - 1, end) + 1 or end
            yield pos, stop
            pos = stop

    def _start(self, buf: bytearray, segment: tuple[int, int], keys: tuple, rows: int):
        np = self.np
        idle = self.free.setdefault(len(keys), [])
        buffer = idle.pop() if idle else None
        if buffer is None or buffer.shape[1] < rows:
            buffer = np.empty((len(keys) + 1, rows), dtype=np.int64)
        kinds = bytearray(len(keys))
        lines = memoryview(buf)[segment[0] : segment[1]]
        call = (pointparse.parse_points, lines, keys, buffer, kinds)
        future = self.pool.submit(*call) if self.pool is not None else _Done(call)
        return segment, kinds, buffer, future

    def _finish(self, frame, first: dict, job, line: int) -> tuple[int, int, bool]:
        """Copies a parsed segment (from line ``line``) into the frame: (lines, where
        they end, all taken)."""
        np = self.np
        (start, stop), kinds, buffer, future = job
        n, used = future.result()
        if n:
            frame.add(n, buffer[0, :n], dict(zip(first, field_columns(np, buffer, kinds, n))), first=line)
        self.free.setdefault(len(first), []).append(buffer)
        return n, start + used, start + used == stop


class _Done:
    """A call made at once, shaped like a Future (one core: no thread helps)."""

    def __init__(self, call) -> None:
        self.value = call[0](*call[1:])

    def result(self):
        return self.value
