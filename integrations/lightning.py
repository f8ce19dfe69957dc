"""PyTorch Lightning logger: ``Trainer(logger=MLDashLogger(...))``.

One class for both ``lightning.pytorch`` and ``pytorch_lightning`` Trainers.

>>> from lightning.pytorch import Trainer  # doctest: +SKIP
>>> from mldash.integrations.lightning import MLDashLogger  # doctest: +SKIP
>>> logger = MLDashLogger("vision/resnet-baseline", root=".mldash")  # doctest: +SKIP
>>> Trainer(logger=logger, max_epochs=3).fit(model, datamodule)  # doctest: +SKIP

What goes where (``exp = logger.experiment``):
- hyperparameters (the module's and the datamodule's ``save_hyperparameters()``),
  flattened with "." -> ``exp.params``;
- every ``log_metrics`` key -> ``exp.metrics(key)``, one point ``{value, step, epoch}``
  per call, at the step Lightning gives (repeated or going back: stored as given);
- every checkpoint ModelCheckpoint saves -> ``exp.checkpoint(path, step, epoch, score,
  monitor, mode, is_best)``, so ``exp.best_checkpoint`` is the best one;
- the model's class and parameter counts (``log_graph``) -> ``exp.summary``;
- an exception in any hook -> an error log with type, message and traceback and status
  FAILED; KeyboardInterrupt and SIGTERM -> CANCELLED; a normal end -> COMPLETED.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from argparse import Namespace
from typing import Any, Iterable, Mapping

from mldash import CANCELLED, FAILED, Experiment
from mldash._checkpoints import keep_final
from mldash._import_hooks import when_imported
from mldash._naming import safe_metric_name
from mldash.params import flatten, to_json_value, to_mapping

try:  # the unified package first; the standalone one is the same code under another name
    from lightning.pytorch.loggers.logger import Logger as _LoggerBase
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ImportError:  # pragma: no cover - only pytorch_lightning installed
    from pytorch_lightning.loggers.logger import Logger as _LoggerBase
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

__all__ = ["MLDashLogger"]

# Lightning's two packages each have a Logger base class; the Trainer itself only
# duck-types its loggers, but LightningCLI (jsonargparse) checks
# issubclass(MLDashLogger, Logger) before any instance exists.
_LOGGER_MODULES = ("lightning.pytorch.loggers.logger", "pytorch_lightning.loggers.logger")
# Trainer.log_dir (where LightningCLI saves config.yaml) is the run's own folder
# only for loggers that are CSVLoggers or TensorBoardLoggers; for any other it is
# save_dir, the root every run shares, so a second CLI run in the same root fails.
# Lightning has no other way to say "my log_dir is the run's folder".
_CSV_MODULES = ("lightning.pytorch.loggers.csv_logs", "pytorch_lightning.loggers.csv_logs")
# rank > 0 gets the no-op experiment of the package whose Trainer runs
# (Lightning's own code checks isinstance against its package's class).
_DUMMY_MODULES = ("lightning.fabric.loggers.logger", "lightning_fabric.loggers.logger")

# Exceptions that mean "someone stopped the run", not "the run broke".
_CANCEL_TYPES = ("KeyboardInterrupt", "SIGTERMException")

class MLDashLogger(_LoggerBase):
    """Log a Lightning run to an mldash experiment.

    Args:
        prefix: ``"project/name"`` or ``"project/folder/.../name"`` of the experiment,
            as for :class:`mldash.Experiment`. The same settings in a later run resume
            the same experiment (its metric indices continue).
        project, name, folder, namespace, root, remote, token, description, tags,
            flush_interval, system_metrics, capture_console: passed to :class:`mldash.Experiment`. Without ``name`` a
            unique, time-sortable name is chosen now, so ``version`` is known at once.
        experiment: an existing :class:`mldash.Experiment` to log into, instead of the
            keyword arguments above. The logger then leaves finishing it to you on
            success (it still records failures and cancellations).
        metric_prefix: put in front of every metric key, joined with "-" as Lightning's
            own loggers do (``metric_prefix="fold1"`` stores ``fold1-train_loss``).
        group_separator: the character that groups metric keys into folders, reported to
            callbacks such as ``DeviceStatsMonitor``; it is stored as "/" (the folder
            separator of mldash metric names). Default "/".
        log_model_summary: record the model's class and parameter counts in the
            experiment's summary when Lightning calls ``log_graph`` (default True).
        log_model: keep checkpoint files in the run's files, as WandbLogger's ``log_model``:
            False (default) records checkpoints' paths only; True keeps the best and the
            last checkpoint at the end of a successful fit (``/checkpoints/best``,
            ``/checkpoints/last``); ``"all"`` keeps every checkpoint as it is saved.

    Example:
        >>> logger = MLDashLogger("mnist/baseline", root="/tmp/mldash-doc")  # doctest: +SKIP
        >>> trainer = Trainer(logger=logger, max_epochs=2)  # doctest: +SKIP
        >>> trainer.fit(model)  # doctest: +SKIP
        >>> logger.experiment.best_checkpoint["path"]  # doctest: +SKIP
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        prefix: str | None = None,
        *,
        experiment: Experiment | None = None,
        metric_prefix: str = "",
        group_separator: str = "/",
        log_model_summary: bool = True,
        log_model: bool | str = False,
        project: str | None = None,
        name: str | None = None,
        folder: str | None = None,
        namespace: str | None = None,
        root: str | os.PathLike | None = None,
        remote: str | None = None,
        token: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        flush_interval: float | None = None,
        system_metrics: float | bool | None = None,
        capture_console: bool | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(group_separator, str) or not group_separator:
            raise ValueError("group_separator must be a non-empty string, e.g. '/'")
        if not isinstance(metric_prefix, str):
            raise TypeError(f"metric_prefix must be a str, not {type(metric_prefix).__name__}")
        if log_model not in (False, True, "all"):
            raise ValueError(f"log_model must be False, True or 'all', got {log_model!r}")
        given = dict(project=project, name=name, folder=folder, namespace=namespace, root=root,
                     remote=remote, token=token, description=description, tags=tags,
                     flush_interval=flush_interval, system_metrics=system_metrics,
                     capture_console=capture_console)
        if experiment is not None:
            if not isinstance(experiment, Experiment):
                raise TypeError(f"experiment must be an mldash.Experiment, not {type(experiment).__name__}")
            extra = [k for k, v in given.items() if v is not None] + (["prefix"] if prefix else [])
            if extra:
                raise ValueError(f"pass either experiment= or the Experiment's settings, not both ({', '.join(extra)})")
            self._owns_experiment = False
        else:
            # Validates names and fixes the default name now (no I/O): every
            # property below is known before the run starts, on every rank.
            experiment = Experiment(prefix, **given)
            self._owns_experiment = True
        self._settings = _settings_of(experiment)
        # Other ranks record their machine into rank zero's run only when they can name it:
        # a default name is drawn in each process (torchrun starts them apart).
        self._named = not self._owns_experiment or bool(prefix) or name is not None
        self._rank_exp: Experiment | None = None
        self._metric_prefix = metric_prefix
        self._group_separator = group_separator
        self._log_model_summary = log_model_summary
        self._log_model = log_model
        self._checkpointers: list = []  # the ModelCheckpoints seen (proxies), for log_model=True
        # Rank zero creates its own Experiment lazily from the settings; keep the
        # user's object (if any) to hand it back from `experiment`.
        self._given: Experiment | None = None if self._owns_experiment else experiment
        self._experiment: Experiment | None = None
        self._series: dict[str, Any] = {}
        self._last_params: dict | None = None
        self._trainer_ref: weakref.ref | None = None
        self._last_epoch: int | None = None

    # ---- where things are ----------------------------------------------------
    @property
    def name(self) -> str:
        """The project; ModelCheckpoint files go to ``save_dir/name/version/checkpoints``."""
        return self._settings["project"]

    @property
    def version(self) -> str:
        """The experiment's name (with its folders, if any) below the project."""
        return self._settings["version"]

    @property
    def save_dir(self) -> str:
        """The local root that holds every project."""
        return self._settings["root"]

    @property
    def root_dir(self) -> str:
        """The project's directory: every experiment of the project lies in it."""
        return os.path.join(self._settings["root"], self._settings["project"])

    @property
    def log_dir(self) -> str:
        """The experiment's own directory (``experiment.path``)."""
        return self._settings["path"]

    @property
    def group_separator(self) -> str:
        return self._group_separator

    @property
    def experiment(self) -> Experiment:
        """The :class:`mldash.Experiment` (on rank zero; a no-op stand-in elsewhere).

        Created and started on first use, so nothing is written before the Trainer
        sets up and nothing at all on other ranks.

        >>> self.logger.experiment.log("switching to fine-tuning")  # doctest: +SKIP
        """
        if rank_zero_only.rank > 0:  # one rank state, shared by both packages
            return _dummy_experiment()
        exp = self._experiment
        if exp is None:
            exp = self._given or Experiment(self._settings["prefix"], **self._settings["kwargs"])
            self._experiment = exp
            if not exp.started:  # not started in this process yet
                exp.start()
        return exp

    # ---- hyperparameters -----------------------------------------------------
    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace | Any = None,
                        metrics: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        """Store hyperparameters, flattened with "." (``{"model": {"lr": 1}}`` -> ``model.lr``).

        Accepts a dict, Namespace, AttributeDict, dataclass, OmegaConf config or pydantic
        model; callables and classes become their qualified name, tensors their values.
        Lightning calls this at every fit/validate/test; an unchanged set is not rewritten.
        ``metrics`` (TensorBoard's ``hp_metric`` style) go to the experiment's summary.
        """
        if params is not None:
            flat = flatten(to_mapping(params))
            if flat and flat != self._last_params:
                self.experiment.params.set(flat)
                self._last_params = flat
        if metrics:
            # One-element tensors and arrays are numbers, as TensorBoardLogger stores them.
            self.experiment.summary.set({k: _scalar(v) for k, v in dict(metrics).items()})

    # ---- metrics -------------------------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append each metric at ``step``; Lightning's ``epoch`` key rides along as a field.

        Steps are stored as given: evaluation steps that restart, repeated steps and
        steps that go back are all kept. The hot path is one dict lookup and one
        in-memory append per key; a background thread writes the files.
        """
        exp = self._experiment
        if exp is None:
            exp = self.experiment
        series = self._series
        epoch = metrics.get("epoch")
        if epoch is not None:
            self._last_epoch = epoch  # for checkpoints, when the Trainer is unknown
        skip_epoch = epoch is not None and len(metrics) > 1
        if not skip_epoch:
            epoch = None  # alone (or absent), epoch is a series of its own
        for key, value in metrics.items():
            if skip_epoch and key == "epoch":
                continue  # a field of the other points, not a series of its own
            if value.__class__ is dict:
                self._log_nested(key, value, step, epoch)
                continue
            metric = series.get(key)
            if metric is None:
                metric = self._metric_for(exp, key)
            if step is None:
                if epoch is None:
                    metric.append(value=value)
                else:
                    metric.append(value=value, epoch=epoch)
            elif epoch is None:
                metric.append(value=value, step=step)
            else:
                metric.append(value=value, step=step, epoch=epoch)

    def _log_nested(self, key: str, value: Any, step: int | None, epoch: Any) -> None:
        # e.g. log_metrics({"loss": {"train": 1, "val": 2}}): TensorBoard's add_scalars shape.
        if not isinstance(value, Mapping):
            raise TypeError(f"metric {key!r}: cannot store a {type(value).__name__}")
        inner = {f"{key}{self._group_separator}{k}": v for k, v in value.items()}
        if epoch is not None:
            inner["epoch"] = epoch
        self.log_metrics(inner, step)

    def _metric_for(self, exp: Experiment, key: str):
        """The series for a Lightning key (cached): prefix, grouping, safe folder names."""
        name = key
        if self._metric_prefix:
            name = f"{self._metric_prefix}{self.LOGGER_JOIN_CHAR}{name}"
        if self._group_separator != "/":
            name = name.replace(self._group_separator, "/")
        safe = safe_metric_name(name)
        if safe != name:
            warnings.warn(f"mldash: metric {key!r} is stored as {safe!r} (a name that is a valid folder path)",
                          stacklevel=3)
        metric = exp.metrics(safe)
        self._series[key] = metric
        return metric

    # ---- model ---------------------------------------------------------------
    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model's class and parameter counts in the summary.

        Lightning calls this at the start of every fit/validate/test with the
        LightningModule, which also tells the logger its Trainer (for the epoch of
        checkpoints).
        """
        trainer = getattr(model, "_trainer", None)
        if trainer is not None:
            try:
                self._trainer_ref = weakref.ref(trainer)
            except TypeError:
                self._trainer_ref = None
        if not self._log_model_summary or not hasattr(model, "parameters"):
            return
        total = trainable = 0
        for p in model.parameters():
            n = p.numel()
            total += n
            if p.requires_grad:
                trainable += n
        summary = {"model.class": f"{type(model).__module__}.{type(model).__qualname__}",
                   "model.parameters": total, "model.trainable_parameters": trainable}
        if summary != getattr(self, "_last_summary", None):
            self.experiment.summary.set(summary)
            self._last_summary = summary

    # ---- checkpoints ---------------------------------------------------------
    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Record the checkpoint just saved: path, step, epoch, monitored score, is_best."""
        cb = checkpoint_callback
        path = getattr(cb, "_last_checkpoint_saved", None) or getattr(cb, "last_model_path", None)
        if not path:
            return
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        step = getattr(cb, "_last_global_step_saved", None)
        if step is None and trainer is not None:
            step = trainer.global_step
        epoch = trainer.current_epoch if trainer is not None else self._last_epoch
        monitor = getattr(cb, "monitor", None)
        info: dict[str, Any] = {"epoch": epoch}
        if monitor:
            best_k = getattr(cb, "best_k_models", None) or {}
            score = best_k.get(path, getattr(cb, "current_score", None))
            info.update(score=_number(score), monitor=monitor, mode=getattr(cb, "mode", None))
        best_path = getattr(cb, "best_model_path", None)
        info["is_best"] = bool(best_path) and os.path.abspath(best_path) == os.path.abspath(path)
        last_path = getattr(cb, "last_model_path", None)
        if last_path and os.path.abspath(last_path) == os.path.abspath(path):
            info["last"] = True
        if not any(seen == cb for seen in self._checkpointers):  # Lightning passes a weakref.proxy
            self._checkpointers.append(cb)
        self.experiment.checkpoint(os.path.abspath(path), step=step, upload=self._log_model == "all", **info)

    # ---- end of a stage ------------------------------------------------------
    def save(self) -> None:
        """Nothing to write: a background thread writes, so this stays free. Lightning calls
        it on every rank at the start (and after every ``log_metrics``): on a rank other than
        zero, the first call starts recording that rank's machine (``Experiment.attach_rank``).
        """
        if self._rank_exp is None and rank_zero_only.rank > 0 and self._named:
            self._rank_exp = Experiment(self._settings["prefix"], **self._settings["kwargs"])
            self._rank_exp.attach_rank(rank_zero_only.rank)

    def finalize(self, status: str) -> None:
        """End of fit/validate/test: ``"success"`` finishes the experiment (COMPLETED),
        ``"failed"`` records the exception Lightning is handling and finishes it FAILED
        (CANCELLED for KeyboardInterrupt and SIGTERM); another rank stops recording its machine.

        A later stage on the same logger (fit, then test) resumes the experiment on its
        first write and completes it again.
        """
        if rank_zero_only.rank > 0:
            exp, self._rank_exp = self._rank_exp, None
            if exp is not None:
                exp.finish()
            return
        self._finalize_zero(status)

    def _finalize_zero(self, status: str) -> None:
        if status == "failed":
            self._finalize_failed()
            return
        exp = self._experiment
        if exp is None or not exp.started:
            return  # nothing was logged in this process
        if status in ("success", "finished") and self._log_model is True:
            for cb in self._checkpointers:
                try:
                    paths = getattr(cb, "best_model_path", None), getattr(cb, "last_model_path", None)
                    info = {"monitor": getattr(cb, "monitor", None), "best_score": _number(getattr(cb, "best_model_score", None))}
                except ReferenceError:  # the callback is gone with its Trainer
                    continue
                keep_final(exp.files, *paths, info)
        if status not in ("success", "finished"):  # e.g. "aborted"
            exp.log(f"Lightning ended the run with status {status!r}", level="warn")
            exp.finish(CANCELLED)
        elif self._owns_experiment:
            exp.finish()
        else:
            exp.flush()  # the user's experiment: they decide when it ends

    def _finalize_failed(self) -> None:
        # Lightning calls finalize("failed") from inside its `except` block
        # (trainer/call.py, _interrupt), so the exception is the one being handled.
        exc = sys.exc_info()[1]
        exp = self.experiment
        if exc is None:
            exp.log("Lightning reported the run as failed", level="error")
            exp.finish(FAILED)
        elif type(exc).__name__ in _CANCEL_TYPES:
            reason = "terminated by SIGTERM" if type(exc).__name__ == "SIGTERMException" else "interrupted (KeyboardInterrupt)"
            exp.cancel(reason)  # once, though the core's SIGTERM hook may have said so already
            exp.finish(CANCELLED)
        else:
            exp.log_exception(exc)
            exp.finish()

    # ---- pickling (spawn-based strategies) ----------------------------------
    def __getstate__(self) -> dict:
        # An Experiment holds threads and files; the settings recreate it (same
        # prefix, so the same experiment) wherever the logger is unpickled.
        state = self.__dict__.copy()
        state["_experiment"] = None
        state["_given"] = None
        state["_owns_experiment"] = self._owns_experiment
        state["_series"] = {}
        state["_trainer_ref"] = None
        state["_rank_exp"] = None
        state["_checkpointers"] = []
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"MLDashLogger({self._settings['prefix']!r}, root={self.save_dir!r})"


def _settings_of(exp: Experiment) -> dict:
    """Everything needed to recreate ``exp`` (and to answer the path properties)."""
    kwargs = {k: getattr(exp, k) for k in ("namespace", "root", "remote", "token", "description",
                                          "tags", "flush_interval", "system_metrics", "capture_console")}
    kwargs["system_metrics"] = exp.system_metrics or False  # resolved: None is off, not "the default"
    version = exp.name if not exp.folder else f"{exp.folder}/{exp.name}"
    return {"prefix": exp.prefix, "project": exp.project, "version": version, "root": exp.root,
            "path": exp.path, "kwargs": kwargs}


def _number(value: Any) -> Any:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _scalar(value: Any) -> Any:
    numel = getattr(value, "numel", None)
    size = numel() if callable(numel) else getattr(value, "size", None)
    if size == 1 and hasattr(value, "item") and hasattr(value, "shape"):
        return value.item()
    return to_json_value(value)


def _register(base_name: str):
    def register(module) -> None:
        base = getattr(module, base_name, None)
        if base is not None and hasattr(base, "register") and not issubclass(MLDashLogger, base):
            base.register(MLDashLogger)

    return register


def _dummy_experiment():
    """A no-op experiment that is an instance of every loaded package's dummy class."""
    global _Dummy
    bases = tuple(
        getattr(sys.modules[name], "_DummyExperiment") for name in _DUMMY_MODULES if name in sys.modules
    )
    if _Dummy is None or _Dummy.__bases__ != bases:
        _Dummy = type("DummyExperiment", bases or (object,), {})
    return _Dummy()


_Dummy: type | None = None
# From the first import, for both packages: now for those loaded, later for the other.
for _name in _LOGGER_MODULES:
    when_imported(_name, _register("Logger"))
for _name in _CSV_MODULES:
    when_imported(_name, _register("CSVLogger"))
