"""MLDashCallback with real Keras 3 fits under the tensorflow, torch and jax backends.

Keras chooses its backend once per process, so tests/_keras_support.py runs every
scenario (tiny models, synthetic data) in one subprocess per backend; all
backends start together and the tests below read the stored experiments back.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

import mldash

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the support modules
SUPPORT = os.path.join(HERE, "_keras_support.py")
BACKENDS = [
    b for b, module in (("tensorflow", "tensorflow"), ("torch", "torch"), ("jax", "jax"))
    if importlib.util.find_spec(module) is not None
]


def backend_env(backend: str) -> dict:
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=backend,
        TF_ENABLE_ONEDNN_OPTS="0",
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="1",  # tiny models: one thread each, three backends at once
    )
    return env


class BackendRuns:
    """Starts every backend's subprocess at once; waits for one when asked."""

    def __init__(self, base):
        self.base = base
        self.procs = {}
        for backend in BACKENDS:
            root = base / backend
            report = base / f"{backend}.json"
            log = open(base / f"{backend}.log", "wb")
            self.procs[backend] = (
                subprocess.Popen(
                    [sys.executable, SUPPORT, str(root), str(report)],
                    env=backend_env(backend), stdout=log, stderr=subprocess.STDOUT,
                ),
                root,
                report,
                log,
            )
        self.done = {}

    def get(self, backend):
        if backend not in self.done:
            proc, root, report, log = self.procs[backend]
            try:
                code = proc.wait(timeout=480)
            finally:
                log.close()
            output = (self.base / f"{backend}.log").read_text(errors="replace")
            if code != 0:
                pytest.fail(f"{backend} scenarios exited with {code}:\n{output[-6000:]}")
            self.done[backend] = Run(backend, str(root), json.loads(report.read_text()))
        return self.done[backend]


class Run:
    def __init__(self, backend, root, report):
        self.backend, self.root, self.report = backend, root, report

    def exp(self, prefix):
        return mldash.Experiment(prefix, root=self.root)

    def points(self, prefix, metric):
        return [p["data"] for p in self.exp(prefix).metrics(metric).read(limit=10_000)["data"]]

    def steps(self, prefix, metric):
        return [p["step"] for p in self.points(prefix, metric)]

    def values(self, prefix, metric):
        return [p["value"] for p in self.points(prefix, metric)]

    def logs(self, prefix, level=None):
        return self.exp(prefix).read_logs(level=level)["data"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return BackendRuns(tmp_path_factory.mktemp("keras"))


@pytest.fixture(params=BACKENDS)
def run(request, runs):
    return runs.get(request.param)


# ---- experiment and lifecycle -----------------------------------------------------
def test_experiment_kwargs_create_the_experiment_and_a_normal_end_completes_it(run):
    exp = run.exp("keras/basic")
    assert exp.status == "COMPLETED"
    assert exp.info()["tags"] == ["tiny"]
    assert [r["message"] for r in run.logs("keras/basic")] == ["fit 1 started", "fit 1 ended"]
    summary = exp.summary.get()
    assert summary["global_step"] == 24 and summary["epoch"] == 2
    assert summary["train_runtime"] > 0
    assert summary["val_loss"] == run.values("keras/basic", "val_loss")[-1]


def test_one_callback_serves_several_fits_and_the_batch_step_keeps_counting(run):
    prefix = "keras/two-fits"
    assert run.report["two_fits_status_between"] == "COMPLETED"
    exp = run.exp(prefix)
    assert exp.status == "COMPLETED"
    assert exp.info()["sessions"] == 2
    assert run.steps(prefix, "loss") == [0, 1, 2, 3]  # initial_epoch=2 on the second fit
    assert [p["global_step"] for p in run.points(prefix, "loss")] == [4, 8, 12, 16]
    assert run.steps(prefix, "batch/loss") == [4, 8, 12, 16]
    messages = [r["message"] for r in run.logs(prefix)]
    assert messages == ["fit 1 started", "fit 1 ended", "fit 2 started", "fit 2 ended"]
    assert exp.params.get()["fit.initial_epoch"] == 2  # the last fit's arguments


def test_an_experiment_passed_in_is_left_for_its_owner_to_finish(run):
    assert run.report["owned_status_after_fit"] == "RUNNING"
    exp = run.exp("keras/owned")
    assert exp.status == "COMPLETED"
    assert run.steps("keras/owned", "loss") == [0]
    assert run.values("keras/owned", "test/score") == [1.0]


def test_bad_arguments_fail_at_construction(run):
    assert run.report["bad_arguments"] == ["TypeError", "ValueError"]


# ---- hyperparameters ----------------------------------------------------------------
def test_hyperparameters_hold_fit_optimizer_loss_metrics_and_model(run):
    params = run.exp("keras/basic").params.get()
    assert params["keras.backend"] == run.backend
    assert (params["fit.epochs"], params["fit.steps"], params["fit.batch_size"]) == (3, 8, 8)
    assert params["fit.validation"] is True
    assert params["optimizer.class"] == "Adam"
    assert params["optimizer.beta_1"] == 0.9
    assert params["optimizer.learning_rate.class"] == "ExponentialDecay"
    assert params["optimizer.learning_rate.initial_learning_rate"] == 0.01
    assert params["optimizer.learning_rate.decay_rate"] == 0.9
    assert params["loss"] == "mse"
    assert params["metrics"] == ["mae"]
    assert params["model.class"] == "Sequential" and params["model.name"] == "tiny"
    # Dense(4->8) and Dense(8->1): 4*8+8 + 8*1+1
    assert params["model.params.total"] == 49 and params["model.params.trainable"] == 49
    assert params["model.layers"] == 2
    assert [layer["class_name"] for layer in params["model.config.layers"]] == ["InputLayer", "Dense", "Dense"]


def test_a_fixed_learning_rate_is_stored_as_written(run):
    params = run.exp("keras/constant-lr").params.get()
    assert params["optimizer.class"] == "SGD"
    assert params["optimizer.learning_rate"] == 0.1  # not 0.10000000149011612


# ---- metrics --------------------------------------------------------------------------
def test_epoch_metrics_and_their_val_counterparts_are_stored_at_step_epoch(run):
    for name in ("loss", "mae", "val_loss", "val_mae"):
        assert run.steps("keras/basic", name) == [0, 1, 2], name
    points = run.points("keras/basic", "loss")
    assert [p["global_step"] for p in points] == [8, 16, 24]
    # Keras' epoch loss is the running mean at the epoch's last batch
    by_step = {p["step"]: p["value"] for p in run.points("keras/basic", "batch/loss")}
    assert [p["value"] for p in points] == [by_step[8], by_step[16], by_step[24]]
    assert all(v > 0 and math.isfinite(v) for v in run.values("keras/basic", "val_mae"))


def test_batch_metrics_every_n_batches_at_the_global_batch_step_in_order(run):
    points = run.points("keras/basic", "batch/loss")
    assert [p["step"] for p in points] == list(range(2, 25, 2))
    assert [p["epoch"] for p in points] == [0] * 4 + [1] * 4 + [2] * 4
    assert run.steps("keras/basic", "batch/mae") == list(range(2, 25, 2))


def test_batch_metrics_default_to_every_10_batches(run):
    assert run.steps("keras/defaults", "batch/loss") == [10, 20, 30, 40]
    assert run.steps("keras/defaults", "loss") == [0]


def test_learning_rate_is_what_the_schedule_gives_at_each_step(run):
    # ExponentialDecay(0.01, decay_steps=1, decay_rate=0.9): the batch at global
    # step s was applied at optimizer iteration s - 1.
    for point in run.points("keras/basic", "batch/learning_rate"):
        assert point["value"] == pytest.approx(0.01 * 0.9 ** (point["step"] - 1), rel=1e-5)
    # per epoch: optimizer.learning_rate at the epoch's end, as Keras reports it
    for point in run.points("keras/basic", "learning_rate"):
        assert point["value"] == pytest.approx(0.01 * 0.9 ** point["global_step"], rel=1e-5)


def test_a_learning_rate_changed_by_a_callback_is_followed_per_epoch(run):
    expected = [0.05, 0.025, 0.0125]  # LearningRateScheduler halves 0.1 at each epoch begin
    assert run.values("keras/constant-lr", "batch/learning_rate") == pytest.approx(expected)
    assert run.steps("keras/constant-lr", "batch/learning_rate") == [4, 8, 12]
    assert run.values("keras/constant-lr", "learning_rate") == pytest.approx(expected)


def test_backend_tensors_from_a_hand_written_loop_are_stored(run):
    prefix = "keras/tensors"
    assert run.values(prefix, "batch/loss") == [0.5, 0.25]
    assert run.steps(prefix, "batch/loss") == [1, 2]
    assert run.values(prefix, "loss") == [0.125]
    warnings = [r for r in run.logs(prefix, level="warn") if r["level"] == "warn"]
    assert [w["metadata"]["metric"] for w in warnings] == ["vector"]  # not a scalar: skipped


def test_keras_async_batch_dispatch_stays_on(run):
    # Where the backend allows it, Keras converts batch logs on a worker thread
    # only if every callback is async-safe; a plain callback turns that off.
    assert run.report["async_with_ours"] == run.report["thread_safe_backend"]
    assert run.report["async_with_plain"] is False
    if run.backend in ("torch", "jax"):
        assert run.report["async_with_ours"] is True


def test_needs_no_tensorflow(run):
    if run.backend == "tensorflow":
        pytest.skip("TensorFlow is the backend here")
    assert run.report["tensorflow_imported"] is False


# ---- failures -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scenario, error_type, message",
    [
        ("layer-error", "RuntimeError", "layer exploded"),
        ("loss-error", "ValueError", "loss is undefined here"),
        ("callback-error", "RuntimeError", "callback failed at epoch 1"),
    ],
)
def test_an_exception_inside_fit_gives_failed_with_an_error_log(run, scenario, error_type, message):
    assert run.report[scenario.replace("-", "_")] == error_type  # it still reached the caller
    prefix = f"keras/{scenario}"
    assert run.exp(prefix).status == "FAILED"
    errors = run.logs(prefix, level="error")
    assert len(errors) == 1
    meta = errors[0]["metadata"]
    assert meta["error_type"] == error_type
    assert message in meta["message"]
    assert "Traceback" in meta["traceback"] and error_type in meta["traceback"]


def test_metrics_before_a_failure_are_kept(run):
    # the failing callback comes after ours, so epoch 1 was logged before it raised
    assert run.steps("keras/callback-error", "loss") == [0, 1]


def test_keyboard_interrupt_gives_cancelled(run):
    assert run.report["interrupt"] == "KeyboardInterrupt"
    exp = run.exp("keras/interrupt")
    assert exp.status == "CANCELLED"
    assert run.logs("keras/interrupt", level="error") == []
    assert run.steps("keras/interrupt", "batch/loss") == [1, 2, 3]


def test_a_callback_that_saw_a_failure_completes_its_next_fit(run):
    assert run.report["recovered_status_after_failure"] == "FAILED"
    assert run.exp("keras/recovered").status == "COMPLETED"
    assert len(run.logs("keras/recovered", level="error")) == 1


@pytest.mark.parametrize("scenario, error_type, status", [("failed", "RuntimeError", "FAILED"),
                                                          ("cancelled", "KeyboardInterrupt", "CANCELLED")])
def test_a_batch_end_keras_still_had_queued_does_not_reopen_a_failed_fit(run, scenario, error_type, status):
    # Batch 2's end sleeps 0.5 s on a Keras worker thread (torch, jax) while batch 3
    # raises on the training thread; that late end used to write a point after the
    # failure was recorded, so the run came back RUNNING and ended COMPLETED.
    seen = run.report[f"late_{scenario}"]
    if run.backend in ("torch", "jax"):
        assert seen["async"] is True  # the batch end really ran on a worker thread
    assert seen["raised"] == error_type
    assert seen["status_at_once"] == status
    assert (seen["status_later"], seen["running_later"]) == (status, False)
    exp = run.exp(f"keras/late-{scenario}")
    assert exp.status == status
    assert exp.info()["sessions"] == 1
    # the queued batch ends were waited for: every batch that trained has its point
    assert run.steps(f"keras/late-{scenario}", "batch/loss") == [1, 2, 3]


def test_a_trial_pruned_by_optuna_inside_fit_is_cancelled_not_failed(run):
    if run.report["pruned"] is None:
        pytest.skip("optuna is not installed")
    assert run.report["pruned"] == "TrialPruned"
    prefix = "keras/pruned"
    assert run.exp(prefix).status == "CANCELLED"
    assert run.logs(prefix, level="error") == []
    (warning,) = [r for r in run.logs(prefix, level="warn") if r["level"] == "warn"]
    assert "pruned" in warning["message"]


# ---- evaluate and predict -------------------------------------------------------------
def test_evaluation_metrics_are_recorded_at_the_training_iteration_as_tensorboard_does(run):
    prefix = "keras/evaluate"
    result = run.report["evaluate_result"]
    # fit's validation (after 8 and 16 iterations) and the evaluate() that followed
    points = run.points(prefix, "evaluation/loss")
    assert [p["step"] for p in points] == [8, 16, 16]
    assert [p.get("epoch") for p in points] == [0, 1, None]
    assert [p["value"] for p in points[:2]] == run.values(prefix, "val_loss")
    assert points[2]["value"] == pytest.approx(result["loss"])
    assert run.values(prefix, "evaluation/mae")[-1] == pytest.approx(result["mae"])
    logs = [r for r in run.logs(prefix) if r["message"] in ("evaluate ended", "predict ended")]
    assert [r["message"] for r in logs] == ["evaluate ended", "predict ended"]
    assert logs[0]["metadata"]["metrics"]["loss"] == pytest.approx(result["loss"])
    assert (logs[1]["metadata"]["steps"], logs[1]["metadata"]["global_step"]) == (4, 16)


def test_evaluate_and_predict_after_fit_end_the_run_again_when_they_return(run):
    assert run.report["after_evaluate"] == ["COMPLETED", False]
    assert run.report["after_predict"] == ["COMPLETED", False]
    exp = run.exp("keras/evaluate")
    assert exp.status == "COMPLETED"
    assert exp.info()["sessions"] == 3  # fit, evaluate, predict: each resumed the run


def test_evaluate_with_an_experiment_passed_in_leaves_it_to_its_owner(run):
    assert run.report["owned_after_evaluate"] == ["RUNNING", True]
    assert run.steps("keras/evaluate-owned", "evaluation/loss") == [16]  # the model fitted above
    assert run.exp("keras/evaluate-owned").status == "COMPLETED"


SCRIPT = textwrap.dedent(
    """
    import sys
    import keras, numpy as np
    from mldash.integrations.keras import MLDashCallback

    def broken_loss(y_true, y_pred):
        raise ArithmeticError("diverged")

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=broken_loss)
    model.fit(np.zeros((8, 2)), np.zeros((8, 1)), verbose=0,
              callbacks=[MLDashCallback("keras/script", root=sys.argv[1])])
    """
)


def test_an_uncaught_error_in_a_plain_script_is_recorded_once(tmp_path):
    backend = "torch" if "torch" in BACKENDS else BACKENDS[0]
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "root")],
        env=backend_env(backend), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    assert "ArithmeticError: diverged" in done.stderr  # the user still sees it
    exp = mldash.Experiment("keras/script", root=str(tmp_path / "root"))
    assert exp.status == "FAILED"
    errors = exp.read_logs(level="error")["data"]
    assert [e["metadata"]["error_type"] for e in errors] == ["ArithmeticError"]
