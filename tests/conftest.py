"""Shared test set-up: every test writes under its own tmp root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local root, also exported as MLDASH_ROOT for code under test."""
    path = tmp_path / "runs"
    monkeypatch.setenv("MLDASH_ROOT", str(path))
    for name in ("MLDASH_URL", "MLDASH_TOKEN", "MLDASH_PROJECT", "MLDASH_NAME", "MLDASH_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return path


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
