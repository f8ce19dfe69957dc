"""`mldash show` names a media value (an image's size, a histogram's bins), not its dict."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mldash

np = pytest.importorskip("numpy")
pytest.importorskip("PIL")


def test_show_prints_images_and_histograms_as_short_descriptions(root):
    with mldash.Experiment("m/run", root=root, system_metrics=False) as exp:
        exp.metrics("samples").append(image=mldash.Image(np.zeros((8, 6, 3), np.uint8)), step=1)
        exp.metrics("weights").append(h=mldash.Histogram(np.arange(100.0), bins=10), step=1)
    out = subprocess.run([sys.executable, "-m", "mldash", "show", "m/run", "--root", str(root)],
                         capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", **__import__("os").environ})
    assert out.returncode == 0, out.stderr
    assert "image=image 6x8" in out.stdout and "h=histogram, 10 bins" in out.stdout
    assert "sha256" not in out.stdout
