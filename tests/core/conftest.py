"""Tests of mldash's own modules: the Experiment and its parts, the run folder, the
hot path in C and Python, the checks of what is accepted, the layering, the docs."""

from __future__ import annotations

import pytest

import mldash
from mldash import _queue
from mldash._native import speedups

from _disks import small_disk  # noqa: F401 (a fixture: a 1 MiB tmpfs)


@pytest.fixture
def exp(root):
    """A started experiment under the test's root, finished after the test."""
    experiment = mldash.Experiment("core/run", root=root)
    yield experiment
    experiment.finish()


@pytest.fixture(params=["c", "python"])
def queue_module(request):
    """The append queue's module: the compiled one (_speedups) and its twin (_queue)."""
    if request.param == "python":
        return _queue
    if speedups is None:
        pytest.skip("the compiled speed-ups are not built (or MLDASH_PURE_PYTHON is set)")
    return speedups
