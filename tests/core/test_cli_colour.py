"""Colour on a terminal only: `mldash ls` and `mldash show` piped to a file or another
program write no ANSI escape codes, also of the console a run printed in colour."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest

ESC = "\x1b["
COLOUR_ENV = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


def environment(root) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in COLOUR_ENV}
    return {**env, "MLDASH_ROOT": str(root), "TERM": "xterm-256color"}


def piped(*args: str, root) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mldash", *args], capture_output=True, text=True,
                          timeout=60, env=environment(root), stdin=subprocess.DEVNULL)


def on_a_terminal(*args: str, root) -> str:
    """What the command writes to a pseudo-terminal 120 columns wide."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "mldash", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=environment(root), close_fds=True)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(60)
    os.close(leader)
    return out.decode(errors="replace")


@pytest.fixture
def runs(root):
    """A failed run (a red status) whose program printed in colour, console captured."""
    script = (
        "import mldash\n"
        f"exp = mldash.Experiment('paint/run', root={str(root)!r}, capture_console=True)\n"
        "with exp:\n"
        "    exp.metrics('loss').append(value=1.0)\n"
        "    print('\\x1b[31mred alert\\x1b[0m', flush=True)\n"
        "    raise SystemExit('stopped')\n"
    )
    subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert (root / "paint" / "run" / "experiment.json").is_file()
    return root


@pytest.mark.parametrize("args", [("ls",), ("show", "paint/run"), ("ls", "--json"), ("show", "paint/run", "--json")])
def test_piped_output_has_no_escape_codes(runs, args):
    result = piped(*args, root=runs)
    assert result.returncode == 0, result.stderr
    assert "paint/run" in result.stdout
    assert ESC not in result.stdout and ESC not in result.stderr


def test_piped_show_prints_the_runs_coloured_console_as_plain_text(runs):
    out = piped("show", "paint/run", root=runs).stdout
    assert "red alert" in out and ESC not in out
    console = json.loads(piped("show", "paint/run", "--json", root=runs).stdout)["console"]
    assert any(record["text"] == "\x1b[31mred alert\x1b[0m" for record in console)  # as printed, escaped in JSON


def test_on_a_terminal_the_status_is_coloured(runs):
    """The other side of the test above: the same command does colour a terminal."""
    out = on_a_terminal("ls", root=runs)
    assert "paint/run" in out and ESC in out
