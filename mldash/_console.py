"""Console capture: what the program prints, recorded line by line with its time and stream.

The terminal must show exactly what it would without mldash, so nothing that
decides what it shows is replaced: ``sys.stdout`` stays the same object (same
type, ``isatty()``, ``encoding``, ``buffer``, buffering) and only the ``write``
of the lowest layer under it is wrapped, by an instance attribute:

- ``sys.stdout.buffer.raw`` (the FileIO; ``buffer`` itself under ``python -u``)
  where there is one, so the capture sees the bytes when they go to the
  descriptor and not before: a line-buffered stream costs one call per line, a
  block-buffered one a call per 8 KiB, and what was not flushed is not
  recorded yet, just as it is not shown yet. Handlers created before the run
  (``logging.StreamHandler()`` keeps the stream object it was given) are caught.
- else the stream's own ``write`` (Jupyter's OutStream, a user's tee object).

Mode ``"fd"`` instead routes descriptors 1 and 2 through a relay process
(``_console_fd``), which also catches C libraries and child processes; streams
not on those descriptors are still wrapped as above. Where the relay cannot
start (no ``sys.executable``) it falls back to the streams alone
(``descriptors`` then is empty).

The caller's thread only appends (time, stream, data) to a deque. A thread of
this module, every ``interval``, decodes (invalid UTF-8 becomes U+FFFD), cuts
lines and hands records to the sink, which the Experiment connects to its
writer. ``\\r``, ``\\b`` and the cursor and erase sequences progress bars use
(CSI A, B, K) are applied to the lines still on screen, so a tqdm bar is
recorded as its final state, not its frames; other ANSI codes (colours) stay in
the text. Lines above the cursor are recorded at once, unless a cursor-up was
seen in the last ``settle`` seconds (nested bars redraw them): then once
untouched that long. A line still open (no newline yet) is recorded as a
``partial`` snapshot once quiet for ``settle`` seconds, or while it keeps
changing at intervals of a tenth of its age (at least a second): a partial
record is superseded by the next record of the same stream.

``stop()`` flushes ``sys.stdout`` and ``sys.stderr`` once, so what the run
printed is recorded before the writer closes: the one place output may become
visible earlier than without mldash (at the end of the run instead of at exit).
The user replacing ``sys.stdout`` changes nothing here: nothing is assigned to
``sys.stdout``, so stop has nothing to restore over theirs; a wrapped ``write``
someone wrapped again is left in their chain as a plain pass-through.
"""

from __future__ import annotations

import atexit
import codecs
import os
import sys
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Callable, Literal, Union

import orjson

from ._console_lines import Batch, Screen
from ._runfolder import CONSOLE_DIR, CONSOLE_STEM, check_range, page
from ._series import SeriesReader

if TYPE_CHECKING:
    from ._console_fd import FdCapture

STREAMS = ("stdout", "stderr")
MAX_LINES = 100_000  # records per capture (one session of a run)
MAX_CHARS = 32 * 1024 * 1024  # characters of text per capture
_MAX_QUEUED = 50_000  # writes waiting for the thread; past it (thread gone) they are counted, not kept
_WAKE_AT = 2_048  # writes queued: the thread starts before its tick

_NOTHING = object()

Mode = Union[bool, Literal["fd"]]
Sink = Callable[[Batch], None]


class _Tap:
    """What a wrapped ``write`` appends to; ``on`` is read on every write."""

    __slots__ = ("on", "queue", "wake", "dropped")

    def __init__(self, queue: deque, wake: Callable[[], None]) -> None:
        self.on, self.queue, self.wake, self.dropped = True, queue, wake, 0

    def push(self, t: float, sid: int, data: bytes | str) -> None:
        n = len(self.queue)
        if n >= _MAX_QUEUED:
            self.dropped += 1
            return
        self.queue.append((t, sid, data))
        if n == _WAKE_AT:
            self.wake()


def _target(stream) -> tuple[object, bool] | None:
    """The object whose ``write`` to wrap, and whether it takes bytes."""
    buffer = getattr(stream, "buffer", None)
    for obj, binary in ((getattr(buffer, "raw", None), True), (buffer, True), (stream, False)):
        if obj is not None and callable(getattr(obj, "write", None)) and hasattr(obj, "__dict__"):
            return obj, binary
    return None


def _wrap(obj, binary: bool, sid: int, tap: _Tap) -> Callable[[], None] | None:
    """Wrap ``obj.write``; return the undo (None when the object refuses)."""
    original = obj.write
    before = vars(obj).get("write", _NOTHING)  # another wrapper (a second run, a user's): put back

    # Defaults, not globals: this may run during interpreter shutdown.
    def write(data, _orig=original, _tap=tap, _sid=sid, _time=time.time, _bytes=bytes, _str=str,
              _max=_MAX_QUEUED, _wake_at=_WAKE_AT):
        n = _orig(data)
        if _tap.on:
            if binary:
                if not n:
                    return n  # None: nothing written (a non-blocking descriptor)
                data = _bytes(data)
                if n < len(data):
                    data = data[:n]
            elif not data or not isinstance(data, _str):
                return n  # a text write returns its length, or None from a user's object
            queue = _tap.queue  # _Tap.push, inlined: this runs for every line on a terminal
            n_queued = len(queue)
            if n_queued < _max:
                queue.append((_time(), _sid, data))
                if n_queued == _wake_at:
                    _tap.wake()
            else:
                _tap.dropped += 1
        return n

    try:
        obj.write = write
        if obj.__dict__.get("write") is not write:
            return None
    except (AttributeError, TypeError):
        return None

    def undo() -> None:
        tap.on = False  # if someone wrapped ours, it stays in their chain, passing through
        try:
            if obj.__dict__.get("write") is write:
                if before is _NOTHING:
                    del obj.write
                else:
                    obj.write = before
        except (AttributeError, TypeError):
            pass

    return undo


ENV = "MLDASH_CAPTURE_CONSOLE"


def console_setting(value: object = None) -> Mode:
    """``capture_console=`` as given (True, False or "fd"); None: $MLDASH_CAPTURE_CONSOLE
    (1/true/on, 0/false/off or fd), else True."""
    what = "capture_console"
    if value is None:
        text = os.environ.get(ENV, "").strip().lower()
        value = {"": True, "1": True, "true": True, "on": True, "yes": True,
                 "0": False, "false": False, "off": False, "no": False}.get(text, text)
        what = f"${ENV}"
    if value is True or value is False or value == "fd":
        return value  # type: ignore[return-value]
    raise ValueError(f'{what} must be True, False or "fd", got {value!r}')


class ConsoleCapture:
    """Records sys.stdout and sys.stderr (``mode=True``), also descriptors 1 and 2
    (``"fd"``), or nothing (False), handing each ``Batch`` of records to ``sink``
    on its own thread (and from ``stop()``, for the last).

    At most ``max_lines`` records or ``max_chars`` characters of text; then one
    record says so and recording stops (the terminal still gets everything).
    ``sink`` must not block or print.
    """

    def __init__(self, mode: Mode = True, sink: Sink | None = None, *, max_lines: int = MAX_LINES,
                 max_chars: int = MAX_CHARS, interval: float = 0.2, settle: float = 0.5) -> None:
        if mode is not True and mode is not False and mode != "fd":
            raise ValueError(f'capture_console must be True, False or "fd", got {mode!r}')
        self.mode = mode
        self.sink = sink
        self.max_lines, self.max_chars = max_lines, max_chars
        self.interval, self.settle = interval, settle
        self.lines = self.chars = 0  # recorded so far
        self.error: BaseException | None = None  # the last failure of the sink or of this module
        self.cut = False
        self._queue: deque = deque()
        self._wake = threading.Event()
        self._tap = _Tap(self._queue, self._wake.set)
        self._screens = [Screen(name, settle) for name in STREAMS]
        self._decoders: list = [None, None]
        self._undo: list[Callable[[], None]] = []
        self._fd: FdCapture | None = None  # "fd" mode only (its module loads only then)
        self._flush: list = []  # the streams to flush at stop: those of the start
        self.descriptors: set[int] = set()  # those routed in "fd" mode
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pump_lock = threading.Lock()
        self._started = self._stopped = self._closing = False

    @property
    def active(self) -> bool:
        """True between start() and stop() while recording (not after the cap)."""
        return self._started and not self._stopped and not self.cut

    def start(self) -> "ConsoleCapture":
        with self._lock:
            if self._started or self._stopped or self.mode is False:
                return self
            self._started = True
        self._flush = [s for s in (sys.stdout, sys.stderr) if s is not None]
        covered: set = set()
        if self.mode == "fd":
            # Without a relay (no interpreter to run it) this falls back to the streams alone.
            from ._console_fd import FdCapture

            self._fd = FdCapture(self._tap.push)
            covered = self.descriptors = self._fd.start()
            for route in self._fd.routes:
                self._decoders[route.sid] = codecs.getincrementaldecoder("utf-8")("replace")
        seen = set()
        for sid, name in enumerate(STREAMS):
            stream = getattr(sys, name, None)
            if stream is None or _fileno(stream) in covered:
                continue
            found = _target(stream)
            if found is None or id(found[0]) in seen:
                continue  # sys.stderr is sys.stdout: recorded once, as stdout
            undo = _wrap(found[0], found[1], sid, self._tap)
            if undo is not None:
                seen.add(id(found[0]))
                self._undo.append(undo)
                if found[1]:
                    self._decoders[sid] = _decoder(getattr(stream, "encoding", None))
        _captures.add(self)
        atexit.register(self._at_exit)
        self._thread = threading.Thread(target=self._run, name="mldash-console", daemon=True)
        self._thread.start()
        return self

    def record(self, stream: str, text: str) -> None:
        """Record ``text`` as if written to ``stream`` (say, the traceback Python
        prints only after the run has finished)."""
        if self.active and isinstance(text, str):
            self._tap.push(time.time(), STREAMS.index(stream), text)

    def stop(self, timeout: float = 2.0) -> None:
        """Record what is left and undo the capture. Safe twice; never raises."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._started
        if not started:
            return
        try:
            for stream in self._flush:
                try:
                    stream.flush()
                except Exception:
                    pass  # closed, or gone at shutdown
            if self._fd is not None:
                self._fd.stop(timeout)
            for undo in self._undo:
                undo()
            self._closing = True
            self._wake.set()
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
            self._pump(final=True, timeout=timeout)
        except Exception as error:
            self.error = error
        finally:
            _captures.discard(self)
            try:
                atexit.unregister(self._at_exit)
            except Exception:
                pass

    def after_fork_in_child(self) -> None:
        """In a forked child: stop capturing (the parent's run is not the child's
        to write); the child's descriptors go back to the terminal. Idempotent."""
        self._lock, self._pump_lock = threading.Lock(), threading.Lock()  # may have been held at fork
        self._stopped, self._thread = True, None
        for undo in self._undo:
            undo()
        if self._fd is not None:
            self._fd.after_fork_in_child()
        self._queue.clear()
        _captures.discard(self)

    def _at_exit(self) -> None:
        self.stop(timeout=1.0)

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._closing:
                return
            self._pump(final=False)
            if self._fd is not None:
                self._fd.sync_window()

    def _pump(self, final: bool, timeout: float = -1) -> None:
        if not self._pump_lock.acquire(timeout=timeout):
            return  # the thread is stuck in the sink: stop() must not hang too
        try:
            queue, runs = self._queue, []
            screens, decoders = self._screens, self._decoders
            for t, sid, data in _coalesce([queue.popleft() for _ in range(len(queue))]):
                if data.__class__ is not str:
                    decoder = decoders[sid]
                    data = decoder.decode(data) if decoder else data.decode("utf-8", "replace")
                screens[sid].write(t, data, runs)
            now = time.time()
            for sid, screen in enumerate(screens):
                rest = decoders[sid].decode(b"", True) if final and decoders[sid] else ""
                if rest:
                    screen.write(now, rest, runs)
                screen.flush(now, runs, final)
            if self._tap.dropped:
                runs.append((now, "stderr", [f"mldash: {self._tap.dropped:,} console writes were not recorded "
                                             "(the capture fell behind)"], False))
                self._tap.dropped = 0
            if runs:
                self._deliver(runs)
        except Exception as error:  # a bug here must never reach the program
            self.error = error
        finally:
            self._pump_lock.release()

    def _deliver(self, runs: list) -> None:
        if self.cut:
            return
        lines = chars = 0
        for i, (t, s, texts, p) in enumerate(runs):  # per run, not per line: C does the lines
            joined = "".join(texts)
            lines += len(texts)
            chars += len(joined)
            if not joined.isascii() and not _encodable(joined):
                runs[i] = (t, s, [_clean(x) for x in texts], p)
        if self.lines + lines > self.max_lines or self.chars + chars > self.max_chars:
            runs = self._cut(runs)
        else:
            self.lines += lines
            self.chars += chars
        if runs and self.sink is not None:
            try:
                self.sink(Batch(runs))
            except Exception as error:
                self.error = error

    def _cut(self, runs: list) -> list:
        """The records that fit under the cap, then the one that says so; recording stops."""
        keep = []
        for t, stream, texts, partial in runs:
            fit = []
            for text in texts:
                if self.lines >= self.max_lines or self.chars + len(text) > self.max_chars:
                    break
                fit.append(text)
                self.lines += 1
                self.chars += len(text)
            if fit:
                keep.append((t, stream, fit, partial))
            if len(fit) < len(texts):
                keep.append((t, "stderr", [
                    f"mldash: console capture stopped after {self.lines:,} lines (limit {self.max_lines:,} "
                    f"lines or {self.max_chars:,} characters per run); the terminal still shows all output"], False))
                break
        self.cut = True
        self._tap.on = False
        if self._fd is not None:
            self._fd.recording = False
        self._queue.clear()
        return keep


def _coalesce(items: list) -> list:
    """Join consecutive writes to one stream within 10 ms (a terminal's stream
    writes each line apart): their lines then share the first one's time."""
    out: list = []
    group: list = []
    start = sid = kind = None
    limit = 0.0
    for t, s, data in items:
        if s == sid and t < limit and data.__class__ is kind:
            group.append(data)
            continue
        if group:
            out.append((start, sid, group[0] if len(group) == 1 else kind().join(group)))
        start, sid, kind, group, limit = t, s, data.__class__, [data], t + 0.01
    if group:
        out.append((start, sid, group[0] if len(group) == 1 else kind().join(group)))
    return out


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except Exception:
        return None


def _decoder(encoding: str | None):
    try:
        return codecs.getincrementaldecoder(encoding or "utf-8")("replace")
    except (LookupError, TypeError):
        return codecs.getincrementaldecoder("utf-8")("replace")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate, from a str written
        return False


def _clean(text: str) -> str:
    """Text JSON can hold: a lone surrogate becomes U+FFFD."""
    return text if _encodable(text) else text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


_captures: "weakref.WeakSet[ConsoleCapture]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for capture in list(_captures):
        capture.after_fork_in_child()


# Also without the Experiment's own hook: a forked child never captures into the parent's run.
os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- the run folder's side ---------------------------------------------------------
def writer_sink(extra: deque, path: str, encoded: bool = False) -> Sink:
    """A sink that queues the records for the run at ``path`` on a Writer's
    ``extra``, for console/console.jsonl. ``encoded``: each Batch whole, for a
    writer that appends a callable record as its own ``build``; else one dict a
    record, as today's writer takes them (several times slower in bursts)."""
    key = (os.path.join(path, CONSOLE_DIR), CONSOLE_STEM)
    if encoded:
        return lambda batch: extra.append((key, batch))
    return lambda batch: extra.extend([(key, record) for record in batch.records()])


def _decode(lines: list[bytes], first: int) -> list[dict]:
    records = []
    for i, line in enumerate(lines, first):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a damaged line: skipped, its index stays counted
        if isinstance(record, dict):
            record.pop("index", None)
            records.append({"index": i, **record})  # the line number, as for metrics
    return records


def read_console(path: str, start_index: int = 0, limit: int = 1000) -> dict:
    """Console records of the run at ``path`` in read()'s shape: each has index,
    timestamp, stream, text, and ``partial`` on a snapshot of a line still open
    (superseded by the next record of its stream)."""
    check_range(start_index, limit)
    lines, total = SeriesReader(os.path.join(path, CONSOLE_DIR), CONSOLE_STEM).lines(start_index, limit)
    return page(_decode(lines, start_index), start_index, start_index + len(lines) - 1, total)


def console_tail(path: str, n: int = 20) -> list[dict]:
    """The last ``n`` records as the terminal shows them (superseded snapshots dropped)."""
    lines, total = SeriesReader(os.path.join(path, CONSOLE_DIR), CONSOLE_STEM).lines(-n, n) if n > 0 else ([], 0)
    later: set = set()
    shown = []
    for record in reversed(_decode(lines, total - len(lines))):
        if not (record.get("partial") and record.get("stream") in later):
            shown.append(record)
        later.add(record.get("stream"))
    return shown[::-1]
