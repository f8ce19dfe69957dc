"""Descriptor-level console capture: file descriptors 1 and 2 routed through a relay.

Used by ``ConsoleCapture`` in ``"fd"`` mode (see ``_console.py``), so output
that never passes through ``sys.stdout`` is recorded too: ``os.write(1, ...)``,
C libraries, CUDA and TensorFlow messages, child processes.

Each descriptor is pointed at a pipe whose reader is a small relay *process*
(``_RELAY``): it copies what arrives to the original descriptor and, without
ever blocking on it, to a second pipe this process reads. A relay thread here
would need the GIL to drain the pipe, so a C extension writing more than a
pipe's worth while holding the GIL would deadlock; and a child process still
writing after this process exits (or is killed) would get SIGPIPE. The relay
process has neither problem: it forwards until the last writer is gone, and
when this process falls behind it buffers (64 MiB, then drops and says so).

When the original is a terminal the pipe is a pseudo-terminal in raw output
mode, so ``isatty()`` stays true, the bytes pass unchanged (no ``\\n`` ->
``\\r\\n``) and the window size is copied over, on start and at each tick.
Known differences from no capture: output to stdout and stderr in the same
instant may reach the terminal in either order; code that seeks on, or sets
terminal modes through, descriptors 1 and 2 sees the pipe or pty.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import threading
import time
from typing import Callable

_routing: "FdCapture | None" = None  # one capture at a time owns descriptors 1 and 2
_PIPE_SIZE = 1 << 20  # room for bursts while the relay starts or this process is busy

# Arguments: triples (source, terminal, capture) of descriptor numbers.
_RELAY = r"""
import os, select, signal, sys
for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGPIPE"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)  # it ends when its writers are gone
a = [int(x) for x in sys.argv[1:]]
routes = [[a[i], a[i + 1], a[i + 2], bytearray(), 0] for i in range(0, len(a), 3)]
for r in routes:
    os.set_blocking(r[2], False)

def close(r, *slots):
    for k in slots:
        if r[k] >= 0:
            os.close(r[k])
            r[k] = -1

def put(r):
    try:
        del r[3][:os.write(r[2], r[3])]
    except BlockingIOError:
        pass
    except OSError:
        close(r, 2)
        r[3] = bytearray()
    if not r[3] and r[4] and r[2] >= 0:
        r[3] += b"\n[mldash: %d bytes of output were not recorded: the capture fell behind]\n" % r[4]
        r[4] = 0

while any(r[0] >= 0 or (r[2] >= 0 and r[3]) for r in routes):
    ins = [r[0] for r in routes if r[0] >= 0]
    outs = [r[2] for r in routes if r[2] >= 0 and r[3]]
    # The copy for recording goes in batches (64 KiB, or after 20 ms): fewer wake-ups there.
    if ins and outs:
        ready, _, _ = select.select(ins, [], [], 0.02)
        writable = [] if ready else outs
    else:
        ready, writable, _ = select.select(ins, outs, [])
    for r in routes:
        if r[0] >= 0 and r[0] in ready:
            try:
                data = os.read(r[0], 1 << 16)
            except OSError:  # EIO: a pty whose writers are all gone
                data = b""
            if not data:
                close(r, 0, 1)
                put(r)
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(r[1], view):]
            except OSError:  # the terminal is gone: the other side takes the descriptor back
                close(r, 0, 1, 2)
                continue
            if r[2] >= 0:
                if len(r[3]) < (64 << 20):
                    r[3] += data
                else:
                    r[4] += len(data)
                if len(r[3]) >= (64 << 10):
                    put(r)
        elif r[2] >= 0 and r[2] in writable:
            put(r)
for r in routes:
    close(r, 0, 1, 2)
"""


def _ident(fd: int) -> tuple[int, int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_rdev


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _high(fd: int) -> int:
    """``fd`` moved to a number above 2: in a process started with 0, 1 or 2 closed
    a new descriptor takes that number, which the relay's own stdio would replace."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _pending(fd: int | None) -> int:
    if fd is None:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")
    except OSError:
        return 0


class _Route:
    """One descriptor's detour: ``fd`` -> ``source`` (pipe or pty) -> relay -> ``capture``."""

    def __init__(self, sid: int, fd: int) -> None:
        self.sid, self.fd = sid, fd
        self.saved: int | None = None  # a duplicate of the original descriptor
        self.source: int | None = None  # the read end (pty master), kept to drain and size it
        self.capture: int | None = None  # what the relay copies for recording
        self.write_end: int | None = None
        self.capture_w: int | None = None
        self.ident: tuple | None = None  # the pipe, while ``fd`` points at it
        self.tty = False
        self.size = b""

    def open(self) -> None:
        self.tty = os.isatty(self.fd)
        if self.tty:
            self.source, self.write_end = map(_high, os.openpty())
            attrs = termios.tcgetattr(self.write_end)
            attrs[1] &= ~termios.OPOST  # raw output: bytes reach the terminal as written
            termios.tcsetattr(self.write_end, termios.TCSANOW, attrs)
        else:
            self.source, self.write_end = map(_high, os.pipe())
        self.capture, capture_w = map(_high, os.pipe())
        for fd in (self.write_end, capture_w):
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            except (OSError, AttributeError):
                pass  # not a pipe (pty), or not Linux: the default size, with less slack
        self.capture_w = capture_w
        self.saved = _high(os.dup(self.fd))

    def close(self) -> None:
        for name in ("saved", "source", "capture", "write_end", "capture_w"):
            _close(getattr(self, name))
            setattr(self, name, None)


class FdCapture:
    """Descriptors 1 and 2 through a relay process; ``push(time, sid, data)`` gets
    what the program wrote while ``recording`` (on this module's reader thread)."""

    def __init__(self, push: Callable[[float, int, bytes], None]) -> None:
        self.push = push
        self.recording = False
        self.routes: list[_Route] = []
        self.process: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self._closing = False
        self._lock = threading.Lock()

    def start(self, fds: tuple[int, ...] = (1, 2)) -> set[int]:
        """Route the open ones of ``fds``; return those routed (none when the relay
        cannot start, or another capture routes them already: then nothing changed)."""
        global _routing
        routes = []
        if _routing is not None:
            return set()
        try:
            for sid, fd in enumerate(fds):
                if _ident(fd) is not None:
                    route = _Route(sid, fd)
                    routes.append(route)
                    route.open()
            if not routes or not sys.executable:
                raise OSError("nothing to route, or no interpreter to run the relay")
            args = [str(n) for r in routes for n in (r.source, r.saved, r.capture_w)]
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _RELAY, *args], pass_fds=[int(a) for a in args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # no Ctrl-C or terminal signals: it outlives what it serves
            )
        except (OSError, ValueError, subprocess.SubprocessError):
            for route in routes:
                route.close()
            return set()
        for route in routes:
            _close(route.capture_w)  # the relay holds it: EOF here when the relay is done
            route.capture_w = None
            route.ident = _ident(route.write_end)
            self._sync(route)
            os.dup2(route.write_end, route.fd)
            _close(route.write_end)  # ``fd`` is now this process's only write end
            route.write_end = None
        self.routes = routes
        self.recording = True
        _routing = self
        self.thread = threading.Thread(target=self._read, name="mldash-console-fd", daemon=True)
        self.thread.start()
        return {route.fd for route in routes}

    def sync_window(self) -> None:
        """Copy the terminal's size to the pty (after a resize, within a tick)."""
        for route in self.routes:
            if route.tty:
                self._sync(route)

    def _sync(self, route: _Route) -> None:
        with self._lock:  # not while the descriptors are closed and their numbers reused
            if route.saved is None or route.source is None:
                return
            try:
                size = fcntl.ioctl(route.saved, termios.TIOCGWINSZ, b"\0" * 8)
                if size != route.size:
                    fcntl.ioctl(route.source, termios.TIOCSWINSZ, size)
                    route.size = size
            except OSError:
                pass

    def _read(self) -> None:
        live = {route.capture: route for route in self.routes}
        try:
            while live and not self._closing:
                ready = select.select(list(live), [], [], 0.2)[0]
                for fd in ready:
                    route = live[fd]
                    try:
                        data = os.read(fd, 1 << 16)
                    except OSError:
                        data = b""
                    if data:
                        if self.recording:
                            self.push(time.time(), route.sid, data)
                        if len(data) < 1 << 16 and not self._closing:
                            time.sleep(0.02)  # drained: let more gather (fewer wake-ups, less GIL)
                    else:
                        del live[fd]
                        self._ended(route)
        except (OSError, ValueError):
            pass
        finally:
            for route in live.values():
                self._ended(route)

    def _ended(self, route: _Route) -> None:
        """The relay is done with ``route``. When ``fd`` still points at the pipe the
        relay failed (the terminal went away, or it was killed): give ``fd`` back,
        so the program writes to the terminal itself, and pass on what is left."""
        if not self.restore(route):
            return
        while _pending(route.source) > 0:
            try:
                data = os.read(route.source, 1 << 16)
                os.write(route.saved, data)
            except OSError:
                break
            if self.recording:
                self.push(time.time(), route.sid, data)

    def restore(self, route: _Route) -> bool:
        """Point ``fd`` back at the original, unless someone re-pointed it since (then
        theirs stays). True when this call restored it."""
        with self._lock:
            if route.ident is None or route.saved is None:
                return False
            ours = _ident(route.fd) == route.ident
            route.ident = None
            if ours:
                try:
                    os.dup2(route.saved, route.fd)
                except OSError:
                    return False
            return ours

    def stop(self, timeout: float) -> None:
        """Give the descriptors back and wait (at most ``timeout``) until what was
        written before has been relayed and recorded."""
        for route in self.routes:
            self.restore(route)
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            # The relay sees EOF at once (then the reader here ends), unless a child
            # process still holds a pipe: then wait until the pipes have been empty
            # for 0.2 s, and the relay forwards without us.
            deadline = time.monotonic() + timeout
            quiet = 0
            while thread.is_alive() and time.monotonic() < deadline and quiet < 20:
                busy = any(_pending(r.source) or _pending(r.capture) for r in self.routes)
                quiet = 0 if busy else quiet + 1
                thread.join(0.01)
            self._closing = True
            thread.join(0.5)
        self.recording = False
        with self._lock:
            for route in self.routes:
                if thread is not None and thread.is_alive():
                    route.capture = route.source = None  # left open: a number reused under the reader would be read
                route.close()
        self._release()
        process = self.process
        if process is not None and process.poll() is None:
            threading.Thread(target=process.wait, name="mldash-console-relay-wait", daemon=True).start()

    def _release(self) -> None:
        global _routing
        if _routing is self:
            _routing = None

    def after_fork_in_child(self) -> None:
        """In a forked child: its own descriptors go back to the terminal, and the
        relay stays the parent's."""
        self._lock = threading.Lock()  # another thread may have held it at fork time
        self.recording, self.thread, self.process = False, None, None
        for route in self.routes:
            self.restore(route)
            route.close()
        self._release()
