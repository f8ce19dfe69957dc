"""Every snippet of the seed document runs unchanged and writes the seed's layout."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import mldash

SEED = Path(__file__).resolve().parents[1] / "data" / "ml-dash-data-tracking.md"
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "ml-dash-data-tracking.md"


def seed_snippets() -> list[tuple[str, str]]:
    text = SEED.read_text()
    out = []
    heading = ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```python\n(.*?)^```", text, re.S | re.M):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
        else:
            out.append((heading, match.group(2)))
    return out


def test_vendored_seed_matches_the_shared_one():
    if not SHARED_SEED.exists():
        pytest.skip("shared/ is not beside this checkout")
    assert SEED.read_text() == SHARED_SEED.read_text()


def test_the_seed_has_the_snippets_we_run():
    headings = [h for h, _ in seed_snippets()]
    assert len(headings) == 14
    assert "Batch Collection Pattern" in headings and "Error Tracking" in headings


def test_every_seed_snippet_runs_unchanged(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    (tmp_path / "config.json").write_text(json.dumps({"seed": 7, "data": {"path": "/data"}}))
    losses = iter(1.0 / (i + 1) for i in range(100_000))
    experiment = mldash.Experiment("seed/run", root=root)
    namespace = {
        "experiment": experiment,
        "train_step": lambda: next(losses),
        "train_one_epoch": lambda: next(losses),
        "validate": lambda: next(losses) * 2,
    }

    def risky_operation():
        raise OSError("disk on fire")

    namespace["risky_operation"] = risky_operation
    for heading, code in seed_snippets():
        if heading == "Error Tracking":
            with pytest.raises(OSError, match="disk on fire"):
                exec(compile(code, f"<seed: {heading}>", "exec"), namespace)
        else:
            exec(compile(code, f"<seed: {heading}>", "exec"), namespace)
    experiment.finish()

    run = root / "seed" / "run"
    params = json.loads((run / "parameters" / "parameters.json").read_text())
    assert params["learning_rate"] == 0.001
    assert params["model.architecture"] == "resnet50"
    assert params["optimizer.lr"] == 0.001
    assert params["data.path"] == "/data"  # from config.json
    assert params["lr"] == 0.001  # from argparse
    for name in ("train_loss", "accuracy", "metrics", "system"):
        assert (run / "metrics" / name / "data.jsonl").is_file()
    assert (run / "logs" / "logs.jsonl").is_file()
    assert json.loads((run / "experiment.json").read_text())["status"] == "COMPLETED"

    train_loss = experiment.metrics("train_loss").read(0, 2000)
    # 1 (basic) + 3 (batch append) + 1000 (batch collection pattern)
    assert train_loss["total"] == 1004
    assert [p["index"] for p in train_loss["data"]] == list(range(1004))
    system = experiment.metrics("system").read()["data"][0]
    assert "timestamp" in system["data"]  # the user's own field, kept apart
    assert isinstance(system["timestamp"], float)  # mldash's write time, beside it
    levels = [r["level"] for r in experiment.read_logs()["data"]]
    assert levels.count("error") == 2 and "warn" in levels
    error = experiment.read_logs(level="error")["data"][-1]
    assert error["metadata"] == {"error_type": "OSError"}
