"""mldash.runs(filter, remote=URL): a team server's runs in the same shapes as local
ones. The filter is evaluated client-side for now (docs/analysis.md)."""

from __future__ import annotations

import pytest

import mldash

pytest.importorskip("fastapi")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from _server_support import start_server  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    server = start_server(data=tmp_path_factory.mktemp("server"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def uploaded(url, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, lr, losses in (("a", 1e-4, [0.5, 0.1, 0.3]), ("b", 1e-2, [0.4])):
        with mldash.Experiment(f"remote-{name}/run", root=root, remote=url) as exp:
            exp.params.set(lr=lr)
            exp.summary.set(acc=0.9)
            exp.metrics("val/loss").append_batch([{"value": v, "step": i} for i, v in enumerate(losses)])
    return url


def test_a_filter_selects_the_servers_runs(uploaded):
    runs = mldash.runs("params.lr < 1e-3 and metrics.val/loss.min < 0.2", remote=uploaded)
    assert [r.prefix for r in runs] == ["remote-a/run"]
    run = runs[0]
    assert run.status == "COMPLETED" and run.params == {"lr": 1e-4} and run.summary == {"acc": 0.9}
    assert run.value("metrics.val/loss.last") == 0.3 and run.value("metrics.val/loss.max") == 0.5
    assert [p["data"]["value"] for p in run.metrics("val/loss").read()["data"]] == [0.5, 0.1, 0.3]


def test_the_servers_runs_make_the_same_table(uploaded):
    frame = mldash.runs("project = remote-b", remote=uploaded).to_pandas()
    assert list(frame["prefix"]) == ["remote-b/run"]
    row = frame.iloc[0]
    assert row["params.lr"] == 1e-2 and row["summary.acc"] == 0.9
    assert (row["metrics.val/loss.last"], row["metrics.val/loss.min"]) == (0.4, 0.4)


def test_a_remote_series_frame_and_history(uploaded):
    run = mldash.runs(project="remote-a", remote=uploaded)[0]
    frame = run.metrics("val/loss").to_pandas()
    assert frame["value"].tolist() == [0.5, 0.1, 0.3] and frame.index.name == "index"
    assert run.history()["val/loss"].tolist() == [0.5, 0.1, 0.3]
