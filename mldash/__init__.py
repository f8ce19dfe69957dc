"""mldash: experiment tracking with the lowest overhead in the training loop.

>>> import mldash
>>> exp = mldash.Experiment("project/run-1")  # doctest: +SKIP
>>> exp.metrics("loss").append(value=0.5, step=1)  # doctest: +SKIP
"""

from ._media import Histogram, Image
from ._runfolder import CANCELLED, COMPLETED, FAILED, LEVELS, RUNNING, STATUSES
from ._writer import StorageError
from .experiment import Experiment

__version__ = "0.1.0"
__all__ = [
    "Experiment",
    "Image",
    "Histogram",
    "StorageError",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "STATUSES",
    "LEVELS",
    "runs",
    "__version__",
]


def __getattr__(name: str):
    # mldash.runs loads its module (and the filter parser) on first use only.
    if name == "runs":
        from ._runs import runs

        return runs
    raise AttributeError(f"module 'mldash' has no attribute {name!r}")
