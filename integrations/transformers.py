"""Hugging Face ``Trainer`` integration: ``report_to="mldash"`` and ``MLDashCallback``.

>>> from transformers import Trainer, TrainingArguments
>>> from mldash.integrations.transformers import MLDashCallback
>>> trainer = Trainer(model, TrainingArguments("out", report_to="none"),  # doctest: +SKIP
...                   train_dataset=ds, callbacks=[MLDashCallback(project="nlp", name="bert-1")])

or, with no mldash import at all (settings from ``MLDASH_*`` environment variables)::

    TrainingArguments("out", report_to="mldash", run_name="bert-1")

What is recorded mirrors transformers' own WandbCallback / MLflowCallback /
TensorBoardCallback: every TrainingArguments field, the model config (and a PEFT config)
and the parameter count as parameters; each logged value as a series at
``state.global_step`` named ``train/...``, ``eval/...`` or ``test/...``; the single
values of the end of training (``train_runtime``, ``total_flos``...) as summary values;
every checkpoint the Trainer saves; and only from the world-process-zero.

``train()`` ends the run COMPLETED, or FAILED / CANCELLED when an exception leaves it
(the shared guard in ``_guard``); an ``evaluate()`` or ``predict()`` outside training
resumes the run for its results and ends it again before it returns.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from typing import Any, Iterable

from transformers.trainer_callback import TrainerCallback

try:
    from transformers.trainer_callback import ExportableState
except ImportError:  # transformers < 4.41 keeps no callback state in checkpoints

    class ExportableState:  # type: ignore[no-redef]
        pass

from mldash import Experiment
from mldash._checkpoints import keep_final
from mldash._hf_hook import TARGET, install_finder
from mldash._naming import safe_metric_name

from ._guard import RecordFailures, call_quietly, record_failure
from ._hf_args import hyperparameters, monitor_key, safe_part, split_run_name

__all__ = ["MLDashCallback", "MLDashReportToCallback", "register"]

# Logged once at the end of training; kept as summary values, as WandbCallback does.
SINGLE_VALUE_KEYS = frozenset(
    {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos"}
)
_SETTINGS = ("prefix", "project", "name", "folder", "namespace", "root", "remote", "token", "description", "tags")
_NOT_SAVED = frozenset({"token"})  # never written into checkpoints


def metric_name(key: str) -> str:
    """The series a Trainer log key goes to, grouped like transformers' ``rewrite_logs``.

    >>> metric_name("eval_loss"), metric_name("test_accuracy"), metric_name("loss")
    ('eval/loss', 'test/accuracy', 'train/loss')
    """
    if key.startswith("eval_"):
        return "eval/" + key[5:]
    if key.startswith("test_"):
        return "test/" + key[5:]
    return "train/" + key


def _log_model_setting(value: bool | str | None) -> bool | str:
    """``log_model``: False, True (the best and the last checkpoint at the end) or "all";
    None reads $MLDASH_LOG_MODEL (for ``report_to="mldash"``, which passes no arguments)."""
    if value is None:
        text = os.environ.get("MLDASH_LOG_MODEL", "").strip().lower()
        value = {"": False, "false": False, "0": False, "true": True, "1": True, "end": True, "all": "all"}.get(text, text)
    if value not in (False, True, "all"):
        raise ValueError(f"log_model (or $MLDASH_LOG_MODEL) must be False, True or 'all', got {value!r}")
    return value


class MLDashCallback(TrainerCallback, ExportableState):
    """Record a ``transformers.Trainer`` run in an mldash experiment.

    Takes the keyword arguments of :class:`mldash.Experiment` (``prefix``, ``project``,
    ``name``, ``folder``, ``namespace``, ``root``, ``remote``, ``token``, ``description``,
    ``tags``) or ``experiment=`` an Experiment that exists. Unset, the name comes from
    ``$MLDASH_PREFIX``/``$MLDASH_NAME``, then ``args.run_name``, then a generated one; the
    project, root, server URL and token from ``$MLDASH_PROJECT``, ``$MLDASH_ROOT``,
    ``$MLDASH_URL`` and ``$MLDASH_TOKEN``. ``log_model`` keeps checkpoint files with the
    run: True the best and the last at the end of training, ``"all"`` each as it is saved
    (unset: ``$MLDASH_LOG_MODEL``, else False).

    >>> trainer = Trainer(..., callbacks=[MLDashCallback(project="nlp", name="run-1")])  # doctest: +SKIP
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        project: str | None = None,
        name: str | None = None,
        folder: str | None = None,
        namespace: str | None = None,
        root: str | os.PathLike | None = None,
        remote: str | None = None,
        token: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        system_metrics: float | bool | None = None,
        capture_console: bool | str | None = None,
        experiment: Experiment | None = None,
        log_model: bool | str | None = None,
    ) -> None:
        given = dict(
            prefix=prefix, project=project, name=name, folder=folder, namespace=namespace,
            root=os.fspath(root) if root is not None else None, remote=remote, token=token,
            description=description, tags=list(tags) if tags is not None and not isinstance(tags, str) else tags,
            system_metrics=system_metrics, capture_console=capture_console,
        )
        self._settings = {k: v for k, v in given.items() if v is not None}
        if experiment is not None:
            if not isinstance(experiment, Experiment):
                raise TypeError(f"experiment must be an mldash.Experiment, not {type(experiment).__name__}")
            if self._settings:
                raise ValueError(
                    f"pass either experiment= or its settings ({', '.join(sorted(self._settings))}), not both"
                )
        else:
            Experiment(**self._settings)  # bad names fail here, at the call (no I/O)
        self._given = experiment
        self._log_model = _log_model_setting(log_model)
        self._last_saved: str | None = None
        self._exp: Experiment | None = None
        self._rank_exp: Experiment | None = None  # another rank's machine (attach_rank)
        self._trial_exp = False
        self._search_base: tuple[str, list[str], str] | None = None
        self._trials = 0
        self._series: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self._last_eval: tuple[int, Any] | None = None
        self._trainer: weakref.ref | None = None
        self._training = False
        self._recorded: BaseException | None = None
        self._superseded = False
        self._pending_summary: dict[str, Any] = {}

    # ---- which experiment ------------------------------------------------------------
    @property
    def experiment(self) -> Experiment | None:
        """The experiment being written (None before training starts, and off rank zero)."""
        return self._exp

    def _resolve(self, args, state) -> Experiment:
        """The experiment of a plain (non-search) run."""
        if self._given is not None:
            return self._given
        settings = dict(self._settings)
        if "prefix" not in settings and "name" not in settings:
            saved = _saved_settings(state)
            if os.environ.get("MLDASH_PREFIX"):
                settings["prefix"] = os.environ["MLDASH_PREFIX"]
            elif os.environ.get("MLDASH_NAME"):
                settings["name"] = os.environ["MLDASH_NAME"]
            elif saved.get("prefix"):
                # Resuming from a checkpoint: continue the experiment that wrote it.
                settings["prefix"] = saved["prefix"]
                settings.pop("project", None)
                settings.pop("folder", None)
                if "root" not in settings and not os.environ.get("MLDASH_ROOT") and saved.get("root"):
                    settings["root"] = saved["root"]
            elif args.run_name:
                folder, name = split_run_name(args.run_name)
                settings["name"] = name
                if folder and "folder" not in settings:
                    settings["folder"] = folder
        return Experiment(**settings)

    def _trial_experiment(self, args, state) -> Experiment:
        """One experiment per hyperparameter-search trial, grouped in a folder."""
        if self._search_base is None:
            base = self._given if self._given is not None else self._resolve(args, _NO_STATE)
            folder = [*(base.folder.split("/") if base.folder else []), base.name]
            self._search_base = (base.project, folder, base.root)
        project, folder, root = self._search_base
        self._trials += 1
        trial = getattr(self._trainer_obj(), "_trial", None)
        number = getattr(trial, "number", None)
        name = state.trial_name or f"trial-{number if number is not None else self._trials - 1}"
        settings = {k: v for k, v in self._settings.items() if k not in ("prefix", "project", "name", "folder", "root")}
        if self._given is not None:
            settings.update(remote=self._given.remote, token=self._given.token, namespace=self._given.namespace)
            settings = {k: v for k, v in settings.items() if v is not None}
        return Experiment(project=project, folder="/".join(folder), name=safe_part(name), root=root, **settings)

    def _setup(self, args, state, model) -> Experiment:
        if state.is_hyper_param_search and not self._trial_exp:
            exp = self._trial_experiment(args, state)
            self._trial_exp = True
        else:
            exp = self._exp or self._resolve(args, state)
        if exp is not self._exp:
            self._exp = exp
            self._series = {}
        exp.start()
        exp.params.set(hyperparameters(args, state, model))
        return exp

    def _attach_rank(self, args, state) -> None:
        """Another process of a distributed run records its machine into the run (when it
        can name the run: a name drawn at random differs between processes)."""
        named = self._given is not None or "prefix" in self._settings or "name" in self._settings or bool(
            os.environ.get("MLDASH_PREFIX") or os.environ.get("MLDASH_NAME") or args.run_name)
        if self._rank_exp is None and named and args.process_index > 0:
            given = self._given
            exp = self._resolve(args, state) if given is None else Experiment(
                given.prefix, root=given.root, system_metrics=given.system_metrics or False)
            self._rank_exp = exp.attach_rank(args.process_index)

    def _trainer_obj(self):
        return self._trainer() if self._trainer is not None else None

    def _is_active(self) -> bool:
        return not self._superseded

    def _check_superseded(self) -> None:
        """Decide (at init and at train begin) whether another callback takes over."""

    def __getstate__(self) -> dict:
        # Picklable (Ray Tune ships the Trainer to workers): drop the live experiment,
        # the Trainer reference and caches; a given Experiment travels as its prefix.
        state = self.__dict__.copy()
        state.update(_exp=None, _rank_exp=None, _trainer=None, _series={}, _recorded=None, _trial_exp=False)
        if self._given is not None:
            given = self._given
            state["_given"] = None
            state["_settings"] = {k: v for k, v in dict(
                prefix=given.prefix, root=given.root, remote=given.remote, token=given.token,
                namespace=given.namespace).items() if v is not None}
        return state

    # ---- Trainer events -----------------------------------------------------------------
    def on_init_end(self, args, state, control, **kwargs):
        # The Trainer has no hook for an exception that leaves train(). Wrap the train
        # method of the Trainer that owns this callback, found on the call stack (on_init_end
        # is called from Trainer.__init__). Alternatives were worse: sys.excepthook misses
        # exceptions a script or notebook catches, and patching the Trainer class would
        # change every Trainer in the process, with or without mldash.
        trainer = _owning_trainer(self)
        if trainer is not None:
            self._trainer = weakref.ref(trainer)
            _watch_train(trainer)
        self._check_superseded()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _keep_state_slot(self, state)
        if self._trainer is None:  # added with trainer.add_callback() after __init__
            trainer = _owning_trainer(self)
            if trainer is not None:
                self._trainer = weakref.ref(trainer)
        self._check_superseded()
        if not state.is_world_process_zero and self._is_active() and not state.is_hyper_param_search:
            self._attach_rank(args, state)
        if not state.is_world_process_zero or not self._is_active():
            return
        if state.is_hyper_param_search:
            if self._trial_exp and self._exp is not None:
                self._exp.finish()
            self._trial_exp = False
        self._setup(args, state, model)
        self._training = True

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self._is_active():
            return
        exp = self._exp if self._exp is not None else self._setup(args, state, model)
        self._append(exp, logs, state)
        if not self._training:
            # evaluate() (or a log() of the user's) outside train(), maybe after it
            # finished the run: these writes resumed it, so end it again now, as
            # train() does and as the Lightning logger does after validate/test;
            # otherwise it stays RUNNING until the interpreter exits. Here, not in
            # on_evaluate: nothing is written after this point of evaluate().
            exp.finish()

    def on_predict(self, args, state, control, metrics=None, model=None, **kwargs):
        if not state.is_world_process_zero or not metrics or not self._is_active():
            return
        exp = self._exp if self._exp is not None else self._setup(args, state, model)
        self._append(exp, metrics, state)
        if not self._training:  # predict() outside train(): as for evaluate() in on_log
            exp.finish()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # Logged by on_log already; remembered here to score the next checkpoint.
        monitor = monitor_key(args)
        if monitor is not None and metrics:
            self._last_eval = (state.global_step, metrics.get(monitor))

    def on_save(self, args, state, control, **kwargs):
        exp = self._exp
        if exp is None or not state.is_world_process_zero or not self._is_active():
            return
        step = state.global_step
        info: dict[str, Any] = {"epoch": state.epoch}
        monitor = monitor_key(args)
        if monitor is not None:
            info["monitor"] = metric_name(monitor)
            info["mode"] = "max" if args.greater_is_better else "min"
            if self._last_eval is not None and self._last_eval[0] == step:
                info["score"] = self._last_eval[1]
            best_step = getattr(state, "best_global_step", None)  # transformers >= 4.50
            best_path = state.best_model_checkpoint
            info["is_best"] = state.best_metric is not None and (
                best_step == step if best_step is not None
                else best_path is not None and os.path.basename(best_path) == f"checkpoint-{step}"
            )
            if info["is_best"]:
                info["score"] = state.best_metric
        self._last_saved = self._checkpoint_path(args, state)
        exp.checkpoint(self._last_saved, step=step, upload=self._log_model == "all", **info)

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False
        rank_exp, self._rank_exp = self._rank_exp, None
        if rank_exp is not None:
            rank_exp.finish()
        exp = self._exp
        if exp is None or not state.is_world_process_zero or not self._is_active():
            return
        summary: dict[str, Any] = {**self._pending_summary, "global_step": state.global_step, "epoch": state.epoch}
        self._pending_summary = {}
        if state.best_metric is not None:
            summary["best_metric"] = state.best_metric
        if state.best_model_checkpoint:
            summary["best_model_checkpoint"] = os.path.abspath(state.best_model_checkpoint)
        exp.summary.set(summary)
        if self._log_model is True:
            keep_final(exp.files, state.best_model_checkpoint, self._last_saved,
                       {"global_step": state.global_step, "best_metric": state.best_metric})
        if self._trial_exp:
            exp.flush()  # a search evaluates the trial's objective next; closed after that
        else:
            exp.finish()

    # ---- helpers ----------------------------------------------------------------------
    def _append(self, exp: Experiment, logs: dict, state) -> None:
        # Read-only on `logs`: the same dict goes to every other callback.
        step = state.global_step
        epoch = state.epoch
        summary = None
        series = self._series
        for key, value in logs.items():
            metric = series.get(key)
            if metric is None:
                if key in SINGLE_VALUE_KEYS:
                    summary = summary or {}
                    summary[key] = value
                    continue
                metric = self._series_for(exp, key)
                if metric is None:
                    continue
            try:
                if epoch is None:
                    metric.append(value=value, step=step)
                else:
                    metric.append(value=value, step=step, epoch=epoch)
            except TypeError as error:
                self._skip(exp, key, error)
        if summary:
            if self._training:  # train_runtime & co. come just before on_train_end:
                self._pending_summary.update(summary)  # one summary write there, not two
            else:
                exp.summary.set(summary)

    def _series_for(self, exp: Experiment, key: str):
        if key in self._skipped:
            return None
        try:
            metric = exp.metrics(safe_metric_name(metric_name(key)))
        except (TypeError, ValueError) as error:
            self._skip(exp, key, error)
            return None
        self._series[key] = metric
        return metric

    def _skip(self, exp: Experiment, key: str, error: Exception) -> None:
        self._series.pop(key, None)
        if key not in self._skipped:
            self._skipped.add(key)
            exp.log(f"mldash: not recording Trainer log key {key!r}: {error}", level="warn")

    def _checkpoint_path(self, args, state) -> str:
        folder = args.output_dir
        trainer = self._trainer_obj()
        if trainer is not None and state.is_hyper_param_search:
            try:  # trials save under output_dir/run-N
                folder = trainer._get_output_dir(trial=getattr(trainer, "_trial", None))
            except Exception:
                pass
        return os.path.abspath(os.path.join(folder, f"checkpoint-{state.global_step}"))

    def _record_failure(self, trainer, exc: BaseException, search: bool = False) -> None:
        if not self._is_active() or not trainer.is_world_process_zero():
            return
        if self._recorded is exc:  # seen leaving train(), now leaving hyperparameter_search()
            return
        self._recorded = exc
        self._training = False
        exp = self._exp
        if search and self._trial_exp and exp is not None and not exp.running:
            # The search's own error after its last trial ended (optuna finding no
            # completed trial, say): that trial's record stays as it ended.
            return
        if exp is None:
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                return  # a clean exit before anything was recorded
            exp = self._setup(trainer.args, trainer.state, trainer.model)
        if self._pending_summary:
            exp.summary.set(self._pending_summary)
            self._pending_summary = {}
        record_failure(exp, exc)  # FAILED; CANCELLED for Ctrl-C and a pruned trial

    def _end_search(self) -> None:
        if self._trial_exp and self._exp is not None:
            self._exp.finish()  # the last trial: its objective was evaluated after train()
            self._exp, self._trial_exp, self._search_base, self._trials = None, False, None, 0

    def state(self) -> dict:
        """What a checkpoint keeps (trainer_state.json): the experiment to continue."""
        args = {k: v for k, v in self._settings.items() if k not in _NOT_SAVED}
        exp = self._exp if self._exp is not None else self._given
        if exp is not None and not self._trial_exp:
            for key in ("project", "name", "folder"):
                args.pop(key, None)
            args["prefix"] = exp.prefix
            args["root"] = exp.root
        return {"args": args, "attributes": {}}


class MLDashReportToCallback(MLDashCallback):
    """The callback ``report_to="mldash"`` creates, configured from ``MLDASH_*`` variables.

    It steps aside when the same Trainer also has an explicit :class:`MLDashCallback`,
    so using both never records a run twice.
    """

    def _check_superseded(self) -> None:
        trainer = self._trainer_obj()
        self._superseded = trainer is not None and any(
            isinstance(cb, MLDashCallback) and not isinstance(cb, MLDashReportToCallback)
            for cb in trainer.callback_handler.callbacks
        )


# ---- registration with transformers ---------------------------------------------------
def register(utils=None) -> None:
    """Add ``"mldash"`` to transformers' ``report_to`` registry (idempotent).

    Called by the start-up hook when ``transformers.integrations.integration_utils`` is
    imported, and by importing this module. Also makes ``report_to="all"`` include it.
    """
    utils = utils if utils is not None else sys.modules[TARGET]
    registry = utils.INTEGRATION_TO_CALLBACK
    current = registry.get("mldash")
    if current is None or getattr(current, "__name__", None) == MLDashReportToCallback.__name__:
        registry["mldash"] = MLDashReportToCallback
    available = utils.get_available_reporting_integrations
    if not getattr(available, "_mldash", False):

        @functools.wraps(available)
        def get_available_reporting_integrations():
            names = list(available())
            if "mldash" not in names:
                names.append("mldash")
            return names

        get_available_reporting_integrations._mldash = True
        utils.get_available_reporting_integrations = get_available_reporting_integrations
        # transformers.integrations is a lazy module that caches what it handed out.
        package = sys.modules.get("transformers.integrations")
        if package is not None and "get_available_reporting_integrations" in vars(package):
            package.get_available_reporting_integrations = get_available_reporting_integrations


def _register_now_or_later() -> None:
    utils = sys.modules.get(TARGET)
    if utils is not None and hasattr(utils, "INTEGRATION_TO_CALLBACK"):
        register(utils)
    else:
        install_finder()  # covers interpreters started without the .pth (python -S)


# ---- small helpers --------------------------------------------------------------------
class _NoState:
    stateful_callbacks: dict = {}


_NO_STATE = _NoState()


def _owning_trainer(callback):
    """The Trainer whose callback handler holds ``callback``, from the call stack."""
    frame = sys._getframe(2)
    for _ in range(16):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        handler = getattr(candidate, "callback_handler", None)
        if handler is not None and any(cb is callback for cb in getattr(handler, "callbacks", ())):
            return candidate
        frame = frame.f_back
    return None


def _watch_train(trainer) -> None:
    """Wrap ``train`` and ``hyperparameter_search`` of this Trainer instance (not its class)
    to record an exception that leaves them, and to close the last trial of a search."""
    for method in ("train", "hyperparameter_search"):
        current = getattr(trainer, method, None)
        if current is None or getattr(current, "_mldash_watch", False):
            continue
        setattr(trainer, method, _watched(trainer, current, search=method != "train"))


def _watched(trainer, method, search: bool):
    def record(exc: BaseException) -> None:
        _each_callback(trainer, "_record_failure", trainer, exc, search)

    @functools.wraps(method)
    def watched(*args, **kwargs):
        try:
            with RecordFailures(record):  # re-raises the exception unchanged
                return method(*args, **kwargs)
        finally:
            if search:
                _each_callback(trainer, "_end_search")

    watched._mldash_watch = True
    return watched


def _each_callback(trainer, method: str, *args) -> None:
    # The callbacks of the moment (add_callback may have added one); an error in one
    # is a warning and never hides the user's exception behind ours.
    for callback in list(getattr(trainer.callback_handler, "callbacks", ())):
        if isinstance(callback, MLDashCallback):
            call_quietly(getattr(callback, method), *args)


def _keep_state_slot(callback, state) -> None:
    # Trainer._save_checkpoint indexes state.stateful_callbacks[class name]; a state loaded
    # from a checkpoint written without this callback lacks the key and would raise there.
    slots = state.stateful_callbacks
    if isinstance(slots, dict) and type(callback).__name__ not in slots:
        slots[type(callback).__name__] = callback.state()


def _saved_settings(state) -> dict:
    """The settings a resumed checkpoint kept for this kind of callback."""
    slots = getattr(state, "stateful_callbacks", None) or {}
    for name in (MLDashCallback.__name__, MLDashReportToCallback.__name__):
        saved = slots.get(name)
        for entry in saved if isinstance(saved, list) else [saved]:
            if isinstance(entry, dict) and isinstance(entry.get("args"), dict) and entry["args"].get("prefix"):
                return entry["args"]
    return {}


_register_now_or_later()
