"""The dashboard's filter API (issue 16 item 5): the search box's ``q`` and the strict
``filter`` on api/experiments, the keys for completion, the values for the scatter and
the parallel coordinates, and LocalSource's series statistics for min and max."""

from __future__ import annotations

import math
import os

import pytest
from starlette.testclient import TestClient

import mldash
from mldash import _filter
from mldash.ui.app import create_app
from mldash.ui.local import LocalSource

from _ui_support import HOSTILE, fill_root

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui-filter"))
    fill_root(root)
    with mldash.Experiment("sweep/big", root=root, tags=["odd"]) as exp:  # values the codec tags
        exp.params.set(seed=2**70, ratio=float("nan"), opt="adam")
        exp.summary.set(score=2**70)
        exp.metrics("loss").append(value=float("nan"), step=0)
        exp.metrics("loss").append(value=3.0, step=1)
        exp.metrics("loss").append(value=-2.0, step=2)
        exp.metrics("loss").append(value=1.0, step=3)
    return root


@pytest.fixture(scope="module")
def source(root):
    source = LocalSource(root, cache=False, warm=False)
    yield source
    source.close()


@pytest.fixture(scope="module")
def client(source):
    return TestClient(create_app(source))


def listed(client, **params):
    response = client.get("/api/experiments", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["mode"], sorted(row["prefix"] for row in body["experiments"])


def test_the_search_box_takes_a_filter_and_evaluates_it_on_the_server(client):
    assert listed(client, q="params.lr < 0.05 and status = COMPLETED") == ("filter", ["vision/resnet/lr-0.01"])
    assert listed(client, q="metrics.train/loss.max > 5") == ("filter", ["vision/resnet/lr-0.01", "vision/resnet/lr-0.1"])
    assert listed(client, q="metrics.train/loss.min < 0.5") == ("filter", ["vision/resnet/lr-0.1"])
    assert listed(client, q="summary.best_accuracy > 0.75") == ("filter", ["vision/resnet/lr-0.1"])
    assert listed(client, q='tags contains "baseline" and not name ~ "*0.1"') == ("filter", ["vision/resnet/lr-0.01"])
    assert listed(client, q="status = failed or params.seed = 1180591620717411303424")[1] == ["nlp/bert-crash", "sweep/big"]
    assert listed(client, q="metrics.loss.min = -2 and metrics.loss.max = 3 and metrics.loss.last = 1") == ("filter", ["sweep/big"])
    assert listed(client, q="params.lr < 1", project="nlp") == ("filter", ["nlp/bert-crash"])
    assert listed(client) == listed(client, q="   ") == ("all", listed(client)[1])


def test_plain_text_that_is_no_filter_is_the_name_search(client):
    assert listed(client, q="lr-0.01") == ("text", ["vision/resnet/lr-0.01"])
    assert listed(client, q="RESNET") == ("text", ["vision/resnet/lr-0.01", "vision/resnet/lr-0.1"])
    assert listed(client, q="odd") == ("text", ["sweep/big"])  # a tag
    assert listed(client, q="bert crash") == ("text", [])  # words are one substring, as before
    assert listed(client, q="status") == ("text", [])  # a run key alone is no filter


def test_a_bad_filter_is_a_400_with_the_caret_and_where_it_is(client):
    response = client.get("/api/experiments", params={"q": "params.lr < "})
    assert response.status_code == 400
    body = response.json()
    assert body["filter_error"]["column"] == 13 and "expected a value" in body["filter_error"]["reason"]
    assert body["error"].splitlines()[1:] == ["  params.lr < ", "  " + " " * 12 + "^"]
    # An operator, a bracket or a scope makes it a filter: the error, not a name search.
    for text in ("lr=0.1", "(resnet", "params.lr", 'name ~ "x', "status = DONE"):
        assert client.get("/api/experiments", params={"q": text}).status_code == 400, text
    # The strict parameter never falls back to text.
    assert client.get("/api/experiments", params={"filter": "resnet"}).json()["filter_error"]["column"] == 1
    assert client.get("/api/experiments", params={"filter": "x", "q": "y"}).status_code == 400


def test_keys_list_what_the_runs_shown_offer(client):
    every = client.get("/api/keys").json()["keys"]
    assert every[: len(_filter.RUN_KEYS)] == list(_filter.RUN_KEYS)
    assert {"params.lr", "params.model.arch", "summary.best_accuracy", "metrics.train/loss.min", "metrics.loss.max"} <= set(every)
    assert f'params."{HOSTILE}"' in every  # quoted as a filter spells it
    nlp = client.get("/api/keys", params={"q": "project = nlp"}).json()
    assert nlp["runs"] == 2 and "summary.best_accuracy" not in nlp["keys"] and "metrics.loss.last" in nlp["keys"]
    assert client.get("/api/keys", params={"q": "params.lr <"}).status_code == 400


def test_values_give_each_runs_params_and_metric_last_min_max(client):
    keys = ["params.lr", "metrics.train/loss.min", "metrics.train/loss.max", "metrics.train/loss.last", "name", "params.nope"]
    runs = ["vision/resnet/lr-0.1", "nlp/bert-crash", "no/such-run", "vision/resnet/lr-0.1"]
    body = client.get("/api/values", params={"key": keys, "run": runs}).json()
    assert body["keys"] == keys and body["missing"] == ["no/such-run"]
    first, crash = body["runs"]
    assert first["ref"] == "vision/resnet/lr-0.1" and first["status"] == "COMPLETED"
    lr, low, high, last, name, nope = first["values"]
    assert (lr, name, nope) == (0.1, "lr-0.1", None)
    assert low == pytest.approx(2.0 * math.exp(-299 * 0.1 / 3)) == last and high == pytest.approx(5.0 + 2.0 * math.exp(-137 * 0.1 / 3))
    assert crash["values"][:4] == [3e-05, None, None, None]


def test_values_keep_big_ints_and_leave_nan_out_of_min_and_max(client):
    body = client.get("/api/values", params={"key": ["params.seed", "params.ratio", "summary.score", "metrics.loss.min", "params.opt"], "run": "sweep/big"})
    assert body.status_code == 200
    seed, ratio, score, low, opt = body.json()["runs"][0]["values"]
    assert seed == score == {"$int": str(2**70)}  # tagged as the dashboard shows it
    assert ratio in (None, {"$float": "NaN"}) and low == -2.0 and opt == "adam"


@pytest.mark.parametrize("key", ["metrics.loss", "nope", "status = RUNNING or params.x", "", "params.", "x" * 300])
def test_values_refuse_what_is_not_one_key(client, key):
    response = client.get("/api/values", params={"key": key, "run": "sweep/big"})
    assert response.status_code == 400 and "not a filter key" in response.json()["error"]


def test_values_need_keys_and_runs_and_cap_them(client):
    assert client.get("/api/values", params={"key": "name"}).status_code == 400
    assert client.get("/api/values", params={"key": ["name"] * 65, "run": "sweep/big"}).status_code == 400
    assert client.get("/api/values", params={"key": "name", "run": [f"r{i}" for i in range(501)]}).status_code == 400


class LegacySource:
    """A source written before filters: list_experiments(project) only, no lookup."""

    def __init__(self, inner: LocalSource) -> None:
        self.inner = inner

    def list_experiments(self, project=None):
        return self.inner.list_experiments(project)

    def get_experiment(self, prefix):
        return self.inner.get_experiment(prefix)


def test_a_source_without_filter_support_is_filtered_by_the_app(source):
    legacy = TestClient(create_app(LegacySource(source)))
    assert listed(legacy, q="params.lr < 0.05 and summary.best_accuracy > 0") == ("filter", ["vision/resnet/lr-0.01"])
    assert listed(legacy, q="metrics.train/loss.last < 0.01") == ("filter", ["vision/resnet/lr-0.1"])
    # Without the source's lookup the app knows no min or max: such a filter matches nothing.
    assert listed(legacy, q="metrics.train/loss.min < 1") == ("filter", [])
    assert listed(legacy, q="not metrics.train/loss.min < 1")[1] == listed(legacy)[1]
    assert listed(legacy, q="lr-0.1") == ("text", ["vision/resnet/lr-0.1"])
    assert legacy.get("/api/experiments", params={"q": "params.lr <"}).status_code == 400
    values = legacy.get("/api/values", params={"key": ["params.lr", "metrics.train/loss.max"], "run": "vision/resnet/lr-0.1"}).json()
    assert values["runs"][0]["values"] == [0.1, None]


def test_min_and_max_follow_a_growing_and_a_rewritten_series(tmp_path):
    root = str(tmp_path)
    exp = mldash.Experiment("live/run", root=root, system_metrics=False)
    loss = exp.metrics("loss")
    loss.append_batch([{"value": float(v), "step": i} for i, v in enumerate([5, 3, 4])])
    exp.flush()
    source = LocalSource(root, cache=False, warm=False)
    try:
        assert [r["prefix"] for r in source.list_experiments(filter="metrics.loss.min = 3 and metrics.loss.max = 5")] == ["live/run"]
        loss.append(value=-1.0, step=3)
        exp.flush()
        assert source.list_experiments(filter="metrics.loss.min = -1 and metrics.loss.last = -1") != []
        exp.finish()
        data = os.path.join(root, "live", "run", "metrics", "loss", "data.jsonl")
        with open(data, "rb") as f:  # rewritten in place: other values, the same length
            text = f.read()
        with open(data, "wb") as f:
            f.write(text.replace(b"5.0", b"3.0").replace(b"4.0", b"3.0").replace(b"-1.0", b"-3.0"))
        assert source.list_experiments(filter="metrics.loss.max = 3 and metrics.loss.min = -3") != []
        # the same values mldash.runs compares
        assert mldash.runs("metrics.loss.max = 3 and metrics.loss.min = -3", root=root).prefixes == ["live/run"]
    finally:
        source.close()


def test_a_series_rewritten_shorter_and_removed_runs_are_forgotten(tmp_path):
    import shutil

    from mldash import _read_cache

    root = str(tmp_path)
    for name in ("keep", "gone"):
        with mldash.Experiment(f"p/{name}", root=root, system_metrics=False) as exp:
            exp.metrics("loss").append_batch([{"value": v, "step": i} for i, v in enumerate([5.0, 3.0, 4.0])])
    source = LocalSource(root, cache=False, warm=False)
    try:
        assert len(source.list_experiments(filter="metrics.loss.min = 3 and metrics.loss.max = 5")) == 2
        data = os.path.join(root, "p", "keep", "metrics", "loss", "data.jsonl")
        with open(data, "rb") as f:
            first = f.read().split(b"\n")[0].replace(b"5.0", b"7.0") + b"\n"
        with open(data, "r+b") as f:  # rewritten in place, shorter than what was read
            f.truncate(0)
            f.write(first)
        assert [r["prefix"] for r in source.list_experiments(filter="metrics.loss.min = 7")] == ["p/keep"]
        assert any(os.sep + "gone" + os.sep in p for p in _read_cache._cache.series)
        shutil.rmtree(os.path.join(root, "p", "gone"))
        assert len(source.list_experiments()) == 1  # a long-lived dashboard keeps nothing of a removed run
        assert not any(os.sep + "gone" + os.sep in p for p in _read_cache._cache.series)
    finally:
        source.close()


def test_a_listing_reads_series_only_for_min_and_max(tmp_path, monkeypatch):
    import mldash.ui.local as local

    root = str(tmp_path)
    for i in range(20):
        with mldash.Experiment(f"p/r{i}", root=root, system_metrics=False) as exp:
            exp.metrics("loss").append(value=float(i), step=0)
    source = LocalSource(root, cache=False, warm=False)
    calls = []
    real = local.series_stats
    monkeypatch.setattr(local, "series_stats", lambda folder: calls.append(folder) or real(folder))
    try:
        assert len(source.list_experiments()) == 20
        assert len(source.list_experiments(filter="params.lr = 1 or metrics.loss.last > 10")) == 9
        assert calls == []  # the last value is in the row already
        assert len(source.list_experiments(filter="metrics.loss.max > 10")) == 9
        assert len(calls) == 20
        assert len(source.list_experiments(filter="metrics.nope.max > 10")) == 0 and len(calls) == 20  # no such series
    finally:
        source.close()


def test_rows_with_metric_stats_give_min_and_max_without_a_lookup():
    from mldash.ui.source import row_lookup

    row = {"params": {}, "metrics": {"loss": {"index": 1, "data": {"value": 2.0, "step": 1}}},
           "metric_stats": {"loss": {"key": "value", "last": 2.0, "min": {"$float": "-Infinity"}, "max": {"$int": str(2**70)}}}}
    lookup = row_lookup(row)
    assert lookup(_filter.Key("metrics", "loss", "min")) == -math.inf
    assert lookup(_filter.Key("metrics", "loss", "max")) == 2**70
    assert lookup(_filter.Key("metrics", "loss", "last")) == 2.0
    assert lookup(_filter.Key("metrics", "gone", "min")) is _filter.MISSING
