"""`mldash ls --json` and `mldash show PREFIX --json`: for scripts, valid JSON with the
same keys every time, nothing shortened or coloured; errors on stderr with a non-zero
exit (docs/cli.md#--json-for-scripts)."""

from __future__ import annotations

import json
import math
import time

import pytest
from click.testing import CliRunner

import mldash
from mldash import _codec, cli

LS_KEYS = ["prefix", "project", "folder", "name", "namespace", "path", "status", "stale", "started_at",
           "finished_at", "duration", "tags", "description", "host", "params", "summary", "metrics"]
SHOW_KEYS = LS_KEYS + ["logs", "console", "meta"]


def invoke(*args: str, env: dict | None = None):
    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        runner = CliRunner()  # click 8.2 on: stderr is apart
    return runner.invoke(cli.main, list(args), env={"COLUMNS": "40", **(env or {})})


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(token):
        raise AssertionError(f"{token} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def runs(root):
    long = "a-project-name-long-enough/to-be-shortened/in-any-terminal-the-tests-use"
    ok = mldash.Experiment(long, root=root, tags=["baseline", "gpu"], description="the reference")
    ok.start()
    ok.params.set(lr=0.001, seed=2**70, model={"depth": 18})
    ok.summary.set(best_loss=0.25)
    for step in range(3):
        ok.metrics("train/loss").append(value=1.0 / (step + 1), step=step)
    ok.metrics("val/loss").append(value=math.nan, step=2)
    for i in range(5):
        ok.log(f"message {i}")
    ok.finish()
    time.sleep(0.01)  # a later start: listed first
    bad = mldash.Experiment("vision/broken", root=root)
    try:
        with bad:
            bad.metrics("train/loss").append(value=math.inf, step=0)
            raise RuntimeError("exploded at step 0")
    except RuntimeError:
        pass
    return ok, bad


def test_ls_json_is_one_array_of_runs_with_the_same_keys_newest_first(runs):
    ok, bad = runs
    result = invoke("ls", "--json")
    assert result.exit_code == 0
    rows = strict_json(result.output)
    assert [row["prefix"] for row in rows] == [bad.prefix, ok.prefix]
    assert all(list(row) == LS_KEYS for row in rows)
    assert [row["status"] for row in rows] == ["FAILED", "COMPLETED"]


def test_ls_json_has_epoch_seconds_a_duration_in_seconds_tags_and_latest_metrics(runs):
    ok, _ = runs
    row = strict_json(invoke("ls", "--json").output)[1]
    meta = json.loads((__import__("pathlib").Path(ok.path) / "experiment.json").read_text())
    assert row["started_at"] == meta["started_at"] and row["finished_at"] == meta["finished_at"]
    assert abs(time.time() - row["started_at"]) < 60  # seconds since 1970, UTC
    assert row["duration"] == pytest.approx(meta["duration"]) and isinstance(row["duration"], float)
    assert row["tags"] == ["baseline", "gpu"] and row["description"] == "the reference"
    assert row["params"]["model.depth"] == 18 and row["summary"] == {"best_loss": 0.25}  # flat, as stored
    loss = row["metrics"]["train/loss"]
    assert loss["index"] == 2 and loss["data"] == {"value": 1 / 3, "step": 2}
    assert isinstance(loss["timestamp"], float)


def test_ls_json_writes_nan_inf_and_big_ints_as_mldash_stores_them(runs):
    ok_row, bad_row = reversed(strict_json(invoke("ls", "--json").output))
    assert ok_row["metrics"]["val/loss"]["data"]["value"] == {"$float": "NaN"}
    assert bad_row["metrics"]["train/loss"]["data"]["value"] == {"$float": "Infinity"}
    assert ok_row["params"]["seed"] == {"$int": str(2**70)}
    back = _codec.loads(invoke("ls", "--json").output)  # mldash's codec reads them back exactly
    assert back[1]["params"]["seed"] == 2**70 and math.isnan(back[1]["metrics"]["val/loss"]["data"]["value"])


def test_json_is_never_shortened_nor_coloured_even_in_a_narrow_forced_colour_terminal(runs):
    ok, _ = runs
    for args in (("ls", "--json"), ("show", ok.prefix, "--json")):
        out = invoke(*args, env={"COLUMNS": "20", "FORCE_COLOR": "1"}).output
        assert f'"{ok.prefix}"' in out
        assert "\x1b[" not in out and "…" not in out


def test_ls_json_of_a_root_without_runs_is_an_empty_array(tmp_path):
    result = invoke("ls", str(tmp_path), "--json")
    assert result.exit_code == 0 and strict_json(result.output) == []


def test_ls_json_filters_like_the_table(runs):
    rows = strict_json(invoke("ls", "--json", "--status", "FAILED").output)
    assert [row["prefix"] for row in rows] == ["vision/broken"]
    assert strict_json(invoke("ls", "--json", "--project", "nope").output) == []


def test_show_json_gives_metadata_params_summary_metrics_logs_and_console(runs):
    ok, _ = runs
    result = invoke("show", ok.prefix, "--json", "--logs", "2")
    assert result.exit_code == 0
    doc = strict_json(result.output)
    assert list(doc) == SHOW_KEYS
    assert doc["prefix"] == ok.prefix and doc["status"] == "COMPLETED" and doc["path"] == ok.path
    assert doc["params"]["lr"] == 0.001 and doc["summary"]["best_loss"] == 0.25
    assert doc["metrics"]["train/loss"]["count"] == 3 and doc["metrics"]["train/loss"]["data"]["value"] == 1 / 3
    assert doc["logs"]["total"] == 5 and [r["message"] for r in doc["logs"]["last"]] == ["message 3", "message 4"]
    assert doc["console"] == []
    assert doc["meta"]["argv"] and doc["meta"]["id"] and doc["meta"]["sessions"] == 1  # experiment.json


def test_show_json_carries_the_error_and_its_traceback(runs):
    _, bad = runs
    doc = strict_json(invoke("show", bad.prefix, "--json").output)
    error = next(r for r in doc["logs"]["last"] if r["level"] in ("error", "fatal"))
    assert "RuntimeError: exploded at step 0" in error["metadata"]["traceback"]


@pytest.mark.parametrize("as_json", [False, True])
def test_an_unknown_prefix_is_an_error_that_names_the_runs_it_may_mean(runs, as_json):
    result = invoke("show", "vision/brokn", *(["--json"] if as_json else []))
    assert result.exit_code == 1 and result.stdout == ""
    assert "no experiment 'vision/brokn'" in result.stderr and "did you mean vision/broken" in result.stderr


def test_a_prefix_naming_a_folder_of_runs_suggests_the_runs_in_it(runs):
    result = invoke("show", "vision")
    assert result.exit_code == 1 and "did you mean vision/broken" in result.stderr


@pytest.mark.parametrize("args", [("ls",), ("ls", "--json"), ("show", "p/r"), ("show", "p/r", "--json")])
def test_a_missing_root_is_an_error_not_an_empty_listing(tmp_path, monkeypatch, args):
    monkeypatch.setenv("MLDASH_ROOT", str(tmp_path / "nowhere"))
    result = invoke(*args)
    assert result.exit_code == 1 and result.stdout == ""
    assert f"no runs at {tmp_path / 'nowhere'}: the folder does not exist" in result.stderr


def test_ls_refuses_a_root_together_with_a_remote(tmp_path):
    result = invoke("ls", str(tmp_path), "--remote", "http://127.0.0.1:9", "--json")
    assert result.exit_code == 2 and "not both" in result.stderr
