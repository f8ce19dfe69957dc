"""Security: open only on loopback, tokens from the CLI stored hashed, scoped to namespaces."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from _server_support import Backend, free_port, mldash_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def embedded(tmp_path):
    b = Backend("embedded", None, None, tmp_path / "server-data", None)
    yield b
    b.stop()


def create_token(backend, *args) -> str:
    result = backend.cli("token", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_loopback_server_without_tokens_is_open(embedded):
    server = embedded.start_server()
    with httpx.Client(base_url=server.url + "/api/v1") as api:
        assert api.get("/health").json()["auth"] is False
        assert api.post("/experiments", json={"prefix": "p/r"}).status_code == 200


def test_tokens_are_required_and_scoped_once_one_exists(embedded):
    writer = create_token(embedded, "team-a-writer", "--write", "team-a")
    reader = create_token(embedded, "reader", "--read", "team-a", "--read", "team-b")
    admin = create_token(embedded, "admin", "--write", "*")
    server = embedded.start_server()

    def call(method, path, token=None, headers=None, **kw):
        headers = headers or ({"Authorization": f"Bearer {token}"} if token else {})
        return httpx.request(method, server.url + "/api/v1" + path, headers=headers, **kw)

    assert call("GET", "/experiments").status_code == 401
    assert call("GET", "/experiments", "mldash_wrong").status_code == 401
    assert call("GET", "/experiments", headers={"Authorization": "Basic abc"}).status_code == 401
    missing = call("POST", "/experiments", json={"prefix": "p/r", "namespace": "team-a"})
    assert missing.status_code == 401 and "token" in missing.json()["detail"]

    exp = call("POST", "/experiments", writer, json={"prefix": "p/r", "namespace": "team-a"})
    assert exp.status_code == 200
    exp_id = exp.json()["id"]
    points = {"series": [{"name": "loss", "start_index": 0, "points": [[1, {"value": 1.0}]]}]}
    assert call("POST", f"/experiments/{exp_id}/metrics", writer, json=points).status_code == 200
    # Outside its namespaces, or writing with a read-only token: 403.
    forbidden = call("POST", "/experiments", writer, json={"prefix": "p/r", "namespace": "team-b"})
    assert forbidden.status_code == 403 and "team-b" in forbidden.json()["detail"]
    assert call("POST", f"/experiments/{exp_id}/metrics", reader, json=points).status_code == 403
    assert call("PATCH", f"/experiments/{exp_id}", reader, json={"meta": {"status": "FAILED"}}).status_code == 403
    # Reading: the read token may, and write implies read.
    assert call("GET", f"/experiments/{exp_id}/metrics/read", reader, params={"name": "loss"}).json()["total"] == 1
    assert call("GET", f"/experiments/{exp_id}", writer).status_code == 200
    # The console is scoped as the logs are: a read token reads it, a write token writes it.
    lines = {"start_index": 0, "records": [{"timestamp": 1.0, "stream": "stdout", "text": "hi"}]}
    assert call("POST", f"/experiments/{exp_id}/console", reader, json=lines).status_code == 403
    assert call("POST", f"/experiments/{exp_id}/console", writer, json=lines).json() == {"accepted": 1, "total": 1}
    assert call("GET", f"/experiments/{exp_id}/console", reader).json()["data"] == [
        {"index": 0, "timestamp": 1.0, "stream": "stdout", "text": "hi"}]
    # A listing covers only the namespaces the token can read.
    call("POST", "/experiments", admin, json={"prefix": "p/other", "namespace": "team-c"})
    assert [e["namespace"] for e in call("GET", "/experiments", reader).json()["experiments"]] == ["team-a"]
    assert sorted(e["namespace"] for e in call("GET", "/experiments", admin).json()["experiments"]) == ["team-a", "team-c"]
    assert call("GET", "/experiments", reader, params={"namespace": "team-c"}).status_code == 403
    assert call("GET", "/projects", reader).json()["projects"] == [{"namespace": "team-a", "project": "p", "experiments": 1}]
    # The dashboard checks the same tokens and shows only readable namespaces.
    assert httpx.get(server.url + "/ui/api/experiments").status_code == 401
    board = httpx.get(server.url + "/ui/api/experiments", headers={"Authorization": f"Bearer {reader}"})
    assert board.status_code == 200 and "p/r" in board.text and "p/other" not in board.text


def test_tokens_are_stored_hashed_listed_and_revocable(embedded):
    secret = create_token(embedded, "ci", "--write", "default")
    db = embedded.data / "mldash.db"
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT secret_hash FROM tokens").fetchall()
        dump = "\n".join(conn.iterdump())
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    assert secret not in dump
    listing = embedded.cli("token", "list")
    assert "ci" in listing.stdout and secret not in listing.stdout

    server = embedded.start_server()
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(server.url + "/api/v1/experiments", headers=headers).status_code == 200
    assert embedded.cli("token", "revoke", "1").returncode == 0
    assert embedded.cli("token", "revoke", "1").returncode != 0  # already revoked: says so
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/api/v1/experiments", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token kept working"
        time.sleep(0.2)


def test_a_token_needs_a_scope(embedded):
    result = embedded.cli("token", "create", "nothing")
    assert result.returncode != 0 and "namespace" in result.stderr


def test_other_addresses_refuse_to_start_without_auth(tmp_path):
    data = tmp_path / "data"
    args = [sys.executable, "-m", "mldash", "server", "--host", "0.0.0.0", "--port", str(free_port()), "--data", str(data)]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "refusing to serve 0.0.0.0 without authentication" in refused.stderr
    refused = subprocess.run(args + ["--auth", "off"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "refusing" in refused.stderr

    # With a token it starts, and checks tokens.
    assert mldash_cli("token", "create", "ops", "--write", "*", data=data).returncode == 0
    backend = Backend("embedded", None, None, data, None)
    try:
        server = backend.start_server(host="0.0.0.0")
        assert httpx.get(server.url + "/api/v1/experiments").status_code == 401
    finally:
        backend.stop()


def test_an_experiment_id_the_token_may_not_read_gets_the_same_404_as_a_missing_one(embedded):
    a = create_token(embedded, "a", "--write", "team-a")
    b = create_token(embedded, "b", "--write", "team-b")
    a_reader = create_token(embedded, "a-reader", "--read", "team-a")
    server = embedded.start_server()

    def call(method, path, token, **kw):
        return httpx.request(method, server.url + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}, **kw)

    exp_id = call("POST", "/experiments", a, json={"prefix": "p/r", "namespace": "team-a"}).json()["id"]
    missing = exp_id + 1
    for method, path, body in [
        ("GET", "/experiments/{}", None),
        ("GET", "/experiments/{}/metrics/read?name=loss", None),
        ("GET", "/experiments/{}/logs", None),
        ("GET", "/experiments/{}/console", None),
        ("PATCH", "/experiments/{}", {"meta": {}}),
        ("POST", "/experiments/{}/metrics", {"series": []}),
        ("POST", "/experiments/{}/logs", {"start_index": 0, "records": []}),
        ("POST", "/experiments/{}/console", {"start_index": 0, "records": []}),
    ]:
        kw = {} if body is None else {"json": body}
        existing, gone = call(method, path.format(exp_id), b, **kw), call(method, path.format(missing), b, **kw)
        assert existing.status_code == gone.status_code == 404, (method, path, existing.text, gone.text)
        assert existing.json()["detail"] == gone.json()["detail"].replace(str(missing), str(exp_id)) == f"no experiment with id {exp_id}"
    # A token that may read the experiment knows it exists: writing it is 403, not 404.
    refused = call("PATCH", f"/experiments/{exp_id}", a_reader, json={"meta": {}})
    assert refused.status_code == 403 and "team-a" in refused.json()["detail"]
    assert call("GET", f"/experiments/{exp_id}", a_reader).status_code == 200


def test_a_gzip_body_with_trailing_bytes_or_a_second_member_is_refused(embedded):
    import gzip

    server = embedded.start_server()
    api = server.url + "/api/v1"
    exp_id = httpx.post(api + "/experiments", json={"prefix": "p/gz"}).json()["id"]
    first = {"series": [{"name": "loss", "start_index": 0, "points": [[1, {"value": 1.0}]]}]}
    second = {"series": [{"name": "loss", "start_index": 1, "points": [[2, {"value": 2.0}]]}]}
    packed = gzip.compress(orjson_dumps(first))
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    for body, words in [
        (packed + b"garbage", "after the end"),
        (packed + gzip.compress(orjson_dumps(second)), "after the end"),
        (packed + b"\0" * 8, "after the end"),
        (packed[:-4], "truncated"),
    ]:
        response = httpx.post(f"{api}/experiments/{exp_id}/metrics", content=body, headers=headers)
        assert response.status_code == 400 and words in response.json()["detail"], response.text
    assert httpx.get(f"{api}/experiments/{exp_id}/metrics").json()["metrics"] == {}  # nothing of them was stored
    response = httpx.post(f"{api}/experiments/{exp_id}/metrics", content=packed, headers=headers)
    assert response.status_code == 200 and response.json()["accepted"] == 1


def orjson_dumps(value) -> bytes:
    import orjson

    return orjson.dumps(value)
