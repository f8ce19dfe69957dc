"""The dashboard's API against the hostile-input tables (tests/hostile_inputs.py).

A bad prefix or metric name gets 400 or 404 on every route, never a 500, and never
anything from outside the root: a run planted next to the root must stay unseen.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hostile_inputs import BAD_LABELS, BAD_PATH_PARTS, BAD_PATHS
from starlette.testclient import TestClient

import mldash
from mldash.ui.app import create_app
from mldash.ui.local import LocalSource


SECRET = "planted-outside-the-root"
PLANTED = ":666.0"  # the planted run's value as JSON holds it (a bare "666" is in many a time)
ROUTES = ("/api/experiment", "/api/series", "/api/metric", "/api/logs")
BAD = sorted(
    {v for v, _, _ in BAD_PATH_PARTS + BAD_PATHS + BAD_LABELS if isinstance(v, str) and "\x00" not in v}
    | {"../outside/run", "../../outside/run", "/etc/passwd", "%2e%2e/outside/run", "p/../../outside/run"}
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui-hostile")
    with mldash.Experiment("p/run", root=base / "root") as exp:
        exp.metrics("loss").append(value=1.0, step=0)
    with mldash.Experiment("p/big", root=base / "root") as big:  # values the codec tags
        big.params.set(seed=2**70, nan=float("nan"))
        big.metrics("loss").append(value=2**70, step=0)
        big.metrics("loss").append(value=float("inf"), step=1)
        big.log("x", metadata={"n": 2**70, "f": float("-inf")})
    with mldash.Experiment("outside/run", root=base, description=SECRET) as outside:
        outside.metrics("loss").append(value=666.0, step=0)
        outside.log(SECRET, level="error")
    return TestClient(create_app(LocalSource(base / "root")), raise_server_exceptions=False)


def get(client, route: str, **params: str):
    """GET with the values sent byte for byte (a lone surrogate as its WTF-8 bytes,
    which no client library will encode)."""
    query = "&".join(f"{k}={quote(v, safe='', errors='surrogatepass')}" for k, v in params.items())
    return client.get(f"{route}?{query}")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("prefix", BAD, ids=lambda v: repr(v)[:30])
def test_a_bad_prefix_is_refused_on_every_route(client, route, prefix):
    response = get(client, route, prefix=prefix, name="loss")
    assert response.status_code in (400, 404), (response.status_code, response.text[:300])
    assert SECRET not in response.text and PLANTED not in response.text


@pytest.mark.parametrize("route", ("/api/series", "/api/metric"))
@pytest.mark.parametrize("name", BAD + ["../../outside/run/metrics/loss"], ids=lambda v: repr(v)[:30])
def test_a_bad_metric_name_is_refused(client, route, name):
    response = get(client, route, prefix="p/run", name=name)
    assert response.status_code in (400, 404), (response.status_code, response.text[:300])
    assert PLANTED not in response.text


def test_the_listing_shows_only_what_is_under_the_root(client):
    rows = client.get("/api/experiments").json()
    assert SECRET not in str(rows) and "outside/run" not in str(rows)


def test_the_run_under_the_root_reads_on_every_route(client):  # so the refusals above mean something
    for route in ROUTES:
        assert get(client, route, prefix="p/run", name="loss").status_code == 200, route


@pytest.mark.parametrize("route", ("/api/experiments",) + ROUTES)
def test_big_ints_and_non_finite_floats_read_on_every_route(client, route):
    response = get(client, route, prefix="p/big", name="loss")
    assert response.status_code == 200, response.text[:300]
    if route == "/api/experiment":
        assert str(2**70) in response.text


# ---- the filter routes (issue 16 item 5) ----------------------------------------------
HOSTILE_FILTERS = [
    "\x00", "name = \x00", "\ud800", "name = '\ud800'", "(" * 500 + "status = RUNNING" + ")" * 500,
    "not " * 300 + "status = RUNNING", "x" * 60_000, "name = '" + "y" * 60_000 + "'", "name =~ '('", "name =~ '(a+)+$' or", "params.\"", "metrics..min < 1",
    "params.x in [" + "1, " * 5000 + "1]", '"\\u0000" in tags', "status = 'x' or " * 200 + "name = y",
    f'description ~ "*{SECRET}*"', "prefix ~ '../*'",
] + BAD


@pytest.mark.parametrize("route", ("/api/experiments", "/api/keys"))
@pytest.mark.parametrize("param", ("q", "filter"))
@pytest.mark.parametrize("text", HOSTILE_FILTERS, ids=lambda v: repr(v)[:30])
def test_a_hostile_filter_is_answered_never_a_500_and_never_beyond_the_root(client, route, param, text):
    response = get(client, route, **{param: text})
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    assert SECRET not in response.text or response.status_code == 400  # a 400 may echo the filter, not the run
    if response.status_code == 200:
        assert "outside/run" not in response.text and PLANTED not in response.text
    else:
        assert response.json()["error"]


@pytest.mark.parametrize("ref", BAD, ids=lambda v: repr(v)[:30])
def test_values_of_a_bad_run_are_missing_and_read_nothing_outside(client, ref):
    response = get(client, "/api/values", key="description", run=ref)
    assert response.status_code in (200, 400), response.text[:300]
    assert SECRET not in response.text and PLANTED not in response.text
    if response.status_code == 200:
        assert response.json()["runs"] == []


@pytest.mark.parametrize("key", ["metrics.loss", "\x00", "params.a = 1 or params.b", "(params.a)", "x" * 60_000])
def test_values_refuse_a_hostile_key(client, key):
    response = get(client, "/api/values", key=key, run="p/run")
    assert response.status_code == 400, response.text[:300]


def test_values_and_filters_read_big_ints_and_nan(client):
    body = get(client, "/api/values", key="params.seed", run="p/big").json()
    assert body["runs"][0]["values"] == [{"$int": str(2**70)}]
    for text in (f"params.seed = {2**70}", "metrics.loss.min = 1180591620717411303424", "metrics.loss.last > 1e300"):
        assert [r["prefix"] for r in get(client, "/api/experiments", q=text).json()["experiments"]] == ["p/big"], text


# ---- the files and media routes (issue 15 item 5) ---------------------------------------
FILE_SECRET = "a file planted outside the root"


@pytest.fixture(scope="module")
def files_client(tmp_path_factory):
    """p/run has a file, an HTML page and an image series; outside/run, next to the root, a
    file of its own (whose id a request may name) that must never be served."""
    import numpy as np

    base = tmp_path_factory.mktemp("ui-hostile-files")
    with mldash.Experiment("p/run", root=base / "root", system_metrics=False) as exp:
        kept = exp.files(prefix="/cfg").save_text("inside", "notes.txt")
        page = exp.files(prefix="/web").save_blob(b"<script>alert(1)</script>", "<img src=x onerror=alert(1)>.html")
        exp.metrics("samples").append(image=mldash.Image(np.zeros((4, 4), np.uint8), caption="<script>x</script>"), step=0)
    with mldash.Experiment("outside/run", root=base, system_metrics=False) as outside:
        planted = outside.files(prefix="/x").save_text(FILE_SECRET, "secret.txt")
    client = TestClient(create_app(LocalSource(base / "root", cache=False, warm=False)), raise_server_exceptions=False)
    return client, kept, page, planted


FILE_ROUTES = ("/api/files", "/api/file", "/api/media")


@pytest.mark.parametrize("route", FILE_ROUTES)
@pytest.mark.parametrize("prefix", BAD, ids=lambda v: repr(v)[:30])
def test_a_bad_prefix_is_refused_on_the_file_routes(files_client, route, prefix):
    client, kept, _, planted = files_client
    for file_id in (kept["id"], planted["id"]):
        response = get(client, route, prefix=prefix, id=file_id, name="samples")
        assert response.status_code in (400, 404), (response.status_code, response.text[:300])
        assert FILE_SECRET not in response.text and "inside" not in response.text


@pytest.mark.parametrize("file_id", BAD + ["../../etc/passwd", "../outside/run/files/files.jsonl", "/etc/passwd", "1" * 65, "\u202e1"],
                         ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("param", ("id", "sha"))
def test_a_bad_file_id_or_sha_is_refused(files_client, file_id, param):
    client = files_client[0]
    response = get(client, "/api/file", prefix="p/run", **{param: file_id})
    assert response.status_code in (400, 404), (response.status_code, response.text[:300])
    assert "root:" not in response.text and FILE_SECRET not in response.text


def test_the_planted_file_is_never_served_by_id_or_by_sha(files_client):
    client, kept, _, planted = files_client
    assert get(client, "/api/file", prefix="p/run", id=planted["id"]).status_code == 404
    assert get(client, "/api/file", prefix="p/run", sha=planted["checksum"]).status_code == 404
    assert get(client, "/api/file", prefix="p/run", id=kept["id"]).text == "inside"  # so the 404 means something


@pytest.mark.parametrize("view", ("", "text", "image", "download"))
def test_a_hostile_html_file_is_only_an_attachment(files_client, view):
    client, _, page, _ = files_client
    response = get(client, "/api/file", prefix="p/run", id=page["id"], view=view)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=\"") and "<" not in disposition.split("filename*=")[0]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize("name", BAD + ["../../outside/run/metrics/loss"], ids=lambda v: repr(v)[:30])
def test_a_bad_media_series_name_is_refused(files_client, name):
    response = get(files_client[0], "/api/media", prefix="p/run", name=name)
    assert response.status_code in (400, 404), (response.status_code, response.text[:300])


def test_a_caption_comes_back_as_data(files_client):
    body = get(files_client[0], "/api/media", prefix="p/run", name="samples").json()
    assert body["fields"]["image"]["points"][0]["caption"] == "<script>x</script>"
