"""The dashboard API's files and media routes: a run's saved files listed
(``api/files``), a file's bytes served (``api/file``: streamed, with HTTP Range, inline
only as an image or text/plain) and a series' image references and histogram bins
(``api/media``).

``_FilesRoutes`` is mixed into ``mldash.ui.app._Api``, which gives it ``source``,
``_resolve``, ``_key``, ``_lock`` and ``_media`` (the media points kept).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from starlette.responses import Response, StreamingResponse

from .._http_files import content_disposition, parse_range
from ._handlers import _NOT_KEPT, _int, _need

# ---- serving a run's files ---------------------------------------------------------------
# A file's bytes are the run's, not the dashboard's: nothing of them may run in its origin.
# Inline is only an image (its type from its bytes) or text/plain; HTML, SVG and XML never
# go inline, and every file response forbids scripts, frames and sniffing.
FILE_CSP = "default-src 'none'; img-src 'self'; sandbox; frame-ancestors 'none'"
FILE_CHUNK = 1 << 20
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_NEVER_TEXT = re.compile(r"\.(html?|xht(ml)?|svgz?|xml|xsl|mht(ml)?)$", re.IGNORECASE)
_NEVER_TEXT_TYPES = ("html", "svg", "xml")


def image_type(head: bytes) -> str | None:
    """The image type of a file by its first bytes: PNG, JPEG, GIF or WebP (else None)."""
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def may_show_as_text(record: dict) -> bool:
    """Whether a file may be shown inline as text/plain: not HTML, SVG or XML (by name or
    declared type), which are only ever downloads."""
    name = str(record.get("filename") or "")
    kind = str(record.get("contentType") or "").lower()
    return not _NEVER_TEXT.search(name) and not any(t in kind for t in _NEVER_TEXT_TYPES)


def _file_chunks(path: str, fd, start: int, end: int):
    """The bytes [start, end) of an open file, FILE_CHUNK at a time; closes it."""
    try:
        fd.seek(start)
        left = end - start
        while left > 0:
            data = fd.read(min(FILE_CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        fd.close()


def _open_served(api: "_FilesRoutes", params, range_header: str | None) -> Response:
    """The response for ``api/file`` (on a worker thread): the record checked and the
    file opened here; its bytes are streamed afterwards, never read whole."""
    record, reader = api.open_file(params)
    view_as = params.get("view") or ""
    if view_as not in ("", "image", "text", "download"):
        raise ValueError("view must be image, text or download")
    fd = None
    if isinstance(reader, (str, os.PathLike)):
        fd = open(reader, "rb")
        size = os.fstat(fd.fileno()).st_size

        def chunks(start: int, end: int):
            return _file_chunks(str(reader), fd, start, end)

        def head(n: int) -> bytes:
            fd.seek(0)
            return fd.read(n)
    else:
        size = int(record.get("sizeBytes") or 0)

        def chunks(start: int, end: int):
            return iter(reader(start, end))

        def head(n: int) -> bytes:
            return b"".join(reader(0, min(n, size))) if size else b""

    try:
        kind = None
        if view_as == "image":
            kind = image_type(head(16))
        elif view_as == "text" and may_show_as_text(record):
            kind = "text/plain; charset=utf-8"
        headers = {
            "content-security-policy": FILE_CSP,
            "x-content-type-options": "nosniff",
            "cross-origin-resource-policy": "same-origin",
            "accept-ranges": "bytes",
            "cache-control": "private, no-cache",
            "vary": "Authorization",
            "content-disposition": content_disposition("inline" if kind else "attachment", record.get("filename")),
        }
        checksum = record.get("checksum")
        if isinstance(checksum, str) and re.fullmatch(r"[0-9a-f]{64}", checksum):
            headers["etag"] = f'"{checksum}"'
        try:
            wanted = parse_range(range_header, size)
        except ValueError:
            if fd is not None:
                fd.close()
            return Response(status_code=416, headers={"content-range": f"bytes */{size}", **headers})
        start, end = wanted if wanted is not None else (0, size)
        headers["content-length"] = str(end - start)
        status = 200
        if wanted is not None:
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        body = chunks(start, end) if end > start else iter(())
        if fd is not None and end <= start:
            fd.close()
    except BaseException:
        if fd is not None:
            fd.close()
        raise
    return StreamingResponse(body, status_code=status, media_type=kind or "application/octet-stream", headers=headers)


def _thin(points: list, limit: int) -> list:
    """At most ``limit`` of ``points``, evenly spread, the first and the last kept."""
    n = len(points)
    if n <= limit:
        return points
    if limit == 1:
        return points[-1:]
    picks = sorted({round(k * (n - 1) / (limit - 1)) for k in range(limit)})
    return [points[i] for i in picks]


def media_fields(point: Any) -> dict[str, str]:
    """{field: "image" | "histogram"} of a point in read() shape."""
    data = point.get("data") if isinstance(point, dict) else None
    if not isinstance(data, dict):
        return {}
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value.get("type") in ("image", "histogram"):
            out[key] = value["type"]
    return out


_IMAGE_KEYS = ("file", "sha256", "width", "height", "caption", "size", "format")
_HISTOGRAM_KEYS = ("bins", "counts", "min", "max", "mean", "count")


class _FilesRoutes:
    """The handlers of ``api/files``, ``api/file`` (``open_file``) and ``api/media`` (in ``_Api``)."""

    def files(self, params) -> dict:
        """The run's saved files (``list_files``; without it: 404)."""
        prefix = self._resolve(params)
        lister = getattr(self.source, "list_files", None)
        if lister is None or getattr(self.source, "open_file", None) is None:
            raise KeyError("files")
        files = lister(prefix)
        folder = params.get("path")
        if folder:
            folder = "/" + folder.strip("/") if folder.strip("/") else "/"
            if folder != "/":
                files = [f for f in files if f.get("path") == folder or str(f.get("path") or "").startswith(folder + "/")]
        return {"files": files, "total": len(files)}

    def open_file(self, params) -> tuple[dict, Any]:
        """(record, reader) of the file ``id`` (or the newest with checksum ``sha``) of the
        run ``prefix`` resolves to, through the source's ``open_file`` (KeyError: 404)."""
        prefix = self._resolve(params)
        opener = getattr(self.source, "open_file", None)
        if opener is None:
            raise KeyError("file")
        file_id, sha = params.get("id"), params.get("sha")
        if not file_id and not sha:
            raise ValueError("the id (or sha) parameter is needed")
        if not file_id:
            lister = getattr(self.source, "list_files", None)
            if lister is None:
                raise KeyError("file")
            found = [f for f in lister(prefix) if f.get("checksum") == sha]
            if not found:
                raise KeyError("file")
            file_id = found[-1]["id"]
        if not isinstance(file_id, str) or not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", file_id):
            raise KeyError("file")
        return opener(prefix, file_id)

    MAX_MEDIA_SERIES = 64

    def media(self, params) -> dict:
        """The media fields of series ``name``: each image field's references (file id,
        sha256, size, caption) by step and each histogram field's bins by step, at most
        ``limit`` points a field (evenly spread, the last kept)."""
        _need(params, "prefix")
        name = _need(params, "name")
        prefix = self._resolve(params)
        limit = _int(params, "limit", 1000, 1, 10000)
        total, fields = self._media_points(prefix, name)
        out = {}
        for field, (kind, points) in fields.items():
            out[field] = {"type": kind, "total": len(points), "points": _thin(points, limit)}
        return {"name": name, "total": total, "fields": out}

    def _media_points(self, prefix: str, name: str, page: int = 5000) -> tuple[int, dict]:
        """(points read, {field: (type, [points])}) of a series, kept by the resolved
        address and extended by the points appended since."""
        key = self._key(prefix)
        with self._lock:
            entry = None if key is _NOT_KEPT else self._media.get((key, name))
            if entry is None:
                entry = {"lock": threading.Lock(), "next": 0, "fields": {}}
                if key is not _NOT_KEPT:
                    self._media[(key, name)] = entry
                    while len(self._media) > self.MAX_MEDIA_SERIES:
                        self._media.popitem(last=False)
            elif key is not _NOT_KEPT:
                self._media.move_to_end((key, name))
        with entry["lock"]:
            start = entry["next"]
            total = self.source.read_metric(prefix, name, 0, 0).get("total", 0)
            if total < start:  # rewritten: read it again
                entry["next"], entry["fields"], start = 0, {}, 0
            fields = entry["fields"]
            while start < total:
                got = self.source.read_metric(prefix, name, start, page)
                data = got.get("data") or []
                for point in data:
                    values = point.get("data") if isinstance(point, dict) else None
                    if not isinstance(values, dict):
                        continue
                    step = values.get("step", point.get("index"))
                    for field, kind in media_fields(point).items():
                        value = values[field]
                        keys = _IMAGE_KEYS if kind == "image" else _HISTOGRAM_KEYS
                        item = {"index": point.get("index"), "step": step, **{k: value.get(k) for k in keys if k in value}}
                        if "epoch" in values:
                            item["epoch"] = values["epoch"]
                        fields.setdefault(field, (kind, []))[1].append(item)
                if not data:
                    break
                start = int(data[-1].get("index", start + len(data) - 1)) + 1
                if not got.get("has_more"):
                    break
            entry["next"] = start
            return start, {f: (k, list(p)) for f, (k, p) in fields.items()}
