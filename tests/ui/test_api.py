"""The dashboard's JSON API and downsampling, over real runs (no browser here)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.testclient import TestClient

import mldash
from mldash.ui.app import CSP, create_app, current_principal
from mldash.ui.local import LocalSource

from _ui_support import HOSTILE, UiServer, fill_root

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui-api"))
    fill_root(root)
    exp = mldash.Experiment("long/spiky", root=root)
    with exp:
        exp.metrics("loss").append_batch(
            [{"value": 10.0 if i == 31_337 else math.sin(i / 500), "step": i} for i in range(60_000)]
        )
    return root


@pytest.fixture(scope="module")
def client(root):
    return TestClient(create_app(LocalSource(root)))


def series(client, **params):
    response = client.get("/api/series", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_long_series_is_downsampled_to_the_width_and_keeps_its_one_point_spike(client):
    view = series(client, prefix="long/spiky", name="loss", x="step", width=400)
    assert view["total"] == 60_000
    assert not view["exact"]
    assert len(view["points"]["x"]) <= 400 * 3 + 2  # first, min and max per pixel bucket
    assert max(view["points"]["value"]) == 10.0
    spike = view["points"]["value"].index(10.0)
    assert view["points"]["x"][spike] == 31_337 and view["points"]["index"][spike] == 31_337
    assert min(view["points"]["value"]) == pytest.approx(-1.0, abs=1e-4)


def test_zooming_in_far_enough_returns_the_exact_points(client):
    view = series(client, prefix="long/spiky", name="loss", x="step", lo=31_300, hi=31_400, width=400)
    assert view["exact"]
    xs = view["points"]["x"]
    assert xs == [float(s) for s in range(31_299, 31_402)]  # plus one point beyond each edge
    assert view["points"]["value"][xs.index(31_337.0)] == 10.0
    assert view["points"]["value"][xs.index(31_338.0)] == pytest.approx(math.sin(31_338 / 500))


def test_series_offers_the_x_axes_the_points_have(client):
    view = series(client, prefix="vision/resnet/lr-0.1", name="train/loss", x="epoch", width=800)
    assert view["x_choices"] == ["index", "step", "epoch", "time"]
    assert view["fields"] == ["value"]
    assert view["exact"] and view["points"]["x"][0] == 0 and view["points"]["x"][-1] == 2
    timed = series(client, prefix="vision/resnet/lr-0.1", name="train/loss", x="time", width=800)
    assert timed["x_min"] > 1.6e9  # epoch seconds
    missing = client.get("/api/series", params={"prefix": "vision/resnet/lr-0.1", "name": "train/loss", "x": "nope"})
    assert missing.status_code == 404


def test_a_running_series_is_parsed_incrementally_and_non_finite_values_come_as_null(tmp_path):
    source = LocalSource(tmp_path)
    exp = mldash.Experiment("live/run", root=str(tmp_path))
    exp.metrics("loss").append_batch([{"value": float(i), "step": i} for i in range(100)])
    exp.flush()
    assert source.metric_view("live/run", "loss", "step")["total"] == 100
    exp.metrics("loss").append(value=math.nan, step=100)
    exp.metrics("loss").append(value="text", step=101)
    exp.metrics("loss").append(value=math.inf, step=102)
    exp.flush()
    view = source.metric_view("live/run", "loss", "step")
    assert view["total"] == 103
    assert view["points"]["value"][-3:] == [None, None, None]
    assert view["points"]["value"][:3] == [0.0, 1.0, 2.0]
    exp.finish()


@pytest.mark.parametrize("line", [b'[1,{"value":', b'{"value":1}', b"[1,2]", b'["1",{"value":1}]', b"null"])
def test_a_line_that_is_not_a_point_is_left_out_of_the_chart(tmp_path, line):
    exp = mldash.Experiment("odd/run", root=str(tmp_path))
    exp.metrics("loss").append_batch([{"value": 1.0, "step": 0}, {"value": "x", "step": 1}])  # not uniform
    exp.finish()
    with open(os.path.join(exp.metrics("loss").folder, "data.jsonl"), "ab") as f:
        f.write(line + b"\n" + b'[1700000000000,{"value":2.0,"step":2}]\n')
    view = LocalSource(tmp_path).metric_view("odd/run", "loss", "step")
    assert view["points"]["x"] == [0, 1, 2] and view["points"]["index"] == [0, 1, 3]


ODD_AMONG_UNIFORM = [b'[1500.5,{"value":1,"step":1}]', b'[[1500],{"value":1,"step":1}]', b'1500,{"value":1,"step":1}',
                     b'[1500,{"value":1,"step":1}', b'[1500,{"value":1},1]', b'[1500,{"value":[1],"step":1}]',
                     b"[" + b"9" * 30 + b',{"value":1,"step":1}]']


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize("line", ODD_AMONG_UNIFORM, ids=range(len(ODD_AMONG_UNIFORM)))
def test_the_fast_path_shows_no_line_that_read_skips(tmp_path, monkeypatch, line, compiled):
    from mldash.ui import series

    if not compiled:
        monkeypatch.setattr(series, "pointparse", None)
    elif series.pointparse is None:
        pytest.skip("the compiled parser is not built")
    exp = mldash.Experiment("odd/uniform", root=str(tmp_path))
    exp.metrics("loss").append(value=0.5, step=0)
    exp.finish()
    with open(os.path.join(exp.metrics("loss").folder, "data.jsonl"), "ab") as f:
        f.write(line + b"\n" + b'[1700000000000,{"value":2.0,"step":2}]\n')
    expected = [p["index"] for p in exp.metrics("loss").read()["data"]]
    view = LocalSource(tmp_path).metric_view("odd/uniform", "loss", "step")
    assert view["points"]["index"] == expected and expected[-1] == 2


def test_steps_that_restart_are_drawn_sorted_by_x(tmp_path):
    exp = mldash.Experiment("resumed/run", root=str(tmp_path))
    exp.metrics("loss").append_batch([{"value": 1.0, "step": s} for s in (0, 1, 2, 3)])
    exp.metrics("loss").append_batch([{"value": 2.0, "step": s} for s in (2, 3, 4)])
    exp.finish()
    view = LocalSource(tmp_path).metric_view("resumed/run", "loss", "step")
    assert view["points"]["x"] == [0, 1, 2, 2, 3, 3, 4]
    assert view["points"]["index"] == [0, 1, 2, 4, 3, 5, 6]


def test_experiments_list_has_params_latest_metrics_and_status(client):
    rows = {r["prefix"]: r for r in client.get("/api/experiments").json()["experiments"]}
    run = rows["vision/resnet/lr-0.1"]
    assert run["status"] == "COMPLETED" and run["params"]["model.arch"] == "resnet18"
    assert run["metrics"]["val/accuracy"]["data"]["value"] == pytest.approx(0.8)
    assert rows["nlp/bert-crash"]["status"] == "FAILED"
    assert "path" not in run  # no server paths in the browser
    only_nlp = client.get("/api/experiments", params={"project": "nlp"}).json()["experiments"]
    assert {r["project"] for r in only_nlp} == {"nlp"}


def test_experiment_carries_errors_with_tracebacks_checkpoints_and_summary(client):
    failed = client.get("/api/experiment", params={"prefix": "nlp/bert-crash"}).json()
    assert failed["errors"][-1]["metadata"]["error_type"] == "RuntimeError"
    assert "CUDA out of memory" in failed["errors"][-1]["metadata"]["traceback"]
    run = client.get("/api/experiment", params={"prefix": "vision/resnet/lr-0.1"}).json()
    assert run["metric_names"] == ["train/loss", "val/accuracy"]
    assert [c["epoch"] for c in run["checkpoints"]] == [0, 1, 2]
    assert run["best_checkpoint"]["path"] == "ckpt/epoch=2.ckpt"
    assert run["summary"]["train_runtime"] == 12.5
    assert run["errors"] == [] and run["log_total"] == 41


def test_logs_filter_by_level_search_text_and_tail_after_an_index(client):
    get = lambda **p: client.get("/api/logs", params={"prefix": "vision/resnet/lr-0.1", **p}).json()
    assert len(get()["data"]) == 41
    assert [r["level"] for r in get(level="warn")["data"]] == ["warn"]
    assert [r["message"] for r in get(q="BATCH 13")["data"]] == ["epoch 1 batch 13 done"]
    assert [r["index"] for r in get(after=38)["data"]] == [39, 40]
    assert get(q="0.1")["data"][-1]["message"] == "learning rate looks high"  # metadata is searched too
    assert [r["index"] for r in get(limit=5, before=10)["data"]] == [5, 6, 7, 8, 9]
    assert client.get("/api/logs", params={"prefix": "vision/resnet/lr-0.1", "level": "loud"}).status_code == 400


def test_unknown_or_escaping_prefixes_are_404_not_files(client):
    for prefix in ("nope/nope", "../etc", "/etc/passwd", "vision/../../x"):
        assert client.get("/api/experiment", params={"prefix": prefix}).status_code == 404
    assert client.get("/api/series", params={"prefix": "vision/resnet/lr-0.1", "name": "../../experiment.json"}).status_code == 404


def test_every_response_has_a_strict_content_security_policy_and_the_title_is_escaped(root):
    client = TestClient(create_app(LocalSource(root), title=HOSTILE))
    for path in ("/", "/api/experiments", "/static/js/app.js", "/api/experiment?prefix=nope/x"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert "default-src 'self'" in CSP and "unsafe" not in CSP
        assert response.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_hostile_strings_come_back_as_plain_json_text(client):
    rows = {r["prefix"]: r for r in client.get("/api/experiments").json()["experiments"]}
    evil = rows["nlp/" + HOSTILE]
    assert evil["name"] == HOSTILE and evil["params"][HOSTILE] == HOSTILE
    assert client.get("/api/experiments").headers["content-type"] == "application/json"


def test_auth_hook_guards_the_api_but_not_the_static_page(root):
    seen = []

    class Source(LocalSource):
        def list_experiments(self, project=None):
            seen.append(current_principal.get())
            return super().list_experiments(project)

    def auth(request):
        token = request.headers.get("authorization", "")
        if token == "Bearer reader":
            return {"namespaces": ["default"]}
        if token == "Bearer writer-only":
            raise PermissionError("this token has no read scope")
        if token == "Bearer teapot":
            raise HTTPException(418, "short and stout")
        return False

    client = TestClient(create_app(Source(root), auth=auth))
    assert client.get("/").status_code == 200
    assert client.get("/static/js/app.js").status_code == 200
    denied = client.get("/api/experiments")
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/experiments", headers={"authorization": "Bearer writer-only"}).status_code == 403
    assert client.get("/api/series", headers={"authorization": "Bearer teapot"}).status_code == 418
    assert seen == []
    ok = client.get("/api/experiments", headers={"authorization": "Bearer reader"})
    assert ok.status_code == 200 and seen == [{"namespaces": ["default"]}]
    assert client.get("/api/info").json()["auth"] is True


def test_async_auth_hooks_are_awaited(root):
    async def auth(request):
        return request.headers.get("authorization") == "Bearer ok"

    client = TestClient(create_app(LocalSource(root), auth=auth))
    assert client.get("/api/experiments").status_code == 401
    assert client.get("/api/experiments", headers={"authorization": "Bearer ok"}).status_code == 200


def test_a_source_without_metric_view_is_downsampled_by_the_app_alike(root, client):
    class Plain:
        """Only the protocol's five methods, as a minimal server source would have."""

        def __init__(self, inner):
            self.inner = inner

        def list_experiments(self, project=None):
            return self.inner.list_experiments(project)

        def get_experiment(self, prefix):
            return self.inner.get_experiment(prefix)

        def metric_names(self, prefix):
            return self.inner.metric_names(prefix)

        def read_metric(self, prefix, name, start_index=0, limit=1000):
            return self.inner.read_metric(prefix, name, start_index, limit)

        def read_logs(self, prefix, start_index=0, limit=1000, level=None):
            return self.inner.read_logs(prefix, start_index, limit, level)

    plain = TestClient(create_app(Plain(LocalSource(root))))
    params = {"prefix": "long/spiky", "name": "loss", "x": "step", "width": 300}
    assert series(plain, **params)["points"] == series(client, **params)["points"]
    assert plain.get("/api/experiment", params={"prefix": "nlp/bert-crash"}).json()["errors"]


def test_mldash_ui_prints_its_url_and_serves_with_a_required_token(root):
    server = UiServer(root, "--token", "s3cret")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert "?token=s3cret" in "".join(server.output)
        assert httpx.get(server.url + "api/experiments").status_code == 401
        ok = httpx.get(server.url + "api/experiments", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and len(ok.json()["experiments"]) == 5
    finally:
        server.stop()


def test_mldash_ui_refuses_a_port_in_use_with_a_clear_message(root):
    server = UiServer(root)
    try:
        port = server.url.rsplit(":", 1)[1].strip("/")
        done = subprocess.run(
            [sys.executable, "-m", "mldash", "ui", root, "--port", port], capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and "--port 0" in done.stderr
    finally:
        server.stop()


def test_console_returns_the_runs_records_404_unknown_and_400_bad_start(tmp_path):
    from _ui_support import RED_LINE, system_run

    root = str(tmp_path / "root")
    prefix = system_run(root)
    client = TestClient(create_app(LocalSource(root, cache=False)))
    got = client.get("/api/console", params={"prefix": prefix})
    assert got.status_code == 200, got.text
    body = got.json()
    assert [(r["index"], r["stream"], r["text"]) for r in body["data"]] == [
        (0, "stdout", "starting up"), (1, "stderr", RED_LINE), (2, "stdout", HOSTILE), (3, "stderr", "a warning on stderr")]
    assert body["total"] == 4 and all("timestamp" in r for r in body["data"])
    tail = client.get("/api/console", params={"prefix": prefix, "limit": 2}).json()
    assert [r["index"] for r in tail["data"]] == [2, 3]
    page = client.get("/api/console", params={"prefix": prefix, "start_index": 1, "limit": 1}).json()
    assert [r["index"] for r in page["data"]] == [1] and page["has_more"]
    assert client.get("/api/console", params={"prefix": "no/such/run"}).status_code == 404
    for bad in ("x", "-1", "1.5"):
        assert client.get("/api/console", params={"prefix": prefix, "start_index": bad}).status_code == 400
    # the run's own metrics list keeps sys/ series (the page puts them in the System section)
    assert "sys/cpu" in client.get("/api/experiment", params={"prefix": prefix}).json()["metric_names"]
