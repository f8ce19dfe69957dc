"""A run with images and histograms replicated to a real embedded `mldash server`:
the server takes the tagged points (also in a batch big enough for its checks to
walk every value), stores the PNGs as the run's files, and a reader elsewhere
reads back the same dicts and the same image bytes."""

from __future__ import annotations


import numpy as np
import pytest
from _server_support import start_server

import mldash

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    server = start_server(data=tmp_path_factory.mktemp("server-data"))
    yield server
    server.stop()


def test_images_and_histograms_replicate_and_read_back_the_same_from_elsewhere(embedded, root, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(3)]
    exp = mldash.Experiment("media/remote", root=root, remote=embedded.url)
    samples, weights = exp.metrics("samples"), exp.metrics("weights")
    for step, x in enumerate(images):
        samples.append(image=mldash.Image(x, caption=f"step {step}"), step=step)
    samples.append(image=mldash.Image(images[0]), step=3)  # the same bytes again
    # ~1.5 MB of points in one batch: past MAX_TEXT the server checks every value it holds
    for step in range(120):
        weights.append(w=mldash.Histogram(rng.standard_normal(2000), bins=512), step=step)
    exp.finish()

    reader = mldash.Experiment("media/remote", root=tmp_path / "elsewhere", remote=embedded.url)
    for name in ("samples", "weights"):
        local, remote = exp.metrics(name).read(0, 1000), reader.metrics(name).read(0, 1000)
        assert remote["total"] == local["total"]
        assert [p["data"] for p in remote["data"]] == [p["data"] for p in local["data"]]
    values = [p["data"]["image"] for p in reader.metrics("samples").read()["data"]]
    assert values[3]["file"] == values[0]["file"] and values[1]["caption"] == "step 1"
    for value, x in zip(values, images):
        assert np.array_equal(np.asarray(mldash.Image.read(reader, value)), x)  # downloaded from the server
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").rglob("*.png"))
    assert sorted(f["checksum"] for f in reader.files(prefix="/media/samples").list()) == sorted(
        f["checksum"] for f in exp.files(prefix="/media/samples").list()
    )
    h = reader.metrics("weights").read()["data"][119]["data"]["w"]
    assert h["type"] == "histogram" and len(h["counts"]) == 512 and sum(h["counts"]) == 2000


def test_the_servers_checks_take_a_big_batch_of_tagged_points_as_the_run_stores_them(root):
    """What the uploader sends is the run's lines: past MAX_TEXT bytes the server walks
    every value with the shared checks, which must take the media tags."""
    import orjson

    from mldash._checks import MAX_TEXT
    from mldash.server._validation import series_entry

    rng = np.random.default_rng(1)
    with mldash.Experiment("media/checks", root=root) as exp:
        m = exp.metrics("mixed")
        for step in range(100):
            m.append(w=mldash.Histogram(rng.standard_normal(100), bins=512), step=step)
        m.append(image=mldash.Image(np.zeros((4, 4, 3), np.uint8), caption="\x00 and ü"), step=100)
    lines = open(f"{exp.path}/metrics/mixed/data.jsonl", "rb").read().splitlines()
    assert sum(map(len, lines)) > MAX_TEXT
    entry = series_entry({"name": "mixed", "start_index": 0, "points": [orjson.loads(line) for line in lines]})
    assert entry.blob == b"\n".join(lines)
