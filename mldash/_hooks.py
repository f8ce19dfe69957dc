"""What a run's parts (its metrics, its documents) may ask of the run, and nothing more.

A ``Metric`` or ``Params`` is handed its folder and these callbacks, not the
Experiment: it cannot reach into the run, and the run can change without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class RunHooks:
    start: Callable[[], None]  # start (or resume) the run before a write
    pressure: Callable[[Any], None]  # a metric's queue reached its trigger: wake the writer, maybe wait
    before_read: Callable[[], None]  # make everything written so far readable
    changed: Callable[[str], None]  # a document (by file name) changed: replicate it
    remote: Callable[[], Any]  # the remote reader for a run with no local copy, or None
