"""What both file servers (the dashboard's ``api/file`` and the server's
``files/{id}``) say and read the same way: the ``Range`` header (one ``bytes=``
range, digits only) and ``Content-Disposition``. Imports nothing heavy, so the
dashboard and the server may share it.
"""

from __future__ import annotations

import re
from urllib.parse import quote


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single ``bytes=`` range; None for the whole
    file (no header, another unit or several ranges: answered whole). ValueError: 416."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.strip().isdigit() or first.strip() == "") or not (last.strip().isdigit() or last.strip() == ""):
        raise ValueError(header)
    first, last = first.strip(), last.strip()
    if first == "":
        if not last or int(last) <= 0:
            raise ValueError(header)
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise ValueError(header)
    return start, end


def content_disposition(kind: str, filename: object) -> str:
    """``attachment; filename="..."; filename*=UTF-8''...`` (or ``inline; ...``): an
    ASCII name with anything odd replaced (no quotes, slashes, control characters)
    for old clients, and the exact name encoded (RFC 6266)."""
    name = str(filename or "file")
    plain = re.sub(r"[^A-Za-z0-9._ +=-]", "_", name).strip(" .") or "file"
    return f"{kind}; filename=\"{plain[:200]}\"; filename*=UTF-8''{quote(name[:400], safe='')}"
