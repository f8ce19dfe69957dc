"""The background thread that turns queued appends into batched file writes.

The caller's side of an append only queues (see ``_queue.py``); this thread
wakes on a timer or when a queue passes its size trigger, takes every queue,
encodes on its own thread (so a CUDA scalar is read here, not in the training
loop) and appends each series in one locked ``write``.

A failed write keeps its batch for the next try and hands the error to the
caller's next call; nothing accepted is dropped. When the disk still fails at
``finish()``, ``rescue()`` writes everything kept to a folder elsewhere. A
point that cannot be encoded at all (a bug, never user input: that is checked
at the call) is set aside and reported in the run's log; the rest is written.
Images and histograms (``_media``) are made here too: PNG encoded and stored in
the run's files, or reduced to bins, before their points are encoded.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import orjson

from . import _codec
from ._lines import Lines, count_points, encode_entries, split_points
from ._runfolder import LOGS_DIR, LOGS_STEM, METRICS_DIR
from ._series import SeriesFile

if TYPE_CHECKING:
    from .metrics import Metric

class StorageError(RuntimeError):
    """Points or logs that were accepted could not be written (yet).

    They are kept in memory and retried; this error says so at the next call.
    Raised by ``finish()``, ``saved_to`` is the rescue folder that holds them
    (None: still in memory, call ``finish()`` again).
    """

    def __init__(self, message: str, saved_to: str | None = None) -> None:
        super().__init__(message)
        self.saved_to = saved_to


RESCUE_ENV = "MLDASH_RESCUE_DIR"


def _encode_record(record: dict) -> bytes:
    """A log or checkpoint line. The API checks what it accepts, so this cannot
    fail for a user's value; should it fail anyway, the record keeps its index,
    time and level (readers rely on them) and the rest is kept as text, rather
    than holding back every record after it."""
    try:
        return _codec.dumps_line(record)
    except Exception as error:
        kept = {k: record[k] for k in ("index", "timestamp", "level") if k in record}
        kept["message"] = repr(record.get("message", record.get("path")))
        kept["metadata"] = {"mldash_error": f"could not be stored as JSON: {error}", "repr": repr(record)[:10_000]}
        return _codec.dumps_line(kept)


def rescue_folders() -> list[str]:
    """Where ``rescue()`` tries to write, in order: $MLDASH_RESCUE_DIR, the temp
    folder, ~/.cache/mldash/rescue, the working directory."""
    home = os.path.join(os.path.expanduser("~"), ".cache", "mldash", "rescue")
    found = [os.environ.get(RESCUE_ENV), tempfile.gettempdir(), home, os.getcwd()]
    return list(dict.fromkeys(f for f in found if f))


def pack_lines(lines: list[bytes], first: int) -> Lines:
    out = Lines(first)
    out.add_lines(lines)
    return out


class Writer:
    """One thread per running experiment; owns every file handle it writes.

    It knows the run only through narrow handles: its folder ``path`` and its
    ``prefix`` (named in a rescue), ``series()`` (the metrics whose queues it
    drains), ``on_error()`` (called on this thread when a write fails, so the
    next append takes the slow path) and ``on_start()`` (run first, retried each
    cycle until it succeeds).
    """

    def __init__(
        self,
        path: str,
        prefix: str,
        series: Callable[[], list["Metric"]],
        on_error: Callable[[], None],
        interval: float,
        trigger: int,
        max_pending: int,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.prefix = prefix
        self._series = series
        self._on_error = on_error
        self.interval = interval
        self.trigger = trigger
        self.max_pending = max_pending
        self.logs: deque = deque()
        self.extra: deque = deque()  # (stem path, record) for other append-only files
        self.error: BaseException | None = None
        self._said = False  # the current run of failures was reported to the caller
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._files: dict[str, SeriesFile] = {}
        self._retry: dict[str, list] = {}  # a metric's folder: entries not yet written
        self._retry_logs: list = []
        self._retry_extra: list = []
        self._flush_seq = 0
        self._cycles = 0
        self._done_seq = 0
        self._sync_seq = 0
        self._closing = False
        self._on_start = on_start
        self._media = None  # the run's media store (_media.RunMedia), made for the first image
        self._thread = threading.Thread(target=self._run, name="mldash-writer", daemon=True)
        self._thread.start()

    # ---- the caller's side -------------------------------------------------
    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def pressure(self, load) -> None:
        """Called when a queue reaches its trigger: wake, and block while ``load()``
        (the queue's size) is at ``max_pending``."""
        self.wake()
        limit = self.max_pending
        if load() >= limit and threading.current_thread() is not self._thread:
            with self._cond:
                while load() >= limit and self._thread.is_alive():
                    if self.error is not None:
                        break  # a broken disk must not hang training: say so instead
                    self._cond.wait(0.05)

    def check(self, again: bool = False) -> None:
        """Raise a write error on the caller's thread: once for each run of failures
        (every retry fails anew, with a new error), or ``again`` (an explicit flush)."""
        error = self.error
        if error is not None and (again or not self._said):
            self._said = self._said or not again  # a flush's answer is not the appends' report
            raise StorageError(
                f"mldash could not write to {self.path}: {error}. "
                f"{self.pending()} accepted records are kept in memory and retried."
            ) from error

    def report_again(self) -> None:
        """The last report did not reach the caller (it was raised on another thread)."""
        self._said = False

    def pending(self) -> int:
        n = len(self.logs) + len(self.extra) + len(self._retry_logs) + len(self._retry_extra)
        n += sum(count_points(entries) for entries in self._retry.values())
        for metric in self._series():
            n += metric.queued_points()
        return n

    def flush(self, durable: bool = True, timeout: float | None = None) -> bool:
        """Block until all queued so far is written (and fsynced when durable)."""
        if threading.current_thread() is self._thread:
            return True
        with self._cond:
            self._flush_seq += 1
            target = self._flush_seq
            if durable:
                self._sync_seq = target
            start_cycle = self._cycles
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._done_seq < target and self._thread.is_alive():
                if self.error is not None and self._cycles >= start_cycle + 2:
                    return False  # the disk is still failing: report, don't hang
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
        return self.error is None

    def close(self) -> None:
        self._closing = True
        self.flush(durable=True)
        self._wake.set()
        self._thread.join(timeout=30)
        for f in self._files.values():
            f.close()

    def retry(self) -> None:
        """One more write of everything kept, on the caller's thread (the writer
        thread has stopped): for a ``finish()`` called again after a failure."""
        try:
            self._drain()
            for f in self._files.values():
                f.sync()
            self.error = None
        except Exception as error:
            self.error = error

    def _keep_queued(self) -> None:
        """Move what is still queued into the retry lists (the writer has stopped)."""
        for metric in self._series():
            entries = metric.take()
            if entries:
                self._retry[metric.folder] = self._retry.get(metric.folder, []) + entries
        while self.logs:
            self._retry_logs.append(self.logs.popleft())
        while self.extra:
            self._retry_extra.append(self.extra.popleft())

    def rescue(self) -> str | None:
        """Write what could not be stored to a fresh folder elsewhere; return it.

        Used by finish() when the run's own disk keeps failing, so the process can
        exit without taking accepted points with it. The folder has the run's
        layout (each data.jsonl holds the lines that follow the run's own, in
        order) and a RESCUE.json saying whose they are. Tries each of
        ``rescue_folders()``; when none can hold it all, returns None and keeps
        everything in memory for another ``retry()``.
        """
        self._keep_queued()
        if not (self._retry or self._retry_logs or self._retry_extra):
            return None
        files = self._rescue_files()
        manifest = _codec.dumps({
            "prefix": self.prefix, "path": self.path, "time": time.time(),
            "reason": str(self.error), "files": sorted(files),
        })
        for base in rescue_folders():
            target = None
            try:
                os.makedirs(base, exist_ok=True)
                name = self.prefix.rsplit("/", 1)[-1][:60]
                target = tempfile.mkdtemp(prefix=f"mldash-rescue-{name}-", dir=base)
                for rel, data in files.items():
                    os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
                    with open(os.path.join(target, rel), "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                with open(os.path.join(target, "RESCUE.json"), "wb") as f:
                    f.write(manifest)
                    os.fsync(f.fileno())
            except OSError:
                if target is not None:
                    _remove_tree(target)
                continue
            self._retry, self._retry_logs, self._retry_extra = {}, [], []
            return target
        return None

    def _rescue_files(self) -> dict[str, bytes]:
        files: dict[str, bytes] = {}

        def add(rel: str, data: bytes) -> None:
            files[rel] = files.get(rel, b"") + data

        for folder, entries in self._retry.items():
            rel = os.path.relpath(folder, self.path)
            if _has_media(entries):  # images not stored yet: their PNGs go into the rescue's files
                from ._media import RescueMedia, resolve

                name = os.path.relpath(folder, os.path.join(self.path, METRICS_DIR)).replace(os.sep, "/")
                entries, bad = resolve(list(entries), name, RescueMedia(add, self.prefix))
                for point, error in bad:
                    self._set_aside(name, point, error, self._retry_logs)
            add(os.path.join(rel, "data.jsonl"), b"".join(encode_entries(entries, 0).chunks))
        for t, level, message, metadata in self._retry_logs:
            add(os.path.join(LOGS_DIR, LOGS_STEM + ".jsonl"), _encode_record(
                {"timestamp": t, "level": level, "message": message, "metadata": metadata}
            ))
        for (folder, stem), record in self._retry_extra:
            lines = b"".join(record(0).chunks) if callable(record) else _encode_record(record)
            add(os.path.join(os.path.relpath(folder, self.path), stem + ".jsonl"), lines)
        return files

    # ---- the writer thread --------------------------------------------------
    def _run(self) -> None:
        first = True
        while True:
            if not first:
                self._wake.wait(self.interval if self.error is None else min(self.interval * 4, 2.0))
            first = False
            self._wake.clear()
            with self._cond:
                seq, sync = self._flush_seq, self._sync_seq
            try:
                start_error = None
                if self._on_start is not None:
                    try:
                        self._on_start()  # retried each cycle until it succeeds
                        self._on_start = None
                    except Exception as error:
                        start_error = error  # the data is written all the same, first
                self._drain()
                if start_error is not None:
                    raise start_error
                if sync > self._done_seq:
                    for f in self._files.values():
                        f.sync()
                self.error = None
                self._said = False  # caught up: a later failure is news again
            except OSError as error:
                self.error = error
                self._on_error()
            except Exception as error:  # a bug must not silently stop all writing
                self.error = error
                self._on_error()
            with self._cond:
                if self.error is None or self._closing:
                    self._done_seq = max(self._done_seq, seq)
                self._cycles += 1
                self._cond.notify_all()
            if self._closing and self._done_seq >= self._flush_seq:
                return

    def _append(self, folder: str, stem: str, build) -> None:
        key = os.path.join(folder, stem)
        f = self._files.get(key)
        try:
            if f is None:
                f = self._files[key] = SeriesFile(folder, stem)
            f.append(build)
        except OSError:
            # Reopen on the next try: the file may have been replaced, or the disk fixed.
            if f is not None:
                f.close()
            self._files.pop(key, None)
            raise

    def _drain(self) -> None:
        error: OSError | None = None
        for metric in self._series():
            try:
                self._drain_metric(metric)
            except OSError as e:
                error = e
        try:
            self._drain_logs()
            self._drain_extra()
        except OSError as e:
            error = e
        if error is not None:
            raise error

    def _drain_metric(self, metric: "Metric") -> None:
        key = metric.folder
        entries = metric.take()
        if metric.trigger > self.trigger:  # raised while waiting for this drain
            metric.trigger = self.trigger
        retry = self._retry.pop(key, None)
        if retry:
            entries = retry + entries
        if not entries:
            return
        if getattr(metric, "has_media", False):
            entries = self._make_media(metric, entries)
            if not entries:
                return
        try:
            # Encoded under the file lock: where the STRIDE marks fall depends on
            # the first index, which another process may have moved.
            self._append(key, "data", lambda first: encode_entries(entries, first))
        except OSError:  # the entries stay for the next try
            self._retry[key] = entries
            raise
        except Exception as error:  # a point that cannot be encoded: set it aside
            kept, bad = self._salvage(metric.name, entries, error)
            self._retry[key] = kept
            if not bad:
                raise  # no point's fault: all are kept, and the error reported
            if kept:
                self._drain_metric(metric)

    def _make_media(self, metric: "Metric", entries: list) -> list:
        """The entries with each image and histogram made (``_media.resolve``); a point
        whose media cannot be made is set aside as in ``_salvage``. A failing disk keeps
        them all for the next try (the PNGs made so far are kept with them)."""
        from ._media import RunMedia, resolve

        if self._media is None:
            self._media = RunMedia(self.path, self.prefix)
        try:
            kept, bad = resolve(entries, metric.name, self._media)
        except OSError:
            self._retry[metric.folder] = entries
            raise
        for point, error in bad:
            self._set_aside(metric.name, point, error)
        return kept

    def _set_aside(self, name: str, point: list, error: Exception, logs=None) -> None:
        """Report a point that cannot be stored as a warning in the run's log, with its repr."""
        metadata = _codec.dumps({"series": name, "point": repr(point)[:10_000]}, default=repr)
        record = (time.time(), "warn", f"mldash could not store a point of series {name!r}: {error}",
                  orjson.Fragment(metadata))
        (self.logs if logs is None else logs).append(record)

    def _salvage(self, name: str, entries: list, error: Exception) -> tuple[list, list]:
        """(the entries that encode, the points that do not); each of those is
        reported as a warning in the run's log, with its repr."""
        good, bad = split_points(entries)
        kept: list = []
        for point in good:
            try:
                encode_entries(point, 0)
            except Exception:
                bad.append(point)
            else:
                kept += point
        for point in bad:
            self._set_aside(name, point, error)
        return kept, bad

    def _drain_logs(self) -> None:
        n = len(self.logs)
        records = self._retry_logs
        self._retry_logs = []
        if n:
            pop = self.logs.popleft
            records += [pop() for _ in range(n)]
        if not records:
            return

        def build(first: int) -> Lines:
            return pack_lines([
                _encode_record(
                    {"index": first + i, "timestamp": t, "level": level, "message": message, "metadata": metadata}
                )
                for i, (t, level, message, metadata) in enumerate(records)
            ], first)

        try:
            self._append(os.path.join(self.path, LOGS_DIR), LOGS_STEM, build)
        except BaseException:
            self._retry_logs = records
            raise

    def _drain_extra(self) -> None:
        n = len(self.extra)
        items = self._retry_extra
        self._retry_extra = []
        if n:
            pop = self.extra.popleft
            items += [pop() for _ in range(n)]
        by_file: dict[tuple[str, str], list[Any]] = {}
        for (folder, stem), record in items:
            by_file.setdefault((folder, stem), []).append(record)
        failed: Exception | None = None
        for (folder, stem), records in by_file.items():
            # A record is a dict (a checkpoint), or a callable that builds its own lines
            # (the console's batches, encoded on the capture's thread); each run of
            # dicts or each callable is one append, and only what was not written is kept.
            while records:
                if callable(records[0]):
                    build, done = records[0], 1
                else:
                    done = next((k for k, r in enumerate(records) if callable(r)), len(records))
                    build = lambda first, part=records[:done]: pack_lines(  # noqa: E731
                        [_encode_record({"index": first + i, **r}) for i, r in enumerate(part)], first
                    )
                try:
                    self._append(folder, stem, build)
                except Exception as e:
                    self._retry_extra += [((folder, stem), r) for r in records]
                    failed = e
                    break
                records = records[done:]
        if failed is not None:
            raise failed


def _has_media(entries: list) -> bool:
    """Whether queued entries hold an image or histogram not made yet (their classes
    are ``_media``'s; looked up by name, so no point needs that module loaded)."""
    media = sys.modules.get("mldash._media")
    return media is not None and any(v.__class__ in media.MEDIA_TYPES for v in entries)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def save_elsewhere(writer: "Writer", path: str) -> tuple[str, str | None]:
    """Rescue what the disk of the run at ``path`` refused: (the message that says where it
    went, the folder; None: nowhere could hold it, the writer keeps it in memory)."""
    count, error = writer.pending(), writer.error
    try:
        saved = writer.rescue()
    except Exception as rescue_error:  # never lose the data to a bug in the rescue
        saved, error = None, f"{error}; the rescue failed too: {rescue_error}"
    if saved is not None:
        return (
            f"mldash could not write {count} accepted records to {path}: {error}. "
            f"They were saved to {saved} instead (see RESCUE.json there)."
        ), saved
    return (
        f"mldash could not write {count} accepted records to {path}: {error}, and no rescue "
        f"folder could hold them either (tried {', '.join(rescue_folders())}; set ${RESCUE_ENV} "
        "to another disk). They are kept in memory: free some space and call finish() again."
    ), None
