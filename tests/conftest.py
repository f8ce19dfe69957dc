"""Shared test set-up: every test writes under its own tmp root.

The tests mirror the package: ``core/`` (mldash's own modules), ``remote/``,
``server/``, ``ui/`` and ``integrations/``, each with a conftest of its own.
Support modules (``_*_support.py``, ``_procs.py``, ``hostile_inputs.py``) live in
this folder, which pytest puts on ``sys.path`` for this conftest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Runs sample the machine into sys/* series by default; tests of other things get
# only the series they write (tests/core/test_system.py turns it back on).
os.environ["MLDASH_SYSTEM_METRICS"] = "0"
# Likewise console capture, which would record pytest's own capture of the output
# (tests/core/test_console.py and the run-level tests turn it on).
os.environ["MLDASH_CAPTURE_CONSOLE"] = "0"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local root, also exported as MLDASH_ROOT for code under test."""
    path = tmp_path / "runs"
    monkeypatch.setenv("MLDASH_ROOT", str(path))
    for name in ("MLDASH_URL", "MLDASH_TOKEN", "MLDASH_PROJECT", "MLDASH_NAME", "MLDASH_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return path
