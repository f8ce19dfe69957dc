"""Durability and several servers: SIGKILL mid-ingest loses and duplicates nothing
once the client retries; two servers on one PostgreSQL serve one truth."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from _server_support import backend  # noqa: F401 (a fresh store per test)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BATCH = 1000


def point(i: int) -> list:
    return [1_700_000_000_000 + i, {"value": i * 0.25, "step": i}]


class RetryingSender:
    """The client's contract in miniature: resend the same batch until the server answers 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url + "/api/v1", timeout=10)
        self.retries = 0

    def post(self, path: str, body: dict) -> dict:
        deadline = time.monotonic() + 90
        while True:
            try:
                response = self.client.post(path, json=body)
                if response.status_code == 200:
                    return response.json()
                assert response.status_code >= 500, response.text  # 4xx would be a bug here
            except httpx.TransportError:
                pass
            self.retries += 1
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.05)


def upload(sender: RetryingSender, exp_id: int, names: list[str], total: int, progress: list) -> None:
    for start in range(0, total, BATCH):
        series = [{"name": n, "start_index": start, "points": [point(i) for i in range(start, min(start + BATCH, total))]} for n in names]
        sender.post(f"/experiments/{exp_id}/metrics", {"series": series})
        sender.post(f"/experiments/{exp_id}/logs", {"start_index": start // BATCH, "records": [{"timestamp": 1.0 + start, "level": "info", "message": f"batch {start}"}]})
        progress.append(start)


def assert_exactly(url: str, exp_id: int, names: list[str], total: int) -> None:
    with httpx.Client(base_url=url + "/api/v1", timeout=30) as client:
        progress = client.get(f"/experiments/{exp_id}/progress").json()
        assert progress["metrics"] == {n: total for n in names}
        assert progress["logs"] == -(-total // BATCH)
        for name in names:
            got = client.get(f"/experiments/{exp_id}/metrics/read", params={"name": name, "start_index": 0, "limit": 100_000}).json()
            assert got["total"] == total
            assert [p["index"] for p in got["data"]] == list(range(total))
            assert [p["data"]["step"] for p in got["data"]] == list(range(total)), "a point is missing or twice"
        logs = client.get(f"/experiments/{exp_id}/logs", params={"limit": 1000}).json()["data"]
        assert [r["message"] for r in logs] == [f"batch {s}" for s in range(0, total, BATCH)]


def test_sigkill_mid_ingest_then_restart_keeps_exactly_what_was_written(backend):
    server = backend.start_server()
    sender = RetryingSender(server.url)
    exp_id = sender.post("/experiments", {"prefix": "crash/run", "meta": {"status": "RUNNING"}})["id"]
    names, total = ["train/loss", "train/acc"], 32_000  # past 10,000: compaction runs while we kill
    progress: list = []
    thread = threading.Thread(target=upload, args=(sender, exp_id, names, total, progress), daemon=True)
    thread.start()

    for kill_after in (6 * BATCH, 19 * BATCH):
        while (progress[-1] if progress else -1) < kill_after:
            assert thread.is_alive()
            time.sleep(0.005)
        server.kill()  # SIGKILL while the client keeps sending
        time.sleep(0.3)
        server.start()
    thread.join(120)
    assert not thread.is_alive()
    assert sender.retries > 0  # the kills really interrupted the upload

    assert_exactly(server.url, exp_id, names, total)
    server.kill()  # and once more at rest: nothing committed is lost
    server.start()
    assert_exactly(server.url, exp_id, names, total)


def test_two_servers_on_one_postgresql_serve_the_same_data(request, tmp_path):
    from _server_support import make_backend

    pg_backend = make_backend("postgres", tmp_path, request)
    try:
        one, two = pg_backend.start_server(), pg_backend.start_server()
        a, b = RetryingSender(one.url), RetryingSender(two.url)
        exp_id = a.post("/experiments", {"prefix": "shared/run", "meta": {"status": "RUNNING"}})["id"]
        assert b.post("/experiments", {"prefix": "shared/run", "meta": {"tags": ["x"]}})["id"] == exp_id

        # Both servers receive the same batches at once (a client failing over, say):
        # indices stay unique and both try to compact the series past 10,000 points.
        total = 24_000
        threads = [threading.Thread(target=upload, args=(s, exp_id, ["loss"], total, [])) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert a.client.put(f"/experiments/{exp_id}/documents/parameters", json={"lr": 0.1}).status_code == 200

        for url in (one.url, two.url):  # written through one, read through the other
            assert_exactly(url, exp_id, ["loss"], total)
            with httpx.Client(base_url=url + "/api/v1") as client:
                view = client.get(f"/experiments/{exp_id}").json()
                assert view["params"] == {"lr": 0.1} and view["tags"] == ["x"]
        deadline = time.monotonic() + 60  # compaction runs in the background
        while len(pg_backend.chunk_objects()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pg_backend.chunk_objects()) == 2
    finally:
        pg_backend.stop()
