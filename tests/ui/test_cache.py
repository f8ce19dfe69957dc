"""The dashboard's fast parse and its disk cache of parsed columns (mldash.ui.colcache).

A big series is parsed once and kept as columns outside the root; a restarted
dashboard reads them back and parses only the lines appended since. These tests
show that what comes out of the cache is what parsing gives, spikes and exact
zoom included, and that a file that was replaced, rewritten or cut is parsed again.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import httpx
import pytest

import mldash
from mldash.ui.colcache import ColumnCache
from mldash.ui.local import CACHE_MIN_BYTES, LocalSource

from _ui_support import UiServer

pytestmark = pytest.mark.timeout(120)

POINTS = 60_000  # about 3.4 MB of lines: above CACHE_MIN_BYTES, several parse pieces
SPIKE = 41_234


def spiky(i: int, scale: float = 1.0) -> float:
    return scale * (100.0 if i == SPIKE else math.sin(i / 700))


def write_run(root, prefix: str, points: int = POINTS, scale: float = 1.0, start: int = 0) -> str:
    exp = mldash.Experiment(prefix, root=str(root))
    exp.metrics("loss").append_batch([{"value": spiky(i, scale), "step": i} for i in range(start, start + points)])
    exp.finish()
    return os.path.join(exp.path, "metrics", "loss", "data.jsonl")


def source_for(root, cache_dir) -> LocalSource:
    return LocalSource(root, cache=ColumnCache(cache_dir))


def loaded(source: LocalSource, prefix: str, **view) -> dict:
    """A chart's view, once the background save that follows it is done."""
    out = source.metric_view(prefix, "loss", **view)
    assert source.wait_warm(60)
    return out


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


def test_a_restarted_dashboard_reads_a_big_series_back_from_the_cache_outside_the_root(tmp_path, cache_dir):
    root = tmp_path / "runs"
    write_run(root, "p/big")
    before = files_under(root)
    first = source_for(root, cache_dir)
    parsed = loaded(first, "p/big", x="step", width=500)
    assert first.cache.hits == 0 and len(files_under(cache_dir)) == 1
    assert files_under(root) == before  # nothing written inside the runs

    again = source_for(root, cache_dir)
    cached = again.metric_view("p/big", "loss", x="step", width=500)
    assert again.cache.hits == 1
    assert cached == parsed and cached["total"] == POINTS


def test_spikes_and_exact_zoom_come_out_of_the_cache_as_parsing_gives_them(tmp_path, cache_dir):
    root = tmp_path / "runs"
    write_run(root, "p/big")
    loaded(source_for(root, cache_dir), "p/big", x="step")
    cached = source_for(root, cache_dir)
    uncached = LocalSource(root, cache=False)
    for view in ({"x": "step", "width": 300}, {"x": "index", "width": 1200}, {"x": "time", "width": 800},
                 {"x": "step", "lo": SPIKE - 50, "hi": SPIKE + 50, "width": 400}):
        assert cached.metric_view("p/big", "loss", **view) == uncached.metric_view("p/big", "loss", **view)
    assert cached.cache.hits == 1
    whole = cached.metric_view("p/big", "loss", x="step", width=300)
    assert not whole["exact"] and max(whole["points"]["value"]) == 100.0
    assert whole["points"]["x"][whole["points"]["value"].index(100.0)] == SPIKE
    zoom = cached.metric_view("p/big", "loss", x="step", lo=SPIKE - 50, hi=SPIKE + 50, width=400)
    assert zoom["exact"] and zoom["points"]["x"] == [float(s) for s in range(SPIKE - 51, SPIKE + 52)]
    assert zoom["points"]["value"] == [spiky(i) for i in range(SPIKE - 51, SPIKE + 52)]


def test_lines_appended_after_the_cache_was_written_are_parsed_on_top_of_it(tmp_path, cache_dir):
    root = tmp_path / "runs"
    write_run(root, "p/big")
    loaded(source_for(root, cache_dir), "p/big")
    write_run(root, "p/big", points=500, scale=2.0, start=POINTS)  # the run resumed and logged more

    later = source_for(root, cache_dir)
    tail = later.metric_view("p/big", "loss", x="step", lo=POINTS - 2, hi=POINTS + 499, width=1000)
    assert later.cache.hits == 1
    assert tail["total"] == POINTS + 500 and tail["exact"]
    assert tail["points"]["value"] == [spiky(i) for i in (POINTS - 3, POINTS - 2, POINTS - 1)] + [
        spiky(i, 2.0) for i in range(POINTS, POINTS + 500)
    ]
    assert tail["points"]["index"][-1] == POINTS + 499


def test_a_replaced_series_file_is_parsed_again_not_read_from_the_cache(tmp_path, cache_dir):
    root = tmp_path / "runs"
    data = write_run(root, "p/big")
    source = source_for(root, cache_dir)
    loaded(source, "p/big")
    shutil.rmtree(os.path.dirname(os.path.dirname(os.path.dirname(data))))  # the run is deleted...
    write_run(root, "p/big", points=POINTS + 100, scale=-1.0)  # ...and run again under the same name

    for fresh in (source, source_for(root, cache_dir)):  # the running dashboard and a restarted one
        view = fresh.metric_view("p/big", "loss", x="step", width=300)
        assert view["total"] == POINTS + 100
        assert min(view["points"]["value"]) == -100.0 and max(view["points"]["value"]) < 1.01
    assert source.cache.hits == 0


def test_a_series_rewritten_in_place_or_cut_shorter_is_parsed_again(tmp_path, cache_dir):
    root = tmp_path / "runs"
    data = write_run(root, "p/big")
    loaded(source_for(root, cache_dir), "p/big")
    other = tmp_path / "other"
    replacement = open(write_run(other, "p/big", points=POINTS + 2_000, scale=3.0), "rb").read()
    assert len(replacement) > os.path.getsize(data)
    with open(data, "r+b") as f:  # same inode, more bytes, other lines
        f.write(replacement)
        f.truncate()
    rewritten = source_for(root, cache_dir)
    view = rewritten.metric_view("p/big", "loss", x="step", width=300)
    assert rewritten.cache.hits == 0
    assert view["total"] == POINTS + 2_000 and max(view["points"]["value"]) == 300.0
    assert rewritten.wait_warm(60)

    with open(data, "r+b") as f:  # cut to its first 20,000 lines
        lines = f.read().split(b"\n")[:20_000]
        f.seek(0)
        f.write(b"\n".join(lines) + b"\n")
        f.truncate()
    for source in (rewritten, source_for(root, cache_dir)):
        view = source.metric_view("p/big", "loss", x="step", lo=19_990, hi=20_000, width=300)
        assert view["total"] == 20_000
        assert view["points"]["value"] == [spiky(i, 3.0) for i in range(19_989, 20_000)]


def plain(i: int) -> float:
    """Tiny, huge, exponent-written and int values (the int beyond 2**53)."""
    return [1e-300, -2.5e10, 12345678901234567, 0.1][i % 4] + i


def test_odd_lines_among_uniform_ones_read_the_same_as_every_point(tmp_path, cache_dir):
    """The fast parse takes pieces whose lines all have the first line's numeric fields;
    a piece with anything else goes through the general parser. Both agree with read()."""
    exp = mldash.Experiment("p/mixed", root=str(tmp_path))
    metric = exp.metrics("loss")
    expected = []
    for i in range(100_000):
        if i == 5:
            point = {"value": math.nan, "step": i}
        elif i == 17_000:
            point = {"step": i, "value": 7.5}  # other key order
        elif i == 25_000:
            point = {"value": "diverged", "step": i}
        elif i == 30_000:
            point = {"value": 1.0, "step": i, "lr": 0.1}  # an extra field
        elif i == 33_000:
            point = {"step": i}  # no value
        elif i == 90_000:  # alone in its parse piece (about 1 MiB, 18,000 lines)
            point = {"value": 2.5}  # no step: the last field, so only the count of numbers tells
        else:
            point = {"value": plain(i), "step": i}
        metric.append(**point)
        value = point.get("value")
        expected.append(value if isinstance(value, (int, float)) and math.isfinite(value) else None)
    exp.finish()
    source = source_for(tmp_path, cache_dir)
    got = []
    for lo in range(0, 100_000, 10_000):
        view = source.metric_view("p/mixed", "loss", x="index", lo=lo, hi=lo + 9_999, width=10_000)
        assert view["exact"]
        got += view["points"]["value"][1 if lo else 0 : -1 if lo + 9_999 < 99_999 else None]
    assert got == [None if v is None else float(v) for v in expected]
    around = source.metric_view("p/mixed", "loss", x="index", lo=30_000, hi=30_000)
    assert around["fields"] == ["value", "lr"] and around["points"]["lr"] == [None, 0.1, None]
    no_step = source.metric_view("p/mixed", "loss", x="index", lo=90_000, hi=90_000)
    assert no_step["points"]["value"] == [plain(89_999), 2.5, plain(90_001)]
    by_step = source.metric_view("p/mixed", "loss", x="step", lo=89_990, hi=90_010)
    assert 90_000 not in by_step["points"]["index"] and len(by_step["points"]["x"]) == 22  # no x: not drawn


def test_a_chart_asked_for_while_its_series_is_warming_gets_the_whole_series(tmp_path, cache_dir):
    root = tmp_path / "runs"
    write_run(root, "p/big", points=3 * POINTS)
    source = source_for(root, cache_dir)
    source.warm("p/big")
    view = source.metric_view("p/big", "loss", x="step", width=400)
    assert view["total"] == 3 * POINTS and max(view["points"]["value"]) == 100.0
    assert source.wait_warm(60)
    assert len(files_under(cache_dir)) == 1
    source.close()


def test_start_up_warming_loads_big_series_newest_first_and_leaves_small_ones(tmp_path, cache_dir):
    root = tmp_path / "runs"
    older = write_run(root, "p/old")
    time.sleep(0.05)
    newest = write_run(root, "p/new")
    small = write_run(root, "p/small", points=100)
    assert os.path.getsize(newest) >= CACHE_MIN_BYTES > os.path.getsize(small)
    source = source_for(root, cache_dir)
    source.warm_recent(budget=POINTS)  # room for about one of the two big ones
    assert source.wait_warm(60)
    cached = ColumnCache(cache_dir)
    assert [cached.load(p) is not None for p in (newest, older, small)] == [True, False, False]
    assert len(files_under(cache_dir)) == 1


def test_the_least_recently_used_cache_files_go_first_past_the_size_limit(tmp_path, cache_dir):
    root = tmp_path / "runs"
    paths, files = [], []
    for i in range(3):
        paths.append(write_run(root, f"p/run{i}"))
        loaded(source_for(root, cache_dir), f"p/run{i}")
        files.append(next(f for f in files_under(cache_dir) if f not in files))
        os.utime(os.path.join(cache_dir, files[-1]), (1000 + i, 1000 + i))  # written long ago, in order
    assert ColumnCache(cache_dir).load(paths[0]) is not None  # a hit counts as a use
    size = os.path.getsize(os.path.join(cache_dir, files[0]))
    assert ColumnCache(cache_dir, max_bytes=2 * size).prune() == 1
    kept = ColumnCache(cache_dir)
    assert [kept.load(p) is not None for p in paths] == [True, False, True]


def test_mldash_ui_warms_big_series_at_start_into_its_cache_dir(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "p/big")
    cache = tmp_path / "ui-cache"
    server = UiServer(str(root), "--cache-dir", str(cache))
    try:
        deadline = time.time() + 60
        while not files_under(cache) and time.time() < deadline:  # no request made
            time.sleep(0.1)
        assert len(files_under(cache)) == 1
        view = httpx.get(server.url + "api/series", params={"prefix": "p/big", "name": "loss", "width": 300}).json()
        assert view["total"] == POINTS
    finally:
        server.stop()

    off = tmp_path / "no-cache"
    server = UiServer(str(root), "--cache-dir", str(off), "--no-cache")
    try:
        view = httpx.get(server.url + "api/series", params={"prefix": "p/big", "name": "loss", "width": 300}).json()
        assert view["total"] == POINTS and max(view["points"]["value"]) == 100.0
        time.sleep(1.0)  # a save would follow the parse at once
        assert not os.path.exists(off)
    finally:
        server.stop()


def test_a_big_series_asked_for_before_it_is_read_draws_a_coarse_sample_of_real_points_first(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "p/big")
    source = LocalSource(root, cache=False, coarse_bytes=CACHE_MIN_BYTES)
    first = source.metric_view("p/big", "loss", x="step", width=300)
    assert first["coarse"] and not first["exact"]
    assert first["total"] == POINTS and (first["x_min"], first["x_max"]) == (0, POINTS - 1)  # the whole range
    points = first["points"]
    assert 100 < len(points["x"]) < 2_000
    assert all(points["value"][k] == spiky(i) and points["x"][k] == i for k, i in enumerate(points["index"]))

    real = source.metric_view("p/big", "loss", x="step", width=300)  # waits for the parse
    assert "coarse" not in real and real["total"] == POINTS
    assert max(real["points"]["value"]) == 100.0  # the spike a sample may miss
    assert real == LocalSource(root, cache=False, coarse_bytes=0).metric_view("p/big", "loss", x="step", width=300)
    assert source.wait_warm(60)


def test_no_coarse_view_for_a_small_or_read_series_or_without_its_index(tmp_path, cache_dir):
    root = tmp_path / "runs"
    data = write_run(root, "p/big")
    write_run(root, "p/small", points=1_000)
    def coarse():
        return LocalSource(root, cache=ColumnCache(cache_dir), coarse_bytes=CACHE_MIN_BYTES)

    assert "coarse" not in coarse().metric_view("p/small", "loss")
    loaded(coarse(), "p/big")  # once read through, then from the disk cache
    restarted = coarse()
    assert "coarse" not in restarted.metric_view("p/big", "loss") and restarted.cache.hits == 1
    os.unlink(data.replace("data.jsonl", "data.idx"))
    view = LocalSource(root, cache=False, coarse_bytes=CACHE_MIN_BYTES).metric_view("p/big", "loss", width=300)
    assert "coarse" not in view and max(view["points"]["value"]) == 100.0
