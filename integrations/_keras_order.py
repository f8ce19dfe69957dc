"""Batch points of MLDashCallback, written in step order and only while a fit may write.

Keras 3 runs ``on_train_batch_end`` on worker threads when every callback is
async-safe (torch and jax backends). Those threads finish batch ends in any order
(each first waits for its own batch's values), and after a failed fit they go on
running the ones still queued. :class:`BatchWriter` handles both:

- a small reorder buffer keeps every series in step order: a batch's points are
  written once every earlier logged step of the epoch is written. The logged steps
  are known in advance, so nothing waits on a guess; anything still held is written,
  sorted, at epoch end, and the buffer never holds more than ``MAX_HELD`` steps;
- a gate, closed when a fit failed: a batch end that comes after that writes nothing,
  so it cannot resume the experiment whose failure was just recorded. The check and
  the write happen under one lock, so no write is half done when the gate closes.
"""

from __future__ import annotations

import heapq
import threading
from typing import Callable

__all__ = ["BatchWriter"]

MAX_HELD = 64


class BatchWriter:
    """Points are ``[(metric, fields), ...]`` for one logged batch step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list = []
        self._seq = 0
        self._expected = 0
        self._every = 1
        self._chunk = 1
        self.open = True

    def start_epoch(self, base: int, every: int, chunk: int) -> None:
        """A new epoch whose first batch follows optimizer iteration ``base``; steps
        that are multiples of ``every`` are logged, Keras steps ``chunk`` at a time."""
        with self._lock:
            self._write_held()
            self._every, self._chunk = every, chunk
            self._expected = self._next_logged(base)

    def write(self, step: int, points: list) -> None:
        with self._lock:
            if not self.open:
                return  # a batch end of a fit that failed, run after the failure was recorded
            held = self._held
            if step == self._expected and not held:
                for metric, fields in points:
                    metric.append(**fields)
                self._expected = self._next_logged(step)
                return
            heapq.heappush(held, (step, self._seq, points))
            self._seq += 1
            while held and (held[0][0] <= self._expected or len(held) > MAX_HELD):
                first, _, first_points = heapq.heappop(held)
                for metric, fields in first_points:
                    metric.append(**fields)
                if first >= self._expected:
                    self._expected = self._next_logged(first)

    def release(self) -> None:
        """Write everything held, in step order (epoch end, fit end)."""
        with self._lock:
            self._write_held()

    def reopen(self) -> None:
        with self._lock:
            self.open = True

    def close(self) -> None:
        """Write what is held, then drop every later write until ``reopen``."""
        with self._lock:
            self._write_held()
            self.open = False

    def if_open(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (another write from a batch end) only while the gate is open."""
        with self._lock:
            if self.open:
                fn()

    def _write_held(self) -> None:
        held, self._held = self._held, []
        for _step, _seq, points in sorted(held, key=lambda item: item[:2]):
            for metric, fields in points:
                metric.append(**fields)

    def _next_logged(self, step: int) -> int:
        """The first logged batch step after ``step`` (a chunk end)."""
        n, chunk = self._every, self._chunk
        if chunk == 1:
            return (step // n + 1) * n
        candidate = step + chunk
        while candidate // n == (candidate - chunk) // n:
            candidate += chunk
        return candidate

    def __getstate__(self):
        # Keras may deepcopy/pickle callbacks; a lock cannot travel.
        state = self.__dict__.copy()
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
