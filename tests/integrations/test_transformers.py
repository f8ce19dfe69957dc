"""Hugging Face Trainer: MLDashCallback and report_to="mldash" on real tiny models.

Every Trainer here is real (a 1-layer BERT built from a config, synthetic data, CPU);
runs that need their own interpreter use tests/_transformers_support.py.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import Trainer, TrainerCallback  # noqa: E402

import mldash  # noqa: E402
from mldash.integrations.transformers import MLDashCallback, MLDashReportToCallback, metric_name  # noqa: E402
from mldash.params import flatten  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _transformers_support import dataset, tiny_model, training_args  # noqa: E402

SUPPORT = Path(__file__).resolve().parents[1] / "_transformers_support.py"
pytestmark = pytest.mark.timeout(180)


def experiments(root: Path) -> list[str]:
    """The prefixes of every experiment stored under ``root``."""
    found = []
    for folder, _dirs, files in os.walk(root):
        if "experiment.json" in files:
            found.append(os.path.relpath(folder, root).replace(os.sep, "/"))
    return sorted(found)


def points(exp: mldash.Experiment, name: str) -> list[dict]:
    return [p["data"] for p in exp.metrics(name).read(limit=10_000)["data"]]


def train(tmp_path, callbacks=(), model=None, data=None, **overrides) -> Trainer:
    trainer = Trainer(
        model=model or tiny_model(), args=training_args(tmp_path / "out", **overrides),
        train_dataset=data or dataset(), eval_dataset=dataset(8, seed=1), callbacks=list(callbacks),
    )
    trainer.train()
    return trainer


# ---- report_to="mldash" --------------------------------------------------------------------
@pytest.mark.slow
def test_report_to_mldash_works_in_a_script_that_never_imports_mldash(tmp_path, root):
    env = {**os.environ, "MLDASH_PROJECT": "hf", "MLDASH_NAME": "from-env", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(SUPPORT), "report_to", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered: True" in result.stdout, (
        "the start-up hook did not register mldash; is mldash_transformers.pth installed "
        "(pip install -e .)?\n" + result.stdout
    )
    assert "all: True" in result.stdout  # report_to="all" includes installed mldash
    assert "'MLDashReportToCallback'" in result.stdout
    assert experiments(root) == ["hf/from-env"]  # MLDASH_NAME wins over run_name
    exp = mldash.Experiment("hf/from-env", root=root)
    assert exp.status == "COMPLETED"
    assert [p["step"] for p in points(exp, "train/loss")] == [1, 2, 3, 4]


def test_report_to_reads_every_setting_from_mldash_variables(tmp_path, monkeypatch):
    # MLDASH_URL/TOKEN would start an uploader to a server this test does not run, so the
    # experiment the callback would write is inspected before it starts (no I/O yet).
    monkeypatch.setenv("MLDASH_PREFIX", "team/sweep/run-7")
    monkeypatch.setenv("MLDASH_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("MLDASH_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MLDASH_TOKEN", "secret")
    trainer = Trainer(
        model=tiny_model(), args=training_args(tmp_path / "out", report_to="mldash"), train_dataset=dataset()
    )
    (callback,) = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MLDashCallback)]
    assert type(callback) is MLDashReportToCallback
    exp = callback._resolve(trainer.args, trainer.state)
    assert (exp.project, exp.folder, exp.name) == ("team", "sweep", "run-7")
    assert exp.root == str(tmp_path / "runs")
    assert (exp.remote, exp.token) == ("http://127.0.0.1:9", "secret")
    assert "token" not in str(callback.state())  # never written into checkpoints


def test_run_name_names_the_experiment_unless_a_name_is_given(tmp_path, root):
    train(tmp_path, [MLDashCallback(project="nlp")], run_name="sweep/lr-1e-4", max_steps=1)
    train(tmp_path, [MLDashCallback(project="nlp", name="explicit")], run_name="other", max_steps=1)
    train(tmp_path, [MLDashCallback()], max_steps=1)  # no run_name: a generated name
    found = experiments(root)
    assert "nlp/sweep/lr-1e-4" in found and "nlp/explicit" in found
    assert len(found) == 3 and [p for p in found if p.startswith("default/")]


def test_report_to_and_the_callback_together_record_once(tmp_path, root):
    explicit = tmp_path / "explicit"
    train(tmp_path, [MLDashCallback(project="once", name="run", root=explicit)], report_to="mldash")
    assert experiments(explicit) == ["once/run"]
    assert not root.exists()  # the report_to callback (MLDASH_ROOT) stepped aside
    exp = mldash.Experiment("once/run", root=explicit)
    assert len(points(exp, "train/loss")) == 4


def test_an_existing_experiment_can_be_given_and_the_callback_pickles(tmp_path, root):
    import pickle

    exp = mldash.Experiment("given/run", root=tmp_path / "given", tags=["mine"])
    callback = MLDashCallback(experiment=exp)
    train(tmp_path, [callback], max_steps=2)
    assert callback.experiment is exp and exp.status == "COMPLETED"
    assert len(points(exp, "train/loss")) == 2
    with pytest.raises(ValueError, match="not both"):
        MLDashCallback(experiment=exp, name="other")

    # Ray Tune ships the Trainer, callbacks included, to its workers.
    clone = pickle.loads(pickle.dumps(callback))
    assert clone.experiment is None
    again = clone._resolve(training_args(tmp_path / "out"), None)
    assert (again.prefix, again.root) == ("given/run", exp.root)


# ---- what is recorded ----------------------------------------------------------------------
def test_hyperparameters_hold_every_training_argument_the_model_config_and_size(tmp_path, root):
    long_id = "org/" + "m" * 3000  # MLflow would cut this at 250 characters
    model = tiny_model(note="n" * 5000)
    trainer = train(tmp_path, [MLDashCallback(project="p", name="hp")], model=model,
                    hub_model_id=long_id, max_steps=1)
    params = mldash.Experiment("p/hp", root=root).params.get()
    expected_args = flatten({"args": trainer.args.to_dict()})
    assert {k: params[k] for k in expected_args} == expected_args
    assert params["args.hub_model_id"] == long_id
    assert params["args.learning_rate"] == trainer.args.learning_rate
    assert params["model.config.hidden_size"] == 16
    assert params["model.config.note"] == "n" * 5000
    assert params["model.num_parameters"] == sum(p.numel() for p in model.parameters())
    assert params["model.class"].endswith("BertForSequenceClassification")


def test_peft_config_and_trainable_parameters_are_recorded(tmp_path, root):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        tiny_model(), peft.LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=["query", "value"])
    )
    train(tmp_path, [MLDashCallback(project="p", name="lora")], model=model, max_steps=1)
    params = mldash.Experiment("p/lora", root=root).params.get()
    assert params["peft.default.r"] == 2
    assert sorted(params["peft.default.target_modules"]) == ["query", "value"]
    assert 0 < params["model.num_trainable_parameters"] < params["model.num_parameters"]


class LogsProbe(TrainerCallback):
    """Runs after mldash's callback and keeps what each on_log call received."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(copy.deepcopy(logs))


def test_metrics_are_grouped_at_the_global_step_and_logs_stay_untouched(tmp_path, root):
    probe = LogsProbe()
    trainer = train(tmp_path, [MLDashCallback(project="p", name="m"), probe],
                    max_steps=4, eval_strategy="steps", eval_steps=2)
    trainer.predict(dataset(8, seed=2))
    exp = mldash.Experiment("p/m", root=root)

    loss = points(exp, "train/loss")
    assert [p["step"] for p in loss] == [1, 2, 3, 4]
    assert [p["value"] for p in loss] == [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert loss[0]["epoch"] == trainer.state.log_history[0]["epoch"]
    assert [p["step"] for p in points(exp, "eval/loss")] == [2, 4]
    assert {"train/learning_rate", "train/grad_norm", "eval/runtime", "test/loss"} <= set(exp.metric_names())
    assert [p["step"] for p in points(exp, "test/loss")] == [4]

    summary = exp.summary.get()
    assert summary["train_runtime"] > 0 and summary["total_flos"] > 0 and "train_loss" in summary
    assert not any(name.endswith(("train_runtime", "total_flos")) for name in exp.metric_names())

    # Every callback after ours received the Trainer's own dict, unchanged.
    history = [{k: v for k, v in h.items() if k != "step"} for h in trainer.state.log_history]
    assert probe.seen == history
    assert metric_name("eval_f1") == "eval/f1" and metric_name("epoch") == "train/epoch"


def test_saved_checkpoints_are_recorded_with_the_best_one(tmp_path, root):
    trainer = train(tmp_path, [MLDashCallback(project="p", name="ckpt")], max_steps=6,
                    eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                    metric_for_best_model="loss")
    exp = mldash.Experiment("p/ckpt", root=root)
    records = exp.checkpoints()
    out = (tmp_path / "out").resolve()
    assert [(r["path"], r["step"]) for r in records] == [(str(out / f"checkpoint-{s}"), s) for s in (2, 4, 6)]
    assert all(r["monitor"] == "eval/loss" and r["mode"] == "min" for r in records)
    evals = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
    assert [r["score"] for r in records] == [evals[2], evals[4], evals[6]]
    best = exp.best_checkpoint
    assert best["path"] == os.path.abspath(trainer.state.best_model_checkpoint)
    assert best["score"] == trainer.state.best_metric
    assert exp.summary.get()["best_metric"] == trainer.state.best_metric


def _folder_checksums(folder) -> dict[str, str]:
    import hashlib

    return {os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, names in os.walk(folder) for f in names}


def test_log_model_all_keeps_each_checkpoint_folder_as_it_is_saved(tmp_path, root):
    train(tmp_path, [MLDashCallback(project="p", name="all", log_model="all")], max_steps=4,
          save_strategy="steps", save_steps=2, save_total_limit=1)  # the Trainer deletes checkpoint-2
    exp = mldash.Experiment("p/all", root=root)
    records = exp.checkpoints()
    assert [r["step"] for r in records] == [2, 4]
    kept = {f"{f['path']}/{f['filename']}": f["checksum"] for f in exp.files.list()}
    assert {"/checkpoints/checkpoint-2/model.safetensors", "/checkpoints/checkpoint-4/model.safetensors"} <= set(kept)
    assert not (tmp_path / "out" / "checkpoint-2").exists()  # gone from disk, kept with the run
    last = _folder_checksums(tmp_path / "out" / "checkpoint-4")
    assert {k: v for k, v in kept.items() if k.startswith("/checkpoints/checkpoint-4/")} == {
        f"/checkpoints/checkpoint-4/{rel}": sha for rel, sha in last.items()}
    assert all(f["id"] for r in records for f in r["files"]) and "upload_error" not in records[-1]


def test_log_model_true_from_the_environment_keeps_best_and_last_at_the_end(tmp_path, root, monkeypatch):
    monkeypatch.setenv("MLDASH_LOG_MODEL", "true")
    trainer = train(tmp_path, [MLDashCallback(project="p", name="end")], max_steps=6, eval_strategy="steps",
                    eval_steps=2, save_strategy="steps", save_steps=2, metric_for_best_model="loss")
    exp = mldash.Experiment("p/end", root=root)
    assert all("files" not in r for r in exp.checkpoints())
    best = os.path.basename(trainer.state.best_model_checkpoint)
    paths = {f["path"] for f in exp.files.list()}
    assert f"/checkpoints/best/{best}" in paths and "/checkpoints/last/checkpoint-6" in paths
    monkeypatch.setenv("MLDASH_LOG_MODEL", "sometimes")
    with pytest.raises(ValueError, match="MLDASH_LOG_MODEL"):
        MLDashCallback(project="p", name="bad")


# ---- lifecycle -----------------------------------------------------------------------------
def test_resume_from_checkpoint_continues_the_same_experiment(tmp_path, root):
    train(tmp_path, [MLDashCallback(project="p")], max_steps=4, save_strategy="steps", save_steps=2)
    (first,) = experiments(root)
    # A new Trainer and callback, as in a new process: no name given, none to rediscover.
    args = training_args(tmp_path / "out", max_steps=6, save_strategy="steps", save_steps=2)
    trainer = Trainer(model=tiny_model(), args=args, train_dataset=dataset(), callbacks=[MLDashCallback(project="p")])
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    assert experiments(root) == [first]
    exp = mldash.Experiment(first, root=root)
    data = exp.metrics("train/loss").read()["data"]
    assert [p["index"] for p in data] == list(range(6))
    assert [p["data"]["step"] for p in data] == [1, 2, 3, 4, 5, 6]
    assert exp.info()["sessions"] == 2 and exp.status == "COMPLETED"


def test_evaluate_and_predict_after_train_end_the_run_again_when_they_return(tmp_path, root):
    callback = MLDashCallback(project="p", name="later")
    trainer = train(tmp_path, [callback], max_steps=2)
    exp = callback.experiment
    assert (exp.status, exp.running) == ("COMPLETED", False)

    metrics = trainer.evaluate()
    assert (exp.status, exp.running) == ("COMPLETED", False)  # not RUNNING until exit
    assert [(p["step"], p["value"]) for p in points(exp, "eval/loss")] == [(2, metrics["eval_loss"])]

    output = trainer.predict(dataset(8, seed=2))
    assert (exp.status, exp.running) == ("COMPLETED", False)
    assert [(p["step"], p["value"]) for p in points(exp, "test/loss")] == [(2, output.metrics["test_loss"])]
    assert exp.info()["sessions"] == 3  # train, evaluate, predict: each resumed the run


def test_evaluate_in_a_loop_records_every_call_and_ends_the_run_each_time(tmp_path, root):
    callback = MLDashCallback(project="p", name="evals")
    trainer = Trainer(model=tiny_model(), args=training_args(tmp_path / "out"), eval_dataset=dataset(8, seed=1),
                      callbacks=[callback])
    losses = []
    for _ in range(3):
        losses.append(trainer.evaluate()["eval_loss"])
        assert (callback.experiment.status, callback.experiment.running) == ("COMPLETED", False)
    exp = mldash.Experiment("p/evals", root=root)
    assert [(p["step"], p["value"]) for p in points(exp, "eval/loss")] == [(0, loss) for loss in losses]
    assert exp.params.get()["args.per_device_eval_batch_size"] == 8  # set up by the first call
    assert exp.info()["sessions"] == 3


class FailAt(TrainerCallback):
    def __init__(self, step, exc):
        self.step, self.exc = step, exc

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.exc


@pytest.mark.parametrize(
    "exc, status", [(RuntimeError("boom at step 3"), "FAILED"), (KeyboardInterrupt(), "CANCELLED")]
)
def test_an_exception_in_train_is_recorded_and_still_raised(tmp_path, root, exc, status):
    with pytest.raises(type(exc)):
        train(tmp_path, [MLDashCallback(project="p", name="fail"), FailAt(3, exc)])
    exp = mldash.Experiment("p/fail", root=root)
    assert exp.status == status
    assert [p["step"] for p in points(exp, "train/loss")] == [1, 2]
    if status == "FAILED":
        (record,) = exp.read_logs(level="error")["data"]
        meta = record["metadata"]
        assert meta["error_type"] == "RuntimeError" and meta["message"] == "boom at step 3"
        assert "boom at step 3" in meta["traceback"] and "on_step_end" in meta["traceback"]


def test_a_failure_before_training_starts_is_still_recorded(tmp_path, root):
    class BadData:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise ValueError("unreadable example")

    with pytest.raises(ValueError, match="unreadable example"):
        train(tmp_path, [MLDashCallback(project="p", name="bad-data")], data=BadData())
    exp = mldash.Experiment("p/bad-data", root=root)
    assert exp.status == "FAILED"
    assert exp.read_logs(level="error")["data"][0]["metadata"]["error_type"] == "ValueError"


@pytest.mark.slow
def test_hyperparameter_search_gives_one_experiment_per_trial(tmp_path, root):
    pytest.importorskip("optuna")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer = Trainer(
        model_init=lambda trial=None: tiny_model(), args=training_args(tmp_path / "out", max_steps=2),
        train_dataset=dataset(), eval_dataset=dataset(8, seed=1),
        callbacks=[MLDashCallback(project="hp", name="search")],
    )
    trainer.hyperparameter_search(
        backend="optuna", n_trials=2, direction="minimize",
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)},
    )
    assert experiments(root) == ["hp/search/trial-0", "hp/search/trial-1"]
    rates = set()
    for prefix in experiments(root):
        exp = mldash.Experiment(prefix, root=root)
        params = exp.params.get()
        assert params["args.learning_rate"] == params["trial.learning_rate"]
        rates.add(params["trial.learning_rate"])
        assert exp.status == "COMPLETED"
        assert [p["step"] for p in points(exp, "train/loss")] == [1, 2]
    assert len(rates) == 2


def _prune_trials(numbers):
    import optuna

    class PruneTrials(optuna.pruners.BasePruner):
        """Prunes the trials with these numbers at their first report."""

        def prune(self, study, trial):
            return trial.number in numbers

    return PruneTrials()


def _search(tmp_path, name, pruner, n_trials):
    pytest.importorskip("optuna")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer = Trainer(
        model_init=lambda trial=None: tiny_model(),
        args=training_args(tmp_path / "out", max_steps=2, eval_strategy="steps", eval_steps=1),
        train_dataset=dataset(), eval_dataset=dataset(8, seed=1),
        callbacks=[MLDashCallback(project="hp", name=name)],
    )
    return lambda: trainer.hyperparameter_search(
        backend="optuna", n_trials=n_trials, direction="minimize", pruner=pruner,
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)},
    )


def _assert_pruned(exp: mldash.Experiment) -> None:
    assert exp.status == "CANCELLED"
    assert exp.read_logs(level="error")["data"] == []
    (warning,) = exp.read_logs(level="warn")["data"]
    assert "pruned" in warning["message"]


@pytest.mark.slow
def test_a_trial_the_search_prunes_is_cancelled_not_failed(tmp_path, root):
    pytest.importorskip("optuna")
    _search(tmp_path, "pruned", _prune_trials({0}), n_trials=2)()
    assert experiments(root) == ["hp/pruned/trial-0", "hp/pruned/trial-1"]
    _assert_pruned(mldash.Experiment("hp/pruned/trial-0", root=root))
    assert [p["step"] for p in points(mldash.Experiment("hp/pruned/trial-0", root=root), "eval/loss")] == [1]
    assert mldash.Experiment("hp/pruned/trial-1", root=root).status == "COMPLETED"


@pytest.mark.slow
def test_a_search_that_fails_after_its_last_trial_leaves_that_trial_as_it_ended(tmp_path, root):
    pytest.importorskip("optuna")
    search = _search(tmp_path, "all-pruned", _prune_trials({0, 1}), n_trials=2)
    with pytest.raises(ValueError):  # optuna: no completed trial to call the best
        search()
    assert experiments(root) == ["hp/all-pruned/trial-0", "hp/all-pruned/trial-1"]
    for prefix in experiments(root):
        exp = mldash.Experiment(prefix, root=root)
        _assert_pruned(exp)  # not reopened to be marked FAILED by the search's own error
        assert exp.info()["sessions"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_only_the_world_process_zero_writes_and_each_machine_appears_once(tmp_path, root):
    # Two torchrun "nodes" on this machine: process 1 is the first of its machine, so it
    # records that machine (sys/rank/1/...) into the run and nothing else.
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLDASH_SYSTEM_METRICS": "0.2", "CUDA_VISIBLE_DEVICES": ""}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={n}",
         "--master_addr=127.0.0.1", f"--master_port={port}", str(SUPPORT), "ddp", str(tmp_path / "out")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    results = [node.communicate(timeout=170) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert "rank 0 world 2 experiment True" in results[0][0]
    assert "rank 1 world 2 experiment False" in results[1][0]
    assert experiments(root) == ["ddp/run"]
    exp = mldash.Experiment("ddp/run", root=root)
    assert [p["step"] for p in points(exp, "train/loss")] == [1, 2, 3, 4]
    assert [r["step"] for r in exp.checkpoints()] == [2, 4]
    assert exp.status == "COMPLETED" and exp.info()["sessions"] == 1
    names = set(exp.metric_names())
    assert {"sys/memory", "sys/rank/1/memory", "sys/rank/1/cpu"} <= names
    assert {p["data"]["rank"] for p in exp.metrics("sys/rank/1/memory").read()["data"]} == {1}


# ---- packaging: the start-up hook from a wheel and from an editable install ---------------
REPO = Path(__file__).resolve().parents[2]
REGISTERED = (
    "import sys\n"
    "assert 'mldash' not in sys.modules, 'mldash imported at start-up'\n"
    "import transformers.integrations.integration_utils as u\n"
    "print('registered', 'mldash' in u.INTEGRATION_TO_CALLBACK, sys.modules['mldash'].__file__)\n"
)


def _copy_sources(target: Path) -> Path:
    """What a build needs, copied so that no build output lands in the repository."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "node_modules")
    target.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, target / name)
    for name in ("mldash", "integrations"):
        shutil.copytree(REPO / name, target / name, ignore=ignore)
    return target


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    return path / "bin" / "python"


def _purelib(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _see_system_packages(python: Path) -> None:
    # A path line adds the system site-packages (torch, transformers, setuptools) without
    # running their .pth files, so only the hook installed into this venv can act.
    import site

    (_purelib(python) / "_system_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")


def _pip(python: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", *args], check=True, capture_output=True, timeout=120)


def _python(python: Path, code: str, cwd: Path) -> str:
    result = subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _assert_hook_installed(python: Path) -> None:
    from mldash._hf_hook import PTH_NAME, STARTUP_MODULE, STARTUP_SOURCE, pth_contents

    purelib = _purelib(python)
    assert (purelib / PTH_NAME).read_text() == pth_contents()
    assert (purelib / f"{STARTUP_MODULE}.py").read_text() == STARTUP_SOURCE
    assert list((purelib / "__pycache__").glob(f"{STARTUP_MODULE}.*.pyc"))  # start-up only unmarshals
    record = next(purelib.glob("mldash-*.dist-info")) / "RECORD"
    assert PTH_NAME in record.read_text()  # pip uninstall removes the hook too


def _registered(python: Path, cwd: Path) -> str:
    lines = _python(python, REGISTERED, cwd).splitlines()
    return next((line for line in lines if line.startswith("registered")), "\n".join(lines))


@pytest.mark.slow
def test_a_built_wheel_ships_the_hook_which_does_nothing_without_transformers(tmp_path):
    src = _copy_sources(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("mldash-*.whl")
    python = _venv(tmp_path / "venv")
    _pip(python, str(wheel))
    _assert_hook_installed(python)

    # No transformers reachable yet: the finder waits, nothing is imported.
    out = _python(python, (
        "import sys, json, email.parser\n"
        "print([getattr(f, '__name__', '') for f in sys.meta_path][0], 'mldash' in sys.modules)\n"
        "try:\n    import transformers\nexcept ModuleNotFoundError:\n    print('no transformers')\n"
    ), tmp_path)
    assert out.split() == ["MLDashTransformersFinder", "False", "no", "transformers"]

    _see_system_packages(python)
    assert _registered(python, tmp_path).startswith("registered True " + str(_purelib(python)))  # from the wheel


@pytest.mark.slow
def test_an_editable_install_ships_the_hook(tmp_path):
    src = _copy_sources(tmp_path / "src")
    python = _venv(tmp_path / "venv")
    _see_system_packages(python)  # the build backend (setuptools) comes from there
    _pip(python, "-e", str(src))
    _assert_hook_installed(python)
    assert _registered(python, tmp_path).startswith("registered True " + str(src / "mldash"))  # from the source
