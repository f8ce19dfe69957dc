"""Reading a local root: the experiments in it and what each one holds.

Used by ``mldash ls``/``show`` and the dashboard; never writes.
"""

from __future__ import annotations

import os
import socket
from typing import Iterator

from .experiment import META_FILE, read_log_records
from .metrics import last_point, read_series
from .params import read_document

_DATA_DIRS = {"metrics", "logs", "parameters", "checkpoints"}


def find_experiments(root: str) -> Iterator[str]:
    """Directories under ``root`` that hold an experiment.json, sorted."""
    root = os.path.abspath(root)
    for folder, dirs, files in os.walk(root):
        if META_FILE in files:
            dirs[:] = []  # an experiment does not nest experiments
            yield folder
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))


def metric_names(path: str) -> list[str]:
    base = os.path.join(path, "metrics")
    names = []
    for folder, _dirs, files in os.walk(base):
        if "data.jsonl" in files:
            names.append(os.path.relpath(folder, base).replace(os.sep, "/"))
    return sorted(names)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_meta(path: str) -> dict:
    """experiment.json, with ``stale`` set when a RUNNING run's process is gone."""
    meta = read_document(os.path.join(path, META_FILE))
    meta["path"] = path
    meta["stale"] = bool(
        meta.get("status") == "RUNNING"
        and meta.get("host") == socket.gethostname()
        and isinstance(meta.get("pid"), int)
        and not pid_alive(meta["pid"])
    )
    return meta


def latest_metrics(path: str) -> dict[str, dict]:
    """The last point of every series: ``{name: {"index", "timestamp", "data"}}``."""
    out = {}
    for name in metric_names(path):
        point = last_point(os.path.join(path, "metrics", *name.split("/")))
        if point is not None:
            out[name] = point
    return out


def headline(point: dict) -> object:
    """The value to show for a point: its ``value`` field, else its first number."""
    data = point.get("data", {})
    if "value" in data:
        return data["value"]
    for key, value in data.items():
        if key not in ("step", "epoch", "timestamp") and isinstance(value, (int, float)):
            return value
    return next(iter(data.values()), None)


def experiment_summary(path: str) -> dict:
    meta = load_meta(path)
    meta["params"] = read_document(os.path.join(path, "parameters", "parameters.json"))
    meta["summary"] = read_document(os.path.join(path, "summary.json"))
    meta["metrics"] = latest_metrics(path)
    return meta


def resolve(root: str, prefix: str) -> str:
    """The directory of ``prefix`` under ``root``, refusing paths that leave it."""
    from ._naming import split_path

    parts = split_path(prefix, "prefix")
    path = os.path.join(os.path.abspath(root), *parts)
    if not os.path.isfile(os.path.join(path, META_FILE)):
        raise FileNotFoundError(f"no experiment {prefix!r} under {os.path.abspath(root)}")
    return path


__all__ = [
    "find_experiments",
    "metric_names",
    "load_meta",
    "latest_metrics",
    "experiment_summary",
    "headline",
    "read_series",
    "read_log_records",
    "resolve",
]
