"""Tests of mldash's own modules: the Experiment and its parts, the run folder, the
hot path in C and Python, the checks of what is accepted, the layering, the docs."""

from __future__ import annotations

import pytest

import mldash


@pytest.fixture
def exp(root):
    """A started experiment under the test's root, finished after the test."""
    experiment = mldash.Experiment("core/run", root=root)
    yield experiment
    experiment.finish()
