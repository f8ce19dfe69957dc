"""Lifecycle: lazy start, finish, resume, experiment.json, logs and error capture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mldash
from _procs import run_python


def meta(root: Path, prefix: str) -> dict:
    return json.loads((root / prefix / "experiment.json").read_text())


def test_constructing_does_no_io(root):
    exp = mldash.Experiment("p/quiet", root=root)
    assert not root.exists()
    assert exp.status is None
    assert exp.path == str(root / "p" / "quiet")


def test_the_first_write_starts_the_run(root):
    exp = mldash.Experiment("p/lazy", root=root)
    exp.metrics("loss").append(value=1.0)
    assert exp.status == "RUNNING"
    exp.flush()  # the start record is written by the writer thread, off the hot path
    assert meta(root, "p/lazy")["status"] == "RUNNING"
    exp.finish()
    assert exp.status == "COMPLETED" == meta(root, "p/lazy")["status"]


def test_prefix_project_folder_and_name_map_to_the_path(root, monkeypatch):
    exp = mldash.Experiment("vision/ablations/lr/run-3", root=root)
    assert (exp.project, exp.folder, exp.name) == ("vision", "ablations/lr", "run-3")
    assert exp.path == str(root / "vision" / "ablations" / "lr" / "run-3")
    monkeypatch.setenv("MLDASH_PROJECT", "envproj")
    other = mldash.Experiment(name="x", folder="f", root=root)
    assert other.prefix == "envproj/f/x"


def test_default_names_are_unique_and_sort_by_time(root):
    first = mldash.Experiment(root=root).name
    time.sleep(1.1)
    names = [mldash.Experiment(root=root).name for _ in range(50)]
    assert len(set(names)) == 50
    assert all(first < name for name in names)


@pytest.mark.parametrize("prefix", ["../../etc", "/abs/path", "p/../x", "a\x00b", "", "p/" + "n" * 300])
def test_bad_experiment_names_fail_at_construction(root, prefix):
    with pytest.raises(ValueError):
        mldash.Experiment(prefix, root=root)


def test_contradicting_prefix_and_project_fail(root):
    with pytest.raises(ValueError, match="contradicts"):
        mldash.Experiment("a/b", project="c", root=root)


def test_experiment_json_describes_where_and_how_it_ran(root, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    (repo / "f.txt").write_text("x")
    git("add", "f.txt")  # staged, uncommitted: the tree is dirty
    code = (
        "import mldash, sys, time\n"
        "exp = mldash.Experiment('p/env', root=sys.argv[1], tags=['baseline'], description='d')\n"
        "exp.start(); time.sleep(0.5); exp.finish()\n"
    )
    run_python(code, str(root), "--flag", cwd=repo)
    info = meta(root, "p/env")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert info["git"]["commit"] == commit and info["git"]["dirty"] is True
    assert info["argv"][-1] == "--flag" and info["host"] and isinstance(info["pid"], int)
    assert info["python"].count(".") == 2 and info["packages"]["mldash"] == mldash.__version__
    assert info["tags"] == ["baseline"] and info["description"] == "d"
    assert info["started_at"] <= info["finished_at"] and info["status"] == "COMPLETED"


def test_resuming_a_prefix_continues_its_indices(root):
    first = mldash.Experiment("p/resume", root=root)
    first.metrics("loss").append_batch([{"v": i} for i in range(3)])
    first.log("one")
    first.finish()
    second = mldash.Experiment("p/resume", root=root)
    second.metrics("loss").append(v=3)
    second.log("two")
    second.finish()
    assert [p["index"] for p in second.metrics("loss").read()["data"]] == [0, 1, 2, 3]
    assert [r["index"] for r in second.read_logs()["data"]] == [0, 1]
    assert meta(root, "p/resume")["sessions"] == 2


def test_writes_after_finish_reopen_the_run(root):
    exp = mldash.Experiment("p/reopen", root=root)
    exp.metrics("loss").append(v=1)
    exp.finish()
    exp.metrics("loss").append(v=2)
    assert exp.status == "RUNNING"
    exp.finish()
    assert exp.metrics("loss").read()["total"] == 2


def test_log_levels_and_metadata(root):
    exp = mldash.Experiment("p/logs", root=root)
    for level in mldash.LEVELS:
        exp.log(f"at {level}", level=level, metadata={"n": 1})
    exp.log("default level")
    records = exp.read_logs()["data"]
    assert [r["level"] for r in records] == ["debug", "info", "warn", "error", "fatal", "info"]
    assert records[0]["metadata"] == {"n": 1} and records[-1]["metadata"] is None
    assert [r["level"] for r in exp.read_logs(level="error")["data"]] == ["error", "fatal"]
    exp.finish()


def test_an_unknown_level_names_the_valid_ones(root):
    exp = mldash.Experiment("p/badlevel", root=root)
    with pytest.raises(ValueError, match="debug, info, warn, error, fatal"):
        exp.log("x", level="verbose")
    with pytest.raises(TypeError, match="metadata must be a dict"):
        exp.log("x", metadata=["not", "a", "dict"])
    exp.log("odd values", metadata={"fn": open, "path": Path("/x"), "set": {2, 1}})
    assert exp.read_logs()["data"][-1]["metadata"] == {"fn": "io.open", "path": "/x", "set": [1, 2]}
    exp.finish()


def test_an_exception_leaving_with_is_an_error_log_and_failed(root):
    exp = mldash.Experiment("p/with-error", root=root)
    with pytest.raises(ZeroDivisionError):
        with exp:
            exp.metrics("loss").append(v=1)
            1 / 0
    assert exp.status == "FAILED"
    error = exp.read_logs(level="error")["data"][-1]
    assert error["metadata"]["error_type"] == "ZeroDivisionError"
    assert error["metadata"]["message"] == "division by zero"
    assert "1 / 0" in error["metadata"]["traceback"]
    assert exp.metrics("loss").read()["total"] == 1


def test_keyboard_interrupt_in_with_is_cancelled(root):
    exp = mldash.Experiment("p/ctrl-c", root=root)
    with pytest.raises(KeyboardInterrupt):
        with exp:
            raise KeyboardInterrupt
    assert exp.status == "CANCELLED"


SCRIPT_HEAD = "import mldash, sys, threading, time\nexp = mldash.Experiment('p/s', root=sys.argv[1])\n"


def test_a_script_that_never_calls_finish_loses_nothing(root):
    run_python(SCRIPT_HEAD + "for i in range(50_000): exp.metrics('loss').append(v=i)\n", str(root))
    exp = mldash.Experiment("p/s", root=root)
    assert exp.status == "COMPLETED"
    assert exp.metrics("loss").read(49_999, 5)["data"][0]["data"] == {"v": 49_999}


def test_an_uncaught_exception_in_a_script_fails_the_run(root):
    result = run_python(
        SCRIPT_HEAD + "exp.metrics('loss').append(v=1)\nraise RuntimeError('boom')\n", str(root), check=False
    )
    assert result.returncode == 1 and "RuntimeError: boom" in result.stderr  # still reaches the user
    exp = mldash.Experiment("p/s", root=root)
    assert exp.status == "FAILED"
    assert exp.read_logs(level="error")["data"][0]["metadata"]["error_type"] == "RuntimeError"


def test_an_uncaught_exception_in_a_thread_fails_the_run(root):
    code = SCRIPT_HEAD + (
        "exp.start()\n"
        "def work(): raise ValueError('in thread')\n"
        "t = threading.Thread(target=work, name='loader'); t.start(); t.join()\n"
        "exp.metrics('loss').append(v=1)\n"
    )
    result = run_python(code, str(root))
    assert "ValueError: in thread" in result.stderr  # the previous hook still ran
    exp = mldash.Experiment("p/s", root=root)
    assert exp.status == "FAILED"
    error = exp.read_logs(level="error")["data"][0]
    assert error["metadata"]["thread"] == "loader"


def test_a_previous_excepthook_is_chained(root):
    code = (
        "import sys\n"
        "sys.excepthook = lambda *a: print('user hook ran', file=sys.stderr)\n"
        + SCRIPT_HEAD
        + "exp.start()\nraise KeyError('k')\n"
    )
    result = run_python(code, str(root), check=False)
    assert "user hook ran" in result.stderr
    assert mldash.Experiment("p/s", root=root).status == "FAILED"


def test_keyboard_interrupt_in_a_script_is_cancelled(root):
    run_python(SCRIPT_HEAD + "exp.start()\nraise KeyboardInterrupt\n", str(root), check=False)
    assert mldash.Experiment("p/s", root=root).status == "CANCELLED"


def test_sigterm_cancels_the_run_and_keeps_its_points(root):
    code = SCRIPT_HEAD + (
        "m = exp.metrics('loss')\n"
        "for i in range(1000): m.append(v=i)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM  # still dies of SIGTERM, as it would without us
    exp = mldash.Experiment("p/s", root=root)
    assert exp.status == "CANCELLED"
    assert exp.metrics("loss").read()["total"] == 1000
    assert "SIGTERM" in exp.read_logs(level="warn")["data"][-1]["message"]


def test_sys_exit_zero_in_with_is_completed(root):
    exp = mldash.Experiment("p/exit", root=root)
    with pytest.raises(SystemExit):
        with exp:
            sys.exit(0)
    assert exp.status == "COMPLETED"


def test_checkpoints_and_summary_are_recorded(root):
    exp = mldash.Experiment("p/ckpt", root=root)
    exp.checkpoint("ckpt/epoch=0.ckpt", step=10, score=0.9, monitor="val_loss", is_best=True)
    exp.checkpoint("ckpt/epoch=1.ckpt", step=20, score=1.2, monitor="val_loss", is_best=False)
    exp.summary.set(train_runtime=12.5)
    exp.finish()
    assert [c["path"] for c in exp.checkpoints()] == ["ckpt/epoch=0.ckpt", "ckpt/epoch=1.ckpt"]
    assert exp.best_checkpoint["path"] == "ckpt/epoch=0.ckpt"
    assert exp.summary.get() == {"train_runtime": 12.5}


def test_finish_rejects_an_unknown_status(root):
    exp = mldash.Experiment("p/st", root=root)
    exp.start()
    with pytest.raises(ValueError, match="RUNNING, COMPLETED, FAILED, CANCELLED"):
        exp.finish("DONE")
    exp.finish("CANCELLED")
    assert exp.status == "CANCELLED"


def test_import_mldash_loads_no_heavy_modules():
    out = run_python(
        "import sys, mldash\n"
        "heavy = ['torch', 'tensorflow', 'transformers', 'lightning', 'requests', 'numpy',"
        " 'fastapi', 'starlette', 'sqlalchemy', 'uvicorn', 'rich', 'click']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    ).stdout.strip()
    assert out == "[]"


def test_examples_custom_loop_runs(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MLDASH_ROOT": str(tmp_path / "runs")}
    subprocess.run([sys.executable, str(repo / "examples" / "custom_loop.py")], env=env, check=True,
                   timeout=120, capture_output=True)
    runs = list((tmp_path / "runs").rglob("experiment.json"))
    assert len(runs) == 1
    info = json.loads(runs[0].read_text())
    assert info["status"] == "COMPLETED"
    losses = [json.loads(l)[1]["value"] for l in (runs[0].parent / "metrics" / "train" / "loss" / "data.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]  # it really trained


def test_a_forked_child_appends_but_does_not_decide_the_status(root):
    code = SCRIPT_HEAD + (
        "import os\n"
        "m = exp.metrics('loss')\n"
        "for i in range(100): m.append(v=i)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    exp.metrics('worker').append(v=1)\n"
        "    sys.exit(0)  # runs atexit in the child\n"
        "os.waitpid(pid, 0)\n"
        "st = exp.status\n"
        "m.append(v=100)\n"
        "print(st)\n"
        "raise SystemExit(3)\n"
    )
    result = run_python(code, str(root), check=False)
    assert result.stdout.strip() == "RUNNING"  # the child's exit did not finish the run
    exp = mldash.Experiment("p/s", root=root)
    assert exp.metrics("loss").read()["total"] == 101  # the parent's backlog written once
    assert exp.metrics("worker").read()["total"] == 1
    assert json.loads((root / "p" / "s" / "experiment.json").read_text())["sessions"] == 1


def test_log_metadata_with_none_nan_and_nesting_reads_back(root):
    exp = mldash.Experiment("p/logmeta", root=root)
    exp.log("odd", metadata={"none": None, "nan": float("nan"), "nested": {"inf": float("-inf"), "xs": [1, None]}})
    exp.log("after")  # the writer keeps going
    records = exp.read_logs()["data"]
    import math

    meta = records[0]["metadata"]
    assert meta["none"] is None and math.isnan(meta["nan"])
    assert meta["nested"]["inf"] == float("-inf") and meta["nested"]["xs"] == [1, None]
    assert records[1]["message"] == "after"
    exp.finish()


def test_started_running_and_cancel_are_the_public_state_integrations_use(root):
    exp = mldash.Experiment("state/run", root=root)
    assert not exp.started and not exp.running
    exp.start()
    assert exp.started and exp.running
    exp.cancel("stopped by the scheduler")
    exp.cancel("stopped by the scheduler")  # said once
    exp.finish()
    assert exp.started and not exp.running and exp.status == "CANCELLED"
    warnings = [r for r in exp.read_logs()["data"] if r["level"] == "warn"]
    assert [r["metadata"]["reason"] for r in warnings] == ["stopped by the scheduler"]


def test_checkpoint_records_live_with_the_logs_and_an_older_runs_stay_where_they_were(root):
    with mldash.Experiment("ck/new", root=root) as exp:
        exp.checkpoint("a.ckpt", step=1)
    assert os.listdir(os.path.join(exp.path, "logs")) and not os.path.exists(os.path.join(exp.path, "checkpoints"))
    legacy = root / "ck" / "old" / "checkpoints"
    legacy.mkdir(parents=True)
    (legacy / "checkpoints.jsonl").write_bytes(b'{"index": 0, "timestamp": 1.0, "path": "old.ckpt", "step": 0}\n')
    with mldash.Experiment("ck/old", root=root) as old:
        old.checkpoint("b.ckpt", step=2)
    assert [r["path"] for r in old.checkpoints()] == ["old.ckpt", "b.ckpt"]
    assert not os.path.exists(os.path.join(old.path, "logs", "checkpoints.jsonl"))
