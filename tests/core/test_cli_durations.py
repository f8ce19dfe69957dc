"""How `mldash ls` and `mldash show` write a run's duration: 420ms, 12.3s, 4:05,
1:02:03, 2d 3:04:05; a running run's counts up (docs/cli.md#durations-and-times)."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import mldash
from mldash import cli


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (0.0, "0ms"),
        (0.0042, "4ms"),
        (0.42, "420ms"),
        (0.9999, "999ms"),  # truncated as a clock is, never rounded up to the next unit
        (1.0, "1.0s"),
        (12.34, "12.3s"),
        (59.99, "59.9s"),
        (60.0, "1:00"),
        (245.9, "4:05"),
        (3599.0, "59:59"),
        (3600.0, "1:00:00"),
        (3723.0, "1:02:03"),
        (86399.0, "23:59:59"),
        (86400.0, "1d 0:00:00"),
        (2 * 86400 + 3 * 3600 + 4 * 60 + 5, "2d 3:04:05"),
        (None, "-"),
        (float("nan"), "-"),
    ],
)
def test_a_duration_reads_in_the_unit_that_fits_it(seconds, shown):
    assert cli._duration_text(seconds) == shown


def test_a_running_runs_duration_counts_from_its_start_and_adds_earlier_sessions():
    assert cli._seconds({"status": "RUNNING", "started_at": 1000.0}, now=1090.0) == 90.0
    resumed = {"status": "RUNNING", "started_at": 0.0, "resumed_at": 1000.0, "duration": 50.0}
    assert cli._seconds(resumed, now=1010.0) == 60.0
    assert cli._seconds({"status": "COMPLETED", "started_at": 0.0, "duration": 7.5}, now=1e9) == 7.5
    assert cli._seconds({"status": "COMPLETED", "started_at": 10.0, "finished_at": 12.5}) == 2.5
    assert cli._seconds({"status": "RUNNING"}) is None  # never started


def test_a_run_shorter_than_a_second_says_so_in_ls_and_show(root):
    with mldash.Experiment("quick/run", root=root) as exp:
        exp.metrics("loss").append(value=1.0)
    runner = CliRunner()
    for args in (["ls"], ["show", "quick/run"]):
        out = runner.invoke(cli.main, args, env={"COLUMNS": "200"}).output
        assert "0:00" not in out, out
        assert any(word.endswith("ms") and word[:-2].isdigit() for word in out.split()), out


def test_a_running_run_counts_up_between_two_listings(root):
    exp = mldash.Experiment("live/run", root=root)
    exp.start()
    exp.flush()
    try:
        runner = CliRunner()
        first = json.loads(runner.invoke(cli.main, ["ls", "--json"]).output)[0]["duration"]
        time.sleep(0.05)
        second = json.loads(runner.invoke(cli.main, ["ls", "--json"]).output)[0]["duration"]
        assert 0 < first < second
    finally:
        exp.finish()
