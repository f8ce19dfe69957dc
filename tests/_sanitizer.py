"""Builds of mldash's C extensions with AddressSanitizer and UBSan, for the tests
that run them in a subprocess (a bad read or write is reported even where a
normal build would carry on), against every Python 3.10+ found here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def interpreters() -> list[str]:
    """This Python, and any other 3.10+ on PATH or installed by pyenv: 3.10 and
    3.11 start collections inside allocations, and each version's C API fails
    in its own ways (3.13.0's PyDict_SetDefault, under MemoryError)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [sys.executable] + [shutil.which(f"python3.{minor}") for minor in range(10, 15)]
    found += sorted(str(p) for p in pyenv.glob("3.1[0-9]*/bin/python3"))
    return [p for p in found if p]


PROBE = (
    "import sys, sysconfig; print(sysconfig.get_paths()['include']); "
    "print(sysconfig.get_config_var('EXT_SUFFIX')); print(*sys.version_info[:2])"
)


def sanitized_builds(source: Path, module: str, folder: Path) -> tuple[list, dict]:
    """[(version, python, built file)] for the extension ``module`` (its last
    name, e.g. "_speedups") built from ``source`` with ASan and UBSan into
    ``folder``, and the environment that runs it; skips the test where that
    cannot be done here."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc)")
    runtime = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip(f"{compiler} has no AddressSanitizer runtime (libasan.so)")
    builds, versions = [], set()
    for python in interpreters():
        probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True)
        if probe.returncode != 0:
            continue  # a pyenv shim for a version that is not installed
        include, suffix, version = probe.stdout.splitlines()
        version = tuple(map(int, version.split()))
        if version in versions or not (Path(include) / "Python.h").exists():
            continue
        built = folder / ".".join(map(str, version)) / f"{module}{suffix}"
        built.parent.mkdir()
        compiled = subprocess.run(
            [compiler, "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=undefined", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(built)],
            capture_output=True, text=True,
        )
        if compiled.returncode != 0:
            if python == sys.executable:
                pytest.skip(f"{compiler} cannot build with -fsanitize=address,undefined: {compiled.stderr[-500:]}")
            continue
        builds.append((version, python, built))
        versions.add(version)
    if not builds:
        pytest.skip("no Python here has the headers to build against")
    env = {
        **os.environ,
        "LD_PRELOAD": " ".join(filter(None, [runtime, os.environ.get("LD_PRELOAD")])),
        "ASAN_OPTIONS": "detect_leaks=0",  # CPython keeps much alive at exit by design
        "UBSAN_OPTIONS": "print_stacktrace=1",
        "PYTHONMALLOC": "malloc",  # objects from malloc, where ASan sees them freed; not pymalloc's pools
    }
    return builds, env


def sanitizer_report(stderr: str) -> bool:
    return "ERROR: AddressSanitizer" in stderr or "runtime error:" in stderr
