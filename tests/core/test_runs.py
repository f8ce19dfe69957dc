"""mldash.runs(filter): the experiments under a root that match a filter, as
read-only runs, and their table (``to_pandas``). Runs are made with the real
Experiment in the test's own root."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

import mldash
from mldash._read_cache import clear_cache
from mldash._runs import Run

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def make(root, prefix, params=None, summary=None, series=None, tags=None, status=None):
    """A finished run; ``series`` maps a metric name to its list of points."""
    exp = mldash.Experiment(prefix, root=root, tags=tags)
    exp.start()
    if params:
        exp.params.set(**params)
    if summary:
        exp.summary.set(**summary)
    for name, points in (series or {}).items():
        exp.metrics(name).append_batch(points)
    exp.finish(status)
    return exp


@pytest.fixture
def three(root):
    make(root, "vision/a", {"lr": 1e-4, "opt": "adam"}, {"acc": 0.9},
         {"val/loss": [{"value": v, "step": i} for i, v in enumerate([0.5, 0.1, 0.3])]}, tags=["baseline"])
    make(root, "vision/b", {"lr": 1e-2, "opt": "sgd"}, {"acc": 0.7},
         {"val/loss": [{"value": 0.4, "step": 0}]}, status="FAILED")
    make(root, "nlp/c", {"lr": 5e-4, "opt": "adam", "layers": [64, 64]})
    return root


def prefixes(runs):
    return [run.prefix for run in runs]


def test_no_filter_gives_every_run_in_prefix_order(three):
    assert prefixes(mldash.runs(root=three)) == ["nlp/c", "vision/a", "vision/b"]


def test_the_issues_example_filter(three):
    runs = mldash.runs("params.lr < 1e-3 and status = COMPLETED and metrics.val/loss.min < 0.2", root=three)
    assert prefixes(runs) == ["vision/a"]
    assert prefixes(mldash.runs("status = failed", root=three)) == ["vision/b"]


def test_project_keeps_one_project(three):
    assert prefixes(mldash.runs(project="vision", root=three)) == ["vision/a", "vision/b"]
    assert prefixes(mldash.runs("project = nlp", root=three)) == ["nlp/c"]


def test_root_defaults_to_mldash_root(three, monkeypatch):
    monkeypatch.setenv("MLDASH_ROOT", str(three))
    assert len(mldash.runs()) == 3


def test_a_missing_root_is_an_error_not_an_empty_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mldash.runs(root=tmp_path / "nowhere")


def test_a_bad_filter_fails_before_reading_anything(tmp_path):
    with pytest.raises(ValueError, match="column 13") as caught:
        mldash.runs("params.lr < and", root=tmp_path / "nowhere")
    assert "^" in str(caught.value)


def test_missing_keys_and_other_kinds_compare_false(three):
    assert prefixes(mldash.runs("summary.acc > 0", root=three)) == ["vision/a", "vision/b"]
    assert prefixes(mldash.runs('params.opt < 1', root=three)) == []
    assert prefixes(mldash.runs("params.layers contains 64", root=three)) == ["nlp/c"]


def test_tags_glob_regex_and_times(three):
    assert prefixes(mldash.runs('"baseline" in tags', root=three)) == ["vision/a"]
    assert prefixes(mldash.runs('name ~ "[ab]"', root=three)) == ["vision/a", "vision/b"]
    assert prefixes(mldash.runs('prefix =~ "^nlp/"', root=three)) == ["nlp/c"]
    assert len(mldash.runs("started > 2020-01-01 and duration < 1h", root=three)) == 3
    assert len(mldash.runs("ended < 2020-01-01", root=three)) == 0


def test_a_run_reads_like_the_experiment(three):
    run = mldash.runs("name = a", root=three)[0]
    assert isinstance(run, Run)
    assert (run.prefix, run.project, run.name, run.status) == ("vision/a", "vision", "a", "COMPLETED")
    assert run.params == {"lr": 1e-4, "opt": "adam"} and run.summary == {"acc": 0.9}
    assert run.tags == ["baseline"]
    assert run.metric_names() == ["val/loss"]
    page = run.metrics("val/loss").read()
    assert [p["data"]["value"] for p in page["data"]] == [0.5, 0.1, 0.3] and page["total"] == 3
    assert len(run.metrics("val/loss")) == 3
    assert run.ended >= run.started >= run.created and 0 <= run.duration < 60
    assert run.info()["prefix"] == "vision/a"


def test_what_a_run_returns_is_a_copy(three):
    run = mldash.runs("name = c", root=three)[0]
    run.params["layers"].append(1)
    run.tags.append("x")
    again = mldash.runs("name = c", root=three)[0]
    assert again.params["layers"] == [64, 64] and again.tags == []


def test_value_and_keys_give_the_filters_view(three):
    run = mldash.runs("name = a", root=three)[0]
    assert run.value("metrics.val/loss.min") == 0.1
    assert run.value("metrics.val/loss.last") == 0.3 and run.value("metrics.val/loss.max") == 0.5
    assert run.value("params.missing") is None
    assert "metrics.val/loss.min" in run.keys() and "params.opt" in run.keys()


def test_logs_and_checkpoints_are_read(root):
    with mldash.Experiment("p/logs", root=root) as exp:
        exp.log("hello", level="warn")
        exp.checkpoint("ckpt.pt", step=3)
    run = mldash.runs(root=root)[0]
    assert [r["message"] for r in run.read_logs()["data"]] == ["hello"]
    assert run.read_logs(level="error")["data"] == []
    assert run.checkpoints()[0]["step"] == 3


def test_the_headline_of_multi_field_points(root):
    make(root, "p/multi", series={"sys/gpu": [{"util": 50, "mem": 9, "step": 0}, {"util": 80, "mem": 1, "step": 1}],
                                  "acc": [{"value": 0.2, "top5": 0.9}, {"value": 0.4, "top5": 0.8}]})
    run = mldash.runs(root=root)[0]
    assert run.value("metrics.sys/gpu.max") == 80 and run.value("metrics.sys/gpu.min") == 50  # first number
    assert run.value("metrics.acc.min") == 0.2  # "value" when there is one


def test_nan_is_left_out_of_min_and_max(root):
    make(root, "p/nan", series={"loss": [{"value": math.nan}, {"value": 2.0}, {"value": 1.0}, {"value": math.inf}]})
    run = mldash.runs(root=root)[0]
    assert run.value("metrics.loss.min") == 1.0 and run.value("metrics.loss.max") == math.inf


def test_a_second_call_sees_new_points_params_and_runs(root):
    exp = make(root, "p/live", {"lr": 1.0}, series={"loss": [{"value": 1.0}]})
    assert prefixes(mldash.runs("metrics.loss.min < 0.5", root=root)) == []
    with exp:
        exp.metrics("loss").append(value=0.1)
        exp.params.set(lr=2.0)
    assert prefixes(mldash.runs("metrics.loss.min < 0.5 and params.lr = 2", root=root)) == ["p/live"]
    assert mldash.runs(root=root)[0].value("metrics.loss.last") == 0.1
    make(root, "p/new")
    assert prefixes(mldash.runs(root=root)) == ["p/live", "p/new"]


def test_nothing_stale_is_returned_after_files_change_behind_the_cache(root):
    make(root, "p/x", {"lr": 1.0}, series={"loss": [{"value": 1.0}]})
    assert len(mldash.runs("params.lr = 1", root=root)) == 1
    path = root / "p" / "x" / "parameters" / "parameters.json"
    old = path.stat()
    assert path.read_text() == '{"lr":1.0}'
    path.write_text('{"lr":3.0}')  # same size, rewritten in place
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert prefixes(mldash.runs("params.lr = 3", root=root)) == ["p/x"]


def test_a_series_rewritten_shorter_is_read_again_from_the_start(root):
    make(root, "p/short", series={"loss": [{"value": v, "step": i} for i, v in enumerate([5.0, 3.0, 4.0])]})
    run = mldash.runs(root=root)[0]
    assert (run.value("metrics.loss.min"), run.value("metrics.loss.max")) == (3.0, 5.0)
    data = root / "p" / "short" / "metrics" / "loss" / "data.jsonl"
    first = data.read_bytes().split(b"\n")[0].replace(b"5.0", b"7.0") + b"\n"
    inode = data.stat().st_ino
    with open(data, "r+b") as f:  # rewritten in place, shorter than what was read
        f.truncate(0)
        f.write(first)
    assert data.stat().st_ino == inode
    assert (run.value("metrics.loss.min"), run.value("metrics.loss.max"), run.value("metrics.loss.last")) == (7.0, 7.0, 7.0)
    assert len(run.metric_stats()) == 1 and run.metric_stats()["loss"].count == 1


def test_a_removed_run_is_gone_and_forgotten(root):
    import shutil

    from mldash import _read_cache

    make(root, "p/gone", {"lr": 1.0}, series={"loss": [{"value": 1.0}]})
    assert len(mldash.runs("metrics.loss.min = 1 and params.lr = 1", root=root)) == 1
    shutil.rmtree(root / "p" / "gone")
    assert len(mldash.runs(root=root)) == 0
    assert not any("gone" in p for p in _read_cache._cache.documents) and not any("gone" in p for p in _read_cache._cache.series)


def test_a_half_written_run_is_skipped(root):
    make(root, "p/ok")
    broken = root / "p" / "broken"
    broken.mkdir()
    (broken / "experiment.json").write_text('{"status": "RUNN')
    assert prefixes(mldash.runs(root=root)) == ["p/ok"]


def test_a_running_run_counts_its_duration_up_to_now(root):
    exp = mldash.Experiment("p/running", root=root)
    exp.start()
    exp.flush()
    time.sleep(0.2)
    try:
        run = mldash.runs(root=root)[0]
        assert run.status == "RUNNING" and not run.stale and run.duration >= 0.2
        assert prefixes(mldash.runs("ended = null and status = RUNNING", root=root)) == ["p/running"]
    finally:
        exp.finish()


def test_the_runs_table_has_one_row_per_run(three):
    frame = mldash.runs(root=three).to_pandas()
    assert list(frame["prefix"]) == ["nlp/c", "vision/a", "vision/b"]
    assert list(frame.columns[:11]) == ["prefix", "project", "folder", "name", "status", "created", "started",
                                        "ended", "duration", "tags", "description"]
    assert list(frame.columns[11:]) == ["params.layers", "params.lr", "params.opt", "summary.acc",
                                        "metrics.val/loss.last", "metrics.val/loss.min", "metrics.val/loss.max"]
    a = frame.set_index("prefix").loc["vision/a"]
    assert (a["metrics.val/loss.last"], a["metrics.val/loss.min"], a["metrics.val/loss.max"]) == (0.3, 0.1, 0.5)
    assert a["tags"] == ["baseline"] and a["status"] == "COMPLETED"
    assert str(frame["started"].dtype) == "datetime64[ns, UTC]" or "UTC" in str(frame["started"].dtype)
    assert frame["duration"].dtype == "float64"
    assert math.isnan(frame.set_index("prefix").loc["nlp/c", "summary.acc"])


def test_runs_index_by_position_and_prefix_and_slice(three):
    runs = mldash.runs(root=three)
    assert runs["vision/b"].status == "FAILED" and runs[-1].prefix == "vision/b"
    assert prefixes(runs[:2]) == ["nlp/c", "vision/a"]
    with pytest.raises(KeyError):
        runs["nope/x"]


def test_an_empty_result_makes_an_empty_table(three):
    frame = mldash.runs("status = CANCELLED", root=three).to_pandas()
    assert len(frame) == 0 and "prefix" in frame.columns


def test_readers_never_write_inside_the_root(three):
    def snapshot():
        return sorted((p, os.stat(os.path.join(d, p)).st_mtime_ns) for d, _, fs in os.walk(three) for p in fs)

    before = snapshot()
    clear_cache()
    mldash.runs("metrics.val/loss.max > 0", root=three).to_pandas()
    assert snapshot() == before


def test_import_mldash_loads_neither_lark_pandas_nor_pyarrow():
    code = ("import sys, mldash\n"
            "print([m for m in ('lark', 'pandas', 'pyarrow', 'polars', 'mldash._runs', 'mldash._series_stats') if m in sys.modules])\n"
            "mldash.runs\n"
            "print([m for m in ('lark', 'pandas', 'pyarrow') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "[]"]


def test_runs_are_found_as_the_cli_finds_them(root):
    from mldash._runfolder import find_experiments
    from mldash._runs import _find_runs

    for prefix in ("b/x", "a/deep/er/y", "a/z", "a/deep/w", "c/1"):
        make(root, prefix)
    (root / ".hidden" / "r").mkdir(parents=True)
    (root / ".hidden" / "r" / "experiment.json").write_text("{}")
    found = [path for path, _ in _find_runs(str(root))]
    assert found == list(find_experiments(str(root)))
    assert prefixes(mldash.runs(root=root)) == ["a/deep/er/y", "a/deep/w", "a/z", "b/x", "c/1"]
