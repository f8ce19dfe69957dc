"""The compiled speed-ups (``_speedups.c``, ``_pointparse.c``), each None where not built.

``MLDASH_PURE_PYTHON=1`` ignores them: the tests run both and compare.
"""

from __future__ import annotations

import os

speedups = pointparse = None
if not os.environ.get("MLDASH_PURE_PYTHON"):
    try:
        from . import _speedups as speedups  # noqa: F401 (read by importers)
    except ImportError:  # no compiler where mldash was installed: same results, slower
        pass
    try:
        from . import _pointparse as pointparse  # noqa: F401 (read by importers)
    except ImportError:
        pass
