"""The dashboard's DataSource over the server's storage (in process, embedded store)."""

from __future__ import annotations

import pytest

from mldash.server.storage import Store
from mldash.server.ui_source import ServerSource


@pytest.fixture
def source(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db.sqlite", str(tmp_path / "chunks"))
    exp = store.upsert_experiment("default", "proj/sub/run", {"status": "COMPLETED", "started_at": 1.0})["id"]
    store.set_document(exp, "parameters", {"lr": 0.1})
    store.append_metrics(exp, [{"name": "train/loss", "start_index": 0, "points": [[1000 * i, {"value": float(i)}] for i in range(12_000)]}])
    store.append_logs(exp, 0, [{"timestamp": 1.0, "level": "info", "message": "a"}, {"timestamp": 2.0, "level": "error", "message": "b"}])
    store.append_checkpoints(exp, 0, [{"path": "best.ckpt", "score": 0.1, "is_best": True}])
    other = store.upsert_experiment("team", "other/run", {"status": "RUNNING"})["id"]
    store.append_metrics(other, [{"name": "acc", "start_index": 0, "points": [[1, {"value": 1}]]}])
    yield ServerSource(store)
    store.close()


def test_server_source_serves_the_dashboard_protocol(source):
    rows = source.list_experiments()
    assert sorted(r["prefix"] for r in rows) == ["other/run", "proj/sub/run"]
    assert [r["prefix"] for r in source.list_experiments(project="proj")] == ["proj/sub/run"]
    run = source.get_experiment("proj/sub/run")
    assert run["params"] == {"lr": 0.1} and run["metrics"]["train/loss"]["index"] == 11_999
    assert run["best_checkpoint"]["path"] == "best.ckpt" and len(run["checkpoints"]) == 1
    assert source.metric_names("proj/sub/run") == ["train/loss"]
    page = source.read_metric("proj/sub/run", "train/loss", 9_995, 10)  # across the cold/hot seam
    assert [p["index"] for p in page["data"]] == list(range(9_995, 10_005)) and page["total"] == 12_000
    assert [r["message"] for r in source.read_logs("proj/sub/run", level="error")["data"]] == ["b"]
    with pytest.raises(KeyError):
        source.get_experiment("nope/run")
    with pytest.raises(KeyError):
        source.read_metric("proj/sub/run", "nope")


def test_server_source_can_be_limited_to_namespaces(source):
    limited = ServerSource(source.store, namespaces=["team"])
    assert [r["prefix"] for r in limited.list_experiments()] == ["other/run"]
    with pytest.raises(KeyError):
        limited.get_experiment("proj/sub/run")
