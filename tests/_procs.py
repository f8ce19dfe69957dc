"""Running code in a process of its own, for the tests (exit hooks, signals, crashes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent  # the folder of the support modules
REPO = TESTS.parent


def run_python(code: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for exit hooks, signals, crashes)."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Ask a child process to stop (SIGTERM); kill it if it has not within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
