"""The Experiment: one run's parameters, metrics, logs and status."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import traceback
from time import time as _now
from typing import Any, Iterable

import orjson

from . import _checkpoints, _lifecycle, _record, _settings
from ._checks import check_level, check_status, check_text
from ._environment import git_info, process_info
from ._filestore import pending_saves
from ._hooks import RunHooks
from ._naming import check_namespace
from ._system import SystemSampler, default_labels, interval_setting, rank_share
from ._runfolder import (
    CANCELLED,
    CHECKPOINTS_STEM,
    COMPLETED,
    CONSOLE_DIR,
    FAILED,
    LOGS_DIR,
    META_FILE,
    RUNNING,
    SUMMARY_FILE,
    check_range,
    checkpoint_records,
    metric_names,
    nested_run,
    read_checkpoints,
    read_document,
    read_log_records,
    update_document,
)
from ._writer import StorageError, Writer, save_elsewhere
from .metrics import Metric
from .params import Params, encode_record

# Queue entries (see _queue.py; a {value, step} point is 4): wake the writer at
# ~10k points, block the caller at ~200k, whichever series they are in.
_TRIGGER = 40_000
_MAX_PENDING = 800_000


class Experiment:
    """A tracked run. Constructing one does no I/O; the first write starts it.

    >>> import mldash
    >>> exp = mldash.Experiment("vision/resnet-baseline", root="/tmp/mldash-doc")
    >>> with exp:
    ...     exp.params.set(lr=0.001, model={"depth": 50})
    ...     exp.metrics("train/loss").append(value=0.5, step=1)
    ...     exp.log("epoch done", metadata={"epoch": 1})
    >>> exp.status
    'COMPLETED'
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
        flush_interval: float | None = None,
        system_metrics: float | bool | None = None,
        capture_console: bool | str | None = None,
    ) -> None:
        project, folder_parts, name = _settings.location(prefix, project, name, folder)
        self.project: str = project
        self.name: str = name
        self.folder: str | None = "/".join(folder_parts) or None
        self.namespace = check_namespace(namespace) if namespace is not None else None
        self.prefix = "/".join([self.project, *folder_parts, self.name])
        self.root = _settings.root(root)
        self.path = os.path.join(self.root, self.project, *folder_parts, self.name)
        self.remote = _settings.remote(remote)
        self.token = _settings.token(token)
        self.description = _settings.description(description)
        self.tags = _settings.tags(tags)
        self.flush_interval = _settings.flush_interval(flush_interval)
        # Seconds between samples of the machine into sys/* series (None: off).
        self.system_metrics: float | None = interval_setting(system_metrics)
        self._sampler = None
        from ._console import console_setting  # not at `import mldash`: only runs capture

        # What the program prints is recorded: True (sys.stdout/stderr), "fd" (also
        # descriptors 1 and 2: C code, children), False.
        self.capture_console: bool | str = console_setting(capture_console)
        self._console = None
        self._hooks = RunHooks(
            start=self._ensure_started, pressure=self._pressure, before_read=self._before_read,
            changed=self._on_document_changed, remote=self._remote_reader,
        )
        self.params = Params(self.path, self._hooks)
        self.summary = Params(self.path, self._hooks, SUMMARY_FILE)
        self._metrics: dict[str, Metric] = {}
        self._logs_trigger = 0
        self._lock = threading.RLock()
        self._status: str | None = None
        self._failure: str | None = None
        self._writer: Writer | None = None
        self._stranded: Writer | None = None  # a finished run's writer still holding data
        # Seconds finish() waits for the upload to catch up (None: $MLDASH_SYNC_TIMEOUT or 10).
        self.sync_timeout: float | None = None
        self._uploader = None
        self._remote_client = None
        self._appends_only = False

    # ---- lifecycle -----------------------------------------------------------
    @property
    def status(self) -> str | None:
        """RUNNING, COMPLETED, FAILED or CANCELLED; None before the first start."""
        if self._status is not None:
            return self._status
        return read_document(os.path.join(self.path, META_FILE)).get("status")

    def start(self) -> "Experiment":
        """Create or resume the experiment on disk and start its writer."""
        self._ensure_started()
        return self

    def _ensure_started(self) -> None:
        if self._status == RUNNING:
            return
        with self._lock:
            if self._status == RUNNING:
                return
            self._start_locked()

    def _start_locked(self) -> None:
        if not self._appends_only:
            other = nested_run(self.root, self.path)
            if other is not None:
                raise ValueError(
                    f"{self.prefix!r} cannot start at {self.path}: the run in {other} would "
                    "share its folder (a run may not lie inside another, nor around one)"
                )
        os.makedirs(self.path, exist_ok=True)  # fails here, at the call, on a bad root
        self._failure = None
        if self._appends_only:  # appends only: the parent owns the run's record and upload
            self._writer = self._new_writer()
            self._status = RUNNING
            self._arm_triggers()
            _lifecycle.register(self, self._after_fork)
            return
        # experiment.json is written by the writer thread, first thing: its fsync
        # and the git subprocess stay out of the training loop.
        self._writer = self._new_writer(on_start=self._write_start_meta)
        self._status = RUNNING
        self._arm_triggers()
        _lifecycle.register(self, self._after_fork)
        if self.capture_console:
            from ._console import ConsoleCapture, writer_sink

            sink = writer_sink(self._writer.extra, self.path, encoded=True)
            self._console = ConsoleCapture(self.capture_console, sink).start()
        if self.system_metrics:
            self._sampler = SystemSampler(
                self.system_metrics, self.metrics, self.root, on_error=self._on_sampler_error
            ).start()
        if self.remote:
            from .remote.uploader import Uploader

            self._uploader = Uploader(self._address())

    def attach_rank(self, rank: int | None = None) -> "Experiment":
        """Record this rank's machine into the run that rank zero records: for a process of a
        distributed run other than rank zero, instead of :meth:`start`.

        Metrics, logs, the console, the run's record and its upload stay rank zero's; this
        process only appends ``sys/rank/<rank>/...`` series (``system_metrics`` permitting),
        labelled with its host and rank. Each machine appears once: the first process of a
        machine (local rank 0) samples it and its GPUs, another only the GPUs that
        ``CUDA_VISIBLE_DEVICES`` gives it alone, or nothing. ``rank``: None reads the
        launcher's (``RANK``, MPI, SLURM). :meth:`finish` ends it; an integration calls both.

        >>> exp = mldash.Experiment("vision/ddp-run")  # doctest: +SKIP
        >>> exp.start() if rank == 0 else exp.attach_rank()  # doctest: +SKIP
        """
        labels = default_labels()
        if rank is not None:
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
                raise ValueError(f"rank must be an int >= 0, got {rank!r}")
            labels["rank"] = rank
        if not labels.get("rank"):
            raise ValueError(
                "attach_rank() is for the ranks other than zero (no RANK, PMI_RANK, "
                "OMPI_COMM_WORLD_RANK or SLURM_PROCID > 0 here); rank zero calls start()"
            )
        with self._lock:
            if self._status == RUNNING:
                raise RuntimeError(f"{self.prefix} is already running in this process")
            share = rank_share(labels)
            if not self.system_metrics or share is None:
                return self  # nothing of this machine is ours to record
            self._appends_only = True
            self._start_locked()
            self._sampler = SystemSampler(
                self.system_metrics, self.metrics, self.root, labels, prefix=f"sys/rank/{labels['rank']}",
                host=share == "machine", on_error=self._on_sampler_error,
            ).start()
        return self

    def _new_writer(self, on_start=None) -> Writer:
        # on_error runs on the writer thread: it sends the next call down the slow
        # path, where the error is reported.
        return Writer(
            self.path, self.prefix, series=lambda: list(self._metrics.values()), on_error=self._disarm_triggers,
            interval=self.flush_interval, trigger=_TRIGGER, max_pending=_MAX_PENDING, on_start=on_start,
        )

    def _write_start_meta(self) -> None:
        identity = dict(project=self.project, folder=self.folder, name=self.name, prefix=self.prefix,
                        namespace=self.namespace)
        now, info = time.time(), process_info()
        self._update_meta(lambda meta: _record.started(
            meta, identity, now=now, info=info, description=self.description, tags=self.tags, remote=self.remote))
        self._record_git()

    def _record_git(self) -> None:
        info = git_info()
        if info is not None:
            try:
                self._update_meta(git=info)
            except OSError:
                pass

    def _arm_triggers(self) -> None:
        trigger = self._writer.trigger if self._writer is not None and self._status == RUNNING else 0
        for metric in list(self._metrics.values()):
            metric.trigger = trigger
        self._logs_trigger = trigger

    def _disarm_triggers(self) -> None:
        for metric in list(self._metrics.values()):
            metric.trigger = 0
        self._logs_trigger = 0

    def _pressure(self, owner: Metric | None = None) -> None:
        """The slow path of an append: start, surface errors, apply backpressure.

        ``owner`` is the metric whose queue reached its trigger (None: the logs).
        """
        if self._status != RUNNING:
            self._ensure_started()
        writer = self._writer
        if writer.error is not None:
            self._arm_triggers()  # the error disarmed them; report it once, then go on fast
            writer.check()
        load = owner.queued if owner is not None else writer.logs.__len__
        if load() >= writer.trigger:
            writer.pressure(load)
            # The writer needs the GIL to drain: until it gets it, look again only
            # after another trigger's worth, not on every append.
            trigger = load() + writer.trigger
            if owner is not None:
                owner.trigger = trigger
            else:
                self._logs_trigger = trigger

    def flush(self) -> None:
        """Block until everything written so far is on disk (fsynced)."""
        writer = self._writer
        if writer is None or self._status != RUNNING:
            return
        if not writer.flush(durable=True):
            writer.check(again=True)
        if self._uploader is not None:
            self._uploader.wake()

    def finish(self, status: str | None = None) -> None:
        """Flush, close and record the final status (default COMPLETED, or FAILED
        / CANCELLED when an error or a signal was recorded).

        The data is written first. When the disk refuses it (full, read-only),
        everything accepted is saved to a rescue folder elsewhere (see
        docs/failures.md) or, when no place can hold it, kept in memory for
        another ``finish()``; either way StorageError says where it is.
        """
        if status is not None:
            check_status(status)
        concurrent.futures.wait(pending_saves(self.path))  # files saved in the background, first
        # Before the lock: the sampler's last sample may create a series (which takes it).
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop()
        console, self._console = self._console, None
        if console is not None:
            console.stop()  # its last records reach the writer before it closes
        with self._lock:
            writer = self._stranded
            if writer is not None:
                writer.retry()  # a finish() after a failed one: try the run's own disk again
                final = self._status
            else:
                if self._status != RUNNING:
                    return
                final = status or self._failure or COMPLETED
                self._disarm_triggers()
                writer = self._writer
                writer.close()
                if self._appends_only:
                    self._status = None
                    _lifecycle.unregister(self)
                    return
                self._status = final
                _lifecycle.unregister(self)
            self._stranded = None
            lost = saved = None
            if writer.error is not None:
                lost, saved = save_elsewhere(writer, self.path)
                if saved is None:
                    self._stranded = writer  # kept in memory for another finish()
            meta_error = self._record_end(final)
            uploader, self._uploader = self._uploader, None
            if uploader is not None:
                uploader.close(self.sync_timeout)
            if lost is not None:
                raise StorageError(lost, saved) from writer.error
            if meta_error is not None:
                raise StorageError(
                    f"mldash wrote all data of {self.prefix} but could not record its status "
                    f"{final} in {os.path.join(self.path, META_FILE)}: {meta_error}"
                ) from meta_error

    def _record_end(self, final: str) -> OSError | None:
        now = time.time()
        try:
            self._update_meta(lambda meta: _record.ended(meta, final, now))
        except OSError as error:
            return error
        return None

    def _on_sampler_error(self, error: BaseException) -> None:
        # An append on the sampler's thread met the writer's error: the caller's next
        # call must still be told.
        writer = self._writer
        if isinstance(error, StorageError) and writer is not None:
            writer.report_again()

    def _after_fork(self) -> None:
        self._lock = threading.RLock()  # another thread may have held it at fork time
        self._sampler = None  # the child inherits no thread (_system makes it inert)
        if self._console is not None:
            self._console.after_fork_in_child()  # the parent's output is the parent's
            self._console = None
        self._writer = None
        self._uploader = None
        self._status = None
        self._appends_only = True
        for metric in self._metrics.values():
            metric.take()  # the parent writes what it had queued
        self._disarm_triggers()

    def __enter__(self) -> "Experiment":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            self.finish()
        else:
            self._record_exception(exc, finish=True)

    def log_exception(
        self, exc: BaseException, *, thread: threading.Thread | None = None, uncaught: bool = False
    ) -> None:
        """Record ``exc`` as an error-level log (type, message, traceback) and mark
        the run FAILED (CANCELLED for KeyboardInterrupt); ``finish()`` keeps that.

        For integrations that catch a framework's exception themselves; ``thread``
        names the thread it was raised on, when that is not the caller's;
        ``uncaught``: Python will print its traceback only after the run has
        finished, so the console record gets it now.
        """
        self._ensure_started()
        self._record_exception(exc, finish=False, thread=thread, uncaught=uncaught)

    def _record_exception(self, exc: BaseException, finish: bool, thread=None, uncaught: bool = False) -> None:
        if self._status != RUNNING:
            return
        if (finish or uncaught) and self._console is not None:
            self._console.record("stderr", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        if isinstance(exc, KeyboardInterrupt):
            self.cancel("interrupted (KeyboardInterrupt)")
        else:
            metadata = _lifecycle.error_metadata(exc)
            if thread is not None:
                metadata["thread"] = thread.name
            self.log(f"{type(exc).__name__}: {exc}", level="error", metadata=metadata)
            self._failure = FAILED
            self._update_meta(status_reason=metadata["error_type"])
        if finish:
            _lifecycle.finish_quietly(self)

    def cancel(self, reason: str) -> None:
        """Record that someone stopped the run (a warn log with ``reason``); ``finish()``
        then ends it CANCELLED. Said once: a second call (say, Ctrl-C seen by both a
        framework and mldash's own hook) adds nothing.

        >>> exp.cancel("stopped by the scheduler")  # doctest: +SKIP
        """
        check_text(reason, "reason")
        if self._status != RUNNING or self._failure == CANCELLED:
            return
        self.log(f"Run cancelled: {reason}", level="warn", metadata={"reason": reason})
        self._failure = CANCELLED

    @property
    def started(self) -> bool:
        """True once this process has started (or resumed) the run, also after ``finish()``."""
        return self._status is not None

    @property
    def running(self) -> bool:
        """True from ``start()`` (or the first write) in this process until ``finish()``."""
        return self._status == RUNNING

    def _update_meta(self, changes=None, **values: Any) -> dict:
        return update_document(os.path.join(self.path, META_FILE), changes or values)

    # ---- data ------------------------------------------------------------------
    def metrics(self, name: str) -> Metric:
        """The metric series ``name``; a "/" in the name nests folders.

        >>> exp.metrics("val/accuracy").append(value=0.9, epoch=3)  # doctest: +SKIP
        """
        metric = self._metrics.get(name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    metric = Metric(self.path, name, self._hooks)
                    if self._status == RUNNING:
                        metric.trigger = self._writer.trigger
                    self._metrics[name] = metric
        return metric

    @property
    def files(self):
        """The run's files, ml-dash's builder: ``exp.files(file_path="model.pt", prefix="/models").save()``,
        ``.list()``, ``exp.files(file_id=ID).download(dest_path=...)``, ``.delete()``, ``save_json`` (docs/files.md)."""
        from .files import FilesAccessor

        return FilesAccessor(self.path, self.prefix, self._hooks)

    def history(self, names: Iterable[str] | None = None, x: str = "step"):
        """The run's series (``names``, default every one with ``x``) as one pandas DataFrame,
        outer-joined on ``x`` ("step", "timestamp" or "index") (docs/analysis.md).

        >>> exp.history(["train/loss", "val/loss"])  # doctest: +SKIP
        """
        from ._frames import history

        self._before_read()
        return history(self.path, names, x)

    def metric_names(self) -> list[str]:
        """Every metric series stored for this experiment, sorted."""
        self._before_read()
        return metric_names(self.path)

    def log(self, message: Any, level: str = "info", metadata: dict | None = None) -> None:
        """Record a log line: level debug, info (default), warn, error or fatal.

        >>> exp.log("Epoch completed", metadata={"epoch": 5, "val_loss": 0.4})  # doctest: +SKIP
        """
        check_level(level)
        if not isinstance(message, str):
            message = str(message)
        check_text(message, "log message")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise TypeError(f"log metadata must be a dict, not {type(metadata).__name__}")
            metadata = orjson.Fragment(encode_record(metadata, "log metadata"))
        if self._status != RUNNING:
            self._ensure_started()
        writer = self._writer
        writer.logs.append((_now(), level, message, metadata))
        if len(writer.logs) >= self._logs_trigger:
            self._pressure()

    def read_console(self, start_index: int = 0, limit: int = 1000) -> dict:
        """What the program printed, from ``start_index``, in the same shape as
        ``Metric.read``: each record has index, timestamp, stream ("stdout" or
        "stderr") and text (one line; ``partial`` on a snapshot of a line still open).

        >>> exp.read_console(0, 100)["data"][0]["text"]  # doctest: +SKIP
        'epoch 1: loss 0.41'
        """
        from ._console import read_console

        check_range(start_index, limit)
        self._before_read()
        if not os.path.exists(os.path.join(self.path, CONSOLE_DIR)) and self._remote_reader() is not None:
            return self._remote_reader().read_console(start_index, limit)
        return read_console(self.path, start_index, limit)

    def read_logs(self, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
        """Log records from ``start_index``, in the same shape as ``Metric.read``.

        ``level`` keeps records at that level or above.
        """
        check_range(start_index, limit)
        if level is not None:
            check_level(level)
        self._before_read()
        folder = os.path.join(self.path, LOGS_DIR)
        if not os.path.exists(folder) and self._remote_reader() is not None:
            return self._remote_reader().read_logs(start_index, limit, level)
        return read_log_records(folder, start_index, limit, level)

    def checkpoint(self, path: str | os.PathLike, *, step: int | None = None, upload: bool = False,
                   **info: Any) -> None:
        """Record a saved checkpoint; ``is_best=True`` also marks it as the best. ``upload``
        also keeps the file (or folder) in the run's files under /checkpoints, copied in the
        background; its record, with ``files``, follows once the copy is complete.

        >>> exp.checkpoint("ckpt/epoch=3.ckpt", step=300, score=0.41, is_best=True)  # doctest: +SKIP
        """
        record = _checkpoints.make_record(path, step, info, _now())
        if self._status != RUNNING:
            self._ensure_started()
        if upload:
            _checkpoints.upload(self.files, self.path, record, self._record_checkpoint)
        else:
            self._record_checkpoint(record)

    def _record_checkpoint(self, record: dict) -> None:
        self._writer.extra.append(((checkpoint_records(self.path), CHECKPOINTS_STEM), record))
        self._writer.wake()
        if record.get("is_best"):
            try:
                self._update_meta(best_checkpoint=record)
            except OSError as error:  # not raised as is: a retry would record it twice
                raise StorageError(
                    f"mldash recorded the checkpoint {record['path']!r} but could not mark it as the best in "
                    f"{os.path.join(self.path, META_FILE)}: {error}. Do not record it again."
                ) from error

    def checkpoints(self) -> list[dict]:
        """Every checkpoint recorded with ``checkpoint()``, oldest first."""
        self._before_read()
        return read_checkpoints(self.path)

    @property
    def best_checkpoint(self) -> dict | None:
        return read_document(os.path.join(self.path, META_FILE)).get("best_checkpoint")

    def info(self) -> dict:
        """The contents of experiment.json."""
        self._before_read()
        return read_document(os.path.join(self.path, META_FILE))

    def _before_read(self) -> None:
        writer = self._writer
        if writer is not None and self._status == RUNNING:
            writer.flush(durable=False)

    def _on_document_changed(self, filename: str) -> None:
        if self._uploader is not None:
            self._uploader.wake()

    def _remote_reader(self):
        if not self.remote:
            return None
        if self._remote_client is None:
            from .remote.client import RemoteReader

            self._remote_client = RemoteReader(self._address())
        return self._remote_client

    def _address(self):
        from .remote._http import RunAddress

        return RunAddress(self.remote, self.token, self.namespace or "default", self.prefix, self.path, self.root)

    def __repr__(self) -> str:
        return f"Experiment({self.prefix!r}, status={self.status!r}, path={self.path!r})"
