"""The compiled speed-ups (``_speedups.c``), or None where they were not built.

``MLDASH_PURE_PYTHON=1`` ignores them: the tests run both and compare.
"""

from __future__ import annotations

import os

speedups = None
if not os.environ.get("MLDASH_PURE_PYTHON"):
    try:
        from . import _speedups as speedups
    except ImportError:  # no compiler where mldash was installed: same results, slower
        pass
