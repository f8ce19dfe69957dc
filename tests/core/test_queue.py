"""The append path in C and in pure Python store exactly the same thing.

``mldash/_speedups.c`` is the hot path of ``Metric.append``; ``mldash/_queue.py``
is its twin for machines without a compiler (and ``MLDASH_PURE_PYTHON=1``).
Each scenario runs in a fresh interpreter under both.
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path

import pytest

from _procs import run_python

SCENARIO = r"""
import json, math, sys, threading, time
import numpy as np
import mldash
from mldash import metrics

exp = mldash.Experiment("queue/run", root=sys.argv[1])
m = exp.metrics("mixed")
expected = []

def add(**fields):
    m.append(**fields)
    expected.append(fields)

def add_batch(points):
    m.append_batch(points)
    expected.extend(points)

t0 = time.time()
for i in range(3000):  # across STRIDE (1024) marks, flushed at odd places
    add(value=i * 0.5, step=i)
    if i % 7 == 0:
        add(value=float("nan"), step=i, note='comma, "quote", {brace}')
    if i % 11 == 0:
        add_batch([{"value": 1.5, "step": i}, {"value": i, "tag": "[1, {2}]"}])
    if i % 13 == 0:
        m.append(value=np.float32(0.25), step=i)  # the checked path
        expected.append({"value": 0.25, "step": i})
    if i % 17 == 0:
        add_batch([{"value": float("inf"), "step": i}, {"value": None, "step": i}])
    if i % 19 == 0:
        fields = {"value": -float("inf"), "flag": True, "big": 2**70}
        m.append(**fields)  # names from a dict, not the call site
        expected.append({**fields, "big": float(2**70)})
    if i % 23 == 0:
        add(step=i, value=i)  # the same names in another order
    if i % 29 == 0:  # names that change within a batch, a dict given twice, text, a dict subclass
        twice = {"value": 0.5, "step": i}
        add_batch([twice, {"step": i, "value": 2}, twice, {"value": 1.0, "step": i, "epoch": 2},
                   {"note": "ascii"}, {"value": i}, type("Point", (dict,), {})(value=3.0)])
        # the checked path for one point takes the whole batch
        m.append_batch([{"value": 1.0, "step": i}, {"value": np.float64(0.75), "step": i}])
        expected.extend([{"value": 1.0, "step": i}, {"value": 0.75, "step": i}])
    if i % 31 == 0:  # a bad point in the middle: the call raises and queues none of the batch
        for bad in ({"value": object()}, {}, "not a dict", {1: 2.0}, {"value": "lone \udcff"}, {"value": [1]}):
            try:
                m.append_batch([{"value": 1.0, "step": i}, {"value": 2.0, "step": i}, bad, {"value": 3.0}])
            except (TypeError, ValueError):
                pass
            else:
                raise AssertionError(f"append_batch took {bad!r}")
    if i % 499 == 0:
        exp.flush()
add_batch([{"value": k, "step": k} for k in range(2500)])  # one batch across marks
add(text="ünï\ncode", value=0.1)

def worker(t):
    series = exp.metrics("threads")
    for k in range(2000):
        series.append(thread=t, k=k)

threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
exp.finish()
t1 = time.time()

def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b) or (a == b and {type(a), type(b)} <= {int, float})

points = m.read(0, 10**6)["data"]
assert len(points) == len(expected), (len(points), len(expected))
for point, want in zip(points, expected):
    got = point["data"]
    assert list(got) == list(want) or set(got) == set(want), (got, want)
    assert all(same(got[k], want[k]) for k in want), (got, want)
    assert t0 - 0.002 <= point["timestamp"] <= t1 + 0.002, (point["timestamp"], t0, t1)
by_thread = {}
for point in exp.metrics("threads").read(0, 10**6)["data"]:
    by_thread.setdefault(point["data"]["thread"], []).append(point["data"]["k"])
assert by_thread == {t: list(range(2000)) for t in range(4)}
print(json.dumps({"queue": metrics.MetricQueue.__module__, "points": len(points)}))
"""


def run_scenario(root: Path, pure: bool) -> dict:
    env = {"MLDASH_PURE_PYTHON": "1" if pure else ""}
    return json.loads(run_python(SCENARIO, str(root), env=env, timeout=300).stdout)


def lines_without_time(path: Path) -> list[bytes]:
    return [line.split(b",", 1)[1] for line in path.read_bytes().splitlines()]


def assert_index_matches(folder: Path) -> None:
    data = (folder / "data.jsonl").read_bytes()
    starts = [0]
    for i, byte in enumerate(data[:-1]):
        if byte == 10:
            starts.append(i + 1)
    marks = array("Q")
    marks.frombytes((folder / "data.idx").read_bytes())
    assert list(marks) == starts[::1024]


def test_c_and_python_append_store_the_same_lines(tmp_path):
    results = {}
    for pure in (False, True):
        root = tmp_path / ("python" if pure else "c")
        results[pure] = run_scenario(root, pure)
        for series in ("mixed", "threads"):
            assert_index_matches(root / "queue" / "run" / "metrics" / series)
    if not os.environ.get("MLDASH_PURE_PYTHON"):
        assert results[False]["queue"] == "mldash._speedups"
    assert results[True]["queue"] == "mldash._queue"
    mixed = Path("queue/run/metrics/mixed/data.jsonl")
    assert lines_without_time(tmp_path / "c" / mixed) == lines_without_time(tmp_path / "python" / mixed)


@pytest.mark.skipif(bool(os.environ.get("MLDASH_PURE_PYTHON")), reason="pure Python asked for")
def test_the_compiled_append_is_built_and_used():
    from mldash import _speedups, metrics

    assert issubclass(metrics.Metric, _speedups.MetricQueue)


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_append_takes_keyword_fields_only(root, pure):
    code = (
        "import mldash, sys\n"
        "m = mldash.Experiment('queue/args', root=sys.argv[1]).metrics('loss')\n"
        "for call in (lambda: m.append(0.5), lambda: m.append()):\n"
        "    try:\n"
        "        call()\n"
        "    except (TypeError, ValueError) as error:\n"
        "        print(type(error).__name__, error)\n"
    )
    out = run_python(code, str(root), env={"MLDASH_PURE_PYTHON": "1" if pure else ""}).stdout
    first, second = out.splitlines()
    assert first.startswith("TypeError") and "positional" in first
    assert second.startswith("ValueError") and "at least one field" in second


def test_a_stamp_is_the_wall_clock_in_milliseconds():
    import time

    from mldash import _queue, metrics

    for stamp in (_queue.stamp, metrics.stamp):
        before = time.time_ns() // 1_000_000
        value = int(stamp())
        after = time.time_ns() // 1_000_000
        assert before <= value <= after


@pytest.mark.skipif(bool(os.environ.get("MLDASH_PURE_PYTHON")), reason="pure Python asked for")
def test_splice_in_c_and_python_agree_and_refuse_a_column_of_the_wrong_length():
    from mldash import _lines, _speedups

    stamps = [b"1", b"22", b"333"]
    heads = (b',{"a":', b',"b":')
    columns = [b"1.5,2,-3e-05", [b'"x"', b"null", b'{"$float":"NaN"}']]
    want = (
        b'[1,{"a":1.5,"b":"x"}]\n'
        b'[22,{"a":2,"b":null}]\n'
        b'[333,{"a":-3e-05,"b":{"$float":"NaN"}}]\n'
    )
    assert _lines._splice(stamps, heads, columns, b"}]\n") == want
    assert _speedups.splice(stamps, heads, columns, b"}]\n") == want
    with pytest.raises(ValueError, match="holds 2 values, not 3"):
        _speedups.splice(stamps, heads, [b"1,2", columns[1]], b"}]\n")


SMOKE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("mldash._speedups", sys.argv[1])
speedups = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speedups)

class Queue(speedups.MetricQueue):
    __slots__ = ()
    def _on_trigger(self): pass
    def _append_fields(self, fields): self._push(dict(fields))

q = Queue()
q._trigger = 10**9
q.append(value=1.0, step=1)  # new names: the checked path
q.append(value=2.0, step=2)  # known names: the fast path
assert q._push_batch([{"value": 3.0, "step": 3}], b"123") is True
assert q._push_batch([{"value": [1]}], b"123") is False
assert q._push_batch([{"value": 4.0, "step": 4}, {"value": [1]}], b"123") is False  # none of it queued
assert q._push_batch([{"unchecked": 4.0}], b"123") is False  # new names: the checked path first
entries = q._take()
assert len(entries) == 12 and entries[1] is entries[5] is entries[9], entries
lines = speedups.splice([b"1", b"2"], (b',{"a":',), [b"1.5,2"], b"}]\n")
assert lines == b'[1,{"a":1.5}]\n[2,{"a":2}]\n', lines
assert int(speedups.stamp()) > 1_700_000_000_000
"""


def test_the_c_file_builds_and_works_on_every_python_installed_here(tmp_path):
    """mldash supports Python 3.10+; the C API moves between versions (3.13 made some
    macros functions), so build the speed-ups for each interpreter found (on PATH, or
    installed by pyenv)."""
    import shutil
    import subprocess
    import sys

    source = Path(__file__).resolve().parents[2] / "mldash" / "_speedups.c"
    compiler = shutil.which("cc") or shutil.which("gcc")
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [shutil.which(f"python3.{minor}") for minor in range(10, 15)]
    found += sorted(str(p) for p in pyenv.glob("3.1[0-9]*/bin/python3"))
    pythons = [p for p in found if p]
    if compiler is None or not pythons:
        pytest.skip("no C compiler or no python3.1x on PATH")
    checked = []
    for python in pythons:
        probe = subprocess.run(
            [python, "-c", "import sys, sysconfig; print(sysconfig.get_paths()['include']); "
             "print(sysconfig.get_config_var('EXT_SUFFIX')); print(sys.version_info[:2])"],
            capture_output=True, text=True,
        )
        if probe.returncode != 0:
            continue  # a pyenv shim for a version that is not installed
        include, suffix, version = probe.stdout.splitlines()
        if version in checked or not (Path(include) / "Python.h").exists():
            continue
        built = tmp_path / f"_speedups{suffix}"
        subprocess.run(
            [compiler, "-O1", "-shared", "-fPIC", "-Werror=implicit-function-declaration",
             f"-I{include}", str(source), "-o", str(built)],
            check=True, capture_output=True, text=True,
        )
        subprocess.run([python, "-c", SMOKE, str(built)], check=True, capture_output=True, text=True)
        checked.append(version)
    assert str(tuple(sys.version_info[:2])) in checked, (checked, pythons)
