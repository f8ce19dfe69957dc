"""The dashboard: its JSON API, its caches and the page in headless Chromium.

Every test module gets a column cache of its own (``column_cache``, autouse), so
no module reads another's parsed series.
"""

from __future__ import annotations

import pytest

from _ui_support import column_cache, launch_chromium  # noqa: F401 (column_cache: an autouse fixture)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per module of browser tests."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()
