"""The dashboard: its JSON API, its caches and the page in headless Chromium.

Every test module gets a column cache of its own (``column_cache``, autouse), so
no module reads another's parsed series.
"""

from __future__ import annotations

from _ui_support import column_cache  # noqa: F401 (an autouse fixture)
