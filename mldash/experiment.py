"""The Experiment: one run's parameters, metrics, logs and status."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from time import time as _now
from typing import Any, Iterable

import orjson

from . import _codec, _lifecycle
from ._environment import git_info, process_info
from ._naming import check_part, default_name, split_path
from ._series import SeriesReader
from ._writer import StorageError, Writer
from .metrics import Metric, _check_range
from .params import Params, read_document, update_document

RUNNING, COMPLETED, FAILED, CANCELLED = "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
STATUSES = (RUNNING, COMPLETED, FAILED, CANCELLED)
LEVELS = ("debug", "info", "warn", "error", "fatal")
_LEVEL_SET = frozenset(LEVELS)

META_FILE = "experiment.json"
# Queue entries (see _queue.py; a {value, step} point is 4): wake the writer at
# ~10k points, block the caller at ~200k, whichever series they are in.
_TRIGGER = 40_000
_MAX_PENDING = 800_000


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


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
    ) -> None:
        folder_parts: list[str] = split_path(folder, "folder") if folder else []
        if prefix is not None:
            parts = split_path(prefix, "prefix")
            if len(parts) == 1:
                prefix_project, prefix_name, prefix_folder = None, parts[0], []
            else:
                prefix_project, prefix_name, prefix_folder = parts[0], parts[-1], parts[1:-1]
            for given, found, what in (
                (project, prefix_project, "project"),
                (name, prefix_name, "name"),
            ):
                if given is not None and found is not None and given != found:
                    raise ValueError(f"{what}={given!r} contradicts prefix={prefix!r}")
            if folder_parts and prefix_folder and folder_parts != prefix_folder:
                raise ValueError(f"folder={folder!r} contradicts prefix={prefix!r}")
            project = prefix_project or project
            name = prefix_name
            folder_parts = prefix_folder or folder_parts
        self.project: str = check_part(project or os.environ.get("MLDASH_PROJECT") or "default", "project")
        self.name: str = check_part(name, "name") if name is not None else default_name()
        self.folder: str | None = "/".join(folder_parts) or None
        self.namespace = check_part(namespace, "namespace") if namespace else None
        self.prefix = "/".join([self.project, *folder_parts, self.name])
        self.root = os.path.abspath(os.fspath(root or os.environ.get("MLDASH_ROOT") or ".mldash"))
        self.path = os.path.join(self.root, self.project, *folder_parts, self.name)
        self.remote = remote if remote is not None else os.environ.get("MLDASH_URL") or None
        self.token = token if token is not None else os.environ.get("MLDASH_TOKEN") or None
        self.description = description
        if isinstance(tags, str):
            raise TypeError("tags must be a list of strings, not one string")
        self.tags = [check_part(t, "tag") for t in tags] if tags is not None else None
        self.flush_interval = (
            flush_interval if flush_interval is not None else _env_float("MLDASH_FLUSH_INTERVAL", 0.5)
        )
        if self.flush_interval <= 0:
            raise ValueError("flush_interval must be > 0 seconds")
        self.params = Params(self)
        self.summary = Params(self, "summary.json")
        self._metrics: dict[str, Metric] = {}
        self._logs_trigger = 0
        self._lock = threading.RLock()
        self._status: str | None = None
        self._failure: str | None = None
        self._writer: Writer | None = None
        self._uploader = None
        self._remote_client = None
        self._forked = False

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
        os.makedirs(self.path, exist_ok=True)  # fails here, at the call, on a bad root
        self._failure = None
        if self._forked:  # appends only: the parent owns the run's record and upload
            self._writer = Writer(self, interval=self.flush_interval, trigger=_TRIGGER, max_pending=_MAX_PENDING)
            self._status = RUNNING
            self._arm_triggers()
            _lifecycle.register(self)
            return
        # experiment.json is written by the writer thread, first thing: its fsync
        # and the git subprocess stay out of the training loop.
        self._writer = Writer(
            self,
            interval=self.flush_interval,
            trigger=_TRIGGER,
            max_pending=_MAX_PENDING,
            on_start=self._write_start_meta,
        )
        self._status = RUNNING
        self._arm_triggers()
        _lifecycle.register(self)
        if self.remote:
            from .remote.uploader import Uploader

            self._uploader = Uploader(self)

    def _write_start_meta(self) -> None:
        now = time.time()
        info = process_info()

        def started(meta: dict) -> dict:
            if "id" not in meta:  # new (other keys may already be there: an early error)
                meta.update(
                    id=uuid.uuid4().hex,
                    project=self.project,
                    folder=self.folder,
                    name=self.name,
                    prefix=self.prefix,
                    namespace=self.namespace,
                    created_at=now,
                    started_at=now,
                    sessions=0,
                    tags=[],
                    description=None,
                )
            meta.update(info)
            meta["status"] = RUNNING
            meta["sessions"] = meta.get("sessions", 0) + 1
            meta["resumed_at"] = now if meta["sessions"] > 1 else None
            meta["finished_at"] = None
            meta["updated_at"] = now
            if self.description is not None:
                meta["description"] = self.description
            if self.tags is not None:
                meta["tags"] = sorted(set(meta.get("tags") or []) | set(self.tags))
            if self.remote:
                meta["remote"] = self.remote
            return meta

        self._update_meta(started)
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
            metric._trigger = trigger
        self._logs_trigger = trigger

    def _disarm_triggers(self) -> None:
        for metric in list(self._metrics.values()):
            metric._trigger = 0
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
        load = owner._load if owner is not None else writer.logs.__len__
        if load() >= writer.trigger:
            writer.pressure(load)
            # The writer needs the GIL to drain: until it gets it, look again only
            # after another trigger's worth, not on every append.
            trigger = load() + writer.trigger
            if owner is not None:
                owner._trigger = trigger
            else:
                self._logs_trigger = trigger

    def _on_write_error(self) -> None:
        # Runs on the writer thread: send the next call down the slow path.
        self._disarm_triggers()

    def flush(self) -> None:
        """Block until everything written so far is on disk (fsynced)."""
        writer = self._writer
        if writer is None or self._status != RUNNING:
            return
        if not writer.flush(durable=True):
            writer._reported = None
            writer.check()
        if self._uploader is not None:
            self._uploader.wake()

    def finish(self, status: str | None = None) -> None:
        """Flush, close and record the final status (default COMPLETED, or FAILED
        / CANCELLED when an error or a signal was recorded)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        with self._lock:
            if self._status != RUNNING:
                return
            final = status or self._failure or COMPLETED
            self._disarm_triggers()
            writer = self._writer
            writer.close()
            if self._forked:
                self._status = None
                _lifecycle.unregister(self)
                return
            self._status = final
            _lifecycle.unregister(self)
            now = time.time()

            def ended(meta: dict) -> dict:
                started = meta.get("resumed_at") or meta.get("started_at") or now
                duration = (meta.get("duration") or 0) + (now - started)
                return {"status": final, "finished_at": now, "updated_at": now, "duration": duration}

            self._update_meta(ended)
            uploader, self._uploader = self._uploader, None
            if uploader is not None:
                uploader.close()
            if writer.error is not None:
                try:
                    saved = writer.rescue()
                    where = f"; they were saved to {saved} instead" if saved else ""
                except OSError as error:
                    where = f"; saving them elsewhere failed too ({error})"
                raise StorageError(
                    f"mldash could not write {writer.pending()} accepted records to {self.path}: "
                    f"{writer.error}{where}"
                ) from writer.error

    def _after_fork(self) -> None:
        self._lock = threading.RLock()  # another thread may have held it at fork time
        self._writer = None
        self._uploader = None
        self._status = None
        self._forked = True
        for metric in self._metrics.values():
            metric._take()  # the parent writes what it had queued
        self._disarm_triggers()

    def _finish_quietly(self) -> None:
        try:
            self.finish()
        except Exception as error:  # at exit there is nobody left to raise to
            print(f"mldash: finishing {self.prefix} failed: {error}", file=sys.stderr)

    def __enter__(self) -> "Experiment":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            self.finish()
        else:
            self._record_exception(exc, finish=True)

    def log_exception(self, exc: BaseException) -> None:
        """Record ``exc`` as an error-level log (type, message, traceback) and mark
        the run FAILED (CANCELLED for KeyboardInterrupt); ``finish()`` keeps that.

        For integrations that catch a framework's exception themselves.
        """
        self._ensure_started()
        self._record_exception(exc, finish=False)

    def _record_exception(self, exc: BaseException, finish: bool, thread=None) -> None:
        if self._status != RUNNING:
            return
        if isinstance(exc, KeyboardInterrupt):
            self._record_cancel("interrupted (KeyboardInterrupt)")
        else:
            metadata = _lifecycle.error_metadata(exc)
            if thread is not None:
                metadata["thread"] = thread.name
            self.log(f"{type(exc).__name__}: {exc}", level="error", metadata=metadata)
            self._failure = FAILED
            self._update_meta(status_reason=metadata["error_type"])
        if finish:
            self._finish_quietly()

    def _record_cancel(self, reason: str) -> None:
        if self._status != RUNNING:
            return
        self.log(f"Run cancelled: {reason}", level="warn", metadata={"reason": reason})
        self._failure = CANCELLED

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
                    metric = Metric(self, name)
                    if self._status == RUNNING:
                        metric._trigger = self._writer.trigger
                    self._metrics[name] = metric
        return metric

    def metric_names(self) -> list[str]:
        """Every metric series stored for this experiment, sorted."""
        self._before_read()
        base = os.path.join(self.path, "metrics")
        names = []
        for folder, _dirs, files in os.walk(base):
            if "data.jsonl" in files:
                names.append(os.path.relpath(folder, base).replace(os.sep, "/"))
        return sorted(names)

    def log(self, message: Any, level: str = "info", metadata: dict | None = None) -> None:
        """Record a log line: level debug, info (default), warn, error or fatal.

        >>> exp.log("Epoch completed", metadata={"epoch": 5, "val_loss": 0.4})  # doctest: +SKIP
        """
        if level not in _LEVEL_SET:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        if not isinstance(message, str):
            message = str(message)
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise TypeError(f"log metadata must be a dict, not {type(metadata).__name__}")
            try:
                metadata = orjson.Fragment(_codec.dumps(metadata, default=_metadata_default))
            except TypeError as error:
                raise TypeError(f"log metadata cannot be stored: {error}") from None
        if self._status != RUNNING:
            self._ensure_started()
        writer = self._writer
        writer.logs.append((_now(), level, message, metadata))
        if len(writer.logs) >= self._logs_trigger:
            self._pressure()

    def read_logs(self, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
        """Log records from ``start_index``, in the same shape as ``Metric.read``.

        ``level`` keeps records at that level or above.
        """
        _check_range(start_index, limit)
        if level is not None and level not in _LEVEL_SET:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        self._before_read()
        folder = os.path.join(self.path, "logs")
        if not os.path.exists(folder) and self._remote_reader() is not None:
            return self._remote_reader().read_logs(start_index, limit, level)
        return read_log_records(folder, start_index, limit, level)

    def checkpoint(self, path: str | os.PathLike, *, step: int | None = None, **info: Any) -> None:
        """Record a saved checkpoint; ``is_best=True`` also marks it as the best.

        >>> exp.checkpoint("ckpt/epoch=3.ckpt", step=300, score=0.41, is_best=True)  # doctest: +SKIP
        """
        record = {"timestamp": _now(), "path": os.fspath(path), "step": step}
        record.update({k: _metadata_default(v) if not _plain(v) else v for k, v in info.items()})
        if self._status != RUNNING:
            self._ensure_started()
        folder = os.path.join(self.path, "checkpoints")
        self._writer.extra.append(((folder, "checkpoints"), record))
        self._writer.wake()
        if info.get("is_best"):
            self._update_meta(best_checkpoint=record)

    def checkpoints(self) -> list[dict]:
        """Every checkpoint recorded with ``checkpoint()``, oldest first."""
        self._before_read()
        lines, _ = SeriesReader(os.path.join(self.path, "checkpoints"), "checkpoints").lines()
        return [_codec.loads(line) for line in lines]

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

    def _on_document_changed(self, filename: str, changes: dict) -> None:
        if self._uploader is not None:
            self._uploader.wake()

    def _remote_reader(self):
        if not self.remote:
            return None
        if self._remote_client is None:
            from .remote.client import RemoteReader

            self._remote_client = RemoteReader(self)
        return self._remote_client

    def __repr__(self) -> str:
        return f"Experiment({self.prefix!r}, status={self.status!r}, path={self.path!r})"


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, dict))


def _metadata_default(value: Any) -> Any:
    """Make numpy/torch values, paths and other objects storable in metadata."""
    from .params import to_json_value

    return to_json_value(value)


def read_log_records(folder: str, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
    reader = SeriesReader(folder, "logs")
    if level is None:
        lines, total = reader.lines(start_index, limit)
        records = [_codec.loads(line) for line in lines if line]
    else:
        floor = LEVELS.index(level)
        lines, total = reader.lines(start_index, None)
        records = []
        for line in lines:
            record = _codec.loads(line)
            if LEVELS.index(record.get("level", "info")) >= floor:
                records.append(record)
                if len(records) >= limit:
                    break
    end = records[-1]["index"] if records else start_index - 1
    return {
        "data": records,
        "start_index": start_index,
        "end_index": end,
        "total": total,
        "has_more": end + 1 < total,
    }
