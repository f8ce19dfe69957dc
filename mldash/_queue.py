"""The point queue behind ``Metric.append``: the pure-Python implementation.

``_speedups.c`` implements the same class in C; ``metrics.py`` uses that one when
it was built (``MLDASH_PURE_PYTHON=1`` forces this one). Both keep one flat list
of queued entries that the writer thread takes whole:

a point is ``stamp, names, value_1, ..., value_k``: ``stamp`` is the wall-clock
milliseconds as ASCII bytes (ready to write; one object per millisecond),
``names`` the tuple of its field names (one object for all points with the same
names, so the writer finds runs of alike points by identity and encodes them
column by column), then the values in that order.

A flat list of shared objects allocates nothing per point but the list slots:
no per-point dict or tuple is kept alive until the writer runs.

A point, or a whole batch, joins the list in one ``list.extend`` or not at all,
and is read from a copy of the caller's dicts and list: on Python 3.10 and 3.11
any allocation can start a garbage collection whose finalizers and callbacks
run Python code, which may change them, or let another thread do so, midway.
A dict's names and values come from one state of it, a batch from the list as
it was when the call began, as in ``_speedups.c``.
"""

from __future__ import annotations

from time import time_ns
from typing import Any

from ._checks import MAX_TEXT

PLAIN = frozenset((float, int, str, bool, type(None)))
NUMBERS = PLAIN - {str}

_last_stamp: tuple[int, bytes] = (0, b"0")


def stamp() -> bytes:
    """Milliseconds since the epoch, as ASCII bytes (cached within a millisecond)."""
    global _last_stamp
    ms = time_ns() // 1_000_000
    last = _last_stamp
    if ms != last[0]:
        last = _last_stamp = (ms, b"%d" % ms)
    return last[1]


_MAX_CHECKED = 1024  # names come from code, so there are few; past this, new ones stay slow


class MetricQueue:
    """Queues points for the writer. Subclasses provide ``_on_trigger()``, called
    when the queue reaches ``_trigger`` entries, and ``_append_fields(fields)``,
    the checked path for values that are not plain Python scalars and for field
    names not seen before."""

    __slots__ = ("_pending", "_checked", "_trigger")

    def __init__(self) -> None:
        self._pending: list = []
        self._checked: dict[tuple, tuple] = {}  # names that passed the check, to themselves
        self._trigger = 0

    def append(self, **fields: Any) -> None:
        """Add one point. Any keyword fields; ``value`` and ``step`` by convention.

        >>> exp.metrics("train_loss").append(value=0.5, step=1, epoch=0)  # doctest: +SKIP
        """
        text = 0
        for value in fields.values():
            cls = value.__class__
            if cls not in PLAIN:
                return self._append_fields(fields)
            if cls is str:
                if not value.isascii():
                    return self._append_fields(fields)
                text += len(value)
        if text > MAX_TEXT:  # the checked path says how much is too much
            return self._append_fields(fields)
        names = self._checked.get(tuple(fields))
        if names is None:  # new names (or none): checked once, then fast
            return self._append_fields(fields)
        pending = self._pending
        pending += (stamp(), names, *fields.values())  # one list.extend: atomic
        if len(pending) >= self._trigger:
            self._on_trigger()

    def _remember(self, names: tuple) -> tuple:
        """Record names that passed the check; return the one tuple to queue for
        them (points with equal names share it: the writer finds runs by identity)."""
        if len(self._checked) < _MAX_CHECKED:
            return self._checked.setdefault(names, names)
        return self._checked.get(names, names)

    def _push(self, fields: dict, at: bytes | None = None) -> None:
        """Queue checked fields (stamped now, or ``at``)."""
        fields = fields.copy()  # names and values from one state of the dict
        names = self._remember(tuple(fields))
        pending = self._pending
        pending += (at or stamp(), names, *fields.values())  # one list.extend: atomic

    def _push_batch(self, points: list, at: bytes) -> bool:
        """Queue dicts of numbers, all stamped ``at``, whose names passed the
        checked path before; False (nothing queued) when any point needs the
        checked path."""
        entries: list = []
        names = ()
        for point in list(points):  # the list as it is now (list() reads it in one step)
            if point.__class__ is not dict or not point:
                return False
            point = point.copy()  # names and values from one state of the dict
            # numbers only: text goes the checked path, which checks its Unicode and length
            if not NUMBERS.issuperset(map(type, point.values())):
                return False
            keys = tuple(point)
            if keys != names:
                if not all(key.__class__ is str and key.isascii() for key in keys):
                    return False
                names = self._checked.get(keys)
                if names is None:  # new names: the checked path takes them once, as in append()
                    return False
            entries += (at, names, *point.values())
        pending = self._pending
        pending += entries  # one list.extend: atomic
        return True

    def _take(self) -> list:
        """Everything queued so far, removed from the queue (the writer's side)."""
        pending = self._pending
        # Not a swap for a new list: an append on another thread may hold the old
        # one between reading ``_pending`` and extending it.
        taken = pending[:]
        del pending[: len(taken)]
        return taken
