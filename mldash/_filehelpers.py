"""The builder's ``save_*`` helpers (``exp.files(...).save_json(...)`` and the like):
each serializes its object straight into the store through ``_serialized``. A mixin
of ``mldash.files.FileBuilder``, which supplies ``_fields``, ``_target`` and ``_store``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class _SaveHelpers:
    """``FileBuilder``'s serializing helpers."""


    def save_json(self, obj: Any, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        """``obj`` as indented JSON (numpy and torch scalars, paths, enums converted)."""
        import json

        from .params import to_json_value

        data = json.dumps(obj, indent=2, ensure_ascii=False, default=to_json_value).encode()
        return self._serialized(lambda f: f.write(data), file_name, to, "application/json", wait, fields)

    def save_text(self, text: str, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        if not isinstance(text, str):
            raise TypeError(f"save_text() takes a str, not {type(text).__name__}")
        data = text.encode()
        return self._serialized(lambda f: f.write(data), file_name, to, None, wait, fields)

    def save_blob(self, data: bytes, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"save_blob() takes bytes, not {type(data).__name__}")
        return self._serialized(lambda f: f.write(data), file_name, to, None, wait, fields)

    def save_pkl(self, obj: Any, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        """``obj`` pickled (written straight into the store: no second copy)."""
        import pickle

        return self._serialized(lambda f: pickle.dump(obj, f), file_name, to, "application/octet-stream", wait, fields)

    def save_torch(self, obj: Any, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        """``torch.save(obj)`` straight into the store. torch is loaded here only (it
        already is, when ``obj`` holds tensors)."""
        torch = _module("torch", "save_torch")
        return self._serialized(lambda f: torch.save(obj, f), file_name, to, "application/octet-stream", wait, fields)

    def save_fig(self, fig: Any = None, file_name: str | None = None, *, to: str | None = None,
                 wait: bool = True, **savefig_kwargs):
        """A matplotlib figure (None: the current one) as ``file_name`` (default
        figure.png; the extension picks the format), then closed, as ml-dash does.
        Other keywords go to ``fig.savefig``."""
        fields = {k: savefig_kwargs.pop(k) for k in ("description", "tags", "metadata") if k in savefig_kwargs}
        name = to if to is not None else file_name if file_name is not None else "figure.png"
        if fig is None:
            fig = _module("matplotlib.pyplot", "save_fig").gcf()
        fmt = os.path.splitext(name)[1][1:].lower() or "png"
        savefig_kwargs.setdefault("format", fmt)

        def write(f) -> None:
            fig.savefig(f, **savefig_kwargs)

        record = self._serialized(write, None, name, None, wait, fields)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
        return record

    def _serialized(self, write, file_name, to, content_type, wait: bool, fields: dict):
        fields = self._fields(fields.pop("description", None), fields.pop("tags", None), fields.pop("metadata", None),
                              extra=fields)
        prefix, name = self._target(_required(to if to is not None else file_name, "this helper"))
        return self._store.save_written(write, prefix, name, fields, content_type, wait)


def _required(name: Any, what: str) -> str:
    if name is None:
        raise ValueError(f"a file name is required when saving {what}: pass to=... (or file_name)")
    return name


def _module(name: str, helper: str):
    # The user's own framework, loaded on demand for the one helper that calls it
    # (importlib: the core of mldash has no import of it).
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"{helper}() needs {name.split('.')[0]}, which is not installed: {error}") from None
    return module
