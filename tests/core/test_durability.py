"""Crash safety and failing disks: nothing accepted is lost, nothing is corrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mldash
from _procs import run_python


def test_kill_9_keeps_every_point_before_the_last_flush(root):
    code = (
        "import mldash, sys, time\n"
        "exp = mldash.Experiment('crash/run', root=sys.argv[1])\n"
        "m = exp.metrics('loss')\n"
        "i = 0\n"
        "while True:\n"
        "    m.append(v=i); i += 1\n"
        "    if i % 5000 == 0:\n"
        "        exp.flush(); print(i, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    flushed = 0
    while flushed < 40_000:
        flushed = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    data = root / "crash" / "run" / "metrics" / "loss" / "data.jsonl"
    lines = data.read_bytes().split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for line in complete:
        json.loads(line)  # every complete line is valid
    exp = mldash.Experiment("crash/run", root=root)
    assert exp.status == "RUNNING"  # nobody could record the end
    result = exp.metrics("loss").read(0, 10**6)
    assert result["total"] == len(complete) >= flushed
    assert [p["data"]["v"] for p in result["data"]] == list(range(len(complete)))
    assert tail == b"" or not tail.endswith(b"\n")


def test_a_cut_last_line_is_skipped_by_readers_and_repaired_on_resume(root):
    exp = mldash.Experiment("crash/cut", root=root)
    exp.metrics("loss").append_batch([{"v": i} for i in range(3000)])
    exp.finish()
    data = Path(exp.path) / "metrics" / "loss" / "data.jsonl"
    with open(data, "ab") as f:
        f.write(b'[1795665012931,{"v":30')  # what a killed writer leaves behind
    reader = mldash.Experiment("crash/cut", root=root)
    assert reader.metrics("loss").read(2999, 10)["total"] == 3000
    resumed = mldash.Experiment("crash/cut", root=root)
    resumed.metrics("loss").append(v=3000)
    resumed.finish()
    lines = data.read_bytes().splitlines()
    assert len(lines) == 3001 and all(json.loads(line) for line in lines)
    points = resumed.metrics("loss").read(2998, 10)["data"]
    assert [(p["index"], p["data"]["v"]) for p in points] == [(2998, 2998), (2999, 2999), (3000, 3000)]


def test_a_stale_or_missing_offset_index_is_rebuilt(root):
    exp = mldash.Experiment("crash/idx", root=root)
    exp.metrics("loss").append_batch([{"v": i} for i in range(5000)])
    exp.finish()
    idx = Path(exp.path) / "metrics" / "loss" / "data.idx"
    idx.write_bytes(b"\x07" * 16)  # garbage
    assert exp.metrics("loss").read(4990, 5)["data"][0]["data"]["v"] == 4990
    idx.unlink()
    exp.metrics("loss").append(v=5000)
    exp.finish()
    assert idx.stat().st_size == 8 * 5  # lines 0, 1024, ..., 4096
    assert exp.metrics("loss").read(5000)["data"][0]["data"]["v"] == 5000


def test_a_failing_disk_surfaces_at_the_next_call_and_loses_nothing(root):
    exp = mldash.Experiment("disk/full", root=root, flush_interval=0.05)
    exp.metrics("other").append(v=0)
    exp.flush()
    data = Path(exp.path) / "metrics" / "loss" / "data.jsonl"
    data.parent.mkdir(parents=True)
    os.symlink("/dev/full", data)  # every write to this series fails with ENOSPC
    m = exp.metrics("loss")
    m.append(v=0)
    m.append(v=1)
    with pytest.raises(mldash.StorageError, match="No space left on device"):
        exp.flush()
    with pytest.raises(mldash.StorageError, match="kept in memory and retried"):
        deadline = time.time() + 5
        while time.time() < deadline:
            m.append(v=2)  # accepted, then the error is reported on a later call
            time.sleep(0.01)
    data.unlink()
    data.write_bytes(b"")  # the disk has room again
    exp.flush()
    exp.finish()
    values = [p["data"]["v"] for p in m.read(0, 10_000)["data"]]
    assert values[:2] == [0, 1] and set(values[2:]) == {2}
    assert len(values) == len(set(range(len(values))))  # indices stay unique


def test_finish_reports_records_it_could_not_write(root):
    exp = mldash.Experiment("disk/finish", root=root, flush_interval=0.05)
    exp.start()
    data = Path(exp.path) / "metrics" / "loss" / "data.jsonl"
    data.parent.mkdir(parents=True)
    os.symlink("/dev/full", data)
    exp.metrics("loss").append(v=1)
    with pytest.raises(mldash.StorageError, match="could not write 1 accepted records") as caught:
        exp.finish()
    rescued = Path(caught.value.saved_to)
    assert str(rescued) in str(caught.value)
    line = (rescued / "metrics" / "loss" / "data.jsonl").read_bytes()
    assert json.loads(line)[1] == {"v": 1}


def test_memory_stays_bounded_when_the_writer_cannot_keep_up(root):
    code = (
        "import mldash, sys, resource\n"
        "exp = mldash.Experiment('mem/run', root=sys.argv[1])\n"
        "m = exp.metrics('loss')\n"
        "for i in range(2_000_000):\n"
        "    m.append(value=i * 0.5, step=i)\n"
        "    if i == 10_000: base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "exp.finish()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    grown_mb = int(run_python(code, str(root), timeout=300).stdout)
    assert grown_mb < 150  # 2M queued points would take ~500 MB without backpressure
    assert mldash.Experiment("mem/run", root=root).metrics("loss").read(1_999_999)["data"][0]["data"]["step"] == 1_999_999


def test_a_queued_point_that_cannot_be_encoded_is_set_aside_and_the_rest_is_written(root):
    """A point whose names and values disagree (only a bug could queue one) must not
    stop its series, later series or the logs: it is reported in the run's log."""
    exp = mldash.Experiment("bad/entry", root=root, flush_interval=0.05)
    good, other = exp.metrics("good"), exp.metrics("other")
    good.append(v=1)
    exp.flush()
    good._pending.extend([b"1700000000000", ("a", "b"), 1])  # two names, one value
    good.append(v=2)
    other.append(v=3)
    exp.log("after")
    exp.finish()
    assert [p["data"] for p in good.read()["data"]] == [{"v": 1}, {"v": 2}]
    assert [p["data"] for p in other.read()["data"]] == [{"v": 3}]
    logs = exp.read_logs()["data"]
    assert [r["message"] for r in logs if r["level"] == "info"] == ["after"]
    warning = next(r for r in logs if r["level"] == "warn")
    assert "could not store a point of series 'good'" in warning["message"]
    assert warning["metadata"]["series"] == "good" and "('a', 'b')" in warning["metadata"]["point"]
