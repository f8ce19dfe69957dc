"""The HTTP API v1 (see .notes/API.md / docs/server.md) as a FastAPI app.

Request bodies are parsed with orjson and checked by the store, not by
pydantic: a batch of 1,000 points must cost microseconds, not milliseconds.
Their JSON schemas still appear in /openapi.json (``openapi_extra``).

>>> app = create_app(Store("sqlite:///server.db", "chunks"))  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any, Optional

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import _codec
from .._naming import metric_parts, split_path
from .auth import OPEN, Authenticator, Forbidden, Scope, Unauthorized, require
from .body import MAX_BODY, BodyMiddleware
from .storage import LEVELS, MAX_INDEX, STATUSES, NotFound, Store, StoreError, check_namespace

log = logging.getLogger("mldash.server")
API = "/api/v1"
MAX_ID = 2**31 - 1


class JSONOut(Response):
    """JSON with NaN/±inf tagged as in data.jsonl, so every response is valid JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _codec.dumps(content, default=str)


def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_OBJECT = {"type": "object"}
_INDEX = {"type": "integer", "minimum": 0}
EXPERIMENT_BODY = {
    "type": "object",
    "required": ["prefix"],
    "properties": {
        "namespace": {"type": "string", "default": "default"},
        "prefix": {"type": "string", "description": "project/folder.../name"},
        "meta": {"type": "object", "description": "experiment.json fields, merged into the stored ones"},
    },
}
PATCH_BODY = {"type": "object", "required": ["meta"], "properties": {"meta": _OBJECT}}
POINT = {
    "type": "array",
    "minItems": 2,
    "maxItems": 2,
    "prefixItems": [{"type": "number"}, {"type": "object"}],
    "description": "[ms_epoch, {fields}]: one line of data.jsonl",
}
METRICS_BODY = {
    "type": "object",
    "required": ["series"],
    "properties": {
        "series": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "start_index", "points"],
                "properties": {"name": {"type": "string"}, "start_index": _INDEX, "points": {"type": "array", "items": POINT}},
            },
        }
    },
}
RECORDS_BODY = {
    "type": "object",
    "required": ["start_index", "records"],
    "properties": {"start_index": _INDEX, "records": {"type": "array", "items": _OBJECT}},
}


def _error(status: int, detail: str) -> JSONOut:
    return JSONOut({"detail": detail}, status_code=status)


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{item.get('loc', ['?'])[0]} parameter {where!r}: {item.get('msg')}")
    return "; ".join(parts) or "invalid request"


async def _json(request: Request) -> Any:
    body = await request.body()
    if not body.strip():
        raise StoreError("the request body is empty; send a JSON object")
    # NUL (\u0000) is fine here: the store refuses it only where it cannot keep it
    # (documents, names), by the same rules as the local API.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise StoreError(f"the request body is not valid JSON: {error}") from None


def _object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise StoreError(f"the request body must be a JSON object, not {type(value).__name__}")
    return value


def _text(value: Optional[str], what: str) -> Optional[str]:
    if value is not None and any(ord(c) < 32 for c in value):
        raise StoreError(f"{what} must not contain control characters")
    return value


def create_app(store: Store, *, auth: str = "auto", max_body: int = MAX_BODY, ui: bool = True) -> FastAPI:
    """The API (and the dashboard, when mldash.ui.app provides create_app)."""
    from .. import __version__

    app = FastAPI(
        title="mldash server",
        version=__version__,
        description="Experiment tracking team server: experiments, parameters, metrics, logs, console, checkpoints, files.",
        default_response_class=JSONOut,
    )
    app.state.store = store
    authenticator = Authenticator(store, auth)
    app.state.auth = authenticator

    @app.exception_handler(StoreError)
    async def _store_error(_request, error: StoreError):
        if error.code:  # e.g. "collision": a 409 the client must not answer by resyncing
            extra = getattr(error, "extra", None) or {}  # e.g. where a bad filter went wrong
            return JSONOut({"detail": str(error), "code": error.code, **extra}, status_code=error.status)
        return _error(error.status, str(error))

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request, error):
        response = _error(401, str(error))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(_request, error):
        return _error(403, str(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, error: RequestValidationError):
        return _error(422, _describe_validation(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, error: StarletteHTTPException):
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, error: Exception):  # a bug, not bad input: keep the details in the log
        log.exception("error serving %s %s", request.method, request.url.path)
        return _error(500, f"internal server error ({type(error).__name__}); see the server log")

    def caller(request: Request) -> Scope:
        return authenticator.scope(request.headers.get("authorization"))

    def for_experiment(scope: Scope, exp_id: int, action: str) -> None:
        """404 unless the caller may read the experiment, worded as for a missing id (so
        ids cannot be probed); 403 only when it may read it but not ``action`` it."""
        if scope is OPEN:
            return
        namespace = store.experiment_namespace(exp_id)  # NotFound for a missing id
        if not scope.can("read", namespace):
            raise NotFound(f"no experiment with id {exp_id}")
        require(scope, action, namespace)

    def readable(scope: Scope, namespace: Optional[str]) -> Optional[list[str]]:
        """The namespaces a listing covers: the one asked for, else all readable ones."""
        if namespace is not None:
            namespace = check_namespace(namespace)
            require(scope, "read", namespace)
            return [namespace]
        return scope.readable()

    ExpId = Path(..., ge=1, le=MAX_ID, description="the id returned by POST /experiments")

    @app.get(f"{API}/health")
    def health() -> dict:
        return {"ok": True, "version": __version__, "auth": authenticator.enabled()}

    @app.post(f"{API}/experiments", openapi_extra=_body(EXPERIMENT_BODY))
    async def upsert_experiment(request: Request, scope: Scope = Depends(caller)):
        body = _object(await _json(request))
        namespace = check_namespace(body.get("namespace"))
        require(scope, "write", namespace)
        return await run_in_threadpool(store.upsert_experiment, namespace, body.get("prefix"), body.get("meta"))

    @app.get(f"{API}/experiments")
    def list_experiments(
        namespace: Optional[str] = None,
        project: Optional[str] = Query(None, max_length=200),
        status: Optional[str] = Query(None, description=" | ".join(STATUSES)),
        q: Optional[str] = Query(None, max_length=1000, description="substring of the prefix"),
        limit: int = Query(100, ge=0, le=10_000),
        offset: int = Query(0, ge=0, le=MAX_INDEX),
        filter: Optional[str] = Query(
            None, max_length=100_000,
            description="the filter language (docs/analysis.md), e.g. params.lr < 1e-3 and status = COMPLETED; "
            "a bad one is a 400 with code bad_filter, the caret in detail, and position/line/column",
        ),
        scope: Scope = Depends(caller),
    ):
        if status is not None and status not in STATUSES:
            raise StoreError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        listed = store.list_experiments(
            readable(scope, namespace), _text(project, "project"), status, _text(q, "q"), limit, offset, filter
        )
        return JSONOut(listed)  # a Response: no jsonable_encoder walk over thousands of rows

    @app.get(f"{API}/experiments/keys")
    def filter_keys(namespace: Optional[str] = None, project: Optional[str] = Query(None, max_length=200), scope: Scope = Depends(caller)):
        """The keys a filter can use over the experiments the caller may read (completion)."""
        return store.filter_keys(readable(scope, namespace), _text(project, "project"))

    @app.get(f"{API}/experiments/lookup")
    def lookup(namespace: Optional[str] = None, prefix: str = Query(..., max_length=1000), scope: Scope = Depends(caller)):
        namespace = check_namespace(namespace)
        require(scope, "read", namespace)
        try:
            split_path(prefix, "prefix")
        except (TypeError, ValueError) as error:
            raise StoreError(str(error)) from None
        return store.lookup(namespace, prefix)

    @app.get(f"{API}/experiments/{{exp_id}}")
    def get_experiment(exp_id: int = ExpId, scope: Scope = Depends(caller)):
        for_experiment(scope, exp_id, "read")
        return store.get_experiment(exp_id)

    @app.patch(f"{API}/experiments/{{exp_id}}", openapi_extra=_body(PATCH_BODY))
    async def patch_experiment(request: Request, exp_id: int = ExpId, scope: Scope = Depends(caller)):
        body = _object(await _json(request))
        await run_in_threadpool(for_experiment, scope, exp_id, "write")
        if "meta" not in body:
            raise StoreError("the body must be {\"meta\": {...}}")
        return await run_in_threadpool(store.patch_experiment, exp_id, body["meta"])

    @app.put(f"{API}/experiments/{{exp_id}}/documents/{{kind}}", openapi_extra=_body(_OBJECT))
    async def put_document(request: Request, exp_id: int = ExpId, kind: str = Path(..., pattern="^(parameters|summary)$"), scope: Scope = Depends(caller)):
        body = await _json(request)
        await run_in_threadpool(for_experiment, scope, exp_id, "write")
        return await run_in_threadpool(store.set_document, exp_id, kind, body)

    @app.get(f"{API}/experiments/{{exp_id}}/documents/{{kind}}")
    def get_document(exp_id: int = ExpId, kind: str = Path(..., pattern="^(parameters|summary)$"), scope: Scope = Depends(caller)):
        for_experiment(scope, exp_id, "read")
        return store.get_document(exp_id, kind)

    async def caller_async(request: Request) -> Scope:
        """``caller`` without a thread hop when the token (or open mode) is cached."""
        header = request.headers.get("authorization")
        scope = authenticator.cached_scope(header)
        return scope if scope is not None else await run_in_threadpool(authenticator.scope, header)

    # The ingest hot path: one thread hop (the store's transaction), no sync
    # dependency (each costs another hop), no jsonable_encoder on the answer.
    @app.post(f"{API}/experiments/{{exp_id}}/metrics", openapi_extra=_body(METRICS_BODY))
    async def append_metrics(request: Request, exp_id: int = ExpId):
        scope = await caller_async(request)
        body = _object(await _json(request))
        if scope is not OPEN:
            await run_in_threadpool(for_experiment, scope, exp_id, "write")
        result = await run_in_threadpool(store.append_metrics, exp_id, body.get("series"))
        return Response(orjson.dumps(result), media_type="application/json")

    @app.get(f"{API}/experiments/{{exp_id}}/metrics")
    def metric_totals(exp_id: int = ExpId, scope: Scope = Depends(caller)):
        for_experiment(scope, exp_id, "read")
        return {"metrics": store.metric_totals(exp_id)}

    @app.get(f"{API}/experiments/{{exp_id}}/metrics/read")
    def read_metric(
        exp_id: int = ExpId,
        name: str = Query(..., max_length=1000),
        start_index: int = Query(0, ge=0, le=MAX_INDEX),
        limit: int = Query(1000, ge=0, le=100_000),
        scope: Scope = Depends(caller),
    ):
        try:
            metric_parts(name)
        except (TypeError, ValueError) as error:
            raise StoreError(str(error)) from None
        for_experiment(scope, exp_id, "read")
        return Response(store.read_metric_json(exp_id, name, start_index, limit), media_type="application/json")

    def add_records_append(kind: str, append) -> None:
        """POST /experiments/{id}/<kind>: records at a start index (logs, console, checkpoints)."""

        async def append_records(request: Request, exp_id: int = ExpId, scope: Scope = Depends(caller)):
            body = _object(await _json(request))
            await run_in_threadpool(for_experiment, scope, exp_id, "write")
            return await run_in_threadpool(append, exp_id, body.get("start_index"), body.get("records"))

        app.post(f"{API}/experiments/{{exp_id}}/{kind}", openapi_extra=_body(RECORDS_BODY),
                 name=f"append_{kind}")(append_records)

    for kind, append in (("logs", store.append_logs), ("console", store.append_console),
                         ("checkpoints", store.append_checkpoints)):
        add_records_append(kind, append)

    @app.get(f"{API}/experiments/{{exp_id}}/logs")
    def read_logs(
        exp_id: int = ExpId,
        start_index: int = Query(0, ge=0, le=MAX_INDEX),
        limit: int = Query(1000, ge=0, le=100_000),
        level: Optional[str] = Query(None, description="this level or above: " + " | ".join(LEVELS)),
        since: Optional[float] = Query(None, allow_inf_nan=False, description="epoch seconds"),
        until: Optional[float] = Query(None, allow_inf_nan=False, description="epoch seconds"),
        scope: Scope = Depends(caller),
    ):
        for_experiment(scope, exp_id, "read")
        return store.read_logs(exp_id, start_index, limit, level, since, until)

    @app.get(f"{API}/experiments/{{exp_id}}/console")
    def read_console(
        exp_id: int = ExpId,
        start_index: int = Query(0, ge=0, le=MAX_INDEX),
        limit: int = Query(1000, ge=0, le=100_000),
        scope: Scope = Depends(caller),
    ):
        for_experiment(scope, exp_id, "read")
        return store.read_console(exp_id, start_index, limit)

    @app.get(f"{API}/experiments/{{exp_id}}/progress")
    def progress(exp_id: int = ExpId, scope: Scope = Depends(caller)):
        for_experiment(scope, exp_id, "read")
        return store.progress(exp_id)

    from ._file_routes import add_file_routes

    add_file_routes(app, store, caller=caller, for_experiment=for_experiment, read_json=_json, records_body=RECORDS_BODY)

    @app.get(f"{API}/projects")
    def projects(namespace: Optional[str] = None, scope: Scope = Depends(caller)):
        return {"projects": store.projects(readable(scope, namespace))}

    if max_body:
        app.add_middleware(BodyMiddleware, max_bytes=max_body)
    app.add_middleware(NoStore)  # outermost: BodyMiddleware's refusals get it too
    if ui:
        mount_dashboard(app, store, authenticator)
    return app


def mount_dashboard(app: FastAPI, store: Store, authenticator: Authenticator | None = None) -> bool:
    """Serve the dashboard at /ui/ (and redirect / there) when mldash.ui.app exists.

    The dashboard gets a ``ServerSource`` over this store and an auth hook that
    checks the same tokens as the API; each request then sees only the
    namespaces its token may read.
    """
    try:
        from ..ui.app import create_app as create_ui
    except ImportError:
        return False
    from starlette.exceptions import HTTPException
    from starlette.responses import RedirectResponse

    from .ui_source import ServerSource

    async def check(request: Request):
        if authenticator is None:
            return OPEN
        header = request.headers.get("authorization")
        try:
            scope = authenticator.cached_scope(header)  # no database query, no thread hop
            return scope if scope is not None else await run_in_threadpool(authenticator.scope, header)
        except Unauthorized as error:
            raise HTTPException(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from None

    app.mount("/ui", create_ui(ServerSource(store), auth=check, title="mldash server"))

    @app.get("/", include_in_schema=False)
    def _root():
        return RedirectResponse("/ui/")

    return True


class NoStore:
    """``Cache-Control: no-store`` and ``Vary: Authorization`` on every API answer (refusals
    too), and no ETag or Last-Modified: a shared proxy or browser cache must never keep one
    token's answer and serve it to another. Pure ASGI, so bodies stream through untouched.
    (The dashboard's ``api/`` answers carry no-store from mldash.ui.app.)"""

    _DROPPED = (b"cache-control", b"etag", b"last-modified", b"expires", b"vary")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API + "/"):
            await self.app(scope, receive, send)
            return

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._DROPPED]
                headers += [(b"cache-control", b"no-store"), (b"vary", b"Authorization")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def factory():
    """The app for uvicorn workers, configured from MLDASH_SERVER_CONFIG (JSON)."""
    config = orjson.loads(os.environ["MLDASH_SERVER_CONFIG"])
    store = Store(config["db"], config["blob"], s3_endpoint=config.get("s3_endpoint"))
    app = create_app(store, auth=config.get("auth", "auto"), ui=config.get("ui", True))
    # A 1,000-point batch parses into thousands of lists and dicts; with the
    # default thresholds the cyclic GC runs several times per request and each
    # full pass walks every module and route object. Freezing what exists at
    # start (it lives forever anyway) and collecting less often halves the cost
    # of parsing a batch; reference counting still frees everything acyclic at once.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    return app
