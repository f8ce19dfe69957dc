"""The background thread that turns queued appends into batched file writes.

The caller's side of an append is a ``deque.append`` (atomic under the GIL); this
thread wakes on a timer or when a queue passes its size trigger, drains every
queue, encodes on its own thread (so a CUDA scalar is read here, not in the
training loop) and appends each series in one locked ``write``.

A failed write keeps its batch for the next try and hands the error to the
caller's next call; nothing accepted is dropped.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from . import _codec
from ._series import SeriesFile

if TYPE_CHECKING:
    from .metrics import Metric

_LINE = _codec.OPTIONS | orjson.OPT_APPEND_NEWLINE


class StorageError(RuntimeError):
    """Points or logs that were accepted could not be written (yet).

    They are kept in memory and retried; this error says so at the next call.
    """


_SLICE = 512


def encode_points(times: list, points: list) -> tuple[list[bytes], array]:
    """Lines ``[milliseconds since the epoch, {fields}]``, joined per slice.

    Returns the joined slices and every line's length (for the offset index).
    Each slice is joined at once because orjson leaves every small result in a
    ~4 KB allocation: holding 200,000 of them would cost ~800 MB.
    """
    dumps = orjson.dumps
    default = _codec.scalar_default
    chunks: list[bytes] = []
    lengths = array("I")
    for start in range(0, len(points), _SLICE):
        part = points[start : start + _SLICE]
        ms = [int(t * 1000) for t in times[start : start + _SLICE]]
        try:
            lines = [dumps((t, f), default=default, option=_LINE) for t, f in zip(ms, part)]
        except Exception:  # one odd value must not hold back the whole series
            lines = [_encode_point(t, f) for t, f in zip(ms, part)]
        else:
            if b"null" in b"".join(lines):
                lines = [
                    _encode_point(t, f) if b"null" in line else line
                    for t, f, line in zip(ms, part, lines)
                ]
        lengths.extend(map(len, lines))
        chunks.append(b"".join(lines))
    return chunks, lengths


def encode_entries(times: list, payloads: list) -> tuple[list[bytes], array]:
    """Queued points in order: (time, fields) to encode, and (None, (bytes, line
    lengths)) for batches that ``append_batch`` already encoded."""
    if None not in times:
        return encode_points(times, payloads)
    chunks: list[bytes] = []
    lengths = array("I")
    run_times: list = []
    run: list = []
    for t, payload in zip(times, payloads):
        if t is not None:
            run_times.append(t)
            run.append(payload)
            continue
        if run:
            c, l = encode_points(run_times, run)
            chunks += c
            lengths += l
            run_times, run = [], []
        chunks.append(payload[0])
        lengths += payload[1]
    if run:
        c, l = encode_points(run_times, run)
        chunks += c
        lengths += l
    return chunks, lengths


def _encode_record(record: dict) -> bytes:
    """A log or checkpoint line; a value that will not encode is kept as its repr
    rather than holding back every record after it."""
    try:
        return _codec.dumps_line(record)
    except Exception:
        return _codec.dumps_line({k: v if k == "index" else repr(v) for k, v in record.items()})


def pack_lines(lines: list[bytes]) -> tuple[list[bytes], array]:
    return [b"".join(lines)], array("I", map(len, lines))


def _encode_point(t: int, fields: dict) -> bytes:
    """The slow path: non-finite floats, ints past 64 bits, odd strings."""
    try:
        return _codec.dumps_line((t, fields))
    except Exception:
        return _codec.dumps_line((t, _safe_fields(fields)))


def _safe_fields(fields: dict) -> dict:
    """Last resort for values orjson rejects late (ints past 64 bits, bad UTF-8)."""
    out = {}
    for key, value in fields.items():
        try:
            orjson.dumps(value, default=_codec.scalar_default)
            out[key] = value
        except Exception:  # e.g. a tensor whose device can no longer be read
            out[key] = float(value) if isinstance(value, int) else repr(value)
    return out


class Writer:
    """One thread per running experiment; owns every file handle it writes."""

    def __init__(self, exp, interval: float, trigger: int, max_pending: int, on_start=None) -> None:
        self.exp = exp
        self.interval = interval
        self.trigger = trigger
        self.max_pending = max_pending
        self.logs: deque = deque()
        self.extra: deque = deque()  # (stem path, record) for other append-only files
        self.error: BaseException | None = None
        self._reported: BaseException | None = None
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._files: dict[str, SeriesFile] = {}
        self._retry: dict[str, tuple[list[bytes], array]] = {}
        self._retry_logs: list = []
        self._retry_extra: list = []
        self._flush_seq = 0
        self._cycles = 0
        self._done_seq = 0
        self._sync_seq = 0
        self._closing = False
        self._on_start = on_start
        self._thread = threading.Thread(target=self._run, name="mldash-writer", daemon=True)
        self._thread.start()

    # ---- the caller's side -------------------------------------------------
    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def pressure(self, queue: deque, weight: int = 1) -> None:
        """Called when a queue reaches its trigger: wake, and block when full."""
        self.wake()
        limit = self.max_pending
        if len(queue) * weight >= limit and threading.current_thread() is not self._thread:
            with self._cond:
                while len(queue) * weight >= limit and self._thread.is_alive():
                    if self.error is not None:
                        break  # a broken disk must not hang training: say so instead
                    self._cond.wait(0.05)

    def check(self) -> None:
        """Raise a write error once, on the caller's thread."""
        error = self.error
        if error is not None and error is not self._reported:
            self._reported = error
            raise StorageError(
                f"mldash could not write to {self.exp.path}: {error}. "
                f"{self.pending()} accepted records are kept in memory and retried."
            ) from error

    def pending(self) -> int:
        n = len(self.logs) + len(self.extra) + len(self._retry_logs) + len(self._retry_extra)
        n += sum(len(lengths) for _, lengths in self._retry.values())
        for metric in list(self.exp._metrics.values()):
            payloads = list(metric._queue)[1::2]
            n += sum(1 if p.__class__ is dict else len(p[1]) for p in payloads)
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

    def rescue(self) -> str | None:
        """Write what could not be stored to a fresh folder elsewhere; return it.

        Used by finish() when the run's own disk keeps failing, so the process can
        exit without taking accepted points with it. Same layout as the run.
        """
        if not (self._retry or self._retry_logs or self._retry_extra):
            return None
        import tempfile

        target = tempfile.mkdtemp(prefix="mldash-rescue-")
        for folder, (chunks, _lengths) in self._retry.items():
            rel = os.path.relpath(folder, self.exp.path)
            os.makedirs(os.path.join(target, rel), exist_ok=True)
            with open(os.path.join(target, rel, "data.jsonl"), "ab") as f:
                f.write(b"".join(chunks))
        if self._retry_logs:
            os.makedirs(os.path.join(target, "logs"), exist_ok=True)
            with open(os.path.join(target, "logs", "logs.jsonl"), "ab") as f:
                for t, level, message, metadata in self._retry_logs:
                    f.write(_codec.dumps_line(
                        {"timestamp": t, "level": level, "message": message, "metadata": metadata}
                    ))
        for (folder, stem), record in self._retry_extra:
            rel = os.path.relpath(folder, self.exp.path)
            os.makedirs(os.path.join(target, rel), exist_ok=True)
            with open(os.path.join(target, rel, stem + ".jsonl"), "ab") as f:
                f.write(_codec.dumps_line(record))
        return target

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
                if self._on_start is not None:
                    self._on_start()  # retried each cycle until it succeeds
                    self._on_start = None
                self._drain()
                if sync > self._done_seq:
                    for f in self._files.values():
                        f.sync()
                self.error = None
            except OSError as error:
                self.error = error
                self.exp._on_write_error()
            except Exception as error:  # a bug must not silently stop all writing
                self.error = error
                self.exp._on_write_error()
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
        for metric in list(self.exp._metrics.values()):
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
        queue = metric._queue
        n = len(queue)
        key = metric._folder
        chunks, lengths = self._retry.pop(key, ([], array("I")))
        n -= n % 2  # whole (time, payload) pairs; extend adds both at once anyway
        if n:
            pop = queue.popleft
            items = [pop() for _ in range(n)]
            new_chunks, new_lengths = encode_entries(items[0::2], items[1::2])
            chunks += new_chunks
            lengths += new_lengths
        if not lengths:
            return
        try:
            self._append(key, "data", lambda _first: (chunks, lengths))
        except BaseException:  # whatever failed, the batch stays for the next try
            self._retry[key] = (chunks, lengths)
            raise

    def _drain_logs(self) -> None:
        n = len(self.logs)
        records = self._retry_logs
        self._retry_logs = []
        if n:
            pop = self.logs.popleft
            records += [pop() for _ in range(n)]
        if not records:
            return

        def build(first: int) -> tuple[list[bytes], array]:
            return pack_lines([
                _encode_record(
                    {"index": first + i, "timestamp": t, "level": level, "message": message, "metadata": metadata}
                )
                for i, (t, level, message, metadata) in enumerate(records)
            ])

        try:
            self._append(os.path.join(self.exp.path, "logs"), "logs", build)
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
            try:
                self._append(
                    folder,
                    stem,
                    lambda first, records=records: pack_lines(
                        [_encode_record({"index": first + i, **r}) for i, r in enumerate(records)]
                    ),
                )
            except Exception as e:
                self._retry_extra += [((folder, stem), r) for r in records]
                failed = e
        if failed is not None:
            raise failed
