"""The run folder: where each part of a run lives, and reading it.

Every writer (the Experiment, its metrics and parameters) and every reader (the
CLI, the dashboard, the server, sync and the remote reader) takes the layout
from here, so a file name is spelled once. Nothing here imports the write side.

```
{root}/{project}/{folder...}/{name}/
  experiment.json               META_FILE
  parameters/parameters.json    PARAMS_FILE
  summary.json                  SUMMARY_FILE
  metrics/{name}/data.jsonl     metric_folder(path, name)
  logs/logs.jsonl               LOGS_DIR, LOGS_STEM
  logs/checkpoints.jsonl        checkpoint_records(path)
  console/console.jsonl         CONSOLE_DIR, CONSOLE_STEM (captured stdout/stderr, _console.py)
```
Checkpoint records live with the log records, not in ``checkpoints/``: that is
where Lightning's ModelCheckpoint saves the checkpoint files, a folder its users
(and its tests) expect to hold checkpoints only. Runs written before keep theirs
in ``checkpoints/checkpoints.jsonl`` (``LEGACY_CHECKPOINTS_DIR``), read and
appended there.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from contextlib import contextmanager
from typing import Iterator

import orjson

from . import _codec
from ._naming import split_path
from ._series import SeriesReader

RUNNING, COMPLETED, FAILED, CANCELLED = "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
STATUSES = (RUNNING, COMPLETED, FAILED, CANCELLED)
LEVELS = ("debug", "info", "warn", "error", "fatal")
LEVEL_NO = {level: n for n, level in enumerate(LEVELS)}

META_FILE = "experiment.json"
PARAMS_FILE = "parameters/parameters.json"
SUMMARY_FILE = "summary.json"
# The documents a run holds, by the kind the server calls them.
DOCUMENTS = {PARAMS_FILE: "parameters", SUMMARY_FILE: "summary"}
METRICS_DIR = "metrics"
DATA_STEM = "data"  # metrics/{name}/data.jsonl
DATA_FILE = DATA_STEM + ".jsonl"
LOGS_DIR, LOGS_STEM = "logs", "logs"
CHECKPOINTS_STEM = "checkpoints"
CONSOLE_DIR, CONSOLE_STEM = "console", "console"
LEGACY_CHECKPOINTS_DIR = "checkpoints"


def checkpoint_records(path: str) -> str:
    """The folder of the run's checkpoint records (``CHECKPOINTS_STEM`` files)."""
    legacy = os.path.join(path, LEGACY_CHECKPOINTS_DIR)
    if os.path.exists(os.path.join(legacy, CHECKPOINTS_STEM + ".jsonl")):
        return legacy  # an older run: one file, not two
    return os.path.join(path, LOGS_DIR)


def metric_folder(path: str, name: str) -> str:
    """The folder of series ``name`` (already checked) in the run at ``path``."""
    return os.path.join(path, METRICS_DIR, *name.split("/"))


# ---- documents -------------------------------------------------------------------
@contextmanager
def locked(path: str) -> Iterator[None]:
    """An exclusive lock shared by every process that updates ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock_path = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_document(path: str) -> dict:
    """A JSON document ({} when the file does not exist yet)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    return _codec.loads(data) if data else {}


def write_atomic(path: str, data: bytes) -> None:
    """Write a whole file so that readers see the old one or the new one."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def update_document(path: str, changes, max_bytes: int | None = None, what: str = "document") -> dict:
    """Merge ``changes`` into the JSON document at ``path``, atomically.

    ``changes`` is a dict, or a function of the current document returning one
    (for updates that depend on what another process wrote). With ``max_bytes``,
    a merge that would make the document larger is refused (ValueError), and
    the document stays as it was.
    """
    with locked(path):
        document = read_document(path)
        document.update(changes(document) if callable(changes) else changes)
        data = _codec.dumps(document, default=str)
        if max_bytes is not None and len(data) > max_bytes:
            raise ValueError(
                f"the {what} document would be {len(data):,} bytes as JSON; at most {max_bytes:,} are allowed"
            )
        write_atomic(path, data)
        return document



# ---- series, logs, checkpoints ----------------------------------------------------
def check_range(start_index: int, limit: int) -> None:
    if not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"start_index must be an int >= 0, got {start_index!r}")
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an int >= 0, got {limit!r}")


_MS_LIMIT = 2**63  # a write time is an int64 of milliseconds


def stored_rows(lines: list[bytes], tagged: bool | None = None) -> list:
    """Stored lines as [ms, fields] rows, tags decoded; a damaged line (not JSON, or not
    a [time, {fields}] pair) is None there. ``tagged``: whether any line may hold a tag
    (None: look)."""
    try:
        rows = orjson.loads(b"[" + b",".join(lines) + b"]")
        if len(rows) != len(lines):  # a line holding two values ("[..],[..]"): line by line
            raise orjson.JSONDecodeError("not one value a line", "", 0)
    except orjson.JSONDecodeError:
        rows = []
        for line in lines:
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                rows.append(None)
    if tagged is None:
        tagged = any(_codec._TAG_BYTES in line for line in lines)
    out = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and row[0].__class__ is int and -_MS_LIMIT <= row[0] < _MS_LIMIT
                and isinstance(row[1], dict)):
            out.append(None)
            continue
        if tagged:
            row[1] = _codec.untag(row[1])
            if not isinstance(row[1], dict):  # a tag in place of the fields ({"$float": "NaN"})
                out.append(None)
                continue
        out.append(row)
    return out


def decode_points(lines: list[bytes], first_index: int) -> list[dict]:
    """Turn stored lines into read() points; a damaged line is skipped."""
    return [
        {"index": first_index + i, "timestamp": row[0] / 1000, "data": row[1]}
        for i, row in enumerate(stored_rows(lines)) if row is not None
    ]


def read_series(folder: str, start_index: int = 0, limit: int = 1000) -> dict:
    lines, total = SeriesReader(folder).lines(start_index, limit)
    return page(decode_points(lines, start_index), start_index, start_index + len(lines) - 1, total)


def page(data: list, start_index: int, end_index: int, total: int) -> dict:
    """The shape every read returns: ``end_index`` is the last index returned, so
    the next page starts at ``end_index + 1``."""
    return {
        "data": data,
        "start_index": start_index,
        "end_index": end_index,
        "total": total,
        "has_more": end_index + 1 < total,
    }


def iter_points(read, page: int = 50_000) -> Iterator[dict]:
    """Every point of a series, a page at a time: ``read(start_index, limit)`` is a
    ``Metric.read``-shaped reader (local or remote)."""
    start = 0
    while True:
        reply = read(start, page)
        yield from reply["data"]
        if not reply.get("has_more") or not reply["data"]:
            return
        start = reply["end_index"] + 1


def last_point(folder: str) -> dict | None:
    lines, total = SeriesReader(folder).lines(-1, 1)
    points = decode_points(lines, total - 1)
    return points[0] if points else None


def read_log_records(folder: str, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
    reader = SeriesReader(folder, LOGS_STEM)
    if level is None:
        lines, total = reader.lines(start_index, limit)
        records = [_record(line, start_index + i) for i, line in enumerate(lines) if line]
    else:
        floor = LEVEL_NO[level]
        lines, total = reader.lines(start_index, None)
        records = []
        for i, line in enumerate(lines):
            record = _record(line, start_index + i)
            # A level this version does not know (a damaged or newer file) reads as info.
            if LEVEL_NO.get(record.get("level"), 1) >= floor:
                records.append(record)
                if len(records) >= limit:
                    break
    return page(records, start_index, records[-1]["index"] if records else start_index - 1, total)


def read_checkpoints(path: str) -> list[dict]:
    """Every checkpoint record of the run at ``path``, oldest first."""
    lines, _ = SeriesReader(checkpoint_records(path), CHECKPOINTS_STEM).lines()
    return [_record(line, i) for i, line in enumerate(lines) if line]


def _record(line: bytes, index: int) -> dict:
    """A log or checkpoint record; one without its index (a line put back from a
    rescue folder) gets its line number, which is what the index is."""
    record = _codec.loads(line)
    if "index" not in record:
        record["index"] = index
    return record


# ---- the experiments under a root -------------------------------------------------
def nested_run(root: str, path: str) -> str | None:
    """The folder of a run that ``path`` would lie inside of, or that would lie
    inside ``path``, under ``root``; None when there is none.

    A run inside another's folder would mix their files (its metrics folder is
    the other's series, its experiment.json hides the other from listings), so
    a run may start neither inside another run nor around one.
    """
    parent = os.path.dirname(path)
    while parent.startswith(root) and len(parent) >= len(root):
        if os.path.exists(os.path.join(parent, META_FILE)):
            return parent
        if parent == root:
            break
        parent = os.path.dirname(parent)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, META_FILE)):
        for folder, _dirs, files in os.walk(path):
            if META_FILE in files:
                return folder
    return None


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
    """Every series stored in the run at ``path``, sorted."""
    base = os.path.join(path, METRICS_DIR)
    names = []
    for folder, _dirs, files in os.walk(base):
        if DATA_FILE in files:
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
        point = last_point(metric_folder(path, name))
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
    meta["params"] = read_document(os.path.join(path, PARAMS_FILE))
    meta["summary"] = read_document(os.path.join(path, SUMMARY_FILE))
    meta["metrics"] = latest_metrics(path)
    return meta


def resolve(root: str, prefix: str) -> str:
    """The directory of ``prefix`` under ``root``, refusing paths that leave it."""
    parts = split_path(prefix, "prefix")
    path = os.path.join(os.path.abspath(root), *parts)
    if not os.path.isfile(os.path.join(path, META_FILE)):
        raise FileNotFoundError(f"no experiment {prefix!r} under {os.path.abspath(root)}")
    return path
