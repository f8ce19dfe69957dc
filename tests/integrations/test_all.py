"""What every framework integration promises, run over all three (as Lightning's
tests/tests_pytorch/loggers/test_all.py runs one test over every logger).

Each integration trains real tiny models in its own process
(tests/_contract_support.py), one experiment per scenario; the tests read back
what was stored. Framework-specific behaviour is in test_lightning.py,
test_keras.py and test_transformers.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mldash

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_contract_support.py")
INTEGRATIONS = ("lightning", "keras", "transformers")
# Where each framework's learning rate lands in the run's parameters.
LEARNING_RATE_KEY = {"lightning": "lr", "keras": "optimizer.learning_rate", "transformers": "args.learning_rate"}
# What reaches the caller after Ctrl-C: Lightning stops gracefully and exits (SystemExit).
INTERRUPT_RAISES = {"lightning": "SystemExit", "keras": "KeyboardInterrupt", "transformers": "KeyboardInterrupt"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{integration: (root, report)}: every integration's scenarios, run at once."""
    base = tmp_path_factory.mktemp("contract")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
           "MLDASH_FLUSH_INTERVAL": "0.05"}
    procs = {}
    for kind in INTEGRATIONS:
        root, report = base / kind / "runs", base / f"{kind}.json"
        log = open(base / f"{kind}.log", "wb")
        procs[kind] = (subprocess.Popen([sys.executable, SUPPORT, kind, str(root), str(report)],
                                        env=env, stdout=log, stderr=subprocess.STDOUT), root, report, log)
    out = {}
    for kind, (proc, root, report, log) in procs.items():
        proc.wait(timeout=540)
        log.close()
        output = (base / f"{kind}.log").read_text(errors="replace")[-3000:]
        assert proc.returncode == 0 and report.exists(), f"{kind} exited {proc.returncode}:\n{output}"
        out[kind] = (root, json.loads(report.read_text()))
    return out


def experiment(runs, kind: str, scenario: str) -> mldash.Experiment:
    return mldash.Experiment(f"contract/{scenario}", root=runs[kind][0])


@pytest.mark.parametrize("kind", INTEGRATIONS)
def test_a_normal_run_is_completed_with_its_hyperparameters_and_metrics(runs, kind):
    assert runs[kind][1]["ok"] is None
    exp = experiment(runs, kind, "ok")
    assert exp.status == "COMPLETED" and exp.info()["sessions"] == 1
    assert exp.params.get()[LEARNING_RATE_KEY[kind]] == pytest.approx(0.05)
    assert exp.metric_names(), "no metric recorded"


@pytest.mark.parametrize("kind", INTEGRATIONS)
def test_an_error_in_training_fails_the_run_with_its_traceback_and_still_raises(runs, kind):
    assert runs[kind][1]["error"] == "RuntimeError"
    exp = experiment(runs, kind, "error")
    assert exp.status == "FAILED"
    (record,) = exp.read_logs(level="error")["data"]
    assert record["metadata"]["error_type"] == "RuntimeError"
    assert "boom in training" in record["metadata"]["traceback"]


@pytest.mark.parametrize("kind", INTEGRATIONS)
def test_ctrl_c_cancels_the_run_and_still_raises(runs, kind):
    assert runs[kind][1]["interrupt"] == INTERRUPT_RAISES[kind]
    exp = experiment(runs, kind, "interrupt")
    assert exp.status == "CANCELLED"
    assert not exp.read_logs(level="error")["data"]
    assert any("cancel" in r["message"].lower() for r in exp.read_logs(level="warn")["data"])


@pytest.mark.parametrize("kind", INTEGRATIONS)
def test_a_process_that_is_not_rank_zero_writes_nothing(runs, kind):
    if runs[kind][1]["rank1"] == "not applicable":
        pytest.skip(f"{kind}: no rank to read (Keras runs its callbacks in every worker; see docs/keras.md)")
    assert runs[kind][1]["rank1"] is None
    path = experiment(runs, kind, "rank1").path
    # The framework's own files (a checkpoint of this one-process stand-in) may be there.
    written = [f for f in ("experiment.json", "metrics", "logs", "parameters") if os.path.exists(os.path.join(path, f))]
    assert not written
