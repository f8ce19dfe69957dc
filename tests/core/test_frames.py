"""DataFrames of series (``exp.metrics(name).to_pandas()``) and a run's history
(``mldash._frames.history``, which ``exp.history()`` calls): full resolution,
values decoded as ``read()`` decodes them, whichever way a block is parsed.

Every test runs twice: with the compiled line parser (mldash/_pointparse.c) and
without it (Arrow's CSV reader and orjson), as on a machine with no compiler."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

import mldash
from mldash._frames import history, series_frame

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True, params=["compiled", "python"])
def parser(request, monkeypatch):
    from mldash import _frames

    if request.param == "python":
        monkeypatch.setattr(_frames, "pointparse", None)
    elif _frames.pointparse is None:
        pytest.skip("the compiled parser is not built (or MLDASH_PURE_PYTHON)")
    return request.param


def hist(exp, names=None, x="step"):
    """What exp.history(names, x) does: flush, then read the run folder."""
    exp.flush()
    return history(exp.path, names, x)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def test_a_series_frame_has_index_timestamp_and_every_field(exp):
    exp.metrics("train/loss").append_batch([{"value": 1 / (i + 1), "step": i, "epoch": i // 2} for i in range(10)])
    frame = exp.metrics("train/loss").to_pandas()
    assert list(frame.columns) == ["timestamp", "value", "step", "epoch"]
    assert frame.index.name == "index" and list(frame.index) == list(range(10))
    assert frame["value"].tolist() == [1 / (i + 1) for i in range(10)]
    assert frame["step"].dtype == "int64" and frame["value"].dtype == "float64"
    assert str(frame["timestamp"].dtype) == "datetime64[ms, UTC]"
    first = exp.metrics("train/loss").read(0, 1)["data"][0]
    assert frame["timestamp"].iloc[0].timestamp() == first["timestamp"]


@pytest.mark.parametrize("block_size", [64, 1 << 20])  # 64 bytes: every line a block of its own
def test_fast_and_slow_parsing_agree_with_read(exp, block_size):
    m = exp.metrics("mixed")
    m.append_batch([{"value": float(i), "step": i} for i in range(50)])  # plain: Arrow's CSV
    m.append_batch([{"value": math.nan, "step": 50}, {"value": math.inf, "step": 51}, {"value": 2**70, "step": 52}])
    m.append_batch([{"value": 0.5, "step": 53, "note": "a:b,{c}"}, {"step": 54}, {"value": True, "step": 55}])
    m.append_batch([{"value": float(i), "step": i} for i in range(56, 80)])
    exp.flush()
    frame = series_frame(m.folder, block_size=block_size)
    points = m.read(0, 1000)["data"]
    assert len(frame) == len(points) == 80
    for point in points:
        row = frame.loc[point["index"]]
        for key, value in point["data"].items():
            got = _plain(row[key])
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got)
            else:
                assert got == value and type(got) is type(value) or (type(value) is int and got == value), (key, value, got)
        assert "note" in point["data"] or _missing_cell(row["note"])
    assert frame["note"].iloc[53] == "a:b,{c}"


def _missing_cell(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_big_ints_and_text_are_python_objects_as_read_gives_them(exp):
    exp.metrics("m").append_batch([{"value": 2**70}, {"value": "x"}, {"value": 1.5}])
    frame = exp.metrics("m").to_pandas()
    assert frame["value"].dtype == object
    assert frame["value"].tolist() == [2**70, "x", 1.5]


@pytest.mark.parametrize("block_size", [64, 1 << 20])
def test_a_column_of_ints_and_floats_is_float64_as_pandas_makes_it(exp, block_size):
    m = exp.metrics("m")
    m.append_batch([{"value": 0.5}, {"value": 2**53 + 1}, {"value": 3}])
    exp.flush()
    frame = series_frame(m.folder, block_size=block_size)
    assert frame["value"].dtype == "float64" and frame["value"].tolist() == [0.5, 2.0**53, 3.0]
    assert frame["value"].tolist() == pd.Series([0.5, 2**53 + 1, 3]).tolist()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_frames_column_memory_is_private_after_a_fork():
    """Columns live in anonymous mappings of their own: private, as malloc's memory is,
    so a forked child's writes never show in the parent's frame."""
    import numpy as np

    from mldash._frames import _fresh

    column = _fresh(np, 1000, np.float64)
    column[:] = 0.5
    child = os.fork()
    if child == 0:
        column[0] = 99.0
        os._exit(0)
    os.waitpid(child, 0)
    assert column[0] == 0.5 and column.flags.writeable


def test_a_field_missing_from_some_points_is_nan_there(exp):
    exp.metrics("m").append_batch([{"a": 1.0}, {"b": 2.0}, {"a": 3.0, "b": 4.0}])
    frame = exp.metrics("m").to_pandas()
    assert frame["a"].tolist()[::2] == [1.0, 3.0] and math.isnan(frame["a"].iloc[1])
    assert math.isnan(frame["b"].iloc[0]) and frame["b"].iloc[2] == 4.0


def test_a_users_own_timestamp_field_keeps_its_name(exp):
    exp.metrics("m").append(timestamp=123.0, value=1.0)
    frame = exp.metrics("m").to_pandas()
    assert frame["timestamp"].tolist() == [123.0] and "_timestamp" in frame.columns


def test_a_damaged_line_is_skipped_and_the_index_keeps_its_gap(exp):
    exp.metrics("m").append_batch([{"value": 0.0}, {"value": 1.0}])
    exp.flush()
    path = os.path.join(exp.metrics("m").folder, "data.jsonl")
    with open(path, "ab") as f:
        f.write(b'[1,{"value":\n[1700000000000,{"value":3.0}]\n[17000')  # damaged, fine, partial
    frame = series_frame(exp.metrics("m").folder)
    assert list(frame.index) == [0, 1, 3] and frame["value"].tolist() == [0.0, 1.0, 3.0]


def test_an_empty_or_absent_series_is_an_empty_frame(exp):
    frame = exp.metrics("never").to_pandas()
    assert len(frame) == 0 and "timestamp" in frame.columns


def test_history_joins_series_on_step(exp):
    exp.metrics("train/loss").append_batch([{"value": 1.0 / (s + 1), "step": s} for s in range(4)])
    exp.metrics("val/loss").append_batch([{"value": 0.9, "step": 1, "acc": 0.5}, {"value": 0.8, "step": 3, "acc": 0.6}])
    exp.metrics("lr").append(value=0.1)  # no step: left out
    frame = hist(exp)
    assert frame.index.name == "step" and list(frame.index) == [0, 1, 2, 3]
    assert list(frame.columns) == ["train/loss", "val/loss", "val/loss.acc"]
    assert frame["train/loss"].tolist() == [1.0, 0.5, 1 / 3, 0.25]
    assert math.isnan(frame["val/loss"].loc[0]) and frame["val/loss"].loc[3] == 0.8
    assert frame.loc[1, "val/loss.acc"] == 0.5


def test_history_names_series_and_refuses_one_without_the_x(exp):
    exp.metrics("a").append(value=1.0, step=0)
    exp.metrics("b").append(value=2.0)
    assert list(hist(exp, ["a"]).columns) == ["a"]
    with pytest.raises(ValueError, match="'b' has no step field"):
        hist(exp, ["b"])
    assert list(hist(exp, ["a", "b"], x="index").columns) == ["a", "a.step", "b"]


def test_history_on_timestamp_and_index(exp):
    exp.metrics("a").append_batch([{"value": 1.0, "step": 0}, {"value": 2.0, "step": 1}])
    by_index = hist(exp, x="index")
    assert by_index.index.name == "index" and by_index["a"].tolist() == [1.0, 2.0]
    assert by_index.columns.tolist() == ["a", "a.step"]
    by_time = hist(exp, x="timestamp")
    assert by_time.index.name == "timestamp" and by_time["a"].tolist() == [2.0]  # one write time: the last point


def test_history_keeps_the_last_point_of_a_step_logged_twice(exp):
    exp.metrics("a").append_batch([{"value": 1.0, "step": 0}, {"value": 9.0, "step": 0}])
    assert hist(exp)["a"].tolist() == [9.0]


def test_history_refuses_an_unknown_x(exp):
    with pytest.raises(ValueError, match="x must be one of step, timestamp, index"):
        hist(exp, x="epoch")


def test_a_run_from_runs_has_the_same_frames(root):
    with mldash.Experiment("p/r", root=root) as exp:
        exp.metrics("loss").append_batch([{"value": 0.5, "step": 0}, {"value": 0.25, "step": 1}])
    run = mldash.runs(root=root)[0]
    assert run.metrics("loss").to_pandas().equals(exp.metrics("loss").to_pandas())
    assert run.history()["loss"].tolist() == [0.5, 0.25]


def test_without_pandas_the_error_names_the_extra(root, tmp_path):
    code = (
        "import sys, mldash\n"
        "sys.modules['pandas'] = None\n"
        f"exp = mldash.Experiment('p/x', root={str(root)!r})\n"
        "exp.metrics('m').append(value=1.0); exp.finish()\n"
        "try:\n    exp.metrics('m').to_pandas()\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'mldash[analysis]'" in out


def test_plain_points_are_parsed_by_arrow_not_point_by_point(exp, monkeypatch):
    from mldash import _frames

    exp.metrics("m").append_batch([{"value": i / 3, "step": i, "ok": i % 2 == 0, "gap": None} for i in range(1000)])
    exp.flush()

    def refuse(*args):
        raise AssertionError("a plain block went point by point")

    monkeypatch.setattr(_frames, "_slow_block", refuse)
    frame = exp.metrics("m").to_pandas()
    assert frame["value"].tolist() == [i / 3 for i in range(1000)]
    assert frame["ok"].tolist() == [i % 2 == 0 for i in range(1000)]
    assert frame["gap"].isna().all()


def test_wide_plain_points_are_parsed_by_arrow_too(exp, monkeypatch):
    from mldash import _frames

    monkeypatch.setattr(_frames, "pointparse", None)
    exp.metrics("wide").append_batch([{f"f{k}": i + k / 7 for k in range(150)} for i in range(100)])  # ~3 KB a line
    exp.flush()
    monkeypatch.setattr(_frames, "_slow_block", lambda *a: (_ for _ in ()).throw(AssertionError("point by point")))
    frame = exp.metrics("wide").to_pandas()
    assert frame.shape == (100, 151) and frame["f149"].iloc[99] == 99 + 149 / 7


def test_text_in_a_block_sends_it_point_by_point(exp, monkeypatch):
    from mldash import _frames

    exp.metrics("m").append_batch([{"value": 1.0, "tag": "a,b"}, {"value": 2.0, "tag": '"q"'}])
    exp.flush()
    calls = []
    slow = _frames._slow_block
    monkeypatch.setattr(_frames, "_slow_block", lambda *a: calls.append(1) or slow(*a))
    assert exp.metrics("m").to_pandas()["tag"].tolist() == ["a,b", '"q"'] and calls


def test_to_polars_gives_the_same_columns_and_keeps_python_objects(exp):
    pl = pytest.importorskip("polars")
    exp.metrics("m").append_batch([{"value": 0.5, "step": 0, "note": "a"}, {"value": 2**70, "step": 1},
                                   {"value": "x", "step": 2, "note": "b"}])
    exp.metrics("loss").append_batch([{"value": 1 / (i + 1), "step": i} for i in range(4)])
    frame = exp.metrics("loss").to_polars()
    assert frame.columns == ["index", "timestamp", "value", "step"]
    assert frame["value"].to_list() == [1 / (i + 1) for i in range(4)] and frame["step"].dtype == pl.Int64
    assert str(frame["timestamp"].dtype) == "Datetime(time_unit='ms', time_zone='UTC')"
    odd = exp.metrics("m").to_polars()
    assert odd["value"].dtype == pl.Object and odd["value"].to_list() == [0.5, 2**70, "x"]
    assert odd["note"].to_list() == ["a", None, "b"]


def test_the_runs_table_to_polars_has_a_row_a_run(root):
    pl = pytest.importorskip("polars")
    for lr in (0.1, 0.01):
        with mldash.Experiment(f"p/lr-{lr}", root=root, system_metrics=False) as exp:
            exp.params.set(lr=lr, seed=2**70)
            exp.metrics("loss").append(value=lr, step=0)
    table = mldash.runs(root=root).to_polars()
    assert sorted(table["params.lr"].to_list()) == [0.01, 0.1] and table["params.seed"].to_list() == [2**70] * 2
    assert table["metrics.loss.last"].dtype == pl.Float64 and table.height == 2

