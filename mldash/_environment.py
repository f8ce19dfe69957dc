"""Where and how a run ran: host, process, Python, packages, git."""

from __future__ import annotations

import os
import sys

KEY_PACKAGES = (
    "mldash", "torch", "lightning", "pytorch_lightning", "transformers", "accelerate",
    "tensorflow", "keras", "jax", "numpy", "peft",
)


def text(value: str) -> str:
    """Text from the environment (argv, the working directory, a host or branch name)
    as valid Unicode: bytes that are not UTF-8 arrive as lone surrogates, which JSON
    cannot hold, and become replacement characters."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
        "host": text(socket.gethostname()),
        "pid": os.getpid(),
        "argv": [text(str(a)) for a in sys.argv],
        "cwd": text(_cwd()),
        "python": platform.python_version(),
        "executable": text(sys.executable or ""),
        "platform": platform.platform(terse=True),
        "packages": packages,
    }


def git_info(cwd: str | None = None) -> dict | None:
    """Commit, branch and dirty flag of the work tree around ``cwd``, if any.

    One ``git status --porcelain=v2 --branch`` call gives all three: each git
    process costs a fork of this (possibly large) interpreter.
    """
    import subprocess

    try:
        out = subprocess.run(
            ("git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"),
            cwd=cwd, capture_output=True, text=True, errors="replace", timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    info: dict = {"dirty": False}
    for line in out.splitlines():
        if line.startswith("# branch.oid "):
            info["commit"] = line.split(" ", 2)[2]
        elif line.startswith("# branch.head "):
            info["branch"] = line.split(" ", 2)[2]
        elif not line.startswith("#"):
            info["dirty"] = True
    if info.get("commit") in (None, "(initial)"):
        return None  # a repository with no commit yet
    return info


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed
        return ""
