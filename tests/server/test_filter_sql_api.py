"""The filter through the HTTP API, the remote client and the dashboard's server source.

``GET /api/v1/experiments?filter=...`` on a real ``mldash server`` over each backend:
the matching page and total, a bad filter's 400 (code ``bad_filter``, the caret, where
it went wrong), ``GET /api/v1/experiments/keys``; ``list_remote_experiments(filter=)``
and ``remote_filter_keys``; ``ServerSource.list_experiments(filter=)``.
"""

from __future__ import annotations

import httpx
import pytest

from mldash.remote.client import list_remote_experiments, remote_filter_keys

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def seeded(server):
    api = httpx.Client(base_url=server.url + "/api/v1", timeout=30)
    for i in range(12):
        meta = {"status": ["COMPLETED", "FAILED", "RUNNING"][i % 3], "tags": ["sweep"] if i % 2 else [], "started_at": 1.7e9 + i}
        exp_id = api.post("/experiments", json={"namespace": "default", "prefix": f"fapi/run-{i:02d}", "meta": meta}).json()["id"]
        api.put(f"/experiments/{exp_id}/documents/parameters", json={"lr": 10.0 ** -(i % 4), "arch": ["resnet50", "vit"][i % 2], "seed": i})
        api.put(f"/experiments/{exp_id}/documents/summary", json={"acc": i / 12})
        points = [[T0 + k, {"value": 1.0 / (k + 1 + i), "step": k}] for k in range(20)]
        assert api.post(f"/experiments/{exp_id}/metrics", json={"series": [{"name": "val/loss", "start_index": 0, "points": points}]}).status_code == 200
    yield api
    api.close()


def prefixes(reply: dict) -> set[str]:
    return {row["prefix"] for row in reply["experiments"]}


def test_the_list_endpoint_filters(seeded):
    reply = seeded.get("/experiments", params={"filter": "params.lr < 1e-2 and status = COMPLETED and metrics.val/loss.min < 0.07"})
    assert reply.status_code == 200, reply.text
    want = {f"fapi/run-{i:02d}" for i in range(12) if 10.0 ** -(i % 4) < 1e-2 and i % 3 == 0 and 1 / (20 + i) < 0.07}
    assert prefixes(reply.json()) == want and reply.json()["total"] == len(want)
    row = seeded.get("/experiments", params={"filter": 'prefix = "fapi/run-03"'}).json()["experiments"][0]
    assert row["summary"] == {"acc": 3 / 12}
    assert row["metric_stats"]["val/loss"] == {"key": "value", "last": 1 / 23, "min": 1 / 23, "max": 1 / 4}
    paged = seeded.get("/experiments", params={"filter": 'tags contains "sweep"', "limit": 4, "offset": 4}).json()
    assert paged["total"] == 6 and len(paged["experiments"]) == 2
    combined = seeded.get("/experiments", params={"filter": "params.seed >= 6", "status": "FAILED", "q": "run-1"}).json()
    assert prefixes(combined) == {"fapi/run-10"}


def test_a_long_filter_fits_in_the_query_string(seeded):
    names = ", ".join(f'"fapi/run-{i:02d}"' for i in range(0, 12, 2)) + ", " + ", ".join(f'"nope/{k:04d}"' for k in range(300))
    reply = seeded.get("/experiments", params={"filter": f"prefix in [{names}]"})
    assert reply.status_code == 200 and reply.json()["total"] == 6


@pytest.mark.parametrize(
    "text, column",
    [("params.lr <", 12), ("status = DONE", 10), ("params.lr < 1 and (status = FAILED", 35), ("metrics.val/loss < 1", 1)],
)
def test_a_bad_filter_is_a_400_with_the_caret(seeded, text, column):
    reply = seeded.get("/experiments", params={"filter": text})
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == "bad_filter" and body["column"] == column and body["line"] == 1
    caret_line = body["detail"].splitlines()[-1]
    assert caret_line.index("^") - 2 == column - 1 and text in body["detail"]


def test_a_backreference_is_refused_on_postgresql_only(seeded, backend):
    reply = seeded.get("/experiments", params={"filter": 'params.arch =~ "(e)\\\\1"'})
    if backend.kind == "postgres":
        assert reply.status_code == 400 and "backreferences" in reply.json()["detail"]
    else:  # SQLite runs Python's re itself
        assert reply.status_code == 200 and reply.json()["total"] == 0


def test_the_keys_endpoint(seeded):
    keys = seeded.get("/experiments/keys").json()
    assert {"arch", "lr", "seed"} <= set(keys["params"]) and "acc" in keys["summary"] and "val/loss" in keys["metrics"]
    assert "metrics.val/loss.min" in keys["keys"] and "params.lr" in keys["keys"] and keys["truncated"] is False
    assert seeded.get("/experiments/keys", params={"project": "no-such"}).json()["params"] == []


def test_the_remote_client_passes_the_filter(server, seeded):
    rows = list_remote_experiments(server.url, filter='params.arch = "vit" and summary.acc > 0.5')
    assert {r["prefix"] for r in rows} == {f"fapi/run-{i:02d}" for i in range(12) if i % 2 and i / 12 > 0.5}
    assert all(r["metric_stats"]["val/loss"]["key"] == "value" for r in rows)
    assert len(list_remote_experiments(server.url, filter="params.seed >= 0", limit=5)) == 5
    with pytest.raises(ValueError, match=r"(?s)column 12.*\^"):
        list_remote_experiments(server.url, filter="params.x ~ 3")
    keys = remote_filter_keys(server.url, project="fapi")
    assert "params.seed" in keys["keys"] and keys["metrics"] == ["val/loss"]


def test_the_dashboards_server_source_filters(tmp_path):
    from mldash.server.storage import Store
    from mldash.server.ui_source import ServerSource

    store = Store(f"sqlite:///{tmp_path}/db.sqlite", str(tmp_path / "chunks"))
    try:
        for ns in ("A", "B"):
            exp_id = store.upsert_experiment(ns, "p/run", {"status": "COMPLETED"})["id"]
            store.set_document(exp_id, "parameters", {"ns": ns, f"only_{ns}": 1})
        source = ServerSource(store, namespaces=["A"])
        assert [r["ref"] for r in source.list_experiments(filter='params.ns = "A"')] == ["A:p/run"]
        assert source.list_experiments(filter='params.ns = "B"') == []
        assert source.filter_keys()["params"] == ["ns", "only_A"]
        with pytest.raises(ValueError, match=r"\^"):
            source.list_experiments(filter="params.ns = ")
        assert len(ServerSource(store).list_experiments(filter="status = COMPLETED")) == 2
    finally:
        store.close()
