"""Cold metric chunks: immutable objects of CHUNK_POINTS consecutive points.

Layout of one chunk object (all integers little-endian uint32)::

    b"MLDC" | version=1 | count | offsets[count + 1] | body

``body`` is the points' JSON lines exactly as the client sent them (the local
``data.jsonl`` lines, so a chunk is also readable by eye), and ``offsets[i]`` is
where line ``i`` starts in the body. Because the header has a fixed size for a
given ``count``, a reader fetches lines ``a..b`` of a chunk with two byte-range
reads (header, then exactly those lines) and never loads the whole object; the
header is cached, so a warm read is one range request.
"""

from __future__ import annotations

import struct
from array import array
from itertools import accumulate

CHUNK_POINTS = 10_000
MAGIC = b"MLDC"
VERSION = 1
_PREFIX = struct.Struct("<4sII")  # magic, version, count


def chunk_key(exp_id: int, series_id: int, chunk_no: int) -> str:
    """Where chunk ``chunk_no`` of a series lives in the blob store."""
    return f"metrics/{exp_id}/{series_id}/{chunk_no:09d}.mldc"


def header_size(count: int) -> int:
    """Bytes before the body of a chunk holding ``count`` lines."""
    return _PREFIX.size + 4 * (count + 1)


def encode(lines: list[bytes]) -> bytes:
    """One chunk object from JSON lines (each without its newline).

    >>> decode_all(encode([b"[1,{}]", b"[2,{}]"]))
    [b'[1,{}]', b'[2,{}]']
    """
    offsets = array("I", accumulate(map(len, lines), initial=0))  # C-level passes, no Python loop
    if offsets.itemsize != 4:  # pragma: no cover - every platform we run on
        raise RuntimeError("uint32 array is not 4 bytes here")
    return b"".join((_PREFIX.pack(MAGIC, VERSION, len(lines)), offsets.tobytes(), *lines))


def parse_header(data: bytes) -> array:
    """The offsets array of a chunk, from at least its first header_size bytes."""
    magic, version, count = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not an mldash metric chunk (bad magic or version)")
    offsets = array("I")
    offsets.frombytes(data[_PREFIX.size : header_size(count)])
    return offsets


def split_lines(body: bytes, offsets: array, first: int, last: int) -> list[bytes]:
    """Lines ``first..last-1`` from the body bytes starting at line ``first``."""
    base = offsets[first]
    return [body[offsets[i] - base : offsets[i + 1] - base] for i in range(first, last)]


def decode_all(data: bytes) -> list[bytes]:
    offsets = parse_header(data)
    count = len(offsets) - 1
    return split_lines(data[header_size(count) :], offsets, 0, count)
