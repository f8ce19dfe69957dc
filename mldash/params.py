"""Parameters: one flat JSON document per experiment, merged on every ``set``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import os
import pathlib
import types
from typing import Any

from . import _codec
from ._checks import MAX_DEPTH, MAX_DOCUMENT, MAX_RECORD, RECORD_DEPTH, check_document, check_json
from ._hooks import RunHooks
from ._runfolder import PARAMS_FILE, SUMMARY_FILE, read_document, update_document
from ._writer import StorageError

SEPARATOR = "."


def to_mapping(obj: Any) -> dict:
    """Turn a config object into a (possibly nested) dict.

    Accepts dicts, argparse.Namespace, SimpleNamespace, dataclass instances,
    pydantic models, OmegaConf configs, and paths to .json/.yaml/.toml files.
    """
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load_file(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    module = type(obj).__module__
    if module.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True, throw_on_missing=False)
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and hasattr(type(obj), "model_fields"):
        return dump()
    legacy = getattr(obj, "dict", None)
    if callable(legacy) and hasattr(type(obj), "__fields__"):
        return legacy()  # pydantic v1
    if isinstance(obj, types.SimpleNamespace) or type(obj).__name__ == "Namespace":
        return dict(vars(obj))
    if hasattr(obj, "items") and callable(obj.items):
        return dict(obj.items())  # Mapping types such as AttributeDict
    raise TypeError(
        f"params.set() cannot read a {type(obj).__name__}; pass a dict, argparse.Namespace, "
        "dataclass, pydantic model, OmegaConf config, SimpleNamespace or a .json/.yaml/.toml path"
    )


def load_file(path: str | os.PathLike) -> dict:
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml", ".toml"):
        raise ValueError(f"params.set() reads .json, .yaml or .toml files, not {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"params.set(): no such config file {str(path)!r}")
    text = path.read_bytes()
    if suffix == ".json":
        data = _codec.loads(text)
    elif suffix == ".toml":
        import tomllib

        data = tomllib.loads(text.decode())
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} holds a {type(data).__name__}, not a mapping of parameters")
    return data


def to_json_value(value: Any, _depth: int = 0) -> Any:
    """A JSON value for ``value``: numbers stay numbers, odd objects become strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # any size: the codec stores big ints exactly
    if isinstance(value, float):
        return float(value)
    if _depth > MAX_DEPTH:
        raise ValueError(f"a value nests more than {MAX_DEPTH} levels deep")
    if isinstance(value, enum.Enum):
        return to_json_value(value.value, _depth + 1)
    if isinstance(value, (pathlib.PurePath,)):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}".lstrip(".")
    if isinstance(value, dict):
        return {str(k): to_json_value(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json_value(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    count = numel() if callable(numel) else size if isinstance(size, int) else None
    if count is not None and hasattr(value, "tolist"):
        if count <= 10_000:  # small arrays and tensors keep their numbers
            return to_json_value(value.tolist(), _depth + 1)
        return f"<{type(value).__name__} shape={tuple(getattr(value, 'shape', ()))}>"
    if hasattr(value, "item"):
        try:
            return to_json_value(value.item(), _depth + 1)
        except Exception:
            pass
    if dataclasses.is_dataclass(value) or type(value).__module__.startswith("omegaconf"):
        return to_json_value(to_mapping(value), _depth + 1)
    return str(value)


def flatten(values: dict, prefix: str = "", out: dict | None = None, _depth: int = 0) -> dict:
    """``{"model": {"lr": 1}}`` -> ``{"model.lr": 1}``; config objects nest too."""
    out = {} if out is None else out
    if _depth >= MAX_DEPTH:
        raise ValueError(f"parameters nest more than {MAX_DEPTH} levels deep (at {prefix[:200]!r})")
    for key, value in values.items():
        name = f"{prefix}{key}"
        nested = _as_nested(value)
        if nested is not None and nested:
            flatten(nested, name + SEPARATOR, out, _depth + 1)
        else:
            out[name] = to_json_value(value) if nested is None else {}
    return out


def _as_nested(value: Any) -> dict | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, (str, bytes, os.PathLike, type)) or value is None:
        return None
    if dataclasses.is_dataclass(value) or isinstance(value, types.SimpleNamespace):
        return to_mapping(value)
    module = type(value).__module__
    if module.startswith("omegaconf") and type(value).__name__ == "DictConfig":
        return to_mapping(value)
    if hasattr(type(value), "model_fields") and callable(getattr(value, "model_dump", None)):
        return value.model_dump()
    if type(value).__name__ in ("Namespace", "AttributeDict"):
        return dict(vars(value)) if type(value).__name__ == "Namespace" else dict(value)
    return None


def unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(SEPARATOR)
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else {"": child}
            node = child
        if isinstance(node.get(parts[-1]), dict):
            node[parts[-1]][""] = value
        else:
            node[parts[-1]] = value
    return nested


class Params:
    """``exp.params``: hyperparameters, flattened with "." and merged on each set."""

    def __init__(self, folder: str, hooks: RunHooks, filename: str = PARAMS_FILE) -> None:
        self._filename = filename
        self._path = os.path.join(folder, filename)
        self._hooks = hooks
        self._what = "summary" if filename == SUMMARY_FILE else "parameter"

    def set(self, *objects: Any, **values: Any) -> None:
        """Merge parameters; nested values flatten to ``a.b.c`` keys.

        >>> exp.params.set(lr=1e-3, model={"layers": 4})  # doctest: +SKIP
        >>> exp.params.get()["model.layers"]  # doctest: +SKIP
        4
        """
        flat: dict = {}
        for obj in objects:
            flatten(to_mapping(obj), out=flat)
        flatten(values, out=flat)
        if not flat:
            return
        check_document(flat, self._what)
        self._hooks.start()
        try:
            update_document(self._path, flat, max_bytes=MAX_DOCUMENT, what=self._what)
        except OSError as error:
            raise StorageError(f"mldash could not write the {self._what}s to {self._path}: {error}; "
                               "they were not stored") from error
        self._hooks.changed(self._filename)

    def get(self, flatten: bool = True) -> dict:
        """All parameters: flat ``{"a.b": v}``, or nested with ``flatten=False``."""
        self._hooks.before_read()
        flat = read_document(self._path)
        if not flat and not os.path.exists(self._path):
            remote = self._hooks.remote()
            if remote is not None:
                flat = remote.read_document(self._filename)
        return flat if flatten else unflatten(flat)


def encode_record(value: dict, what: str, nul: bool = True) -> bytes:
    """A log's metadata or a checkpoint record encoded as stored (numpy and torch
    values, paths and other objects converted), or a clear error at the call: bad
    text, too deep, too big."""
    check_json(value, what, nul=nul, strict=False, depth=RECORD_DEPTH)  # the encoder converts the rest
    try:
        data = _codec.dumps(value, default=to_json_value)
    except TypeError as error:
        raise TypeError(f"{what} cannot be stored: {error}") from None
    if len(data) > MAX_RECORD:
        raise ValueError(f"{what} is {len(data):,} bytes as JSON; at most {MAX_RECORD:,} are allowed")
    return data
