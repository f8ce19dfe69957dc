"""The local dashboard's background loader: big series parsed before they are asked for.

One daemon thread with two queues: a page being opened (``push(urgent=True)``)
before start-up warming. Between pieces of a parse it steps aside while the
source serves a request; a big series the disk cache lacks is parsed by a helper
process straight into the cache (no contention for this process's GIL).
It reaches the source only through its public loading methods (``entry``,
``try_cache``, ``load_step``, ``save``, ``busy``, ``cache``, ``root``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from .._runfolder import DATA_FILE
from .loading import CACHE_MIN_BYTES, SeriesEntry, file_size, recent_big_series


class Warmer:
    """One daemon thread that loads series ahead of the requests for them.

    Two queues: ``warm(prefix)`` (a page being opened) before start-up warming.
    Between pieces of a parse it steps aside while the source serves a request;
    a request for the series being warmed simply continues its parse.
    """

    def __init__(self, source: Any) -> None:  # a local.LocalSource
        self.source = source
        self.urgent: deque = deque()
        self.later: deque = deque()
        self.cond = threading.Condition()
        self.working = False
        self.stopped = False
        self.thread: threading.Thread | None = None
        self.parsing: dict = {}  # folder -> the helper process parsing it

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="mldash-ui-warm", daemon=True)
            self.thread.start()

    def push(self, folders: list[str], urgent: bool = False) -> None:
        with self.cond:
            if self.stopped:
                return
            if urgent:  # a page polls its run: requeue what is still queued, ahead of the rest
                moved = set(folders)
                kept = [t for t in self.urgent if not (t[0] == "load" and t[1] in moved)]
                self.urgent = deque(("load", f) for f in folders)
                self.urgent.extend(kept)
                self.later = deque(t for t in self.later if not (t[0] == "load" and t[1] in moved))
            else:
                self.later.extend(("load", f) for f in folders)
            self._start()
            self.cond.notify()

    def push_recent(self, budget: int) -> None:
        with self.cond:
            if self.stopped:
                return
            self.later.append(("recent", budget))
            self._start()
            self.cond.notify()

    def save_later(self, entry: SeriesEntry) -> None:
        if self.source.cache is None or entry.state.offset - entry.saved < CACHE_MIN_BYTES:
            return  # the common case, decided without the thread
        with self.cond:
            if self.stopped or ("save", entry) in self.urgent:
                return
            self.urgent.append(("save", entry))
            self._start()
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.urgent.clear()
            self.later.clear()
            self.cond.notify_all()
            for proc in self.parsing.values():  # the helpers this server started
                proc.terminate()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.urgent or self.later or self.working:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _busy(self) -> bool:
        return self.source.busy or self.stopped

    def _parse_elsewhere(self, folder: str) -> None:
        """Parse a big series that the disk cache lacks in a helper process, into the cache.

        A separate process does not hold this one's GIL, so the page and its requests
        (the experiments list, say) are served at full speed meanwhile; the columns
        then come back from the cache in milliseconds.
        """
        source = self.source
        if source.cache is None:
            return
        data_path = os.path.join(folder, DATA_FILE)
        entry = source.entry(folder)
        with entry.lock:
            source.try_cache(entry, data_path)
            if file_size(data_path) - entry.state.offset < CACHE_MIN_BYTES:
                return  # in memory or in the cache already, or small: parse the rest here
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from mldash.ui.loading import parse_into_cache; parse_into_cache(sys.argv[2], sys.argv[3])"
        )
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with self.cond:
            if self.stopped:
                return
            try:  # a plain child (not multiprocessing): nothing of this server is inherited
                proc = subprocess.Popen(
                    [sys.executable, "-c", code, package_parent, data_path, source.cache.folder],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            except OSError:
                return  # parsed here instead
            self.parsing[folder] = proc
        try:
            proc.wait()
        finally:
            with self.cond:
                self.parsing.pop(folder, None)
                self.cond.notify_all()
        with entry.lock:
            entry.tried_cache = entry.state.offset > 0  # not read yet: look again, the helper wrote it

    def wait_parsed(self, folder: str) -> None:
        """Block while a helper process is parsing ``folder`` (cheaper than parsing it twice)."""
        with self.cond:
            proc = self.parsing.get(folder)
        if proc is None:
            return
        proc.wait()
        entry = self.source.entry(folder)
        with entry.lock:
            entry.tried_cache = entry.state.offset > 0

    def _wait_quiet(self) -> None:
        """Let requests go first: wait while one is being served (re-checked every 5 ms)."""
        while self._busy() and not self.stopped:
            time.sleep(0.005)

    def _between_runs(self) -> None:
        """The start-up scan's pause: requests first, then a page just opened (``warm``)."""
        self._wait_quiet()
        while True:
            with self.cond:
                if self.stopped or not self.urgent:
                    return
                task = self.urgent.popleft()
            try:
                self._do(task)
            except Exception:
                pass

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.urgent or self.later or self.stopped):
                    self.working = False
                    self.cond.notify_all()
                    self.cond.wait()
                if self.stopped:
                    self.working = False
                    self.cond.notify_all()
                    return
                task = (self.urgent or self.later).popleft()
                self.working = True
            try:
                self._do(task)
            except Exception:  # a series that fails to load will fail again, visibly, on request
                pass

    def _do(self, task) -> None:
        kind, arg = task
        source = self.source
        if kind == "save":
            source.save(arg)
        elif kind == "load":
            self._parse_elsewhere(arg)
            while not self.stopped:
                self._wait_quiet()
                entry, complete = source.load_step(arg, self._busy)
                if complete:
                    source.save(entry)
                    break
        elif kind == "recent":
            folders = recent_big_series(source.root, arg, self._between_runs)
            self.push(folders)
            if source.cache is not None:
                source.cache.prune()
