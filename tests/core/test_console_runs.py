"""Console capture as a run has it: on by default, read back with read_console(),
the traceback of a failure included, shown by `mldash show`; off when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import mldash
from _procs import run_python

SCRIPT = (
    "import mldash, sys\n"
    "exp = mldash.Experiment('con/run', root=sys.argv[1])\n"
    "with exp:\n"
    "    print('epoch 1: loss 0.5')\n"
    "    for i in range(101):\n"
    "        print(f'\\rprogress {i}%', end='', flush=True)\n"
    "    print()\n"
    "    print('warning: slow', file=sys.stderr)\n"
    "    exp.metrics('loss').append(value=0.5)\n"
    "    if len(sys.argv) > 2:\n"
    "        raise RuntimeError('boom in the loop')\n"
)


def run(root, *args, env=None):
    env = {**os.environ, "MLDASH_CAPTURE_CONSOLE": "1", **(env or {})}
    # Bytes, decoded by hand: text=True would turn each "\r" into a newline.
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(root), *args], capture_output=True, env=env, timeout=120)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def test_a_run_records_what_it_prints_and_the_terminal_sees_the_same(root):
    result = run(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("epoch 1: loss 0.5\n\rprogress 0%") and result.stdout.endswith("\rprogress 100%\n")
    assert result.stderr == "warning: slow\n"
    records = mldash.Experiment("con/run", root=root).read_console()["data"]
    shown = [(r["stream"], r["text"]) for r in records if not r.get("partial")]
    assert shown == [("stdout", "epoch 1: loss 0.5"), ("stdout", "progress 100%"), ("stderr", "warning: slow")]
    assert [r["index"] for r in records] == list(range(len(records)))


def test_the_traceback_of_a_failure_is_in_the_console_too(root):
    result = run(root, "fail")
    assert result.returncode == 1 and "RuntimeError: boom in the loop" in result.stderr
    exp = mldash.Experiment("con/run", root=root)
    assert exp.status == "FAILED"
    text = "\n".join(r["text"] for r in exp.read_console()["data"] if r["stream"] == "stderr")
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom in the loop" in text


def test_mldash_show_prints_the_console_tail(root):
    assert run(root).returncode == 0
    out = run_python("from mldash.cli import main; main()", "show", "con/run", "--root", str(root)).stdout
    assert "console (last" in out and "progress 100%" in out and "warning: slow" in out


def test_capture_is_off_when_asked(root):
    assert run(root, env={"MLDASH_CAPTURE_CONSOLE": "0"}).returncode == 0
    exp = mldash.Experiment("con/run", root=root)
    assert exp.capture_console is False and exp.read_console()["total"] == 0
    assert not os.path.exists(os.path.join(exp.path, "console"))
