"""Console capture (mldash/_console.py, _console_fd.py, _console_lines.py).

Where the real stdout and descriptors matter the code runs in a child process:
the terminal must get the same bytes with capture on as with it off, and the
records must say what the terminal shows. Every child has a timeout.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from mldash._console import ConsoleCapture, console_setting, console_tail, read_console, writer_sink
from mldash._console_lines import MAX_LINE, Batch, Screen
from mldash._series import SeriesFile
from mldash._writer import Writer

REPO = Path(__file__).resolve().parents[2]
MODES = [True, "fd"]
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "COLUMNS", "LINES")}

# A child: ``capture`` records into ``records``; ``finish()`` stops it and writes them to OUT.
PRELUDE = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
from mldash._console import ConsoleCapture
MODE, OUT = json.loads({mode!r}), {out!r}
records = []
capture = ConsoleCapture(MODE, lambda batch: records.extend(batch.records()), interval=0.05, settle=0.2,
                         **json.loads({options!r}))
capture.start()

def finish():
    capture.stop()
    with open(OUT, "w") as f:
        json.dump({{"records": records, "error": repr(capture.error) if capture.error else None}}, f)
"""


def child(tmp_path: Path, body: str, mode=True, *, unbuffered: bool = False, timeout: float = 60,
          options: dict | None = None, **popen) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``body`` after PRELUDE; (the process, with bytes output, and its records)."""
    out = tmp_path / f"records-{time.monotonic_ns()}.json"
    code = PRELUDE.format(repo=str(REPO), mode=json.dumps(mode), out=str(out), options=json.dumps(options or {}))
    env = dict(ENV, PYTHONUNBUFFERED="1") if unbuffered else ENV
    popen.setdefault("capture_output", True)
    proc = subprocess.run([sys.executable, "-c", code + textwrap.dedent(body)], env=env, timeout=timeout, **popen)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    data = json.loads(out.read_text()) if out.exists() else {"records": [], "error": None}
    assert data["error"] is None, data["error"]
    return proc, data["records"]


def lines(records: list[dict], stream: str | None = None) -> list[str]:
    """The final (not partial) texts, of one stream or all."""
    return [r["text"] for r in records if not r.get("partial") and (stream is None or r["stream"] == stream)]


# What the terminal must receive unchanged: partial writes, \r bars, unicode, colours, bytes.
TERMINAL_BODY = r"""
print("plain line", 1, 2.5)
sys.stdout.write("part one, ")
sys.stdout.flush()
sys.stdout.write("part two\n")
for i in range(0, 101, 10):
    sys.stderr.write(f"\rprogress {i:3d}%|{'#' * (i // 10):10s}|")
    sys.stderr.flush()
sys.stderr.write("\n")
print("\x1b[32mgreen\x1b[0m and \u00e9\u4e2d\U0001f600")
sys.stdout.buffer.write(b"raw bytes \xff\xfe\n")
print("no newline at the end", end="")
sys.stdout.flush()
print("", file=sys.stderr)
print("last line without flush")
"""


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_terminal_gets_the_same_bytes_with_capture_on(tmp_path, mode, unbuffered):
    plain, _ = child(tmp_path, TERMINAL_BODY + "finish()\n", mode=False, unbuffered=unbuffered)
    captured, records = child(tmp_path, TERMINAL_BODY + "finish()\n", mode=mode, unbuffered=unbuffered)
    assert captured.stdout == plain.stdout
    assert captured.stderr == plain.stderr
    assert b"raw bytes \xff\xfe\n" in plain.stdout and b"\rprogress 100%" in plain.stderr
    assert "progress 100%|##########|" in lines(records, "stderr")
    assert "plain line 1 2.5" in lines(records, "stdout")
    if mode is True:  # the streams' own order too, both on one pipe (fd mode relays each apart)
        plain, _ = child(tmp_path, TERMINAL_BODY + "finish()\n", mode=False, unbuffered=unbuffered,
                         capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        captured, _ = child(tmp_path, TERMINAL_BODY + "finish()\n", mode=mode, unbuffered=unbuffered,
                            capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert captured.stdout == plain.stdout


PTY_BODY = r"""
import shutil
attrs = {
    "isatty": [sys.stdout.isatty(), sys.stderr.isatty(), os.isatty(1), os.isatty(2)],
    "same": [sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__],
    "types": [type(sys.stdout).__name__, type(sys.stdout.buffer).__name__],
    "buffering": [sys.stdout.line_buffering, sys.stdout.write_through, sys.stderr.line_buffering],
    "text": [sys.stdout.encoding, sys.stdout.errors, sys.stdout.fileno(), sys.stderr.fileno()],
    "size": list(shutil.get_terminal_size((1, 1))),
}
print("on a terminal \x1b[1mbold\x1b[0m \u00e9")
for i in range(5):
    print(f"\rstep {i}", end="", flush=True)
print()
sys.stdout.write("unflushed ")
os.write(1, b"os-level\n")
print("end")
finish()
with open(OUT + ".attrs", "w") as f:
    json.dump(attrs, f)
"""


def run_on_pty(tmp_path: Path, mode) -> tuple[bytes, dict, list[dict]]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 111, 0, 0))
    out = tmp_path / f"pty-{time.monotonic_ns()}.json"
    code = PRELUDE.format(repo=str(REPO), mode=json.dumps(mode), out=str(out), options="{}") + PTY_BODY
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    data = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child and its relay closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert proc.wait(30) == 0, data[-2000:]
    return data, json.loads((tmp_path / (out.name + ".attrs")).read_text()), json.loads(out.read_text())["records"]


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_a_terminal_stays_a_terminal(tmp_path, mode):
    plain, plain_attrs, _ = run_on_pty(tmp_path, False)
    captured, attrs, records = run_on_pty(tmp_path, mode)
    assert attrs == plain_attrs
    assert plain_attrs["isatty"] == [True] * 4 and plain_attrs["buffering"][0] is True
    assert plain_attrs["size"] == [111, 37]
    assert captured == plain
    assert "step 4" in lines(records, "stdout")
    assert ("os-level" in lines(records, "stdout")) == (mode == "fd")


def test_records_say_what_the_terminal_shows(tmp_path):
    body = r"""
    print("first"); print("second", file=sys.stderr)
    for i in range(200):
        sys.stdout.write(f"\rbar {i / 2:5.1f}%")
    sys.stdout.write("\n")
    print("\x1b[31mred\x1b[0m")
    sys.stdout.write("tab\tand \"quotes\" \\ and null\n")
    print("typing...", end="", flush=True)
    time.sleep(0.8)
    print(" done")
    from tqdm import tqdm
    for epoch in tqdm(range(3), desc="epoch", mininterval=0, file=sys.stderr):
        for batch in tqdm(range(50), desc="batch", position=1, leave=False, mininterval=0, file=sys.stderr):
            pass
    sys.stderr.write("abcdef\b\b\bXY\n")
    sys.stderr.write("erase me\r\x1b[2Kkept\n")
    finish()
    """
    proc, records = child(tmp_path, body)
    out, err = lines(records, "stdout"), lines(records, "stderr")
    assert out == ["first", "bar  99.5%", "\x1b[31mred\x1b[0m", 'tab\tand "quotes" \\ and null', "typing... done"]
    assert err[0] == "second" and err[-2:] == ["abcXYf", "kept"]
    epochs = [text for text in err if "epoch" in text]
    assert len(epochs) == 1 and epochs[0].startswith("epoch: 100%|") and "3/3" in epochs[0], err
    assert not any("batch" in text for text in err), err  # a cleared bar leaves nothing
    assert len(records) < 20  # final states, not frames
    partial = [i for i, r in enumerate(records) if r.get("partial")]
    assert "typing..." in [records[i]["text"] for i in partial]  # quiet for longer than settle
    for i in partial:  # each superseded by a later record of its stream
        assert any(r["stream"] == records[i]["stream"] for r in records[i + 1:])
    assert all(r["stream"] in ("stdout", "stderr") and isinstance(r["timestamp"], float) for r in records)
    assert b"bar  99.5%" in proc.stdout and b"\rbar   0.0%" in proc.stdout


def test_fd_mode_catches_descriptors_children_and_c_code(tmp_path):
    body = r"""
    import ctypes, subprocess
    print("from python", flush=True)
    os.write(1, b"from os.write\n")
    subprocess.run(["echo", "from a child process"], check=True)
    subprocess.run(["sh", "-c", "echo child stderr >&2"], check=True)
    libc = ctypes.CDLL(None)
    libc.printf(b"from printf %d\n", 42)
    libc.fflush(None)
    os.write(2, b"invalid utf-8 \xff\xc3(\n")
    finish()
    """
    proc, records = child(tmp_path, body, mode="fd")
    out, err = lines(records, "stdout"), lines(records, "stderr")
    assert out == ["from python", "from os.write", "from a child process", "from printf 42"]
    assert err == ["child stderr", "invalid utf-8 \ufffd\ufffd("]
    assert proc.stdout == b"from python\nfrom os.write\nfrom a child process\nfrom printf 42\n"
    assert proc.stderr == b"child stderr\ninvalid utf-8 \xff\xc3(\n"
    # The streams alone see only what Python writes.
    _, records = child(tmp_path, body, mode=True)
    assert lines(records, "stdout") == ["from python"]


def test_cap_records_one_line_saying_so_and_the_terminal_gets_all(tmp_path):
    body = """
    for i in range(300):
        print("line", i)
    finish()
    """
    proc, records = child(tmp_path, body, options={"max_lines": 50})
    assert proc.stdout.decode().splitlines() == [f"line {i}" for i in range(300)]
    assert lines(records)[:50] == [f"line {i}" for i in range(50)]
    assert len(records) == 51
    assert records[-1]["text"].startswith("mldash: console capture stopped after 50 lines (limit 50 lines")
    _, records = child(tmp_path, body, options={"max_chars": 66})  # "line 0" .. "line 9" are 60
    assert lines(records)[:-1] == [f"line {i}" for i in range(10)] and "stopped after 10 lines" in records[-1]["text"]


def test_kill_9_loses_at_most_the_last_second(tmp_path):
    run = tmp_path / "run"
    code = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from mldash._console import ConsoleCapture, writer_sink
from mldash._writer import Writer
writer = Writer({str(run)!r}, "t/console", series=lambda: [], on_error=lambda: None, interval=0.5,
                trigger=40_000, max_pending=800_000)
ConsoleCapture(True, writer_sink(writer.extra, {str(run)!r})).start()  # the defaults
for i in range(15):
    print("line", i, flush=True); time.sleep(0.05)
sys.stderr.write("tail without a newline"); sys.stderr.flush()
i = 15
while True:
    print("line", i, flush=True); time.sleep(0.05); i += 1
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)
    seen: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: [seen.append((time.monotonic(), x.decode().strip())) for x in proc.stdout])
    reader.start()
    try:
        time.sleep(3.5)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
        reader.join(10)
    texts = [r["text"] for r in read_console(str(run), 0, 10_000)["data"]]
    old_enough = [text for t, text in seen if t < killed_at - 1.0]
    assert len(old_enough) > 20
    assert set(old_enough) <= set(texts), sorted(set(old_enough) - set(texts))[:5]
    assert "tail without a newline" in texts  # a partial snapshot: written 2.7 s before the kill


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_stop_restores_streams_and_descriptors(tmp_path, mode):
    body = r"""
    import io
    def state():
        raw = sys.stdout.buffer.raw if hasattr(sys.stdout.buffer, "raw") else sys.stdout.buffer
        fds = sorted(os.listdir("/proc/self/fd"))
        return [id(sys.stdout), id(sys.stderr), sorted(vars(raw)), [list(os.fstat(n))[:3] for n in (1, 2)],
                os.get_inheritable(1), fds]
    capture.stop()  # the prelude's; state before a start
    before = state()
    capture = ConsoleCapture(MODE, lambda b: records.extend(b.records()), interval=0.05).start()
    print("during", flush=True)
    user = io.StringIO()
    sys.stdout = user  # replaced by the user after start: stop must leave it
    capture.stop()
    capture.stop()
    assert sys.stdout is user
    sys.stdout = sys.__stdout__
    time.sleep(0.2)  # the relay's reaper thread
    after = state()
    print("after", flush=True)
    with open(OUT + ".state", "w") as f:
        json.dump([before, after], f)
    finish()
    """
    proc, records = child(tmp_path, body, mode=mode)
    before, after = json.loads(next(tmp_path.glob("*.state")).read_text())
    assert before == after
    assert "write" not in before[2]
    assert lines(records) == ["during"]
    assert proc.stdout == b"during\nafter\n"


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_two_captures_at_once(tmp_path, mode):
    body = r"""
    second = []
    c2 = ConsoleCapture(MODE, lambda b: second.extend(b.records()), interval=0.05).start()
    print("both", flush=True)
    time.sleep(0.2)  # fd mode: relayed before the stop below
    c2.stop()  # the later one first: the earlier one goes on recording
    print("first only", flush=True)
    os.write(1, b"fd level\n")
    with open(OUT + ".second", "w") as f:
        json.dump([[r["text"] for r in second], sorted(c2.descriptors)], f)
    finish()
    """
    proc, records = child(tmp_path, body, mode=mode)
    second, descriptors = json.loads(next(tmp_path.glob("*.second")).read_text())
    assert lines(records) == ["both", "first only"] + (["fd level"] if mode == "fd" else [])
    assert second == ["both"] and descriptors == []  # fd mode: one owns the descriptors, the other the streams
    assert proc.stdout == b"both\nfirst only\nfd level\n"


def test_console_setting(monkeypatch):
    monkeypatch.delenv("MLDASH_CAPTURE_CONSOLE", raising=False)
    assert console_setting() is True and console_setting(False) is False and console_setting("fd") == "fd"
    for text, want in (("0", False), ("off", False), (" FD ", "fd"), ("true", True), ("", True)):
        monkeypatch.setenv("MLDASH_CAPTURE_CONSOLE", text)
        assert console_setting(None) is want if isinstance(want, bool) else console_setting(None) == want
        assert console_setting(True) is True  # an argument wins over the variable
    monkeypatch.setenv("MLDASH_CAPTURE_CONSOLE", "sometimes")
    with pytest.raises(ValueError, match=r"\$MLDASH_CAPTURE_CONSOLE"):
        console_setting()
    for bad in (1, 0, "sys", "FD"):
        with pytest.raises(ValueError, match="capture_console"):
            console_setting(bad)


def test_stop_is_safe_twice_and_without_start():
    capture = ConsoleCapture(True)
    capture.stop()
    capture.stop()
    assert not capture.active
    ConsoleCapture(False).start().stop()
    for bad in ("sys", 1, None, "FD"):
        with pytest.raises(ValueError):
            ConsoleCapture(bad)


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_a_closed_stdout_raises_as_without_capture_and_stop_does_not(tmp_path, mode):
    body = r"""
    print("before", flush=True)
    sys.stdout.close()
    try:
        print("after close")
    except ValueError as error:
        result = type(error).__name__
    os.close(1)  # the descriptor too: stop must not put one back
    capture.stop()
    try:
        os.fstat(1)
        result += " fd 1 is open"
    except OSError:
        result += " fd 1 is closed"
    sys.stderr.write(result + "\n")
    finish()
    """
    proc, records = child(tmp_path, body, mode=mode)
    assert proc.stderr.decode().splitlines()[-1] == "ValueError fd 1 is closed"
    assert lines(records, "stdout") == ["before"]
    # Descriptors 0 and 1 closed before the start (sys.stdout is None): nothing raised, stderr recorded.
    body = 'assert sys.stdout is None\nprint("x", file=sys.stderr)\nos.write(2, b"y\\n")\nfinish()\n'
    proc, records = child(tmp_path, body, mode=mode, preexec_fn=lambda: (os.close(0), os.close(1)))
    assert lines(records, "stderr") == (["x", "y"] if mode == "fd" else ["x"])
    assert proc.stderr == b"x\ny\n"


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_a_full_pipe_does_not_deadlock(tmp_path, mode):
    """The reader stops reading for a second while the child writes megabytes, some
    of them from C with the GIL held (PyDLL): a relay thread would deadlock there."""
    body = r"""
    import ctypes
    block = b"x" * 1023 + b"\n"
    ctypes.PyDLL(None).write(1, block * 4096, 4096 * 1024)  # 4 MiB in one call, GIL held
    for i in range(20000):
        print("line", i)
    finish()
    """
    out = tmp_path / "out.json"
    code = PRELUDE.format(repo=str(REPO), mode=json.dumps(mode), out=str(out), options="{}") + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    time.sleep(1.0)  # let every pipe on the way fill
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert len(stdout) == 4096 * 1024 + sum(len(f"line {i}\n") for i in range(20000))
    records = json.loads(out.read_text())["records"]
    assert lines(records)[-1] == "line 19999"
    if mode == "fd":
        assert sum(1 for text in lines(records) if text == "x" * 1023) == 4096


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_a_forked_child_does_not_capture_into_the_parents_run(tmp_path, mode):
    body = r"""
    print("parent before", flush=True)
    time.sleep(0.3)  # fd mode: the relay forwards it before the child writes past it
    pid = os.fork()
    if pid == 0:
        raw = sys.stdout.buffer.raw if hasattr(sys.stdout.buffer, "raw") else sys.stdout.buffer
        state = [capture.active, "write" in vars(raw)]
        print("from the child", flush=True)
        capture.after_fork_in_child()  # the Experiment's hook: idempotent with the module's own
        with open(OUT + ".child", "w") as f:
            json.dump(state, f)
        os._exit(0)
    os.waitpid(pid, 0)
    print("parent after", flush=True)
    finish()
    """
    proc, records = child(tmp_path, body, mode=mode)
    assert json.loads(next(tmp_path.glob("*.child")).read_text()) == [False, False]
    assert lines(records) == ["parent before", "parent after"]
    assert proc.stdout == b"parent before\nfrom the child\nparent after\n"


def test_fd_mode_survives_its_relay_and_its_terminal(tmp_path):
    body = r"""
    print("before", flush=True)
    time.sleep(0.3)
    capture._fd.process.kill()
    capture._fd.process.wait()
    for i in range(50):
        print("after", i, flush=True)  # no BrokenPipeError, no hang: the descriptor is given back
        time.sleep(0.005)
    finish()
    """
    proc, records = child(tmp_path, body, mode="fd")
    out = proc.stdout.decode().splitlines()  # order may differ right at the switch back
    assert out[0] == "before" and sorted(out[1:]) == sorted(f"after {i}" for i in range(50))
    assert lines(records)[0] == "before"
    # The terminal going away (a reader that quit): the program sees EPIPE as it would without mldash.
    body = r"""
    print("first", flush=True)
    while not os.path.exists(OUT + ".closed"):
        time.sleep(0.01)
    result = "no error"
    for i in range(200):
        try:
            print("more", i, flush=True)
        except BrokenPipeError:
            result = "BrokenPipeError"
            break
        time.sleep(0.01)
    sys.stderr.write(result + "\n")
    try:
        finish()
    except BrokenPipeError:
        pass
    """
    for mode in (False, "fd"):
        out = tmp_path / f"epipe-{mode}.json"
        code = PRELUDE.format(repo=str(REPO), mode=json.dumps(mode), out=str(out), options="{}") + textwrap.dedent(body)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        assert p.stdout.readline() == b"first\n"
        p.stdout.close()
        Path(str(out) + ".closed").touch()
        assert p.wait(60) in (0, 120)  # 120: Python's own flush at exit hit the broken pipe
        assert p.stderr.read().decode().splitlines()[0] == "BrokenPipeError", mode


def test_fd_mode_a_child_still_writing_after_stop_and_exit_reaches_the_terminal(tmp_path):
    body = r"""
    import subprocess
    subprocess.Popen(["sh", "-c", "sleep 1; echo late from the child"])  # holds descriptor 1
    print("main", flush=True)
    started = time.monotonic()
    finish()
    sys.stderr.write(f"stop took {time.monotonic() - started:.2f}\n")
    """
    proc, records = child(tmp_path, body, mode="fd")  # returns when every writer is done
    assert proc.stdout == b"main\nlate from the child\n"
    assert lines(records) == ["main"]
    assert float(proc.stderr.decode().split()[-1]) < 1.0  # it did not wait for the child


@pytest.mark.parametrize("mode", MODES, ids=["sys", "fd"])
def test_output_during_shutdown_is_not_lost(tmp_path, mode):
    body = r"""
    import atexit, threading
    atexit.register(lambda: print("from atexit"))
    def chatter():
        while True:
            sys.stdout.write("."); time.sleep(0.001)
    threading.Thread(target=chatter, daemon=True).start()
    time.sleep(0.05)
    print("end of main")
    # no stop(): the module's own atexit handler undoes the capture
    """
    proc, _ = child(tmp_path, body, mode=mode, timeout=30)
    text = proc.stdout.decode().replace(".", "")
    assert text == "end of main\nfrom atexit\n", text


def test_a_failing_sink_or_thread_never_reaches_the_program(tmp_path):
    body = r"""
    def broken(batch):
        raise RuntimeError("sink failed")
    capture.sink = broken
    for i in range(100):
        print("line", i)
    sys.stdout.flush()
    time.sleep(0.2)
    capture.stop()
    assert isinstance(capture.error, RuntimeError), capture.error
    capture.error = None
    c2 = ConsoleCapture(MODE, lambda b: None, interval=0.01).start()
    c2._screens[0].write = None  # the thread's pump fails on every write: the program goes on
    for i in range(100):
        print("x", flush=True)
    time.sleep(0.1)
    c2.stop()
    assert c2.error is not None
    # The thread gone: writes queue up to a bound, then are counted, and the count is recorded.
    sys.stdout.reconfigure(line_buffering=True)  # one write a line
    capture = ConsoleCapture(MODE, lambda b: records.extend(b.records())).start()
    capture._closing = True
    capture._wake.set()
    capture._thread.join(5)
    for i in range(60000):
        print("y")
    capture._closing = False
    print("still fine", flush=True)
    finish()
    """
    proc, records = child(tmp_path, body)
    assert proc.stdout.endswith(b"y\nstill fine\n")
    assert records[-1]["text"] == "mldash: 10,001 console writes were not recorded (the capture fell behind)"
    assert lines(records).count("y") == 50_000


# ---- in-process: the terminal model, the encoding, the reader ----------------------------------------
def screen_records(*writes, settle: float = 0.5, final: bool = True) -> list[tuple]:
    """Feed (time, text) writes to a Screen; the records, as (text, partial)."""
    screen, runs = Screen("stdout", settle), []
    t = 0.0
    for t, text in writes:
        screen.write(t, text, runs)
    screen.flush(t + 10 if final else t, runs, final)
    return [(text, run[3]) for run in runs for text in run[2]]


def test_screen_applies_what_a_terminal_does():
    assert screen_records((0, "a\nb\n"), (0, "c")) == [("a", False), ("b", False), ("c", False)]
    assert screen_records((0, "12345\r"), (0, "ab\n")) == [("ab345", False)]
    assert screen_records((0, "long frame\rshort\n")) == [("shortframe", False)]
    assert screen_records((0, "x" * 10 + "\r" + " " * 10 + "\r"), (0, "done\n")) == [("done", False)]
    assert screen_records((0, "abc\x1b[2K\rxy\n")) == [("xy", False)]
    assert screen_records((0, "abcdef\r\x1b[Kz\n")) == [("z", False)]
    assert screen_records((0, "a\r\n")) == [("a", False)]
    assert screen_records((0, "\n\n")) == [("", False), ("", False)]  # empty lines are lines
    nested = "\rA 0%\n\rB 0%\x1b[A\n\rB 50%\x1b[A\n\r     \x1b[A\rA 100%"
    assert screen_records((0, nested), (0.1, "\n")) == [("A 100%", False)]
    long = screen_records((0, "y" * (MAX_LINE * 2 + 5) + "\n"))
    assert [len(text) for text, _ in long] == [MAX_LINE, MAX_LINE, 5]


def test_screen_snapshots_an_open_line_then_supersedes_it():
    screen, runs = Screen("stdout", 0.5), []
    screen.write(0.0, "loading", runs)
    screen.flush(0.4, runs, False)
    assert runs == []  # not quiet long enough
    screen.flush(0.6, runs, False)
    assert runs == [(0.0, "stdout", ["loading"], True)]
    screen.flush(5.0, runs, False)
    assert len(runs) == 1  # unchanged: no new snapshot
    for i in range(1000):  # a bar that keeps changing for 100 s: snapshots at a tenth of its age
        screen.write(1.0 + i * 0.1, f"\rloading {i}", runs)
        screen.flush(1.0 + i * 0.1, runs, False)
    assert 20 < len(runs) < 60, len(runs)
    screen.write(101.0, "\n", runs)
    assert runs[-1] == (101.0, "stdout", ["loading 999"], False)


def test_batch_lines_decode_to_its_records(tmp_path):
    texts = ['plain', 'with "quotes"', "back\\slash", "null", "\x1b[1m\x00\t", "\u00e9\U0001f600", ""]
    runs = [(1.5, "stdout", texts, False), (2.25, "stderr", ["a", "b"], False), (3.0, "stderr", ["open"], True)]
    batch = Batch(runs)
    encoded = batch(0)
    decoded = [orjson.loads(line) for chunk in encoded.chunks for line in chunk.splitlines()]
    assert decoded == list(batch.records()) and len(batch) == encoded.count == 10
    long = Batch([(1.0, "stdout", [f"n{i}" for i in range(3000)], False)])(1000)  # marks at 1024, 2048, 3072
    data = b"".join(long.chunks)
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 10][:-1]
    assert long.marks == [starts[24], starts[1048], starts[2072]] and long.count == 3000
    # The same records through today's writer (a dict a line) and through SeriesFile.append(batch):
    for name, put in (("dicts", False), ("batches", True)):
        path = str(tmp_path / name)
        if put:
            SeriesFile(os.path.join(path, "console"), "console").append(batch)
        else:
            writer = Writer(path, "t/c", series=lambda: [], on_error=lambda: None, interval=0.05,
                            trigger=40_000, max_pending=800_000)
            writer_sink(writer.extra, path)(batch)
            writer.close()
        got = read_console(path, 0, 100)
        assert [{k: v for k, v in r.items() if k != "index"} for r in got["data"]] == list(batch.records())
        assert [r["index"] for r in got["data"]] == list(range(10)) and got["total"] == 10
        page = read_console(path, 8, 1)
        assert (page["end_index"], page["has_more"], page["data"][0]["text"]) == (8, True, "b")
        assert [r["text"] for r in console_tail(path, 3)] == ["a", "b", "open"]
    path = str(tmp_path / "tail")
    SeriesFile(os.path.join(path, "console"), "console").append(Batch(
        [(1.0, "stdout", ["partial"], True), (2.0, "stdout", ["partial, done"], False), (3.0, "stderr", ["e"], True)]))
    assert [r["text"] for r in console_tail(path, 10)] == ["partial, done", "e"]  # superseded snapshot dropped
    assert read_console(str(tmp_path / "none"), 0, 10) == {
        "data": [], "start_index": 0, "end_index": -1, "total": 0, "has_more": False}
    with pytest.raises(ValueError):
        read_console(path, -1, 10)
