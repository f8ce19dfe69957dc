"""The team server's HTTP API v1, against a real `mldash server` on each backend:
embedded (SQLite + a chunk folder) and PostgreSQL + S3 (moto)."""

from __future__ import annotations

import gzip
import math
import os
import time
import uuid

import httpx
import orjson
import pytest

import mldash


pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def api(backend):
    """An httpx client on /api/v1 of one server shared by this module's tests."""
    server = backend.start_server()
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        yield client


def new_experiment(api, prefix=None, namespace=None, **meta) -> int:
    prefix = prefix or f"proj/{uuid.uuid4().hex[:8]}"
    body = {"prefix": prefix, "meta": meta}
    if namespace:
        body["namespace"] = namespace
    response = api.post("/experiments", json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def points(start: int, count: int) -> list:
    return [[1_700_000_000_000 + i, {"value": i / 2, "step": i}] for i in range(start, start + count)]


def send(api, exp_id, name, start, pts, **kw):
    return api.post(f"/experiments/{exp_id}/metrics", json={"series": [{"name": name, "start_index": start, "points": pts}]}, **kw)


def read(api, exp_id, name, start=0, limit=1000):
    response = api.get(f"/experiments/{exp_id}/metrics/read", params={"name": name, "start_index": start, "limit": limit})
    assert response.status_code == 200, response.text
    return mldash._codec.untag(response.json())


def wait_for_chunks(backend, count: int, timeout: float = 60) -> int:
    """The number of chunk objects once it reaches ``count`` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while len(backend.chunk_objects()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a compactor writing a third chunk would show up by now
    return len(backend.chunk_objects())


def test_a_runs_own_creation_time_is_shown_not_when_it_reached_the_server(api):
    import datetime

    ns = "made-" + uuid.uuid4().hex[:6]
    week_ago = time.time() - 7 * 86400
    synced_late = new_experiment(api, namespace=ns, created_at=week_ago)
    timeless = new_experiment(api, namespace=ns)
    assert api.get(f"/experiments/{synced_late}").json()["created_at"] == week_ago
    assert abs(api.get(f"/experiments/{timeless}").json()["created_at"] - time.time()) < 60  # when it came
    listed = {e["id"]: e["created_at"] for e in api.get("/experiments", params={"namespace": ns}).json()["experiments"]}
    assert listed == {synced_late: week_ago, timeless: pytest.approx(time.time(), abs=60)}
    three_days_ago = datetime.datetime.fromtimestamp(time.time() - 3 * 86400, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M")
    found = api.get("/experiments", params={"namespace": ns, "filter": f"created < {three_days_ago}"}).json()
    assert [e["id"] for e in found["experiments"]] == [synced_late]


def test_upsert_merges_meta_and_lookup_finds_the_experiment(api):
    exp_id = new_experiment(api, "vision/resnet/run-1", status="RUNNING", tags=["a"], started_at=100.0)
    again = api.post("/experiments", json={"prefix": "vision/resnet/run-1", "meta": {"status": "COMPLETED", "duration": 5}}).json()
    assert again["id"] == exp_id
    assert (again["status"], again["tags"], again["duration"]) == ("COMPLETED", ["a"], 5)
    assert (again["project"], again["folder"], again["name"]) == ("vision", "resnet", "run-1")

    patched = api.patch(f"/experiments/{exp_id}", json={"meta": {"status": "FAILED", "status_reason": "ValueError"}}).json()
    assert patched["status"] == "FAILED" and patched["tags"] == ["a"]
    found = api.get("/experiments/lookup", params={"prefix": "vision/resnet/run-1"}).json()
    assert found["id"] == exp_id and found["status"] == "FAILED" and found["namespace"] == "default"
    assert api.get("/experiments/lookup", params={"prefix": "vision/nope"}).status_code == 404


def test_metric_read_matches_a_local_read_exactly(api, tmp_path):
    """Upload the lines of a local data.jsonl; the server's read() equals the local one."""
    exp = mldash.Experiment("proj/local", root=str(tmp_path))
    with exp:
        for i in range(50):
            exp.metrics("train/loss").append(value=[0.5, math.nan, math.inf, -math.inf, None][i % 5], step=i, tag="x")
    with open(os.path.join(exp.path, "metrics", "train", "loss", "data.jsonl"), "rb") as handle:
        lines = handle.read().splitlines()
    assert any(b"$float" in line for line in lines)  # the NaN/inf tags travel as stored
    exp_id = new_experiment(api)
    assert send(api, exp_id, "train/loss", 0, [orjson.loads(line) for line in lines]).json()["counts"] == {"train/loss": 50}

    for start, limit in [(0, 1000), (7, 10), (45, 100), (50, 10), (60, 5), (3, 0)]:
        local = exp.metrics("train/loss").read(start, limit)
        remote = read(api, exp_id, "train/loss", start, limit)
        assert repr(remote) == repr(local), (start, limit)  # repr: NaN != NaN, but reprs match


def test_a_retried_or_overlapping_batch_never_duplicates_points(api):
    exp_id = new_experiment(api)
    assert send(api, exp_id, "loss", 0, points(0, 100)).json() == {"accepted": 100, "counts": {"loss": 100}}
    assert send(api, exp_id, "loss", 0, points(0, 100)).json() == {"accepted": 0, "counts": {"loss": 100}}
    assert send(api, exp_id, "loss", 50, points(50, 100)).json() == {"accepted": 50, "counts": {"loss": 150}}
    got = read(api, exp_id, "loss", 0, 1000)
    assert [p["data"]["step"] for p in got["data"]] == list(range(150))
    assert (got["total"], got["end_index"], got["has_more"]) == (150, 149, False)


def test_a_batch_that_would_leave_a_gap_is_refused_with_409(api):
    exp_id = new_experiment(api)
    send(api, exp_id, "loss", 0, points(0, 10))
    response = send(api, exp_id, "loss", 20, points(20, 5))
    assert response.status_code == 409
    assert "send from index 10" in response.json()["detail"]
    assert api.get(f"/experiments/{exp_id}/progress").json()["metrics"] == {"loss": 10}


def test_series_past_10000_points_move_to_cold_chunks_and_read_without_a_seam(api, backend):
    exp_id = new_experiment(api)
    before = len(backend.chunk_objects())
    total = 25_500
    for start in range(0, total, 1000):
        pts = points(start, min(1000, total - start))
        assert send(api, exp_id, "train/loss", start, pts).status_code == 200
    # Two full chunks of 10,000 go cold (compaction runs in the background, off
    # the ingest requests); at most 10,000 points stay hot.
    assert wait_for_chunks(backend, before + 2) == before + 2

    whole = read(api, exp_id, "train/loss", 0, 100_000)
    assert [p["index"] for p in whole["data"]] == list(range(total))
    assert [p["data"]["step"] for p in whole["data"]] == list(range(total))
    for start, limit in [(9_990, 20), (0, 1), (19_999, 2), (5_000, 10_000), (25_499, 10), (12_345, 1000)]:
        got = read(api, exp_id, "train/loss", start, limit)
        expected = list(range(start, min(start + limit, total)))
        assert [p["data"]["step"] for p in got["data"]] == expected, (start, limit)
        assert got["total"] == total and got["has_more"] == (start + limit < total)
    # Retrying an already-compacted batch still adds nothing.
    assert send(api, exp_id, "train/loss", 0, points(0, 1000)).json()["accepted"] == 0
    latest = api.get(f"/experiments/{exp_id}/metrics").json()["metrics"]["train/loss"]
    assert latest["total"] == total and latest["last"]["index"] == total - 1


def test_logs_are_queried_by_level_and_time(api):
    exp_id = new_experiment(api)
    levels = ["debug", "info", "warn", "error", "fatal", "info"]
    records = [{"index": i, "timestamp": 1000.0 + i, "level": lv, "message": f"m{i}", "metadata": {"i": i}} for i, lv in enumerate(levels)]
    assert api.post(f"/experiments/{exp_id}/logs", json={"start_index": 0, "records": records}).json()["accepted"] == 6
    assert api.post(f"/experiments/{exp_id}/logs", json={"start_index": 0, "records": records}).json()["accepted"] == 0

    warn_up = api.get(f"/experiments/{exp_id}/logs", params={"level": "warn"}).json()
    assert [r["message"] for r in warn_up["data"]] == ["m2", "m3", "m4"]
    assert warn_up["total"] == 6
    window = api.get(f"/experiments/{exp_id}/logs", params={"since": 1001, "until": 1003}).json()
    assert [r["index"] for r in window["data"]] == [1, 2, 3]
    page = api.get(f"/experiments/{exp_id}/logs", params={"start_index": 2, "limit": 2}).json()
    assert [r["index"] for r in page["data"]] == [2, 3] and page["end_index"] == 3 and page["has_more"]
    bad = api.get(f"/experiments/{exp_id}/logs", params={"level": "loud"})
    assert bad.status_code == 400 and "debug, info, warn, error, fatal" in bad.json()["detail"]


def test_console_lines_are_appended_idempotently_and_read_back_with_their_index(api):
    exp_id = new_experiment(api)
    lines = [{"timestamp": 1000.0 + i, "stream": "stderr" if i % 2 else "stdout", "text": f"line {i}\x00é"} for i in range(5)]
    lines[4]["partial"] = True
    assert api.post(f"/experiments/{exp_id}/console", json={"start_index": 0, "records": lines[:3]}).json() == {"accepted": 3, "total": 3}
    assert api.post(f"/experiments/{exp_id}/console", json={"start_index": 1, "records": lines[1:]}).json() == {"accepted": 2, "total": 5}
    gap = api.post(f"/experiments/{exp_id}/console", json={"start_index": 7, "records": lines})
    assert gap.status_code == 409 and "send from index 5" in gap.json()["detail"]
    page = api.get(f"/experiments/{exp_id}/console", params={"start_index": 1, "limit": 3}).json()
    assert page["data"] == [{"index": i, **lines[i]} for i in (1, 2, 3)]
    assert (page["start_index"], page["end_index"], page["total"], page["has_more"]) == (1, 3, 5, True)
    assert api.get(f"/experiments/{exp_id}/console", params={"start_index": 4}).json()["data"][0]["partial"] is True
    assert api.get(f"/experiments/{exp_id}/progress").json()["console"] == 5


def test_documents_merge_and_the_experiment_view_has_everything(api):
    exp_id = new_experiment(api, status="RUNNING")
    api.put(f"/experiments/{exp_id}/documents/parameters", json={"lr": 0.1, "model.layers": 4})
    merged = api.put(f"/experiments/{exp_id}/documents/parameters", json={"lr": 0.01, "batch": 32}).json()
    assert merged == {"lr": 0.01, "model.layers": 4, "batch": 32}
    api.put(f"/experiments/{exp_id}/documents/summary", json={"train_runtime": 12.5})
    assert api.get(f"/experiments/{exp_id}/documents/summary").json() == {"train_runtime": 12.5}
    assert api.get(f"/experiments/{exp_id}/documents/other").status_code in (404, 422)
    ckpts = [{"path": "a.ckpt", "step": 1, "score": 0.5}, {"path": "b.ckpt", "step": 2, "score": 0.4, "is_best": True}]
    assert api.post(f"/experiments/{exp_id}/checkpoints", json={"start_index": 0, "records": ckpts}).json()["accepted"] == 2
    send(api, exp_id, "val/acc", 0, points(0, 3))

    view = api.get(f"/experiments/{exp_id}").json()
    assert view["params"]["model.layers"] == 4 and view["summary"] == {"train_runtime": 12.5}
    assert [c["path"] for c in view["checkpoints"]] == ["a.ckpt", "b.ckpt"]
    assert view["best_checkpoint"]["path"] == "b.ckpt"
    assert view["metrics"]["val/acc"]["index"] == 2
    assert api.get(f"/experiments/{exp_id}/progress").json() == {"metrics": {"val/acc": 3}, "logs": 0, "console": 0, "checkpoints": 2, "files": 0}


def test_experiments_and_projects_are_listed_with_filters(api):
    ns = "list-" + uuid.uuid4().hex[:6]
    a = new_experiment(api, "alpha/run-1", namespace=ns, status="COMPLETED", started_at=1.0)
    b = new_experiment(api, "alpha/run-2", namespace=ns, status="RUNNING", started_at=2.0)
    c = new_experiment(api, "beta/other", namespace=ns, status="COMPLETED", started_at=3.0)
    api.put(f"/experiments/{a}/documents/parameters", json={"lr": 0.1})
    send(api, a, "loss", 0, points(0, 5))

    def ids(**params):
        return [e["id"] for e in api.get("/experiments", params={"namespace": ns, **params}).json()["experiments"]]

    assert ids() == [c, b, a]  # newest first
    assert ids(project="alpha") == [b, a]
    assert ids(status="COMPLETED") == [c, a]
    assert ids(q="run-2") == [b]
    assert ids(limit=1, offset=1) == [b]
    row = next(e for e in api.get("/experiments", params={"namespace": ns}).json()["experiments"] if e["id"] == a)
    assert row["params"] == {"lr": 0.1} and row["metrics"]["loss"]["data"]["step"] == 4
    assert api.get("/experiments", params={"namespace": ns}).json()["total"] == 3
    projects = api.get("/projects", params={"namespace": ns}).json()["projects"]
    assert projects == [{"namespace": ns, "project": "alpha", "experiments": 2}, {"namespace": ns, "project": "beta", "experiments": 1}]
    assert api.get("/experiments", params={"status": "SLEEPING"}).status_code == 400


def test_gzip_bodies_are_accepted_and_the_size_limit_gives_413(api):
    exp_id = new_experiment(api)
    body = gzip.compress(orjson.dumps({"series": [{"name": "loss", "start_index": 0, "points": points(0, 1000)}]}))
    response = api.post(f"/experiments/{exp_id}/metrics", content=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.json()["accepted"] == 1000

    bomb = gzip.compress(b" " * (33 * 1024 * 1024))  # 33 MiB of JSON white space, ~33 KB on the wire
    response = api.post(f"/experiments/{exp_id}/metrics", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    response = api.post(f"/experiments/{exp_id}/metrics", content=b"x" * (33 * 1024 * 1024))
    assert response.status_code == 413
    response = api.post(f"/experiments/{exp_id}/metrics", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["detail"]


@pytest.mark.parametrize(
    "method, path, body, status, words",
    [
        ("post", "/experiments", b"{nope", 400, "not valid JSON"),
        ("post", "/experiments", b"[]", 400, "JSON object"),
        ("post", "/experiments", orjson.dumps({"prefix": "../etc"}), 400, "prefix"),
        ("post", "/experiments", orjson.dumps({"prefix": "p/r", "namespace": "a b"}), 400, "namespace"),
        ("post", "/experiments", orjson.dumps({"prefix": "p/r", "meta": {"status": "DONE"}}), 400, "status"),
        ("post", "/experiments/{id}/metrics", orjson.dumps({"series": [{"name": "", "start_index": 0, "points": []}]}), 400, "metric name"),
        ("post", "/experiments/{id}/metrics", orjson.dumps({"series": [{"name": "a", "start_index": -1, "points": []}]}), 400, "start_index"),
        ("post", "/experiments/{id}/metrics", orjson.dumps({"series": [{"name": "a", "start_index": 0, "points": [[1, 2]]}]}), 400, "ms_epoch"),
        ("post", "/experiments/{id}/metrics", orjson.dumps({"series": {}}), 400, "array"),
        ("post", "/experiments/{id}/logs", orjson.dumps({"start_index": 0, "records": [{"level": "loud"}]}), 400, "level"),
        ("post", "/experiments/{id}/console", orjson.dumps({"start_index": 0, "records": [{"timestamp": 1, "stream": "tty", "text": "x"}]}), 400, "stream must be stdout or stderr"),
        ("post", "/experiments/{id}/console", orjson.dumps({"start_index": 0, "records": [{"timestamp": "now", "stream": "stdout", "text": "x"}]}), 400, "timestamp"),
        ("post", "/experiments/{id}/console", orjson.dumps({"start_index": 0, "records": [{"timestamp": 1, "stream": "stdout", "text": "x" * 32769}]}), 400, "at most 32,768"),
        ("post", "/experiments/{id}/console", orjson.dumps({"start_index": 0, "records": [{"timestamp": 1, "stream": "stdout", "text": "x", "partial": 1}]}), 400, "partial"),
        ("post", "/experiments/{id}/console", b'{"start_index": 0, "records": [{"timestamp": 1, "stream": "stdout", "text": "\\ud800"}]}', 400, ""),
        ("post", "/experiments/999999/metrics", orjson.dumps({"series": []}), 404, "no experiment"),
        ("get", "/experiments/999999", None, 404, "no experiment"),
        ("get", "/experiments/abc", None, 422, "exp_id"),
        ("get", "/experiments/{id}/metrics/read?name=a&limit=-1", None, 422, "limit"),
        ("post", "/experiments", orjson.dumps({"prefix": "p/r", "meta": {"note": "a\u0000b"}}), 400, "NUL"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_clear_message(api, method, path, body, status, words):
    exp_id = new_experiment(api)
    response = api.request(method.upper(), path.replace("{id}", str(exp_id)), content=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_the_dashboard_is_served_over_the_same_store(api):
    new_experiment(api, "dash/board-run", status="RUNNING")
    base = str(api.base_url).removesuffix("/api/v1/").removesuffix("/api/v1")
    assert httpx.get(base + "/", follow_redirects=False).headers["location"] == "/ui/"
    listing = httpx.get(base + "/ui/api/experiments")
    assert listing.status_code == 200 and "dash/board-run" in listing.text


def test_port_0_picks_a_free_port_and_the_banner_names_it(tmp_path):
    import re
    import subprocess
    import sys

    from _procs import stop_process

    proc = subprocess.Popen([sys.executable, "-m", "mldash", "server", "--data", str(tmp_path), "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert url and url.group(1) != "0", banner
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url.group(0)}/api/v1/health", timeout=5).json()["ok"] is True
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
    finally:
        stop_process(proc)
