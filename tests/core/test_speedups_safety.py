"""Memory safety of the compiled queue (mldash/_speedups.c), and all-or-nothing
queueing in it and in its pure-Python twin (mldash/_queue.py).

On Python 3.10 and 3.11 any allocation of a tracked object can start a garbage
collection, and a collection runs Python code (finalizers, ``gc.callbacks``)
that may change the caller's list and dicts, or release the GIL to a thread
that does. ``append_batch`` once read the list's length and borrowed its items
across such allocations: a callback that empties the list, or adds names to a
point, made it read freed memory or write past a tuple, and a thread refilling
the list crashed it with no hostile code at all.

STRESS holds those scenarios, and others: a names lookup that raises, and each
allocation failing in turn. Each runs in this process against the normal build
and against the twin, and in a subprocess against the extension built with
AddressSanitizer and UBSan, which report a bad read or write (or undefined
behaviour) even where a normal build would carry on; those runs are skipped
where the compiler or its sanitizer runtime is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mldash._native import speedups
from _sanitizer import sanitized_builds, sanitizer_report

SOURCE = Path(__file__).resolve().parents[2] / "mldash" / "_speedups.c"

STRESS = r'''
import gc, importlib.util, json, os, sys, threading, time


def load(path):
    """A _speedups module built at ``path``, loaded on its own (no mldash)."""
    spec = importlib.util.spec_from_file_location("mldash._speedups", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def new_queue(module):
    """A queue that knows the names point() makes, and those with "epoch" or
    "w3" taken away (batches take the fast path only for names checked before)."""

    class Queue(module.MetricQueue):
        __slots__ = ()

        def _on_trigger(self):
            pass

        def _append_fields(self, fields):
            self._push(dict(fields))

    queue = Queue()
    queue._trigger = 10**9
    for kind in range(4):
        fields = point(kind, 0)
        queue._push(fields, b"1")
        for name in ("epoch", "w3"):
            fields.pop(name, None)
            queue._push(fields, b"1")
    queue._take()
    return queue


def parse(entries):
    """The points in a queue's entries; fails unless they are stamp, names, then
    one value per name, point after point."""
    points, i = [], 0
    while i < len(entries):
        stamp, names = entries[i], entries[i + 1]
        assert type(stamp) is bytes and type(names) is tuple, entries[i : i + 2]
        values = entries[i + 2 : i + 2 + len(names)]
        assert len(values) == len(names), (names, values)
        points.append(dict(zip(names, values)))
        i += 2 + len(names)
    return points


def point(kind, seed):
    """A plain point whose values follow from its names and its step (see
    check_point). Wide points (20 names or more) make names tuples that no
    free list keeps, so making one counts towards a collection."""
    fields = {"step": seed, "value": seed + 0.5}  # step first: popitem() leaves it
    if kind == 1:
        fields["epoch"] = seed % 7
    elif kind >= 2:
        del fields["value"]
        fields.update({f"w{j}": seed + float(j) for j in range(18 + kind)})
    return fields


def batch(seed, size=6):
    """Points whose names change from each point to the next."""
    return [point((seed + j) % 4, seed + j) for j in range(size)]


def check_point(fields):
    """Each value is the one its name and step call for: names and values were
    not shifted against each other. x<n> are names added by a collection."""
    step = fields["step"]
    assert type(step) is int, fields
    for name, value in fields.items():
        want = {"step": step, "value": step + 0.5, "epoch": step % 7}.get(name)
        if want is None:
            want = step + float(name[1:]) if name[0] == "w" else float(name[1:])
        assert value == want and type(value) is type(want), (name, fields)


def make_garbage(files=False):
    """Reference cycles for the next collection to find; with files, each holds
    a file object, and closing it releases the GIL."""
    for _ in range(8):
        holder = {}
        holder["self"] = holder
        if files:
            holder["file"] = open(os.devnull, "rb", buffering=0)


class Spacer:
    """An object with no free list: making one counts towards a collection."""


def shift(kept, round_):
    """Empty the free list of lists, so that lists made in the call count
    towards a collection too; and vary, from round to round, which allocation
    the next collection comes at (with a threshold of 1, every second one)."""
    kept.append([[] for _ in range(100)])
    for _ in range(round_ % 3):
        kept.append(Spacer())


class Collections:
    """A gc callback that calls ``change`` when a collection starts while a
    call is under way (``inside``), and counts those."""

    def __init__(self, change):
        self.change = change
        self.inside = False
        self.hits = 0

    def __call__(self, phase, info):
        if phase == "start" and self.inside:
            self.hits += 1
            self.change(self.hits)


def under_gc(change, body):
    """Run body(callback) with a collection at nearly every allocation."""
    callback = Collections(change)
    threshold = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        body(callback)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)
    return callback.hits


def scenario_batch(queue, mode, rounds, exact):
    """_push_batch while collections empty, shrink or refill the list, or add
    names to its dicts: the whole batch, or nothing (with added names, which
    were not checked before, False or an error). ``exact``: the batch as it was
    when the call began (C takes it before anything can run code); else
    possibly as a collection early in the call left it."""
    target = []
    kept = []  # what the loop makes, kept alive so that it refills no free list

    def change(hit):
        if mode == "add_keys":
            for fields in target:
                fields[f"x{hit}"] = float(hit)
        elif hit % 3 == 0:
            target.clear()
        elif hit % 3 == 1:
            del target[1:]
        else:
            target[:] = [{"other": [hit]}, {}]

    def body(callback):
        for round_ in range(rounds):
            target[:] = batch(round_)
            expected = [dict(fields) for fields in target]
            make_garbage()
            shift(kept, round_)
            callback.inside = True
            try:
                result = queue._push_batch(target, b"1")
            except RuntimeError:
                result = None
            finally:
                callback.inside = False
            entries = queue._take()
            got = parse(entries)
            kept.append((expected, entries, got))
            if not exact and mode != "add_keys" and len(got) in (0, 1):
                expected = expected[: len(got)]  # emptied, or shrunk to one, before it was read
            if result is not True:
                assert got == [], (result, got)
                assert mode == "add_keys" or result is False and not exact, result
                continue
            assert len(got) == len(expected), (got, expected)
            for fields, before in zip(got, expected):
                check_point(fields)
                assert list(fields)[: len(before)] == list(before), (fields, before)
                if mode != "add_keys":
                    assert fields == before, (fields, before)

    return under_gc(change, body)


def scenario_push(queue, rounds):
    """_push (the checked path) while collections add names to the fields or
    remove some: one whole point whose names match its values, or an error
    and nothing."""
    fields = {}
    kept = []

    def change(hit):
        if hit % 2:
            fields[f"x{hit}"] = float(hit)
        elif len(fields) > 1:
            fields.popitem()

    def body(callback):
        for round_ in range(rounds):
            fields.clear()
            fields.update(point(round_ % 4, round_))
            make_garbage()
            shift(kept, round_)
            callback.inside = True
            try:
                queue._push(fields, b"1")
                failed = False
            except RuntimeError:
                failed = True
            finally:
                callback.inside = False
            entries = queue._take()
            got = parse(entries)
            kept.append((entries, got))
            assert len(got) == (0 if failed else 1), got
            for one in got:
                check_point(one)

    return under_gc(change, body)


def scenario_lookup_error(module):
    """A failed lookup of the names raises its error, with nothing queued."""

    class Boom(Exception):
        pass

    class Collides:  # hashes like "value", so the tuples ("value",) and (Collides(),) collide
        def __hash__(self):
            return hash("value")

        def __eq__(self, other):
            raise Boom

    queue = new_queue(module)
    queue._push({Collides(): 1.0}, b"1")
    queue._take()
    outcomes = []
    for call in (lambda: queue.append(value=1.0), lambda: queue._push_batch([{"value": 1.0}], b"1")):
        try:
            call()
            outcomes.append("no error")
        except Boom:
            outcomes.append("Boom")
        except BaseException as error:
            outcomes.append(f"{type(error).__name__}: {error}")
        assert queue._take() == [], outcomes
    assert outcomes == ["Boom", "Boom"], outcomes
    return outcomes


def scenario_no_memory(module, tries):
    """Each allocation in turn fails: append, _push and _push_batch queue the
    whole point or batch, or raise MemoryError and queue nothing. The queue
    holds 0 to 23 entries before, so that its own growth fails at each step."""
    try:
        import _testcapi
    except ImportError:
        return {"skipped": "this Python has no _testcapi"}
    queue = new_queue(module)
    queue.append(value=0.5, step=0)  # these names are known from now on
    points = batch(7, size=5)
    calls = {
        "append": (lambda: queue.append(value=1.5, step=1), [{"value": 1.5, "step": 1}]),
        "push": (lambda: queue._push({"step": 2, "epoch": 3}, b"1"), [{"step": 2, "epoch": 3}]),
        "batch": (lambda: queue._push_batch(points, b"1"), [dict(fields) for fields in points]),
    }
    outcomes = {"queued": 0, "MemoryError": 0}
    for fill in range(24):
        for start in range(tries):
            for name, (call, expected) in calls.items():
                queue._take()
                for _ in range(fill):
                    queue.append(value=0.5, step=0)
                _testcapi.set_nomemory(start, start + 1)
                try:
                    result = call()
                    failed = False
                except MemoryError:
                    failed = True
                finally:
                    _testcapi.remove_mem_hooks()
                entries = queue._take()
                assert parse(entries[: fill * 4]) == [{"value": 0.5, "step": 0}] * fill, (name, entries)
                got = parse(entries[fill * 4 :])
                if failed:
                    assert got == [], (name, start, fill, got)
                else:
                    assert result in (None, True) and got == expected, (name, start, fill, result, got)
                outcomes["MemoryError" if failed else "queued"] += 1
    return outcomes


def scenario_threads(queue, seconds):
    """One thread refills a list and changes its dicts while this one batches
    it, with garbage cycles holding files: collections in the middle of the
    call close them, which lets the other thread run. No gc callback."""
    shared = batch(0)
    lengths = {0, 3, 6}
    stop = threading.Event()

    def mutate():
        seed = 0
        while not stop.is_set():
            seed += 1
            shared[:] = batch(seed)
            for fields in list(shared):
                if seed % 5 == 0:
                    fields["step"] = [seed]  # not plain: the checked path
                else:
                    fields.pop("epoch", None)
                    fields.pop("w3", None)
            del shared[3:]
            shared.clear()

    thread = threading.Thread(target=mutate)
    interval, threshold, enabled = sys.getswitchinterval(), gc.get_threshold(), gc.isenabled()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(5)
    calls = queued = 0
    thread.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            gc.disable()  # the garbage waits for the first collection in the call
            make_garbage(files=True)
            gc.enable()
            try:
                result = queue._push_batch(shared, b"1")
            except RuntimeError:
                result = None
            calls += 1
            got = parse(queue._take())
            if result is True:
                assert len(got) in lengths, got
                queued += len(got)
            else:
                assert got == [], (result, got)
            for fields in got:
                check_point(fields)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
        if enabled:
            gc.enable()
    return {"calls": calls, "queued": queued}


def run(module, scenario, size, exact):
    """Run one scenario against a queue module (_speedups or _queue)."""
    if scenario == "lookup_error":
        return scenario_lookup_error(module)
    if scenario == "no_memory":
        return scenario_no_memory(module, int(size))
    if scenario == "push":
        return scenario_push(new_queue(module), int(size))
    if scenario == "threads":
        return scenario_threads(new_queue(module), float(size))
    return scenario_batch(new_queue(module), scenario, int(size), exact)


if __name__ == "__main__":
    path, scenario, size = sys.argv[1:4]
    print(json.dumps({"result": run(load(path), scenario, size, exact=True)}))
'''

# scenario: its size (rounds, allocations to fail in turn, or seconds)
SCENARIOS = {
    "clear": 300,  # a gc callback empties, shrinks or refills the batch's list
    "add_keys": 300,  # a gc callback adds names to the batch's dicts
    "push": 300,  # a gc callback adds and removes names of _push's dict
    "lookup_error": 0,  # a names lookup that raises
    "no_memory": 40,  # each allocation in the call fails in turn
    "threads": 2,  # a thread refills the list; garbage holds files
}


def stress_namespace() -> dict:
    namespace = {"__name__": "mldash_stress"}
    exec(compile(STRESS, "<STRESS>", "exec"), namespace)
    return namespace


def check_outcome(scenario: str, result, version: tuple[int, int], compiled: bool) -> None:
    """What a scenario returns shows that it did what it is there for."""
    if scenario in ("clear", "add_keys", "push") and (version < (3, 12) or not compiled):
        # collections ran while the call was under way (from 3.12 they wait
        # for the interpreter's next check, outside code in C)
        assert result > 0, result
    elif scenario == "no_memory":
        if "skipped" in result:
            pytest.skip(result["skipped"])
        assert result["MemoryError"] > 0 and result["queued"] > 0, result
    elif scenario == "threads":
        assert result["calls"] > 100 and result["queued"] > 0, result


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_queue_survives_code_that_runs_in_the_middle_of_a_call(queue_module, scenario):
    compiled = queue_module is speedups
    # C takes the batch before anything can run code, so exactly the batch passed
    result = stress_namespace()["run"](queue_module, scenario, SCENARIOS[scenario], exact=compiled)
    check_outcome(scenario, result, sys.version_info[:2], compiled)


@pytest.mark.parametrize(
    "bad",
    [{"value": [1]}, {}, "a str", {1: 2.0}, {"välue": 1.0}, {"value": "ascii"}, {"fresh": 1.0},
     type("D", (dict,), {})(value=1)],
    ids=["list", "empty", "not a dict", "int name", "non-ASCII name", "text", "unchecked names", "dict subclass"],
)
def test_a_batch_with_a_point_for_the_checked_path_queues_none_of_it(queue_module, bad):
    queue = stress_namespace()["new_queue"](queue_module)
    queue.append(value=0.5, step=0)
    queue._take()
    assert queue._push_batch([{"value": 1.0, "step": 1}, bad, {"value": 2.0, "step": 2}], b"1") is False
    assert queue._take() == []


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """The queue's extension built with ASan and UBSan (tests/_sanitizer.py)."""
    return sanitized_builds(SOURCE, "_speedups", tmp_path_factory.mktemp("sanitized"))


def test_the_sanitizer_sees_a_bad_write_in_this_set_up(sanitized):
    """Else the test below could pass with the sanitizer asleep."""
    _, env = sanitized
    code = "import ctypes; buffer = ctypes.create_string_buffer(8); ctypes.memmove(buffer, b'x' * 64, 64)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_sanitized_build_survives_code_that_runs_in_the_middle_of_a_call(sanitized, scenario):
    builds, env = sanitized
    for version, python, built in builds:
        proc = subprocess.run(
            [python, "-c", STRESS, str(built), scenario, str(SCENARIOS[scenario])],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0 and not sanitizer_report(proc.stderr), (
            f"Python {version}, exit {proc.returncode}:\n{proc.stderr[-6000:]}"
        )
        check_outcome(scenario, json.loads(proc.stdout.splitlines()[-1])["result"], version, compiled=True)
