"""`mldash ls` in a terminal of any width: one run a line, the columns chosen and
shortened to fit, everything shown where there is room (docs/cli.md#mldash-ls)."""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console

import mldash
from mldash import cli

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
NO_COLOUR = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "NO_COLOR": None}


def ls(*args: str, columns: int) -> str:
    result = CliRunner().invoke(cli.main, ["ls", *args], env={**NO_COLOUR, "COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def runs(root):
    """Four runs with default names (20261126-034612-3f9a07c2), two under a long
    project and folder, with five metric series each; one failed, one left running."""
    made = []
    for project, folder in (("vision-transformers", "sweeps/lr-sweep"), ("vision-transformers", "sweeps/lr-sweep"),
                            ("nlp", None), ("nlp", None)):
        exp = mldash.Experiment(project=project, folder=folder, root=root)
        exp.start()
        for name in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "learning_rate"):
            exp.metrics(name).append(value=0.123456, step=1)
        made.append(exp)
    made[0].finish()
    made[1].finish("FAILED")
    made[2].finish("CANCELLED")
    yield made  # made[3] is RUNNING, in this process
    made[3].finish()


def started(exp) -> str:
    """The run's start as the wide table shows it, e.g. 2026-11-26 03:46:12."""
    meta = json.loads(Path(exp.path, "experiment.json").read_text())
    return datetime.datetime.fromtimestamp(meta["started_at"]).strftime("%Y-%m-%d %H:%M:%S")


def run_lines(out: str, runs) -> dict[str, str]:
    """The line of each run, found by the end of its name (a shortened prefix keeps it)."""
    found = {}
    for exp in runs:
        lines = [line for line in out.splitlines() if exp.name[-8:] in line]
        assert len(lines) == 1, f"{exp.prefix} is on {len(lines)} lines:\n{out}"
        found[exp.prefix] = lines[0]
    return found


@pytest.mark.parametrize("columns", [200, 120, 100, 80, 60, 40])
def test_every_run_is_one_line_that_fits_the_terminal(runs, columns):
    out = ls(columns=columns)
    lines = out.splitlines()
    assert max(cell_len(line) for line in lines) <= columns, out
    by_run = run_lines(out, runs)
    assert all(any(s in line for s in STATUSES) for line in by_run.values()), out
    # title, header (and a rule, or the borders), and nothing else but one line a run
    assert len(lines) in (len(runs) + 3, len(runs) + 5), out


def test_a_wide_terminal_shows_everything_with_borders(runs):
    out = ls(columns=250)
    for exp in runs:
        assert exp.prefix in out
    assert started(runs[0]) in out and " ago" not in out  # the full local start time, not "3h ago"
    for header in ("experiment", "status", "started", "duration", "latest metrics"):
        assert header in out
    assert "learning_rate=0.123456, train/accuracy=0.123456, train/loss=0.123456, val/accuracy=0.123456, +1" in out
    assert "┃" in out and "…" not in out


def test_an_80_column_terminal_keeps_a_project_and_default_name_whole(runs):
    out = ls(columns=80)
    short = run_lines(out, runs)
    for exp in runs[2:]:  # nlp/20261126-034612-3f9a07c2
        assert exp.prefix in short[exp.prefix]
    for exp in runs[:2]:  # vision-transformers/sweeps/lr-sweep/... shortened in the middle
        line = short[exp.prefix]
        assert exp.prefix not in line and "…" in line
        assert line.startswith("vision-") and exp.name[-15:] in line
    assert "┃" not in out  # the borders went first


def test_columns_go_least_useful_first_start_then_duration_then_metrics(runs):
    seen = []
    for columns in range(250, 29, -1):
        header = next(line for line in ls(columns=columns).splitlines()[1:] if "status" in line)
        shown = tuple(name for name in ("started", "duration", "latest metrics") if name in header)
        assert shown in (("started", "duration", "latest metrics"), ("duration", "latest metrics"),
                         ("latest metrics",), ()), f"{columns} columns: {header}"
        seen.append(shown)
    assert seen == sorted(seen, key=len, reverse=True)  # never back as the terminal narrows
    assert {len(s) for s in seen} == {0, 1, 2, 3}  # each step happens somewhere from 250 to 30


def test_a_narrow_terminal_shows_start_times_relative(runs):
    out = ls(columns=100)
    for exp, line in zip(runs, run_lines(out, runs).values()):
        assert re.search(r"\b\d+s ago\b", line) and started(exp) not in line, out


def test_the_latest_metrics_shrink_to_fewer_series_and_say_how_many_more(runs):
    line = run_lines(ls(columns=130), runs)[runs[2].prefix]
    assert line.rstrip().endswith("learning_rate=0.123456, +4")  # one of the five, not four
    line = run_lines(ls(columns=100), runs)[runs[2].prefix]
    assert re.search(r"le\S*…\S*rate=0\.123456 \+4$", line.rstrip()), line  # its name cut, value and count kept


def test_a_runs_own_metrics_come_before_the_system_series(root):
    exp = mldash.Experiment("p/run", root=root)
    for name in ("sys/cpu", "sys/disk", "sys/memory", "sys/network", "zeta/loss"):
        exp.metrics(name).append(value=1.0)
    exp.finish()
    assert "zeta/loss=1, sys/cpu=1, sys/disk=1, sys/memory=1, +1" in ls(columns=200)


def test_a_dead_runs_status_says_its_process_is_gone_shorter_when_narrow(root):
    script = (
        "import os, mldash\n"
        f"exp = mldash.Experiment('crashed/run', root={str(root)!r})\n"
        "exp.start()\n"
        "exp.flush()\n"
        "os._exit(0)  # killed: no finish, no exit hooks\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert "RUNNING (process gone)" in ls(columns=200)
    narrow = ls(columns=60)
    assert "RUNNING (gone)" in narrow and "process gone" not in narrow


def test_the_title_is_shortened_in_the_middle_to_the_width(runs):
    out = ls(columns=40)
    title = out.splitlines()[0]
    assert title.startswith("experiments in ") and "…" in title and cell_len(title) <= 40
    assert title.endswith("/runs")  # the end of the root's path kept


def test_print_experiments_fits_the_width_of_the_console_it_is_given(runs, root):
    rows = [mldash._runfolder.experiment_summary(exp.path) for exp in runs]
    for width in (60, 80, 200):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        cli.print_experiments(rows, "experiments", console=console)
        out = console.file.getvalue()
        assert max(cell_len(line) for line in out.splitlines()) <= width
        run_lines(out, runs)


def test_with_no_terminal_at_all_nothing_is_shortened(runs, root):
    """A cron job, CI or a subprocess has no width: lines are printed whole, not cut to 80."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    out = subprocess.run(
        [sys.executable, "-m", "mldash", "ls"], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={**env, "MLDASH_ROOT": str(root)}, check=True,
    ).stdout
    for exp in runs:
        assert exp.prefix in out
    assert "…" not in out and max(len(line) for line in out.splitlines()) > 80
