"""Run a function right after a module is imported, without importing it ourselves.

For integrations that must register with a framework the moment it loads
(Lightning's two Logger base classes, transformers' ``report_to`` table) where
importing the framework eagerly would cost seconds. A finder first on
``sys.meta_path`` lets the normal finders locate the module and wraps its loader;
the module then looks exactly as if the hook had not been there.

>>> when_imported("json", lambda module: print(module.__name__))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import threading
from typing import Callable

_pending: dict[str, list[Callable]] = {}
_lock = threading.Lock()


def when_imported(name: str, callback: Callable) -> None:
    """Call ``callback(module)`` once ``name`` is imported: now, if it already is."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    with _lock:
        _pending.setdefault(name, []).append(callback)
        if _Finder not in sys.meta_path:
            sys.meta_path.insert(0, _Finder)


def wrapped_spec(name: str, path, target, after: Callable, skip: Callable = lambda finder: False):
    """The spec the other finders give for ``name``, its loader wrapped to call
    ``after(module)`` once the module has run; ``skip`` leaves out finders (ours)."""
    spec = None
    for finder in list(sys.meta_path):
        if finder is _Finder or skip(finder):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path, target)
        if spec is not None:
            break
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return spec
    spec.loader = _CallingLoader(spec.loader, spec, after)
    return spec


class _Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in _pending:
            return None
        return wrapped_spec(name, path, target, _run_pending)


def _run_pending(module) -> None:
    with _lock:
        callbacks = _pending.pop(module.__name__, [])
        if not _pending and _Finder in sys.meta_path:
            sys.meta_path.remove(_Finder)
    for callback in callbacks:
        callback(module)


class _CallingLoader:
    """Runs the real loader, puts it back on the module, then calls ``after``."""

    def __init__(self, loader, spec, after: Callable) -> None:
        self._loader = loader
        self._spec = spec
        self._after = after

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            # Leave no trace: the module looks exactly as if we had not been there.
            self._spec.loader = self._loader
            module.__loader__ = self._loader
        self._after(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)
