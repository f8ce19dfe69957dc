"""Where and how a run ran: host, process, Python, packages, git."""

from __future__ import annotations

import os
import sys

KEY_PACKAGES = (
    "mldash", "torch", "lightning", "pytorch_lightning", "transformers", "accelerate",
    "tensorflow", "keras", "jax", "numpy", "peft",
)


def process_info() -> dict:
    """Cheap facts, taken on the caller's thread at start."""
    import platform
    import socket

    packages = {}
    for name in KEY_PACKAGES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if isinstance(version, str):
            packages[name] = version
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(terse=True),
        "packages": packages,
    }


def git_info(cwd: str | None = None) -> dict | None:
    """Commit, branch and dirty flag of the work tree around ``cwd``, if any."""
    import subprocess


    def git(*args: str) -> str:
        return subprocess.run(
            ("git", *args), cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    info = {"commit": commit}
    try:
        info["branch"] = git("rev-parse", "--abbrev-ref", "HEAD")
        info["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
        info["root"] = git("rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        pass
    return info
