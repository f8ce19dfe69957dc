"""The dashboard as an ASGI app: static front end + a small read-only JSON API.

``mldash ui`` serves ``create_app(LocalSource(root))``; ``mldash server`` mounts
``create_app(its_source, auth=its_read_check)``. Everything the browser shows
comes from the ``DataSource`` passed in; the API is::

    GET api/info                                   title, whether auth is on
    GET api/experiments[?project=P][&filter=F | &q=T]
                                                   every run (or those a filter matches):
                                                   meta, params, summary, latest metrics
    GET api/keys[?project=P][&filter=F | &q=T]     the filter keys those runs offer (completion)
    GET api/values?key=K[&key=K2...]&run=R[&run=R2...]
                                                   each run's value for each filter key
                                                   (the scatter, the parallel coordinates)
    GET api/experiment?prefix=P                    one run + metric names, errors, checkpoints
    GET api/series?prefix=P&name=M&x=step&lo=&hi=&width=800
                                                   the chart's points, downsampled keeping spikes
    GET api/metric?prefix=P&name=M&start=0&limit=1000   exact points (Metric.read() shape)
    GET api/logs?prefix=P[&level=warn][&q=text][&limit=200][&before=I|&after=I]
    GET api/console?prefix=P[&start_index=I][&limit=500]
                                                   console records (read_console() shape);
                                                   without start_index: the last ``limit``
    GET api/files?prefix=P[&path=/models]          the run's saved files (ml-dash records)
    GET api/file?prefix=P&id=ID|sha=S[&view=image|text]
                                                   a file's bytes, streamed, with HTTP Range:
                                                   an attachment, or inline as an image (PNG,
                                                   JPEG, GIF, WebP by their bytes) or as
                                                   text/plain (never HTML or SVG)
    GET api/media?prefix=P&name=M[&limit=1000]     a series' image references and histogram
                                                   bins by step, per field

All paths are relative, so the app works mounted under any prefix
(``Mount("/ui", app=create_app(...))``; link to "/ui/").
"""

from __future__ import annotations

import contextvars
import html
import inspect
import os
import re
import threading
from collections import OrderedDict, deque
from typing import Any, Callable

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import _codec, _filter
from .._checks import check_level
from .series import Columns, view
from .source import DataSource, row_lookup

STATIC = os.path.join(os.path.dirname(__file__), "static")

# The value the ``auth`` hook returned for the request being served (None when
# auth is off). A server's DataSource can read it to limit what a token sees.
current_principal: contextvars.ContextVar[Any] = contextvars.ContextVar("mldash_ui_principal", default=None)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

# experiment.json fields the experiments table does not show (they are most of its bytes).
_LIST_OMITS = frozenset(("packages", "platform", "executable", "cwd", "argv", "python", "env", "git", "path"))

AuthHook = Callable[[Request], Any]


def create_app(source: DataSource, *, auth: AuthHook | None = None, title: str = "mldash") -> Starlette:
    """The dashboard over ``source``, optionally guarded by ``auth``.

    ``auth(request)`` (plain or async) runs before every ``api/`` request. It
    denies by raising ``starlette.exceptions.HTTPException`` (its status is
    sent), raising ``PermissionError`` (403) or returning ``False`` (401); any
    other return value allows the request and is available to the source as
    ``mldash.ui.app.current_principal.get()`` and as ``request.state.principal``.
    The static front end (no data in it) is served without auth; the browser
    sends ``Authorization: Bearer <token>`` once the user gives a token (or
    opens the page with ``?token=...``).

    >>> from mldash.ui.local import LocalSource
    >>> app = create_app(LocalSource(".mldash"), title="my runs")  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8750)  # doctest: +SKIP
    """
    api = _Api(source)

    def endpoint(handler):
        async def run(request: Request) -> Response:
            if auth is not None:
                denied = await _check(auth, request)
                if denied is not None:
                    return denied
            token = current_principal.set(getattr(request.state, "principal", None))
            try:
                result = await run_in_threadpool(handler, request.query_params)
            except KeyError as error:
                return _json({"error": f"not found: {error.args[0] if error.args else ''}"}, 404)
            except _filter.FilterError as error:  # the page puts the caret under its box
                where = {"position": error.position, "line": error.line, "column": error.column, "reason": error.reason}
                return _json({"error": str(error), "filter_error": where}, 400)
            except (ValueError, TypeError) as error:
                return _json({"error": str(error)}, 400)
            finally:
                current_principal.reset(token)
            return _json(result)

        return run

    async def file_endpoint(request: Request) -> Response:
        """A file's bytes (``_Api.open_file``), streamed; errors as the JSON routes'."""
        if auth is not None:
            denied = await _check(auth, request)
            if denied is not None:
                return denied
        token = current_principal.set(getattr(request.state, "principal", None))
        try:
            served = await run_in_threadpool(_open_served, api, request.query_params, request.headers.get("range"))
        except KeyError:
            return _json({"error": "not found: file"}, 404)
        except (ValueError, TypeError) as error:
            return _json({"error": str(error)}, 400)
        finally:
            current_principal.reset(token)
        return served

    async def index(request: Request) -> Response:
        with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as f:
            page = f.read()
        # The page's own title; escaped, as is everything else that reaches HTML.
        page = page.replace("{{title}}", html.escape(title))
        return Response(page, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})

    async def info(request: Request) -> Response:
        return _json({"title": title, "auth": auth is not None})

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/experiments", endpoint(api.experiments)),
        Route("/api/keys", endpoint(api.keys)),
        Route("/api/values", endpoint(api.values)),
        Route("/api/experiment", endpoint(api.experiment)),
        Route("/api/series", endpoint(api.series)),
        Route("/api/metric", endpoint(api.metric)),
        Route("/api/logs", endpoint(api.logs)),
        Route("/api/console", endpoint(api.console)),
        Route("/api/files", endpoint(api.files)),
        Route("/api/file", file_endpoint),
        Route("/api/media", endpoint(api.media)),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_SecurityHeaders)
    serving = getattr(source, "serving", None)
    if serving is not None:
        app.add_middleware(_Serving, serving=serving)
    app.state.source = source
    return app


def token_auth(token: str) -> AuthHook:
    """An ``auth`` hook that accepts one fixed bearer token (``mldash ui --token``).

    >>> app = create_app(source, auth=token_auth("s3cret"))  # doctest: +SKIP
    """
    import hmac

    def check(request: Request) -> Any:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return False
        return "token"

    return check


async def _check(auth: AuthHook, request: Request) -> Response | None:
    try:
        result = auth(request)
        if inspect.isawaitable(result):
            result = await result
    except HTTPException as error:
        return _json({"error": error.detail or "not allowed"}, error.status_code, error.headers)
    except PermissionError as error:
        return _json({"error": str(error) or "this token may not read here"}, 403)
    if result is False:
        return _json({"error": "a token with read scope is needed"}, 401, {"www-authenticate": "Bearer"})
    if isinstance(result, Response):
        return result
    request.state.principal = result
    return None


class _Serving:
    """Holds the source's optional ``serving()`` context for each HTTP request, so that
    its background work (``LocalSource``'s warmer) steps aside until the response is out."""

    def __init__(self, app, serving) -> None:
        self.app = app
        self.serving = serving

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.serving():
            await self.app(scope, receive, send)


class _SecurityHeaders:
    """Adds the CSP and friends to every response (pure ASGI: no body buffering)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key.encode() not in present:
                        headers.append((key.encode(), value.encode()))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _json(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    try:
        body = orjson.dumps(obj, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an int past 64 bits (accepted, stored exactly): tagged, as on disk
        body = _codec.dumps(obj, default=_default)
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store", "vary": "Authorization", **(headers or {})},
    )


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if item is not None else str(value)


def _int(params, key: str, default: int | None, low: int = 0, high: int = 1 << 62) -> int | None:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None
    return max(low, min(value, high))


def _float(params, key: str) -> float | None:
    raw = params.get(key)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None


def _need(params, key: str) -> str:
    value = params.get(key)
    if not value:
        raise ValueError(f"the {key} parameter is needed")
    return value


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


def content_disposition(kind: str, filename: Any) -> str:
    """``attachment; filename="..."; filename*=UTF-8''...``: an ASCII name with anything
    odd replaced (no quotes, slashes, control characters) and the exact name encoded."""
    from urllib.parse import quote

    name = str(filename or "file")
    plain = re.sub(r"[^A-Za-z0-9._ +=-]", "_", name).strip(" .") or "file"
    return f"{kind}; filename=\"{plain[:200]}\"; filename*=UTF-8''{quote(name[:400], safe='')}"


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


def _open_served(api: "_Api", params, range_header: str | None) -> Response:
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


_NOT_KEPT = object()  # a cache key for what must not be kept (see _Api._key)

# What makes the search box's text a filter even when it does not parse (so the page
# shows the error): an operator, a bracket or quote, or a params./summary./metrics. key.
# Other text that does not parse (``resnet``, ``lr-0.01``, ``bert crash``) is a name search.
_FILTERISH = re.compile(r"""[=<>!~()\[\]"']|(^|[\s(])(params|summary|metrics)\.""", re.IGNORECASE)
MAX_VALUE_KEYS = 64
MAX_VALUE_RUNS = 500


def _takes_filter(method) -> bool:
    """Whether a source's ``list_experiments`` has the ``filter`` argument (sources
    written before filters existed do not: the app filters their rows itself)."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "filter" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _text_match(row: dict, words: str) -> bool:
    """The search box's plain text: a substring of the prefix, description or a tag."""
    hay = " ".join(str(part) for part in [row.get("prefix"), row.get("description"), *(row.get("tags") or [])] if part)
    return words in hay.lower()


def _value_key(text: str) -> _filter.Key:
    """One filter key as the filter language spells it (``params.lr``, ``metrics.loss.min``)."""
    try:
        node = _filter.parse(f"{text} = null") if isinstance(text, str) and text.strip() else None
    except _filter.FilterError as error:
        raise ValueError(f"not a filter key: {text!r}: {error.reason}") from None
    if not isinstance(node, _filter.Compare):
        raise ValueError(f"not a filter key: {text!r} (params.<key>, summary.<key>, metrics.<name>.last|min|max, or a run key)")
    return node.key


class _Api:
    """The request handlers; they run on a worker thread and call the source.

    Each handler first resolves the ``prefix`` it was given to the one experiment it
    names for this caller (``_resolve``), reads only through that address and keys
    everything it keeps by ``_key(address)``: what it kept for one caller is served to
    another only when both resolved to the very same experiment, which both may read.
    """

    MAX_POINTS = 20_000_000  # columns kept for sources without metric_view, least recently used go
    MAX_ERROR_LISTS = 10_000

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self._filters = _takes_filter(source.list_experiments)
        self._lock = threading.Lock()
        # for sources without metric_view: (key, metric name) -> (its lock, its columns)
        self._columns: OrderedDict[tuple, tuple[threading.Lock, Columns]] = OrderedDict()
        self._errors: OrderedDict[Any, tuple[int, list]] = OrderedDict()
        self._media: OrderedDict[tuple, dict] = OrderedDict()  # (key, series name) -> its media points

    def _resolve(self, params) -> str:
        """The address of the experiment ``prefix`` names for this caller (KeyError: 404).

        A source with ``resolve(prefix)`` (the server's: "namespace:prefix") says which one
        its rules pick for the current caller; reading through that address keeps every
        read of a request on that experiment. Otherwise the prefix is the address.
        """
        prefix = _need(params, "prefix")
        resolve = getattr(self.source, "resolve", None)
        return prefix if resolve is None else resolve(prefix)

    def _key(self, address: str) -> Any:
        """What everything kept about ``address`` is keyed by.

        A source with ``resolve`` gives addresses that name one experiment whoever asks,
        and only to callers that may read it: the address is the key. For any other
        source one prefix may show each caller something else, so the key is the caller
        (the auth hook's value) and the prefix; ``_NOT_KEPT`` when that value cannot key.
        """
        if getattr(self.source, "resolve", None) is not None:
            return ("experiment", address)
        key = ("caller", current_principal.get(), address)
        try:
            hash(key)
        except TypeError:
            return _NOT_KEPT
        return key

    def experiments(self, params) -> dict:
        rows, mode = self._search(params)
        # The table needs none of the environment details; the experiment view has them.
        return {"experiments": [{k: v for k, v in row.items() if k not in _LIST_OMITS} for row in rows], "mode": mode}

    def keys(self, params) -> dict:
        """The keys a filter may use over the runs listed (the search box's completion)."""
        rows, _ = self._search(params)
        names: dict[str, set] = {"params": set(), "summary": set(), "metrics": set()}
        for row in rows:
            for scope in names:
                document = row.get(scope)
                if isinstance(document, dict):
                    names[scope].update(k for k in document if isinstance(k, str))
        return {"keys": _filter.keys_of(names["params"], names["summary"], names["metrics"]), "runs": len(rows)}

    def values(self, params) -> dict:
        """Each run's value for each key (null where it has none), for the scatter and the
        parallel coordinates: the same values a filter reads, min and max included."""
        keys = params.getlist("key")
        refs = params.getlist("run")
        if not keys or not refs:
            raise ValueError("key and run are needed (each may be repeated)")
        if len(keys) > MAX_VALUE_KEYS or len(refs) > MAX_VALUE_RUNS:
            raise ValueError(f"at most {MAX_VALUE_KEYS} keys and {MAX_VALUE_RUNS} runs a request")
        parsed = [_value_key(k) for k in keys]
        lookup_of = getattr(self.source, "lookup", None) or row_lookup
        runs, missing = [], []
        for ref in dict.fromkeys(refs):
            try:
                address = self.source.resolve(ref) if getattr(self.source, "resolve", None) else ref
                row = self.source.get_experiment(address)
                lookup = lookup_of(row)
                values = [lookup(key) for key in parsed]
            except KeyError:
                missing.append(ref)
                continue
            values = [None if v is _filter.MISSING else v for v in values]
            runs.append({"ref": ref, "prefix": row.get("prefix"), "name": row.get("name"), "status": row.get("status"), "values": values})
        return {"keys": keys, "runs": runs, "missing": missing}

    def _search(self, params) -> tuple[list[dict], str]:
        """The rows for ``filter`` (the filter language; a bad one is a FilterError) or
        ``q`` (the search box: a filter when it parses or looks like one, else plain
        text matched against prefix, description and tags); the mode used."""
        project = params.get("project") or None
        strict, box = params.get("filter"), params.get("q")
        if strict is not None and box is not None:
            raise ValueError("give filter or q, not both")
        text = strict if strict is not None else box
        if text is None or not text.strip():
            return self.source.list_experiments(project), "all"
        try:
            node = _filter.parse(text)
        except _filter.FilterError:
            if strict is not None or _FILTERISH.search(text):
                raise
            words = text.strip().lower()
            return [row for row in self.source.list_experiments(project) if _text_match(row, words)], "text"
        if self._filters:
            return self.source.list_experiments(project, filter=text), "filter"
        lookup_of = getattr(self.source, "lookup", None) or row_lookup
        rows = []
        for row in self.source.list_experiments(project):
            try:
                if _filter.matches(node, lookup_of(row)):
                    rows.append(row)
            except KeyError:
                continue  # gone since it was listed
        return rows, "filter"

    def experiment(self, params) -> dict:
        prefix = self._resolve(params)
        row = dict(self.source.get_experiment(prefix))
        warm = getattr(self.source, "warm", None)
        if warm is not None:
            warm(prefix)
        row["metric_names"] = self.source.metric_names(prefix)
        media = {name: media_fields(point) for name, point in (row.get("metrics") or {}).items()}
        row["media"] = {name: fields for name, fields in media.items() if fields}
        row["has_files"] = getattr(self.source, "list_files", None) is not None and getattr(self.source, "open_file", None) is not None
        row["errors"], row["log_total"] = self._error_logs(prefix)
        return row

    def series(self, params) -> dict:
        _need(params, "prefix")
        name = _need(params, "name")
        prefix = self._resolve(params)
        x = params.get("x") or "index"
        lo, hi = _float(params, "lo"), _float(params, "hi")
        width = _int(params, "width", 1000, 10, 10000)
        native = getattr(self.source, "metric_view", None)
        if native is not None:
            return native(prefix, name, x, lo, hi, width)
        cols = self._read_all(prefix, name)
        out = view(cols, x, lo, hi, width)
        out["x_choices"] = cols.x_choices()
        out["name"] = name
        return out

    def metric(self, params) -> dict:
        _need(params, "prefix")
        name = _need(params, "name")
        prefix = self._resolve(params)
        start = _int(params, "start", 0)
        limit = _int(params, "limit", 1000, 0, 10000)
        return self.source.read_metric(prefix, name, start, limit)

    def logs(self, params) -> dict:
        prefix = self._resolve(params)
        level = params.get("level") or None
        if level is not None:
            check_level(level)
        query = (params.get("q") or "").lower()
        limit = _int(params, "limit", 200, 1, 5000)
        after = _int(params, "after", None, -1)
        total = self.source.read_logs(prefix, 0, 0)["total"]
        if after is not None:  # live tail: what came after the last record shown
            found = [r for r in self._scan(prefix, after + 1, level) if _matches(r, query)]
            return {"data": found[-limit:], "total": total}
        before = _int(params, "before", total)
        if level is None and not query:
            start = max(0, before - limit)
            data = self.source.read_logs(prefix, start, before - start)["data"]
            return {"data": data, "total": total}
        kept: deque = deque(maxlen=limit)
        for record in self._scan(prefix, 0, level):
            if record.get("index", 0) >= before:
                break
            if _matches(record, query):
                kept.append(record)
        return {"data": list(kept), "total": total}

    def console(self, params) -> dict:
        raw = params.get("start_index")
        if raw not in (None, "") and not raw.strip().isdigit():
            raise ValueError(f"start_index must be an int >= 0, got {raw!r}")
        prefix = self._resolve(params)
        read = getattr(self.source, "read_console", None)
        if read is None:
            raise KeyError("console")
        limit = _int(params, "limit", 500, 0, 5000)
        start = _int(params, "start_index", None)
        if start is None:  # the tail: the last ``limit`` records
            total = read(prefix, 0, 0)["total"]
            start = max(0, total - limit)
        return read(prefix, start, limit)

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

    # ---- helpers ---------------------------------------------------------------------------
    def _scan(self, prefix: str, start: int, level: str | None, page: int = 5000):
        """Every log record from ``start`` (at ``level`` or above), page by page."""
        while True:
            got = self.source.read_logs(prefix, start, page, level)
            data = got["data"]
            yield from data
            if len(data) < page or not data:
                return
            start = data[-1]["index"] + 1

    def _error_logs(self, prefix: str) -> tuple[list, int]:
        """The last error/fatal records (tracebacks shown on top), scanning only new logs."""
        total = self.source.read_logs(prefix, 0, 0)["total"]
        key = self._key(prefix)
        with self._lock:
            done, found = self._errors.get(key, (0, []))
        if total < done:
            done, found = 0, []
        if total > done:
            found = (found + list(self._scan(prefix, done, "error")))[-20:]
            if key is not _NOT_KEPT:
                with self._lock:
                    self._errors[key] = (total, found)
                    self._errors.move_to_end(key)
                    while len(self._errors) > self.MAX_ERROR_LISTS:
                        self._errors.popitem(last=False)
        return found, total

    def _read_all(self, prefix: str, name: str, page: int = 10000) -> Columns:
        """All points of a series through ``read_metric``, kept and extended per poll."""
        key = self._key(prefix)
        with self._lock:
            entry = None if key is _NOT_KEPT else self._columns.get((key, name))
            if entry is None:
                entry = (threading.Lock(), Columns())
                if key is not _NOT_KEPT:
                    self._columns[(key, name)] = entry
            elif key is not _NOT_KEPT:
                self._columns.move_to_end((key, name))
        lock, cols = entry
        with lock:  # one reader extends a series at a time; other series go on meanwhile
            start = int(cols.index[cols.n - 1]) + 1 if cols.n else 0
            while True:
                got = self.source.read_metric(prefix, name, start, page)
                cols.extend_points(got["data"])
                if not got.get("has_more") or not got["data"]:
                    break
                start = got["end_index"] + 1
        with self._lock:  # least recently used series go past MAX_POINTS
            total = sum(c.n for _, c in self._columns.values())
            while total > self.MAX_POINTS and len(self._columns) > 1:
                _, (_, old) = self._columns.popitem(last=False)
                total -= old.n
        return cols


def _matches(record: dict, query: str) -> bool:
    if not query:
        return True
    if query in str(record.get("message", "")).lower():
        return True
    metadata = record.get("metadata")
    return bool(metadata) and query in orjson.dumps(metadata, default=str).decode().lower()
