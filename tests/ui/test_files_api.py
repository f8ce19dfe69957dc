"""The dashboard's files and media routes: api/files, api/file (bytes, Range, what may go
inline) and api/media, over real runs made with mldash.Experiment."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from starlette.testclient import TestClient

import mldash
from mldash._http_files import parse_range
from mldash.ui._files_api import content_disposition
from mldash.ui.app import create_app
from mldash.ui.local import LocalSource

HOSTILE = "<img src=x onerror=alert(1)>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<html><body><script>alert(1)</script></body></html>"


def image(step: int) -> np.ndarray:
    pixels = np.zeros((6, 9, 3), np.uint8)
    pixels[..., 0] = 40 * step
    return pixels


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-files") / "root"
    with mldash.Experiment("p/run", root=root, system_metrics=False) as exp:
        exp.files(prefix="/cfg", tags=["config", HOSTILE], metadata={"note": HOSTILE}).save_json({"lr": 0.1, "layers": [1, 2]}, "config.json")
        exp.files(prefix="/logs").save_text("line one\nline two\n", "notes.txt")
        exp.files(prefix="/big").save_blob(bytes(range(256)) * 4096, "blob.bin")  # 1 MiB
        exp.files(prefix="/evil").save_blob(HTML, "page.html")
        exp.files(prefix="/evil").save_blob(SVG, "drawing.svg")
        exp.files(prefix="/evil").save_blob(b"not an image at all", "fake.png")
        exp.files(prefix="/evil").save_text("hostile name", HOSTILE)
        for step in range(5):
            exp.metrics("samples").append(image=mldash.Image(image(step), caption=f"step {step} {HOSTILE}"), step=step)
            exp.metrics("weights").append(hist=mldash.Histogram(np.arange(10.0) * (step + 1), bins=4), loss=1.0 / (step + 1), step=step * 10)
        exp.metrics("loss").append(value=1.0, step=0)
    with mldash.Experiment("p/other", root=root, system_metrics=False) as other:
        secret = other.files(prefix="/secret").save_text("the other run's secret", "secret.txt")
    return {"root": root, "secret": secret}


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app(LocalSource(runs["root"], cache=False, warm=False)), raise_server_exceptions=False)


def files_of(client, prefix="p/run") -> dict:
    response = client.get("/api/files", params={"prefix": prefix})
    assert response.status_code == 200, response.text
    return {f"{f['path']}/{f['filename']}".replace("//", "/"): f for f in response.json()["files"]}


def file(client, record, prefix="p/run", **params):
    return client.get("/api/file", params={"prefix": prefix, "id": record["id"], **params.pop("query", {})}, **params)


def test_the_listing_has_the_records_the_sdk_returns(client, runs):
    files = files_of(client)
    config = files["/cfg/config.json"]
    assert config["sizeBytes"] == len(json.dumps({"lr": 0.1, "layers": [1, 2]}, indent=2).encode())
    assert config["tags"] == ["config", HOSTILE] and config["metadata"] == {"note": HOSTILE}
    assert config["contentType"] == "application/json" and len(config["checksum"]) == 64
    assert sum(1 for path in files if path.startswith("/media/samples/")) == 5  # the images, as files
    assert "/secret/secret.txt" not in files
    only = client.get("/api/files", params={"prefix": "p/run", "path": "/cfg"}).json()
    assert [f["filename"] for f in only["files"]] == ["config.json"] and only["total"] == 1


def test_a_download_is_an_attachment_of_the_exact_bytes(client):
    config = files_of(client)["/cfg/config.json"]
    response = file(client, config)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == config["checksum"]
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith('attachment; filename="config.json"')
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert "script-src" not in response.headers["content-security-policy"]
    assert response.headers["accept-ranges"] == "bytes"


def test_ranges_of_a_big_file(client):
    blob = files_of(client)["/big/blob.bin"]
    whole = bytes(range(256)) * 4096
    part = file(client, blob, headers={"range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == whole[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(whole)}"
    assert part.headers["content-length"] == "1000"
    tail = file(client, blob, headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    open_end = file(client, blob, headers={"range": "bytes=1048000-"})
    assert open_end.content == whole[1048000:]
    assert file(client, blob, headers={"range": "bytes=5000000-"}).status_code == 416
    assert file(client, blob, headers={"range": "bytes=abc"}).status_code == 416
    several = file(client, blob, headers={"range": "bytes=0-1,5-6"})  # answered whole
    assert several.status_code == 200 and several.content == whole


def test_parse_range_and_content_disposition():
    assert parse_range(None, 10) is None and parse_range("bytes=2-4", 10) == (2, 5)
    assert parse_range("bytes=8-100", 10) == (8, 10) and parse_range("bytes=-3", 10) == (7, 10)
    for bad in ("bytes=10-", "bytes=5-2", "bytes=-0", "bytes=x-1", "bytes=1"):
        with pytest.raises(ValueError):
            parse_range(bad, 10)
    header = content_disposition("attachment", 'a"b\r\nc/../d;.txt')
    assert "\r" not in header and "\n" not in header and header.count('"') == 2
    assert header.startswith('attachment; filename="a_b__c_.._d_.txt"')


def test_images_go_inline_only_by_their_bytes(client):
    files = files_of(client)
    png = next(f for p, f in files.items() if p.startswith("/media/samples/"))
    shown = file(client, png, query={"view": "image"})
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert shown.headers["content-disposition"].startswith("inline")
    fake = file(client, files["/evil/fake.png"], query={"view": "image"})  # named .png, not one
    assert fake.headers["content-type"] == "application/octet-stream"
    assert fake.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize("name", ["/evil/page.html", "/evil/drawing.svg"])
@pytest.mark.parametrize("view", ["", "image", "text", "download", None])
def test_html_and_svg_are_only_ever_downloads(client, name, view):
    record = files_of(client)[name]
    response = file(client, record, query={} if view is None else {"view": view})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


def test_text_and_json_preview_as_plain_text(client):
    files = files_of(client)
    for name in ("/cfg/config.json", "/logs/notes.txt"):
        response = file(client, files[name], query={"view": "text"})
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["content-disposition"].startswith("inline")
    head = file(client, files["/logs/notes.txt"], query={"view": "text"}, headers={"range": "bytes=0-3"})
    assert head.status_code == 206 and head.text == "line"


def test_a_hostile_file_name_is_a_safe_header(client):
    record = files_of(client)[f"/evil/{HOSTILE}"]
    response = file(client, record)
    disposition = response.headers["content-disposition"]
    assert "<" not in disposition.split("filename*=")[0] and response.text == "hostile name"


def test_a_file_id_of_another_run_is_404(client, runs):
    secret = runs["secret"]
    assert file(client, secret).status_code == 404
    assert client.get("/api/file", params={"prefix": "p/run", "sha": secret["checksum"]}).status_code == 404
    assert "secret" not in file(client, secret).text
    assert file(client, secret, prefix="p/other").text == "the other run's secret"  # where it is


@pytest.mark.parametrize("file_id", ["../../etc/passwd", "..", "/etc/passwd", "x" * 65, "a b", "%2e%2e", "0"])
def test_bad_file_ids_are_404(client, file_id):
    response = client.get("/api/file", params={"prefix": "p/run", "id": file_id})
    assert response.status_code in (400, 404) and "root:" not in response.text


def test_missing_parameters_and_runs(client):
    assert client.get("/api/file", params={"prefix": "p/run"}).status_code == 400
    assert client.get("/api/file", params={"prefix": "p/nope", "id": "1"}).status_code == 404
    assert client.get("/api/files", params={"prefix": "../p/run"}).status_code in (400, 404)
    assert client.get("/api/files", params={"prefix": "p/nope"}).status_code == 404
    config = files_of(client)["/cfg/config.json"]
    assert file(client, config, query={"view": "script"}).status_code == 400


def test_an_image_by_its_sha_within_the_run(client):
    png = next(f for p, f in files_of(client).items() if p.startswith("/media/samples/"))
    response = client.get("/api/file", params={"prefix": "p/run", "sha": png["checksum"], "view": "image"})
    assert response.status_code == 200 and hashlib.sha256(response.content).hexdigest() == png["checksum"]


def test_media_points_of_an_image_series(client):
    got = client.get("/api/media", params={"prefix": "p/run", "name": "samples"}).json()
    points = got["fields"]["image"]["points"]
    assert got["fields"]["image"]["type"] == "image" and got["total"] == 5
    assert [p["step"] for p in points] == [0, 1, 2, 3, 4]
    assert points[2]["caption"] == f"step 2 {HOSTILE}" and (points[2]["width"], points[2]["height"]) == (9, 6)
    png = file(client, {"id": points[3]["file"]}, query={"view": "image"})
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png.content)))
    assert pixels.shape == (6, 9, 3) and int(pixels[0, 0, 0]) == 120
    thinned = client.get("/api/media", params={"prefix": "p/run", "name": "samples", "limit": 2}).json()
    assert [p["step"] for p in thinned["fields"]["image"]["points"]] == [0, 4]


def test_media_points_of_a_histogram_series(client):
    got = client.get("/api/media", params={"prefix": "p/run", "name": "weights"}).json()
    hist = got["fields"]["hist"]
    assert list(got["fields"]) == ["hist"] and hist["type"] == "histogram"  # loss is no media field
    assert [p["step"] for p in hist["points"]] == [0, 10, 20, 30, 40]
    first = hist["points"][0]
    assert len(first["bins"]) == 5 and sum(first["counts"]) == 10 and first["max"] == 9.0


def test_the_experiment_names_its_media_series(client):
    row = client.get("/api/experiment", params={"prefix": "p/run"}).json()
    assert row["media"] == {"samples": {"image": "image"}, "weights": {"hist": "histogram"}}
    assert row["has_files"] is True


def test_media_of_a_growing_series_is_extended(tmp_path):
    root = tmp_path / "root"
    exp = mldash.Experiment("g/run", root=root, system_metrics=False)
    exp.start()
    client = TestClient(create_app(LocalSource(root, cache=False, warm=False)))
    try:
        exp.metrics("samples").append(image=mldash.Image(image(0)), step=0)
        exp.flush()
        first = client.get("/api/media", params={"prefix": "g/run", "name": "samples"}).json()
        assert [p["step"] for p in first["fields"]["image"]["points"]] == [0]
        exp.metrics("samples").append(image=mldash.Image(image(1), caption="later"), step=7)
        exp.flush()
        second = client.get("/api/media", params={"prefix": "g/run", "name": "samples"}).json()
        assert [(p["step"], p.get("caption")) for p in second["fields"]["image"]["points"]] == [(0, None), (7, "later")]
    finally:
        exp.finish()


class _NoFiles:
    """A source without list_files/open_file (as the team server's, for now)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        if name in ("list_files", "open_file"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_source_without_files_gets_404(runs):
    client = TestClient(create_app(_NoFiles(LocalSource(runs["root"], cache=False, warm=False))))
    assert client.get("/api/files", params={"prefix": "p/run"}).status_code == 404
    assert client.get("/api/file", params={"prefix": "p/run", "id": "1"}).status_code == 404
    assert client.get("/api/experiment", params={"prefix": "p/run"}).json()["has_files"] is False
    assert client.get("/api/media", params={"prefix": "p/run", "name": "samples"}).status_code == 200


def test_file_routes_need_the_token(runs):
    from mldash.ui.app import token_auth

    client = TestClient(create_app(LocalSource(runs["root"], cache=False, warm=False), auth=token_auth("s3cret")))
    config = client.get("/api/files", params={"prefix": "p/run"}, headers={"authorization": "Bearer s3cret"}).json()
    record = next(f for f in config["files"] if f["filename"] == "config.json")
    assert client.get("/api/files", params={"prefix": "p/run"}).status_code == 401
    assert client.get("/api/file", params={"prefix": "p/run", "id": record["id"]}).status_code == 401
    assert client.get("/api/media", params={"prefix": "p/run", "name": "samples"}).status_code == 401
    ok = client.get("/api/file", params={"prefix": "p/run", "id": record["id"]}, headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and json.loads(ok.content) == {"lr": 0.1, "layers": [1, 2]}
