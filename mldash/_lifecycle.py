"""Process-wide hooks that give every open experiment the right final status.

Installed once, on the first start, and chained to whatever was there before:
``sys.excepthook`` and ``threading.excepthook`` record uncaught errors, a SIGTERM
handler records cancellation, and ``atexit`` finishes what is still open.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import traceback
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .experiment import Experiment

_open: "weakref.WeakSet[Experiment]" = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
_previous_sigterm = None


def error_metadata(exc: BaseException) -> dict:
    return {
        "error_type": type(exc).__name__,
        "error_module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def register(exp: "Experiment") -> None:
    global _installed
    with _lock:
        _open.add(exp)
        if _installed:
            return
        _installed = True
    _install()


def unregister(exp: "Experiment") -> None:
    _open.discard(exp)


def open_experiments() -> list["Experiment"]:
    return list(_open)


def _install() -> None:
    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        for exp in open_experiments():
            exp._record_exception(exc, finish=True)
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook

    previous_thread_hook = threading.excepthook

    def thread_excepthook(args):
        if args.exc_type is not SystemExit and args.exc_value is not None:
            for exp in open_experiments():
                exp._record_exception(args.exc_value, finish=False, thread=args.thread)
        previous_thread_hook(args)

    threading.excepthook = thread_excepthook
    atexit.register(_finish_all)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _install_sigterm()


def _install_sigterm() -> None:
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return
    if previous is signal.SIG_IGN or previous is None:
        return
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame):
    previous = _previous_sigterm
    exps = open_experiments()
    for exp in exps:
        exp.cancel("terminated by SIGTERM")
    if callable(previous):
        # Someone else (a framework) decides how to stop; atexit finishes us.
        previous(signum, frame)
        return
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        # A handler installed after ours (Lightning's, say) called us as part of its
        # chain: it decides how to stop, as it would without us; atexit finishes.
        return
    for exp in exps:
        exp._finish_quietly()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker, say) shares the parent's run: it may
    # append to it, but it must neither rewrite the parent's pending points nor
    # decide the run's status when it exits.
    for exp in open_experiments():
        exp._after_fork()
    _open.clear()


def _finish_all() -> None:
    for exp in open_experiments():
        exp._finish_quietly()
