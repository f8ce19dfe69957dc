"""What a run folder holds for upload, read from local files only (no server).

The append-only files of a run (``sources``), reading their lines from a byte
offset, what a target has not acknowledged yet (``pending``) and what it refused
(``problems``). The replicator and ``mldash sync`` both use these.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Iterator

from .. import _codec
from .._filestore import INDEX_STEM, SAVE, blob_path, files_folder
from .._naming import metric_parts
from .._runfolder import (
    CHECKPOINTS_STEM,
    CONSOLE_DIR,
    CONSOLE_STEM,
    DATA_FILE,
    DATA_STEM,
    DOCUMENTS,
    LOGS_DIR,
    LOGS_STEM,
    META_FILE,
    METRICS_DIR,
    checkpoint_records,
    read_document,
)
from .._series import STRIDE, SeriesReader
from ._state import META_KIND, RUN, Quarantine, read_state

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    """One append-only file of an experiment."""

    kind: str  # "metric", "logs", "console", "checkpoints" or "files" (files/files.jsonl)
    name: str  # metric name; the kind otherwise
    folder: str
    stem: str
    # Why it can never be uploaded (a metric folder whose name the server refuses,
    # such as ".hidden" written by an older version), else None.
    problem: str | None = None

    @property
    def data_path(self) -> str:
        return os.path.join(self.folder, self.stem + ".jsonl")

    def relpath(self, root: str) -> str:
        return os.path.relpath(self.data_path, root).replace(os.sep, "/")


@dataclass
class Pending:
    """What a server does not hold yet, counted from local files only."""

    bytes: int = 0
    points: int = 0
    logs: int = 0
    console: int = 0
    checkpoints: int = 0
    files: int = 0  # file records (saves and deletes); the bytes of the saved ones are in ``bytes``
    file_bytes: int = 0
    documents: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.bytes or self.documents)

    def describe(self) -> str:
        parts = []
        for count, what in ((self.points, "metric point"), (self.logs, "log"), (self.console, "console line"),
                            (self.checkpoints, "checkpoint record"), (self.files, "file record")):
            if count:
                parts.append(f"{count:,} {what}{'s' if count != 1 else ''}")
        if self.file_bytes:
            parts[-1] += f" ({_size(self.file_bytes)} of files)"
        if self.documents:
            parts.append("the run's " + "/".join(self.documents))
        if len(parts) > 1:
            return ", ".join(parts[:-1]) + " and " + parts[-1]
        return parts[0] if parts else "nothing"


def sources(path: str) -> Iterator[Source]:
    """Every append-only file of the experiment at ``path``, metrics sorted by name.

    A metric folder whose name the shared rule (``_naming.metric_parts``) refuses
    comes with its ``problem``: it is reported, never skipped in silence.
    """
    base = os.path.join(path, METRICS_DIR)
    found = []
    for folder, dirs, files in os.walk(base):
        if META_FILE in files:  # another run's folder, from before runs could not nest
            dirs[:] = []
            name = os.path.relpath(folder, base).replace(os.sep, "/")
            found.append(Source("metric", name, folder, DATA_STEM, "another run lives in this run's folder here; "
                                "it is not uploaded as part of this run (move it out)"))
            continue
        if DATA_FILE in files:
            name = os.path.relpath(folder, base).replace(os.sep, "/")
            problem = None
            try:
                metric_parts(name)
            except (TypeError, ValueError) as error:
                problem = f"the server cannot hold this series: {error}"
            found.append(Source("metric", name, folder, DATA_STEM, problem))
    yield from sorted(found, key=lambda s: s.name)
    yield Source("logs", "logs", os.path.join(path, LOGS_DIR), LOGS_STEM)
    yield Source("console", "console", os.path.join(path, CONSOLE_DIR), CONSOLE_STEM)
    yield Source("checkpoints", "checkpoints", checkpoint_records(path), CHECKPOINTS_STEM)
    yield Source("files", "files", files_folder(path), INDEX_STEM)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def read_lines(path: str, offset: int, size: int, budget: int) -> tuple[list[bytes], int]:
    """Complete lines from ``offset`` (about ``budget`` bytes) and the offset after them.

    A last line without its newline is still being written: it waits for the next pass.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max(1, min(budget, size - offset)))
        end = data.rfind(b"\n")
        while end < 0 and offset + len(data) < size:  # one line longer than the budget
            more = f.read(min(_CHUNK, size - offset - len(data)))
            if not more:
                break
            at = more.find(b"\n")
            data += more
            if at >= 0:
                end = len(data) - len(more) + at
    if end < 0:
        return [], offset
    return data[:end].split(b"\n"), offset + end + 1


def count_lines(path: str, start: int, end: int) -> tuple[int, int]:
    """Complete lines between two offsets, and the offset after the last of them."""
    n = 0
    last = start
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while pos < end:
            block = f.read(min(1 << 20, end - pos))
            if not block:
                break
            found = block.count(b"\n")
            if found:
                n += found
                last = pos + block.rfind(b"\n") + 1
            pos += len(block)
    return n, last


def offset_of_line(source: Source, index: int) -> tuple[int, int]:
    """The byte offset where line ``index`` starts, using the ``.idx`` sidecar.

    Returns ``(offset, line)``; ``line`` is less than ``index`` when the file
    has fewer complete lines (then offset is the end of its last complete line).
    """
    path = source.data_path
    size = file_size(path)
    if index <= 0 or size == 0:
        return 0, 0
    reader = SeriesReader(source.folder, source.stem)
    with open(path, "rb") as f:
        marks = reader.marks(size)
        k = min(index // STRIDE, len(marks) - 1) if marks else -1
        offset = marks[k] if k >= 0 else 0
        line = k * STRIDE if k >= 0 else 0
        f.seek(offset)
        pos = offset
        while line < index and pos < size:
            block = f.read(min(_CHUNK, size - pos))
            if not block:
                break
            at = block.find(b"\n")
            while at >= 0 and line < index:
                line += 1
                offset = pos + at + 1
                at = block.find(b"\n", at + 1)
            pos += len(block)
    return offset, line


def problems(path: str, url: str, namespace: str, include_accepted: bool = False) -> list[dict]:
    """What of ``path`` the target refused (its quarantine entries), and the series
    it can never hold that no sync has listed yet (local files only)."""
    quarantine = Quarantine(path, url, namespace)
    everything = quarantine.entries(include_accepted=True)
    out = [e for e in everything if include_accepted or not e.get("accepted")]
    known = {(e.get("kind"), e.get("name")) for e in everything if e.get("index") is None}
    for source in sources(path):
        if source.problem and (source.kind, source.name) not in known:
            out.append({"target": quarantine.target, "kind": source.kind, "name": source.name, "index": None,
                        "reason": source.problem, "accepted": False})
    return out


def describe_problem(entry: dict) -> str:
    """One quarantine entry in words: what (series, log, field...), which index, why."""
    kind, name, index = entry.get("kind"), entry.get("name"), entry.get("index")
    if kind == RUN:
        what = "the whole run"
    elif kind == "metric":
        what = f"metric {name!r}" + (f" point {index}" if index is not None else " (every point)")
    elif kind == "logs":
        what = f"log {index}"
    elif kind == "console":
        what = f"console line {index}"
    elif kind == "checkpoints":
        what = f"checkpoint {index}"
    elif kind == "files":
        what = f"file record {index}"
    elif kind == META_KIND:
        what = f"experiment.json field {name!r}"
    elif name is None:
        what = f"the {kind} document"
    else:
        what = f"{kind} key {name!r}"
    return f"{what}: {entry.get('reason')}"


def pending(path: str, url: str, namespace: str) -> Pending:
    """What of ``path`` the target has not acknowledged yet (local files only)."""
    state = read_state(path, url, namespace)
    out = Pending()
    for source in sources(path):
        if source.problem:
            continue  # never sendable: reported by problems(), not pending
        size = file_size(source.data_path)
        offset, _index = state.cursor(source.relpath(path)) or (0, 0)
        if size <= offset:
            continue
        n, end = count_lines(source.data_path, offset, size)
        out.bytes += end - offset
        if source.kind == "metric":
            out.points += n
        elif source.kind == "logs":
            out.logs += n
        elif source.kind == "console":
            out.console += n
        elif source.kind == "files":
            out.files += n
            blobs = file_bytes(path, source.data_path, offset, end)
            out.file_bytes += blobs
            out.bytes += blobs
        else:
            out.checkpoints += n
    for rel in (*DOCUMENTS, META_FILE):
        data = read_bytes(os.path.join(path, rel))
        if data and state.digest(rel) != digest(data):
            out.documents.append({META_FILE: "status"}.get(rel) or rel.split("/")[0].split(".")[0])
            out.bytes += len(data)
    return out


def file_bytes(run_path: str, index: str, start: int, end: int) -> int:
    """The bytes of the files saved by the records between two offsets of the index
    (each distinct content once; those no longer on disk, deleted since, not at all)."""
    with open(index, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    sizes = {}
    for line in data.split(b"\n"):
        try:
            record = _codec.loads(line) if line else None
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("op") == SAVE and isinstance(record.get("checksum"), str):
            size = record.get("sizeBytes")
            if size.__class__ is int and record["checksum"] not in sizes:
                try:
                    if os.path.exists(blob_path(run_path, record["checksum"])):
                        sizes[record["checksum"]] = size
                except ValueError:
                    continue
    return sum(sizes.values())


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def namespace_of(path: str, default: str | None = None) -> str:
    meta = read_document(os.path.join(path, META_FILE))
    return default or meta.get("namespace") or "default"
