"""Turning queued entries (see ``_queue.py``) into JSON lines, on the writer thread.

Points with the same field names are encoded column by column: one
``orjson.dumps`` per column of values, spliced at its commas with the stamps and
the constant pieces of the line (``[``, ``,{"value":``, ``}]\\n`` ...). That
costs a fraction of one ``dumps`` call per point. A column that holds strings,
NaN, ±inf or None is encoded value by value instead, which keeps NaN and ±inf
through their ``{"$float": ...}`` tags. When a series mixes sets of names, each
set is encoded apart and the lines are put back in their order.

Lines are joined in chunks, and a new chunk starts at each line whose index is a
multiple of ``STRIDE``: that line's offset for ``data.idx`` is then a running
byte count, with no per-line lengths to keep.
"""

from __future__ import annotations

from itertools import repeat
from operator import is_

import orjson

from . import _codec
from ._native import speedups
from ._series import STRIDE

_COLUMN = orjson.OPT_SERIALIZE_NUMPY
# A column whose encoding holds none of these is plain numbers and booleans, so
# splitting it at commas is exact ("n" catches null).
_NOT_PLAIN = (b'"', b"n", b"[", b"{")


class Lines:
    """Encoded lines for one append: chunks, their count and the index marks."""

    __slots__ = ("first", "chunks", "count", "size", "marks")

    def __init__(self, first: int) -> None:
        self.first = first  # the index the first line will have in its file
        self.chunks: list[bytes] = []
        self.count = 0
        self.size = 0
        self.marks: list[int] = []  # byte offsets of the lines at multiples of STRIDE

    def room(self) -> int:
        """Lines that fit before the next chunk must start (at a STRIDE mark)."""
        return STRIDE - (self.first + self.count) % STRIDE

    def add_chunk(self, chunk: bytes, count: int) -> None:
        """Add ``count`` (at most ``room()``) lines joined in one byte string."""
        if (self.first + self.count) % STRIDE == 0:
            self.marks.append(self.size)
        self.chunks.append(chunk)
        self.size += len(chunk)
        self.count += count

    def add_lines(self, lines: list[bytes]) -> None:
        start = 0
        while start < len(lines):
            part = lines[start : start + self.room()]
            self.add_chunk(b"".join(part), len(part))
            start += len(part)


def encode_entries(entries: list, first: int) -> Lines:
    """Lines for queued entries, in order, the first of them numbered ``first``."""
    out = Lines(first)
    if not entries:
        return out
    names = entries[1]
    stride = len(names) + 2
    if len(entries) % stride == 0 and all(map(is_, entries[1::stride], repeat(names))):
        _add_columns(out, entries, names)  # the common case: every point has these names
    else:
        _add_mixed(out, entries)
    return out


def _add_mixed(out: Lines, entries: list) -> None:
    """Points with different names, in order, a chunk at a time: in each chunk the
    points of each set of names are encoded together by columns, then their lines
    are put back in order."""
    i, n = 0, len(entries)
    while i < n:
        groups: dict[int, list[int]] = {}  # id of a names tuple: where its points start
        order: list[int] = []  # each point's names, by id
        room = out.room()
        while i < n and len(order) < room:
            names = entries[i + 1]
            key = id(names)  # one tuple for equal names (see _queue.py): no hashing of tuples
            group = groups.get(key)
            if group is None:
                group = groups[key] = []
            group.append(i)
            order.append(key)
            i += len(names) + 2
        lines = {key: iter(_group_lines(entries, starts)) for key, starts in groups.items()}
        out.add_chunk(b"".join([next(lines[key]) for key in order]), len(order))


def _group_lines(entries: list, starts: list[int]) -> list[bytes]:
    names = entries[starts[0] + 1]
    heads, tail = _shape(names)
    columns = [_encode_column([entries[s + 2 + j] for s in starts]) for j in range(len(names))]
    data = splice([entries[s] for s in starts], heads, columns, tail)
    return data.splitlines(keepends=True)  # exact: JSON escapes every line break in text


def split_points(entries: list) -> tuple[list[list], list[list]]:
    """The entries cut into single points: (well-formed, malformed).

    For a queue that failed to encode as a whole. A point is a ``bytes`` stamp,
    a names tuple, then one value per name; values are never bytes or tuples,
    so after a malformed stretch the next point starts at the next such pair.
    """
    good: list[list] = []
    bad: list[list] = []
    i, n = 0, len(entries)
    while i < n:
        names = entries[i + 1] if i + 1 < n else None
        end = i + 2 + len(names) if names.__class__ is tuple else n + 1
        if entries[i].__class__ is bytes and end <= n and (end == n or _starts_point(entries, end)):
            good.append(entries[i:end])
            i = end
            continue
        j = i + 1
        while j < n and not _starts_point(entries, j):
            j += 1
        bad.append(entries[i:j])
        i = j
    return good, bad


def _starts_point(entries: list, i: int) -> bool:
    return entries[i].__class__ is bytes and i + 1 < len(entries) and entries[i + 1].__class__ is tuple


def count_points(entries: list) -> int:
    """How many points the entries hold."""
    total, i, n = 0, 0, len(entries)
    while i < n:
        total += 1
        i += len(entries[i + 1]) + 2
    return total


_shapes: dict[tuple, tuple] = {}


def _shape(names: tuple) -> tuple[tuple, bytes]:
    """The constant pieces of a line: heads ',{"a":', ',"b":' ... and the tail."""
    shape = _shapes.get(names)
    if shape is None:
        heads = tuple((b",{" if j == 0 else b",") + orjson.dumps(name) + b":" for j, name in enumerate(names))
        shape = (heads, b"}]\n")
        if len(_shapes) < 4096:  # names come from code, but don't grow without bound
            _shapes[names] = shape
    return shape


def _splice(stamps: list, heads: tuple, columns: list, tail: bytes) -> bytes:
    """``_speedups.splice`` in Python: lines from stamps and encoded columns."""
    per_line = 2 * len(heads) + 3
    template = [b"[", None]
    for head in heads:
        template += (head, None)
    template.append(tail)
    pieces = template * len(stamps)
    pieces[1::per_line] = stamps
    for j, column in enumerate(columns):
        pieces[3 + 2 * j :: per_line] = column if isinstance(column, list) else column.split(b",")
    return b"".join(pieces)


splice = speedups.splice if speedups is not None else _splice


def _add_columns(out: Lines, entries: list, names: tuple) -> None:
    """Encode points that all have these names, a chunk (at most STRIDE lines,
    small enough to stay in cache) at a time."""
    stride = len(names) + 2
    heads, tail = _shape(names)
    start, end = 0, len(entries)
    while start < end:
        stop = min(end, start + out.room() * stride)
        columns = [_encode_column(entries[start + 2 + j : stop : stride]) for j in range(len(names))]
        out.add_chunk(splice(entries[start:stop:stride], heads, columns, tail), (stop - start) // stride)
        start = stop


def _encode_column(values: list) -> "bytes | list[bytes]":
    """Plain numbers as one comma-separated ``bytes``, anything else value by value."""
    try:
        body = orjson.dumps(values, default=_codec.scalar_default, option=_COLUMN)[1:-1]
    except Exception:  # e.g. an int past 64 bits (tagged): value by value
        return [_encode_value(v) for v in values]
    for marker in _NOT_PLAIN:
        if marker in body:
            return [_encode_value(v) for v in values]
    return body


def _encode_value(value) -> bytes:
    """One value exactly: NaN, ±inf and big ints tagged, None as null, odd values kept as text."""
    try:
        return _codec.dumps(value)
    except Exception:  # a tensor whose device is gone
        return orjson.dumps(repr(value))
