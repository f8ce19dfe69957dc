"""Metric series: append, append_batch, read; indices, special floats, scalars, names."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

import mldash


def test_read_returns_the_documented_shape(exp):
    loss = exp.metrics("loss")
    for step in range(5):
        loss.append(value=1.0 / (step + 1), step=step)
    result = loss.read(start_index=1, limit=2)
    assert set(result) == {"data", "start_index", "end_index", "total", "has_more"}
    assert result["start_index"] == 1 and result["end_index"] == 2
    assert result["total"] == 5 and result["has_more"] is True
    assert [p["index"] for p in result["data"]] == [1, 2]
    assert result["data"][0]["data"] == {"value": 0.5, "step": 1}
    assert abs(result["data"][0]["timestamp"] - time.time()) < 60


def test_paging_reads_every_point_once(exp):
    exp.metrics("loss").append_batch([{"value": i, "step": i} for i in range(2500)])
    seen, start = [], 0
    while True:
        page = exp.metrics("loss").read(start, 1000)
        seen += [p["data"]["value"] for p in page["data"]]
        if not page["has_more"]:
            break
        start = page["end_index"] + 1
    assert seen == list(range(2500))


def test_reading_past_the_end_is_empty_not_an_error(exp):
    exp.metrics("loss").append(value=1)
    page = exp.metrics("loss").read(10, 5)
    assert page["data"] == [] and page["total"] == 1 and page["has_more"] is False


def test_points_are_visible_on_disk_within_a_second_without_flush(exp):
    exp.metrics("loss").append(value=1.0, step=0)
    data = Path(exp.path) / "metrics" / "loss" / "data.jsonl"
    deadline = time.time() + 1.5
    while time.time() < deadline and not (data.exists() and data.stat().st_size):
        time.sleep(0.02)
    assert data.read_bytes().count(b"\n") == 1


def test_each_line_on_disk_is_valid_json_even_for_nan_and_inf(exp):
    m = exp.metrics("loss")
    m.append(value=float("nan"), step=0)
    m.append(value=float("inf"), step=1)
    m.append(value=-math.inf, step=2, note="null is a word")
    m.append(value=None, step=3)
    exp.flush()
    lines = (Path(exp.path) / "metrics" / "loss" / "data.jsonl").read_bytes().splitlines()
    assert len(lines) == 4
    for line in lines:
        json.loads(line)  # strict JSON: no bare NaN or Infinity
    data = [p["data"] for p in m.read()["data"]]
    assert math.isnan(data[0]["value"])
    assert data[1]["value"] == math.inf and data[2]["value"] == -math.inf
    assert data[2]["note"] == "null is a word"
    assert data[3]["value"] is None


def test_numpy_and_torch_scalars_are_stored_as_numbers(exp):
    exp.metrics("m").append(
        f32=np.float32(0.25), i64=np.int64(3), b=np.bool_(True), t=torch.tensor(1.5),
        ti=torch.tensor([7]), nan=torch.tensor(float("nan")),
    )
    point = exp.metrics("m").read()["data"][0]["data"]
    assert point["f32"] == 0.25 and point["i64"] == 3 and point["b"] is True
    assert point["t"] == 1.5 and point["ti"] == 7 and math.isnan(point["nan"])


def test_a_users_timestamp_field_is_kept_apart_from_the_write_time(exp):
    exp.metrics("system").append(cpu=45.2, timestamp=1000.0)
    point = exp.metrics("system").read()["data"][0]
    assert point["data"]["timestamp"] == 1000.0
    assert point["timestamp"] > 1_700_000_000


def test_a_batch_dict_reused_by_the_caller_is_copied(exp):
    point = {"value": 1, "step": 0}
    batch = [point]
    exp.metrics("loss").append_batch(batch)
    point["value"] = 99
    assert exp.metrics("loss").read()["data"][0]["data"]["value"] == 1


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"value": [1, 2]}, "field 'value' has a value of type list"),
        ({"value": {"a": 1}}, "type dict"),
        ({"value": object()}, "type object"),
        ({"value": torch.ones(3)}, "one-element tensor"),
        ({"value": np.ones(2)}, "numpy scalar"),
    ],
)
def test_values_that_cannot_be_stored_fail_at_the_call(exp, fields, message):
    with pytest.raises(TypeError, match=message):
        exp.metrics("loss").append(**fields)
    with pytest.raises(TypeError, match=message):
        exp.metrics("loss").append_batch([fields])
    assert exp.metrics("loss").read()["total"] == 0


@pytest.mark.parametrize("fields", [{"note": "bad \ud800 text"}, {"bad\udc80name": 1}])
def test_text_that_json_cannot_hold_fails_at_the_call(exp, fields):
    with pytest.raises(ValueError, match="not valid Unicode"):
        exp.metrics("loss").append(**fields)
    with pytest.raises(ValueError, match="not valid Unicode"):
        exp.metrics("loss").append_batch([fields])
    exp.metrics("loss").append(**{"note": "ünï", "准确率": 0.5})  # any valid Unicode is fine
    exp.metrics("loss").append(**{"note": "ünï", "准确率": 0.25})
    data = [p["data"] for p in exp.metrics("loss").read()["data"]]
    assert data == [{"note": "ünï", "准确率": 0.5}, {"note": "ünï", "准确率": 0.25}]


def test_bad_batches_fail_at_the_call(exp):
    with pytest.raises(TypeError, match="list of dicts"):
        exp.metrics("loss").append_batch({"value": 1})
    with pytest.raises(TypeError, match="must be dicts"):
        exp.metrics("loss").append_batch([1, 2])
    with pytest.raises(TypeError, match="field name must be a str"):
        exp.metrics("loss").append_batch([{1: 2}])
    with pytest.raises(ValueError, match="at least one field"):
        exp.metrics("loss").append()


@pytest.mark.parametrize(
    "name", ["", "..", "a/../b", "/etc/passwd", "a\x00b", "x" * 300, "a//b", "a\\b", "loss/data.jsonl"]
)
def test_bad_metric_names_fail_at_the_call(exp, name):
    with pytest.raises(ValueError):
        exp.metrics(name)


def test_a_slash_in_a_metric_name_nests_folders(exp):
    exp.metrics("train/loss").append(value=1)
    exp.metrics("train").append(value=2)
    exp.flush()
    assert (Path(exp.path) / "metrics" / "train" / "loss" / "data.jsonl").is_file()
    assert (Path(exp.path) / "metrics" / "train" / "data.jsonl").is_file()
    assert exp.metric_names() == ["train", "train/loss"]


def test_threads_appending_to_one_series_get_unique_gapless_indices(exp):
    def work(tid):
        m = exp.metrics("shared")
        for i in range(5000):
            m.append(thread=tid, i=i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = exp.metrics("shared").read(0, 100_000)
    assert result["total"] == 20_000
    assert [p["index"] for p in result["data"]] == list(range(20_000))
    by_thread = {}
    for p in result["data"]:
        by_thread.setdefault(p["data"]["thread"], []).append(p["data"]["i"])
    assert all(v == list(range(5000)) for v in by_thread.values())  # order kept per writer


def test_processes_appending_to_one_series_get_unique_gapless_indices(root):
    code = (
        "import mldash, sys\n"
        "exp = mldash.Experiment('metrics/multi', root=sys.argv[1], flush_interval=0.01)\n"
        "m = exp.metrics('loss')\n"
        "for i in range(3000):\n"
        "    m.append(proc=int(sys.argv[2]), i=i)\n"
        "    if i % 100 == 0: exp.flush()\n"
        "exp.finish()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(k)]) for k in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    exp = mldash.Experiment("metrics/multi", root=root)
    result = exp.metrics("loss").read(0, 100_000)
    assert result["total"] == 9000
    assert [p["index"] for p in result["data"]] == list(range(9000))
    pairs = {(p["data"]["proc"], p["data"]["i"]) for p in result["data"]}
    assert len(pairs) == 9000
    # the offset index beside the data agrees with the lines
    idx = (Path(exp.path) / "metrics" / "loss" / "data.idx").read_bytes()
    data = (Path(exp.path) / "metrics" / "loss" / "data.jsonl").read_bytes()
    offsets = np.frombuffer(idx, dtype="<u8")
    line_starts = [0] + [i + 1 for i, b in enumerate(data) if b == 10][:-1]
    assert list(offsets) == line_starts[::1024]


def test_reads_near_the_end_of_a_long_series_seek_instead_of_scanning(exp):
    m = exp.metrics("long")
    for start in range(0, 200_000, 10_000):
        m.append_batch([{"v": i} for i in range(start, start + 10_000)])
    page = m.read(199_950, 100)
    assert [p["data"]["v"] for p in page["data"]] == list(range(199_950, 200_000))
    assert page["total"] == 200_000 and not page["has_more"]


def test_negative_or_non_integer_ranges_are_rejected(exp):
    with pytest.raises(ValueError, match="start_index"):
        exp.metrics("loss").read(-1)
    with pytest.raises(ValueError, match="limit"):
        exp.metrics("loss").read(0, -5)


def test_ints_beyond_64_bits_are_kept_not_lost(exp):
    exp.metrics("big").append(value=2**70)
    assert exp.metrics("big").read()["data"][0]["data"]["value"] == float(2**70)


def test_a_value_step_point_costs_at_most_60_bytes_on_disk(exp):
    import random

    rng = random.Random(0)
    values = [rng.random() for _ in range(100_000)]  # full-precision floats, 17-19 digits
    m = exp.metrics("loss")
    for step, value in enumerate(values):
        m.append(value=value, step=step)
    exp.flush()
    folder = Path(exp.path) / "metrics" / "loss"
    size = sum(f.stat().st_size for f in folder.iterdir())  # data and its offset index
    assert size / len(values) <= 60
    first = orjson.loads((folder / "data.jsonl").read_bytes().splitlines()[0])
    assert first[1] == {"value": values[0], "step": 0}  # no precision given up


def test_accelerator_tensors_are_not_read_on_the_callers_thread(exp):
    """On a device tensor the caller only clones (an async copy); the writer reads it.

    The "meta" device stands in for CUDA here: reading it raises, so a read on the
    caller's thread would fail the append, and the writer stores what it can.
    """
    loss = torch.tensor(0.5, device="meta")
    exp.metrics("loss").append(value=loss, step=1)  # no .item() here, so no error
    exp.metrics("loss").append(value=0.25, step=2)
    data = [p["data"] for p in exp.metrics("loss").read()["data"]]
    assert data[1] == {"value": 0.25, "step": 2}  # the unreadable point held nothing back
    assert data[0]["step"] == 1 and "meta" in str(data[0]["value"])


def test_appends_and_batches_on_one_series_keep_their_order(exp):
    m = exp.metrics("mixed")
    m.append(v=0)
    m.append_batch([{"v": 1}, {"v": 2}])
    m.append(v=3)
    m.append_batch([{"v": 4, "text": "a {brace} and [bracket]"}, {"v": 5, "nan": float("nan")}])
    m.append_batch(({"v": i} for i in (6, 7)))  # any iterable of dicts
    data = [p["data"] for p in m.read()["data"]]
    assert [d["v"] for d in data] == list(range(8))
    assert data[4]["text"] == "a {brace} and [bracket]" and math.isnan(data[5]["nan"])


@pytest.mark.parametrize("line", [b'[1,{"value":', b'{"value":1}', b"[1,2]", b'["1",{"value":1}]', b"[1,{},3]", b"null",
                                  b'[1,{"$float":"NaN"}]', b"[1.5,{\"value\":1}]"],
                         ids=["torn", "an object", "no fields", "a text time", "three items", "null",
                              "a tag for the fields", "a float time"])
def test_a_line_that_is_not_a_point_is_skipped_by_read_stats_and_frames(exp, line):
    """Also by the dashboard's reader, which must not show what read() skips."""
    m = exp.metrics("m")
    m.append(value=0.5)
    exp.flush()
    with open(os.path.join(m.folder, "data.jsonl"), "ab") as f:
        f.write(line + b"\n" + b'[1700000000000,{"value":2.0}]\n')
    points = m.read()["data"]
    assert [(p["index"], p["data"]) for p in points] == [(0, {"value": 0.5}), (2, {"value": 2.0})]
    run = mldash.runs(root=exp.root)[0]
    assert run.metric_stats()["m"].value("max") == 2.0
    from mldash.ui.local import LocalSource

    assert LocalSource(exp.root).metric_view(exp.prefix, "m", "index")["points"]["index"] == [0, 2]
    pytest.importorskip("pandas")
    assert m.to_pandas()["value"].to_dict() == {0: 0.5, 2: 2.0}


@pytest.mark.parametrize("value", [b'{"$float":[]}', b'{"$float":{}}', b'{"$int":"' + b"9" * 5000 + b'"}'],
                         ids=["unhashable float tag", "dict float tag", "int past int()'s digits"])
def test_a_malformed_tag_reads_as_the_plain_dict_it_is_in_every_reader(exp, value):
    from mldash.ui.local import LocalSource

    m = exp.metrics("m")
    m.append(value=0.5, step=0)
    exp.flush()
    with open(os.path.join(m.folder, "data.jsonl"), "ab") as f:
        f.write(b'[1700000000000,{"value":' + value + b',"step":1}]\n')
    points = m.read()["data"]
    assert len(points) == 2 and isinstance(points[1]["data"]["value"], dict)  # kept as stored: a plain dict
    assert mldash.runs(root=exp.root)[0].metric_stats()["m"].value("max") == 0.5
    assert LocalSource(exp.root).metric_view(exp.prefix, "m", "step")["points"]["x"] == [0, 1]
    pytest.importorskip("pandas")
    assert len(m.to_pandas()) == 2

