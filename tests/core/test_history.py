"""``exp.history()`` on the writing Experiment: what was appended so far, joined on a step."""

from __future__ import annotations

import pytest

import mldash

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def test_history_of_a_running_experiment_includes_what_is_still_queued(root):
    with mldash.Experiment("h/run", root=root, system_metrics=False) as exp:
        for step in range(3):
            exp.metrics("train/loss").append(value=1.0 / (step + 1), step=step)
        exp.metrics("val/loss").append(value=0.7, step=2)
        frame = exp.history()  # not flushed yet: history() makes it readable first
        assert list(frame.index) == [0, 1, 2]
        assert frame["train/loss"].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
        assert frame["val/loss"].isna().tolist() == [True, True, False]
        assert list(exp.history(["val/loss"]).columns) == ["val/loss"]
