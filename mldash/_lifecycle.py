"""Process-wide hooks that give every open experiment the right final status.

Installed once, on the first start, and chained to whatever was there before:
``sys.excepthook`` and ``threading.excepthook`` record uncaught errors, a SIGTERM
handler records cancellation, and ``atexit`` finishes what is still open.

It knows a run only through its public surface (``running``, ``log_exception``,
``cancel``, ``finish``) and the one callback it registers for a fork.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import traceback
import weakref
from typing import Any, Callable

# An open run -> a weak reference to what it does in a forked child.
_open: "weakref.WeakKeyDictionary[Any, weakref.WeakMethod]" = weakref.WeakKeyDictionary()
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


def register(exp: Any, after_fork: Callable[[], None]) -> None:
    """Track an open run; ``after_fork`` (a bound method) runs in a forked child."""
    global _installed
    with _lock:
        _open[exp] = weakref.WeakMethod(after_fork)
        if _installed:
            return
        _installed = True
    _install()


def unregister(exp: Any) -> None:
    _open.pop(exp, None)


def open_experiments() -> list:
    return list(_open.keys())


def finish_quietly(exp: Any) -> None:
    """Finish ``exp``; at exit or from a hook there is nobody to raise to, so say it."""
    try:
        exp.finish()
    except Exception as error:
        print(f"mldash: finishing {exp.prefix} failed: {error}", file=sys.stderr)


def record_uncaught(exp: Any, exc: BaseException, thread: threading.Thread | None = None, finish: bool = True) -> None:
    if not exp.running:
        return
    exp.log_exception(exc, thread=thread, uncaught=finish)  # a hook's thread prints it while we run
    if finish:
        finish_quietly(exp)


def _install() -> None:
    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        for exp in open_experiments():
            record_uncaught(exp, exc)
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook

    previous_thread_hook = threading.excepthook

    def thread_excepthook(args):
        if args.exc_type is not SystemExit and args.exc_value is not None:
            for exp in open_experiments():
                record_uncaught(exp, args.exc_value, thread=args.thread, finish=False)
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
        finish_quietly(exp)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker, say) shares the parent's run: it may
    # append to it, but it must neither rewrite the parent's pending points nor
    # decide the run's status when it exits.
    for after_fork in list(_open.values()):
        method = after_fork()
        if method is not None:
            method()
    _open.clear()


def _finish_all() -> None:
    for exp in open_experiments():
        finish_quietly(exp)
