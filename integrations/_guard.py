"""The failure guard of the Keras and Hugging Face integrations.

Neither framework tells a callback that training raised: Keras' ``fit`` and the
Trainer's ``train`` simply never call their end hooks. Each integration therefore
wraps its framework's training call (Keras: ``keras.Model.fit``; transformers: the
``train`` and ``hyperparameter_search`` of one Trainer) in :class:`RecordFailures`,
which hands an escaping exception to the integration's handlers and lets the very
same exception continue, whatever a handler does. :func:`record_failure` is how a
handler puts it on an experiment.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

from mldash import Experiment

__all__ = ["RecordFailures", "record_failure", "cancel_reason", "call_quietly"]


class RecordFailures:
    """``with RecordFailures(handler, ...): train()``: on an exception, call each
    ``handler(exc)``, then let the exception propagate unchanged.

    A context manager whose ``__exit__`` returns False, not ``except: ...; raise``
    in each integration, so that a handler can neither swallow the exception nor
    replace it, nor add a frame to its traceback. A handler's own error (a full
    disk while recording, say) becomes a warning: the user sees their error, not
    ours.
    """

    __slots__ = ("handlers",)

    def __init__(self, *handlers: Callable[[BaseException], None]) -> None:
        self.handlers = handlers

    def __enter__(self) -> "RecordFailures":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            for handler in self.handlers:
                call_quietly(handler, exc)
        return False


def record_failure(exp: Experiment, exc: BaseException) -> None:
    """Put ``exc``, which escaped a training call, on ``exp`` and finish it.

    FAILED with an error log (type, message, traceback); CANCELLED, with a warn log
    saying why, when someone stopped the run (Ctrl-C, a search pruning the trial);
    ``sys.exit(0)`` is a normal end. A finished run is resumed to say so, as the
    core does for any later write.
    """
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        exp.finish()
        return
    reason = cancel_reason(exc)
    if reason is None:
        exp.log_exception(exc)
    else:
        exp.start()  # cancel() only marks a running experiment
        exp.cancel(reason)
    exp.finish()


def cancel_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means "stopped on purpose" rather than "broke", or None."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    for cls in type(exc).__mro__:
        # optuna.TrialPruned, raised by the Trainer's search and by optuna's Keras
        # pruning callback, is optuna's way to stop a trial early. Matched by name so
        # that neither integration imports optuna.
        if cls.__name__ == "TrialPruned" and cls.__module__.split(".")[0] in ("optuna", "optuna_integration"):
            return "pruned by the hyperparameter search (optuna.TrialPruned)"
    return None


def call_quietly(fn: Callable[..., None], *args) -> None:
    """``fn(*args)``; an error in it becomes a warning, never an exception."""
    try:
        fn(*args)
    except BaseException as error:  # a second Ctrl-C while recording included
        try:
            warnings.warn(f"mldash could not record the end of the run: {error!r}", RuntimeWarning, stacklevel=3)
        except BaseException:  # warnings turned into errors: stderr, and never raise
            print(f"mldash: could not record the end of the run: {error!r}", file=sys.stderr)
