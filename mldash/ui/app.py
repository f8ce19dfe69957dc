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

The handlers are ``_Api``'s methods; the experiments routes (filter, keys, values) are
mixed in from ``mldash.ui._filter_api``, the files and media routes from
``mldash.ui._files_api``.
"""

from __future__ import annotations

import contextvars
import html
import inspect
import os
import threading
from collections import OrderedDict, deque
from typing import Any, Callable

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import _codec, _filter
from .._checks import check_level
from ._files_api import _FilesRoutes, _open_served, media_fields
from ._filter_api import _FilterRoutes, _takes_filter
from ._handlers import _NOT_KEPT, _float, _int, _need
from .series import Columns, view
from .source import DataSource

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


class _Api(_FilterRoutes, _FilesRoutes):
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
