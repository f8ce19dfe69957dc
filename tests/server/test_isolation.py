"""Namespaces stay apart: every read and every cache answers with what the token may see.

``TOKENS`` gives each test token its scopes and ``ACCESS`` what that means in
each namespace; ``JSON_ROUTES`` and ``UI_ROUTES`` say how each read and write
is made through the JSON API (/api/v1) and the dashboard API (/ui/api) and
what its answer must hold. ``test_the_auth_matrix`` runs every (token, route,
experiment) on a real ``mldash server`` over each backend and checks the
status, that an answer holds that experiment's own data, and that a refusal
holds none. It goes through each prefix token after token, so a cache keyed by
the prefix alone would hand the second token the first one's data. The issue's
exact scenarios follow, then the dashboard's own caches in process.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from _server_support import AWS_ENV, backend  # noqa: F401 (a fresh store per test)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Scopes of the test tokens (as `mldash token create NAME --read/--write NS` takes them).
TOKENS = {
    "a": {"write": ["A"]},
    "a_read": {"read": ["A"]},
    "b": {"write": ["B"]},
    "ab": {"read": ["A", "B"]},
    "admin": {"write": ["*"]},
    "c": {"write": ["C"]},
}
# What each token may do in each namespace: "w" write (and read), "r" read, "-" nothing.
NAMESPACES = ("A", "B", "default")
ACCESS = {
    #            A    B    default
    "a":      ("w", "-", "-"),
    "a_read": ("r", "-", "-"),
    "b":      ("-", "w", "-"),
    "ab":     ("r", "r", "-"),
    "admin":  ("w", "w", "w"),
    "c":      ("-", "-", "-"),
}
# Which namespace's experiment a bare prefix (no "namespace:") opens in the dashboard:
# of those the token may read, "default" first, then the first in sort order.
BARE = {
    "shared/run":   {"a": "A", "a_read": "A", "b": "B", "ab": "A", "admin": "default", "c": None},
    "secret/model": {"a": "A", "a_read": "A", "b": None, "ab": "A", "admin": "A", "c": None},
}
T0 = 1_700_000_000_000
EMPTY_OBJECT_SHA = hashlib.sha256(b"{}").hexdigest()  # the bytes httpx sends for json={}


@dataclass
class Exp:
    namespace: str
    prefix: str
    values: list
    logs: list  # (level, message, traceback or None)
    id: int = 0

    @property
    def ref(self) -> str:
        return f"{self.namespace}:{self.prefix}"

    def messages(self) -> list:
        return [m for _, m, _ in self.logs]

    def errors(self) -> list:
        return [m for level, m, _ in self.logs if level in ("error", "fatal")]


def experiments() -> list[Exp]:
    """A's and B's shared/run (and default's), and A's secret/model; every string carries its ref."""
    def logs(ref, *levels):
        return [(lv, f"{ref} {lv} {k}", f"{ref} traceback {k}" if lv == "error" else None) for k, lv in enumerate(levels)]

    return [
        Exp("A", "shared/run", [1.0, 2.0, 3.0], logs("A:shared/run", "info", "error")),
        Exp("B", "shared/run", [100.0, 200.0, 300.0, 400.0], logs("B:shared/run", "info", "info", "info")),
        Exp("default", "shared/run", [50.0], logs("default:shared/run", "warn")),
        Exp("A", "secret/model", [7.0, 8.0, 9.0], logs("A:secret/model", "error")),
    ]


def create_tokens(backend, monkeypatch) -> dict:
    """The TOKENS, created straight in the backend's store (as `mldash token create` does)."""
    from mldash.server.auth import create_token
    from mldash.server.cli import resolve_storage
    from mldash.server.storage import Store

    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    db, blob = resolve_storage(str(backend.data), backend.db, backend.blob)
    store = Store(db, blob, s3_endpoint=backend.s3_endpoint)
    try:
        return {name: create_token(store, name, **scopes)[1] for name, scopes in TOKENS.items()}
    finally:
        store.close()


class Caller:
    """httpx on one server, as one token. Every API answer that a shared cache could keep
    (no ``Cache-Control: no-store``, or an ETag) is noted in ``cacheable``."""

    def __init__(self, url: str, secret: str | None) -> None:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)
        self.cacheable: list[str] = []

    def __call__(self, method: str, path: str, **kw) -> httpx.Response:
        response = self.http.request(method, path, **kw)
        if path.startswith(("/api/", "/ui/api/")):
            headers = response.headers
            if "no-store" not in headers.get("cache-control", "") or "etag" in headers or "last-modified" in headers:
                self.cacheable.append(f"{method} {path} -> {response.status_code} {dict(headers)}")
        return response


def cacheable(callers: dict) -> list[str]:
    """What any caller got that a shared proxy could have kept (and served to another token)."""
    return [f"may be cached: {line}" for caller in callers.values() for line in caller.cacheable]


def seed(admin: Caller, exp: Exp) -> Exp:
    ref = exp.ref
    got = admin("POST", "/api/v1/experiments", json={"namespace": exp.namespace, "prefix": exp.prefix, "meta": {"description": ref}})
    assert got.status_code == 200, got.text
    exp.id = got.json()["id"]
    points = [[T0 + i, {"value": v, "step": i}] for i, v in enumerate(exp.values)]
    assert admin("POST", f"/api/v1/experiments/{exp.id}/metrics", json={"series": [{"name": "loss", "start_index": 0, "points": points}]}).status_code == 200
    records = [{"level": lv, "message": m, "timestamp": 1.0 + k, **({"metadata": {"traceback": tb}} if tb else {})}
               for k, (lv, m, tb) in enumerate(exp.logs)]
    assert admin("POST", f"/api/v1/experiments/{exp.id}/logs", json={"start_index": 0, "records": records}).status_code == 200
    for kind in ("parameters", "summary"):
        assert admin("PUT", f"/api/v1/experiments/{exp.id}/documents/{kind}", json={"owner": ref}).status_code == 200
    content = orjson.dumps({"owner": ref})  # the file's bytes name their experiment, so a leak shows
    checksum = hashlib.sha256(content).hexdigest()
    put = admin("PUT", f"/api/v1/experiments/{exp.id}/blobs/{checksum}",
                params={"upload": f"seed-{exp.id}-upload", "offset": 0, "size": len(content)}, content=content)
    assert put.status_code == 200 and put.json()["present"], put.text
    record = {"op": "save", "id": "f1", "experimentId": ref, "path": "/", "filename": "owner.json", "tags": [],
              "bindrs": [], "contentType": "application/json", "sizeBytes": len(content), "checksum": checksum,
              "uploadedAt": "2026-01-01T00:00:00Z", "timestamp": time.time()}
    assert admin("POST", f"/api/v1/experiments/{exp.id}/files", json={"start_index": 0, "records": [record]}).status_code == 200
    return exp


@pytest.fixture
def world(backend, monkeypatch):
    """A fresh server on ``backend`` with the TOKENS and the four experiments; nothing read yet."""
    secrets = create_tokens(backend, monkeypatch)
    server = backend.start_server()
    callers = {name: Caller(server.url, secret) for name, secret in secrets.items()}
    callers[None] = Caller(server.url, None)
    exps = [seed(callers["admin"], exp) for exp in experiments()]
    yield callers, exps
    for caller in callers.values():
        caller.http.close()


def access(token: str | None, namespace: str) -> str:
    if token is None:
        return "none"
    return {"w": "write", "r": "read", "-": "-"}[ACCESS[token][NAMESPACES.index(namespace)]]


# -- the JSON API: (name, needs, method, path, body, check(answer, exp)) ------------------------
# needs: "read"/"write" on the experiment's id (404 when it may not read, as for a missing id;
# 403 when it may read but not write), or "ns-read"/"ns-write" on the namespace (403).
JSON_ROUTES = [
    ("get experiment", "read", "GET", "/experiments/{id}", None,
     lambda r, e: r["namespace"] == e.namespace and r["prefix"] == e.prefix and r["description"] == e.ref),
    ("parameters", "read", "GET", "/experiments/{id}/documents/parameters", None, lambda r, e: r == {"owner": e.ref}),
    ("summary", "read", "GET", "/experiments/{id}/documents/summary", None, lambda r, e: r == {"owner": e.ref}),
    ("metric totals", "read", "GET", "/experiments/{id}/metrics", None,
     lambda r, e: r["metrics"]["loss"]["total"] == len(e.values) and r["metrics"]["loss"]["last"]["data"]["value"] == e.values[-1]),
    ("read metric", "read", "GET", "/experiments/{id}/metrics/read?name=loss", None,
     lambda r, e: [p["data"]["value"] for p in r["data"]] == e.values),
    ("read logs", "read", "GET", "/experiments/{id}/logs", None, lambda r, e: [x["message"] for x in r["data"]] == e.messages()),
    ("progress", "read", "GET", "/experiments/{id}/progress", None,
     lambda r, e: r["metrics"] == {"loss": len(e.values)} and r["logs"] == len(e.logs)),
    ("lookup", "ns-read", "GET", "/experiments/lookup?namespace={ns}&prefix={prefix}", None, lambda r, e: r["id"] == e.id),
    # Writes that change nothing, so that the table can run in any order.
    ("patch", "write", "PATCH", "/experiments/{id}", {"meta": {}}, lambda r, e: r["id"] == e.id),
    ("put parameters", "write", "PUT", "/experiments/{id}/documents/parameters", {}, lambda r, e: r == {"owner": e.ref}),
    ("append metrics", "write", "POST", "/experiments/{id}/metrics", {"series": []}, lambda r, e: r["accepted"] == 0),
    ("append logs", "write", "POST", "/experiments/{id}/logs", {"start_index": 0, "records": []}, lambda r, e: r["accepted"] == 0),
    ("append checkpoints", "write", "POST", "/experiments/{id}/checkpoints", {"start_index": 0, "records": []},
     lambda r, e: r["accepted"] == 0),
    ("upsert", "ns-write", "POST", "/experiments", "upsert", lambda r, e: r["id"] == e.id),
    # Saved files (issue 15): the listing, a record, the bytes; and the upload's steps.
    ("list files", "read", "GET", "/experiments/{id}/files", None,
     lambda r, e: [f["experimentId"] for f in r["files"]] == [e.ref] and r["total"] == 1),
    ("file record", "read", "GET", "/experiments/{id}/files/f1/record", None, lambda r, e: r["experimentId"] == e.ref),
    ("file bytes", "read", "GET", "/experiments/{id}/files/f1", None, lambda r, e: r == {"owner": e.ref}),
    ("file bytes inline", "read", "GET", "/experiments/{id}/files/f1?inline=true", None, lambda r, e: r == {"owner": e.ref}),
    ("append files", "write", "POST", "/experiments/{id}/files", {"start_index": 0, "records": []},
     lambda r, e: r["accepted"] == 0),
    ("missing blobs", "write", "POST", "/experiments/{id}/blobs/missing", {"sha256": []}, lambda r, e: r == {"missing": []}),
    ("blob status", "write", "GET", "/experiments/{id}/blobs/" + EMPTY_OBJECT_SHA, None, lambda r, e: "present" in r),
    ("upload blob", "write", "PUT", "/experiments/{id}/blobs/" + EMPTY_OBJECT_SHA + "?upload=isolation-test&offset=0&size=2",
     {}, lambda r, e: r["present"] is True),
]


def json_expected(needs: str, level: str) -> int:
    if level == "none":
        return 401
    may_read, may_write = level in ("read", "write"), level == "write"
    if needs == "read":
        return 200 if may_read else 404
    if needs == "write":
        return 200 if may_write else 403 if may_read else 404
    if needs == "ns-read":
        return 200 if may_read else 403
    return 200 if may_write else 403


# -- the dashboard API: (name, path, parameters besides the prefix, check(answer, exp)) ----------
UI_ROUTES = [
    ("experiment", "/ui/api/experiment", {},
     lambda r, e: (r["namespace"], r["prefix"], r["params"], r["metric_names"], [x["message"] for x in r["errors"]],
                   [x["metadata"]["traceback"] for x in r["errors"]], r["log_total"])
     == (e.namespace, e.prefix, {"owner": e.ref}, ["loss"], e.errors(),
         [tb for lv, _, tb in e.logs if lv == "error"], len(e.logs))),
    ("series", "/ui/api/series", {"name": "loss", "width": 100}, lambda r, e: r["points"]["value"] == e.values),
    ("metric", "/ui/api/metric", {"name": "loss"}, lambda r, e: [p["data"]["value"] for p in r["data"]] == e.values),
    ("logs", "/ui/api/logs", {}, lambda r, e: [x["message"] for x in r["data"]] == e.messages() and r["total"] == len(e.logs)),
    ("error logs", "/ui/api/logs", {"level": "error"}, lambda r, e: [x["message"] for x in r["data"]] == e.errors()),
    ("console", "/ui/api/console", {}, lambda r, e: r["data"] == [] and r["total"] == 0),
]


def foreign(text: str, exp: Exp | None, exps: list[Exp]) -> list[str]:
    """The refs of other experiments that a response body mentions (their data leaked)."""
    return [o.ref for o in exps if o is not exp and o.ref in text]


def test_the_auth_matrix(world):
    callers, exps = world
    failures = []

    def expect(what, response, status, check=None, exp=None, listing=False):
        if response.status_code != status:
            failures.append(f"{what}: {response.status_code} (expected {status}) {response.text[:200]}")
        elif status == 200 and check is not None:
            try:
                ok = check(response.json(), exp)
            except (KeyError, TypeError, IndexError) as error:
                ok = f"{type(error).__name__}: {error}"
            if ok is not True:
                failures.append(f"{what}: wrong contents ({ok}) {response.text[:300]}")
        leaked = [] if listing else foreign(response.text, exp if status == 200 else None, exps)
        if leaked:
            failures.append(f"{what}: mentions {leaked}")

    missing_id = max(e.id for e in exps) + 1000
    for name, needs, method, path, body, check in JSON_ROUTES:
        for exp in exps:
            for token in callers:
                level = access(token, exp.namespace)
                url = "/api/v1" + path.format(id=exp.id, ns=exp.namespace, prefix=exp.prefix)
                kw = {} if body is None else {"json": {"namespace": exp.namespace, "prefix": exp.prefix} if body == "upsert" else body}
                response = callers[token](method, url, **kw)
                status = json_expected(needs, level)
                what = f"JSON {name} {exp.ref} as {token}"
                expect(what, response, status, check, exp)
                if status == 404 == response.status_code:  # exactly what a missing id gets
                    gone = callers[token](method, "/api/v1" + path.format(id=missing_id, ns="x", prefix="x"), **kw)
                    if (gone.status_code, gone.json()["detail"].replace(str(missing_id), "N")) != (
                        404, response.json()["detail"].replace(str(exp.id), "N")
                    ):
                        failures.append(f"{what}: 404 {response.text} differs from a missing id's {gone.status_code} {gone.text}")

    for name, path, extra, check in UI_ROUTES:
        for prefix, resolves in BARE.items():
            for token in callers:
                # A bare prefix first (what the page links from a typed address), then each namespace's.
                want = resolves.get(token) if token else None
                exp = next((e for e in exps if e.namespace == want and e.prefix == prefix), None)
                response = callers[token]("GET", path, params={**extra, "prefix": prefix})
                status = 401 if token is None else 200 if exp else 404
                expect(f"UI {name} {prefix!r} as {token}", response, status, check, exp)
                for exp in (e for e in exps if e.prefix == prefix):
                    level = access(token, exp.namespace)
                    response = callers[token]("GET", path, params={**extra, "prefix": exp.ref})
                    status = 401 if level == "none" else 200 if level != "-" else 404
                    expect(f"UI {name} {exp.ref!r} as {token}", response, status, check, exp)
                    if status == 404 == response.status_code:  # exactly what a missing prefix in that namespace gets
                        gone = callers[token]("GET", path, params={**extra, "prefix": f"{exp.namespace}:no/{exp.prefix}"})
                        if (gone.status_code, gone.text.replace("no/", "")) != (404, response.text):
                            failures.append(f"UI {name} {exp.ref} as {token}: 404 {response.text} differs from {gone.text}")

    # Listings: exactly the readable experiments; each dashboard row's ref opens that row.
    for token, caller in callers.items():
        readable = {(e.namespace, e.prefix) for e in exps if access(token, e.namespace) in ("read", "write")}
        status = 401 if token is None else 200
        listed = caller("GET", "/api/v1/experiments")
        expect(f"JSON list as {token}", listed, status, listing=True)
        board = caller("GET", "/ui/api/experiments")
        expect(f"UI list as {token}", board, status, listing=True)
        projects = caller("GET", "/api/v1/projects")
        expect(f"JSON projects as {token}", projects, status, listing=True)
        if status != 200:
            continue
        if {(e["namespace"], e["prefix"]) for e in listed.json()["experiments"]} != readable:
            failures.append(f"JSON list as {token}: {listed.text[:300]}")
        if {p["namespace"] for p in projects.json()["projects"]} != {ns for ns, _ in readable}:
            failures.append(f"JSON projects as {token}: {projects.text[:300]}")
        rows = board.json()["experiments"]
        if {(r["namespace"], r["prefix"]) for r in rows} != readable:
            failures.append(f"UI list as {token}: {board.text[:300]}")
        for row in rows:
            if row.get("ref") != f"{row['namespace']}:{row['prefix']}":
                failures.append(f"UI list as {token}: row {row['namespace']}:{row['prefix']} has ref {row.get('ref')!r}")
                continue
            opened = caller("GET", "/ui/api/experiment", params={"prefix": row["ref"]}).json()
            if (opened.get("namespace"), opened.get("prefix"), opened.get("ref")) != (row["namespace"], row["prefix"], row["ref"]):
                failures.append(f"UI list as {token}: {row['ref']} opens {opened.get('namespace')}:{opened.get('prefix')}")

    # Filtered listings run inside the token's namespaces: a filter that names another
    # namespace's experiment (its params, meta or metrics) finds nothing, total 0.
    for token, caller in callers.items():
        status = 401 if token is None else 200
        readable = {(e.namespace, e.prefix) for e in exps if access(token, e.namespace) in ("read", "write")}
        for exp in exps:
            want = [(exp.namespace, exp.prefix)] if (exp.namespace, exp.prefix) in readable else []
            for text in (f'params.owner = "{exp.ref}"', f'description = "{exp.ref}" and metrics.loss.max = {max(exp.values)}',
                         f'summary.owner =~ "^{exp.namespace}:" and prefix = "{exp.prefix}"'):
                listed = caller("GET", "/api/v1/experiments", params={"filter": text})
                expect(f"JSON filtered list {text!r} as {token}", listed, status, listing=True)
                if status == 200 and ([(e["namespace"], e["prefix"]) for e in listed.json()["experiments"]], listed.json()["total"]) != (want, len(want)):
                    failures.append(f"JSON filtered list {text!r} as {token}: {listed.text[:300]}")
        everything = caller("GET", "/api/v1/experiments", params={"filter": 'params.owner ~ "*" or not params.owner ~ "*"'})
        expect(f"JSON filtered list of all as {token}", everything, status, listing=True)
        if status == 200 and {(e["namespace"], e["prefix"]) for e in everything.json()["experiments"]} != readable:
            failures.append(f"JSON filtered list of all as {token}: {everything.text[:300]}")
        refused = caller("GET", "/api/v1/experiments", params={"filter": "params.owner =", "namespace": "A"})
        want_status = 401 if token is None else 400 if access(token, "A") != "-" else 403
        expect(f"JSON bad filter as {token}", refused, want_status, listing=True)
        keys = caller("GET", "/api/v1/experiments/keys")
        expect(f"JSON filter keys as {token}", keys, status, listing=True)
        if status == 200 and (keys.json()["params"], keys.json()["metrics"]) != ((["owner"], ["loss"]) if readable else ([], [])):
            failures.append(f"JSON filter keys as {token}: {keys.text[:300]}")

    failures += cacheable(callers)
    assert not failures, summary(failures)


def test_filter_keys_and_filters_see_only_readable_namespaces(world):
    """Each namespace's experiments get keys and series of their own: a token's completion
    keys, and what its filters on them find, come only from namespaces it may read."""
    callers, exps = world
    admin = callers["admin"]
    for exp in exps:
        ns = exp.namespace
        assert admin("PUT", f"/api/v1/experiments/{exp.id}/documents/parameters", json={f"only_{ns}": 1}).status_code == 200
        body = {"series": [{"name": f"only/{ns}", "start_index": 0, "points": [[T0, {"value": 1}]]}]}
        assert admin("POST", f"/api/v1/experiments/{exp.id}/metrics", json=body).status_code == 200
    for token, caller in callers.items():
        if token is None:
            continue
        namespaces = sorted({e.namespace for e in exps if access(token, e.namespace) in ("read", "write")})
        got = caller("GET", "/api/v1/experiments/keys").json()
        assert got["params"] == sorted((["owner"] if namespaces else []) + [f"only_{ns}" for ns in namespaces])
        assert got["metrics"] == sorted((["loss"] if namespaces else []) + [f"only/{ns}" for ns in namespaces])
        assert set(got["keys"]) >= {f"params.only_{ns}" for ns in namespaces}
        assert not any(f"only_{ns}" in k or f"only/{ns}" in k for ns in set(NAMESPACES) - set(namespaces) for k in got["keys"])
        for ns in NAMESPACES:
            found = caller("GET", "/api/v1/experiments", params={"filter": f"params.only_{ns} = 1 or metrics.only/{ns}.last = 1"}).json()
            want = {(e.namespace, e.prefix) for e in exps if e.namespace == ns and ns in namespaces}
            assert {(e["namespace"], e["prefix"]) for e in found["experiments"]} == want and found["total"] == len(want)


def summary(failures: list[str], per_kind: int = 3) -> str:
    """The count, and a few failures of each kind (the words before the experiment)."""
    kinds: dict = {}
    for line in failures:
        kinds.setdefault(line.split(":", 1)[0].rsplit(" ", 1)[0][:40], []).append(line)
    shown = [line for lines in kinds.values() for line in lines[:per_kind]]
    return f"{len(failures)} failures, e.g.:\n" + "\n".join(shown)


def test_a_token_for_b_never_gets_what_the_dashboard_served_a_on_the_same_prefix(world):
    """The issue's case: A and B both hold shared/run; A's token opens it first, then B's."""
    callers, exps = world
    a_run = next(e for e in exps if e.ref == "A:shared/run")
    b_run = next(e for e in exps if e.ref == "B:shared/run")
    for name in ("a", "b"):
        series = callers[name]("GET", "/ui/api/series", params={"prefix": "shared/run", "name": "loss"})
        experiment = callers[name]("GET", "/ui/api/experiment", params={"prefix": "shared/run"})
        assert series.status_code == experiment.status_code == 200
        own = a_run if name == "a" else b_run
        assert series.json()["points"]["value"] == own.values
        assert [e["message"] for e in experiment.json()["errors"]] == own.errors()
        assert experiment.json()["log_total"] == len(own.logs)
    assert "A:shared/run" not in series.text + experiment.text  # B's answers: none of A's points, errors or tracebacks


def test_a_prefix_b_cannot_read_stays_unreadable_after_b_creates_its_own(world):
    """The issue's case: B gets 404 for A's secret/model, creates secret/model in B, then reads it."""
    callers, exps = world
    a, b = callers["a"], callers["b"]
    secret = next(e for e in exps if e.ref == "A:secret/model")
    assert a("GET", "/ui/api/series", params={"prefix": "secret/model", "name": "loss"}).json()["points"]["value"] == secret.values
    assert a("GET", "/ui/api/experiment", params={"prefix": "secret/model"}).json()["errors"] == [
        {"index": 0, "level": "error", "message": secret.logs[0][1], "timestamp": 1.0, "metadata": {"traceback": secret.logs[0][2]}}
    ]
    for path in ("/ui/api/experiment", "/ui/api/series", "/ui/api/logs", "/ui/api/metric"):
        refused = b("GET", path, params={"prefix": "secret/model", "name": "loss"})
        assert refused.status_code == 404 and "A:" not in refused.text

    own = b("POST", "/api/v1/experiments", json={"namespace": "B", "prefix": "secret/model"}).json()["id"]
    points = [[T0, {"value": 0.5, "step": 0}]]
    assert b("POST", f"/api/v1/experiments/{own}/metrics", json={"series": [{"name": "loss", "start_index": 0, "points": points}]}).status_code == 200
    records = [{"level": "info", "message": f"B's own {k}", "timestamp": 1.0} for k in range(3)]
    assert b("POST", f"/api/v1/experiments/{own}/logs", json={"start_index": 0, "records": records}).status_code == 200

    series = b("GET", "/ui/api/series", params={"prefix": "secret/model", "name": "loss"})
    experiment = b("GET", "/ui/api/experiment", params={"prefix": "secret/model"})
    assert series.json()["points"]["value"] == [0.5] and series.json()["total"] == 1
    assert experiment.json()["namespace"] == "B" and experiment.json()["errors"] == [] and experiment.json()["log_total"] == 3
    logs = b("GET", "/ui/api/logs", params={"prefix": "secret/model"}).json()
    assert [r["message"] for r in logs["data"]] == [f"B's own {k}" for k in range(3)]
    for response in (series, experiment):
        assert "A:secret/model" not in response.text
    # A still sees its own.
    assert a("GET", "/ui/api/series", params={"prefix": "secret/model", "name": "loss"}).json()["points"]["value"] == secret.values
    # And the JSON API answers B for A's id as for a missing one.
    assert b("GET", f"/api/v1/experiments/{secret.id}").status_code == 404


def test_no_answer_with_data_may_be_kept_by_a_shared_cache(world):
    """Every API answer, refusals too, says Cache-Control: no-store and carries no ETag."""
    callers, exps = world
    for caller in callers.values():
        caller.cacheable.clear()  # the seeding's answers are checked by test_the_auth_matrix
    exp = exps[0]
    for token in ("a", "b", None):
        for path in ("/api/v1/experiments", f"/api/v1/experiments/{exp.id}", f"/api/v1/experiments/{exp.id}/metrics/read?name=loss",
                     "/api/v1/projects", "/api/v1/experiments/99999", "/ui/api/experiments", "/ui/api/experiment?prefix=shared/run",
                     "/ui/api/series?prefix=shared/run&name=loss", "/ui/api/experiment?prefix=nope/nope"):
            callers[token]("GET", path)
    static = callers[None]("GET", "/ui/static/js/app.js")  # no data in it: open, and cacheable
    assert static.status_code == 200
    assert cacheable(callers) == []


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_the_page_links_each_row_to_its_own_namespace(world):
    """Two namespaces hold shared/run: each row of the list opens its own, not the one a bare
    prefix would (the page links to the row's ref)."""
    from _ui_support import CHROMIUM, launch_chromium

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    playwright = pytest.importorskip("playwright.sync_api")
    callers, _ = world
    url = str(callers["ab"].http.base_url).rstrip("/")
    secret = callers["ab"].http.headers["authorization"].split(" ", 1)[1]
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{url}/ui/?token={secret}")
            page.wait_for_selector("#main[data-loaded] #runs tbody tr[data-prefix]")
            refs = page.eval_on_selector_all("#runs tbody tr[data-prefix='shared/run']", "rows => rows.map(r => r.dataset.ref)")
            assert sorted(refs) == ["A:shared/run", "B:shared/run"]
            for ref in ("B:shared/run", "A:shared/run"):
                page.click(f"#runs tr[data-ref='{ref}'] td.name a")
                page.wait_for_selector("p.description")
                assert page.inner_text("p.description") == ref
                page.go_back()
                page.wait_for_selector(f"#runs tr[data-ref='{ref}']")
        finally:
            browser.close()


# -- the dashboard's own caches, in process -------------------------------------------------


class PerCaller:
    """A DataSource without ``resolve`` that shows each caller its own run under one prefix
    (as a multi-tenant source might): the app must not share what it keeps between them."""

    def __init__(self) -> None:
        from mldash.ui.app import current_principal

        self.who = current_principal.get

    def _run(self, prefix):
        if prefix != "p/run":
            raise KeyError(prefix)
        return self.who()

    def list_experiments(self, project=None):
        return [{"prefix": "p/run", "owner": self.who()}]

    def get_experiment(self, prefix):
        return {"prefix": prefix, "owner": self._run(prefix)}

    def metric_names(self, prefix):
        self._run(prefix)
        return ["loss"]

    def read_metric(self, prefix, name, start_index=0, limit=1000):
        who = self._run(prefix)
        values = {"alice": [1.0, 2.0], "bob": [5.0]}[who]
        data = [{"index": i, "timestamp": 1.0, "data": {"value": v}} for i, v in enumerate(values)][start_index : start_index + limit]
        return {"data": data, "start_index": start_index, "end_index": start_index + len(data) - 1, "total": len(values), "has_more": False}

    def read_logs(self, prefix, start_index=0, limit=1000, level=None):
        who = self._run(prefix)
        records = [{"index": 0, "level": "error", "message": f"{who}'s secret", "timestamp": 1.0}]
        if who == "bob":
            records += [{"index": i, "level": "info", "message": "fine", "timestamp": 1.0} for i in (1, 2)]
        kept = [r for r in records if r["index"] >= start_index and (level is None or r["level"] == "error")]
        return {"data": kept[:limit], "start_index": start_index, "end_index": -1, "total": len(records), "has_more": False}


def test_the_dashboard_keys_what_it_keeps_by_the_caller_for_a_source_without_resolve():
    from mldash.ui.app import create_app

    def auth(request):
        return {"Bearer alice": "alice", "Bearer bob": "bob"}.get(request.headers.get("authorization"), False)

    client = TestClient(create_app(PerCaller(), auth=auth))
    for who, values in (("alice", [1.0, 2.0]), ("bob", [5.0])):
        headers = {"authorization": f"Bearer {who}"}
        series = client.get("/api/series", params={"prefix": "p/run", "name": "loss"}, headers=headers).json()
        assert series["points"]["value"] == values
        errors = client.get("/api/experiment", params={"prefix": "p/run"}, headers=headers).json()["errors"]
        assert [e["message"] for e in errors] == [f"{who}'s secret"]


def test_the_disk_column_cache_ignores_files_others_could_have_written(tmp_path):
    """A cache folder shared with others (say $MLDASH_UI_CACHE=/tmp/...) must not feed us forged columns."""
    from mldash.ui.colcache import ColumnCache
    from mldash.ui.loading import parse_into_cache

    data = tmp_path / "metrics" / "loss" / "data.jsonl"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"".join(b'[%d,{"value":%d}]\n' % (T0 + i, i) for i in range(1000)))
    folder = tmp_path / "cache"
    parse_into_cache(str(data), str(folder))
    cache = ColumnCache(folder)
    assert cache.load(str(data)) is not None
    (cached,) = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
    os.chmod(cached, 0o666)  # anyone could have written it
    assert cache.load(str(data)) is None
    os.chmod(cached, 0o600)
    assert cache.load(str(data)) is not None
    os.chmod(os.path.dirname(cached), 0o777)  # anyone could have replaced it
    assert cache.load(str(data)) is None
    os.chmod(os.path.dirname(cached), 0o700)
    assert cache.load(str(data)) is not None
    for path in (folder, os.path.dirname(cached)):  # the folders it made are ours alone
        assert os.stat(path).st_mode & 0o077 == 0
