"""The HTTP ``Range`` header, as both file servers read it (the dashboard's
``api/file`` and the server's ``files/{id}``): one ``bytes=`` range, digits only.
Imports nothing, so the dashboard and the server may share it.
"""

from __future__ import annotations


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
