"""Real mounts for the tests of full and read-only disks: a small tmpfs, a read-only
bind mount. They need root; elsewhere the tests that ask for them are skipped."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest


def mount(*args: str) -> None:
    for attempt in range(5):  # a remount can fail while the kernel still holds the mount busy
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode == 0:
            return
        time.sleep(0.2 * (attempt + 1))
    raise subprocess.CalledProcessError(result.returncode, ["mount", *args], result.stdout, result.stderr)


@contextlib.contextmanager
def mounted(target: Path, *args: str):
    target.mkdir(parents=True, exist_ok=True)
    try:
        mount(*args, str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount here (needs root): {getattr(error, 'stderr', error)}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs."""
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        yield disk


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; delete the returned file to free them."""
    path = disk / "ballast"
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return path
