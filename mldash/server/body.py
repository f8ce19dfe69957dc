"""ASGI middleware: gzip request bodies and the request size limit.

Runs before routing, so every endpoint sees a plain body no larger than
``max_bytes`` (32 MiB by default) after decompression; larger bodies get 413,
bad gzip gets 400 (so does anything after the first gzip member: trailing
bytes or a second member), an unknown Content-Encoding gets 415. A saved file's
bytes (``PUT .../blobs/{sha256}``) pass through unbuffered: that endpoint streams them.
"""

from __future__ import annotations

import re
import zlib

import orjson

MAX_BODY = 32 * 1024 * 1024
# The one body that is not buffered: a saved file's bytes (PUT .../blobs/{sha256}).
_STREAMED = re.compile(r"^/api/v1/experiments/\d+/blobs/[0-9a-f]{64}$")


async def _reply(send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyMiddleware:
    def __init__(self, app, max_bytes: int = MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if scope["method"] == "PUT" and _STREAMED.match(scope["path"]):
            return await self.app(scope, receive, send)  # a file's bytes: streamed, any size (see _file_routes)
        limit = self.max_bytes
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
        encoding = b""
        for key, value in scope["headers"]:
            if key == b"content-encoding":
                encoding = value.strip().lower()
            elif key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _reply(send, 400, "Content-Length is not a number")
                if declared > limit:
                    return await _reply(send, 413, f"request body is {declared} bytes; the limit is {limit} bytes")
        if encoding not in (b"", b"identity", b"gzip"):
            return await _reply(send, 415, f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported; use gzip or none")
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _reply(send, 413, f"request body is over the limit of {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        if encoding == b"gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, limit + 1)
            except zlib.error as error:
                return await _reply(send, 400, f"request body is not valid gzip: {error}")
            if len(body) > limit or inflater.unconsumed_tail:
                return await _reply(send, 413, f"request body is over the limit of {limit} bytes after gzip decompression")
            if not inflater.eof:
                return await _reply(send, 400, "request body is not valid gzip: the stream is truncated")
            if inflater.unused_data:  # trailing bytes, or a second gzip member: never half-read a body
                return await _reply(
                    send, 400, "request body is not valid gzip: it has data after the end of its gzip stream "
                    "(trailing bytes or a second member); send exactly one gzip member"
                )
        headers.append((b"content-length", str(len(body)).encode()))
        scope = {**scope, "headers": headers}
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
