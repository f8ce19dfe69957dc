"""Replicate one local experiment directory to a server, from where it stopped.

The local directory is the source of truth. Append-only files (metric series,
logs, checkpoints) are read from each file's cursor and sent as their raw
lines: the request body is assembled from the bytes on disk, so nothing is
decoded and re-encoded on the way. Whole-file documents (parameters, summary,
experiment.json) are sent again when their digest changes.

Used by the uploader thread during a run and by ``mldash sync`` afterwards.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import orjson

from .. import _codec
from .._series import STRIDE, SeriesReader
from ..params import read_document
from ._http import Api, Conflict, NotFound, RemoteError
from ._state import SyncState, read_state

META = "experiment.json"
DOCUMENTS = {"parameters/parameters.json": "parameters", "summary.json": "summary"}
# Raw bytes of lines per request, before gzip (the server accepts 32 MiB).
MAX_BATCH_BYTES = 4 << 20
_CHUNK = 1 << 16


class NotReady(Exception):
    """The run has not written its experiment.json yet (its writer thread does that
    first thing after start): nothing to upload for a moment."""


@dataclass(frozen=True)
class Source:
    """One append-only file of an experiment."""

    kind: str  # "metric", "logs" or "checkpoints"
    name: str  # metric name; the kind otherwise
    folder: str
    stem: str

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
    checkpoints: int = 0
    documents: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.bytes or self.documents)

    def describe(self) -> str:
        parts = []
        for count, what in ((self.points, "metric point"), (self.logs, "log"), (self.checkpoints, "checkpoint record")):
            if count:
                parts.append(f"{count:,} {what}{'s' if count != 1 else ''}")
        if self.documents:
            parts.append("the run's " + "/".join(self.documents))
        if len(parts) > 1:
            return ", ".join(parts[:-1]) + " and " + parts[-1]
        return parts[0] if parts else "nothing"


def sources(path: str) -> Iterator[Source]:
    """Every append-only file of the experiment at ``path``, metrics sorted by name."""
    base = os.path.join(path, "metrics")
    found = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if "data.jsonl" in files:
            found.append(Source("metric", os.path.relpath(folder, base).replace(os.sep, "/"), folder, "data"))
    yield from sorted(found, key=lambda s: s.name)
    yield Source("logs", "logs", os.path.join(path, "logs"), "logs")
    yield Source("checkpoints", "checkpoints", os.path.join(path, "checkpoints"), "checkpoints")


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _size(path: str) -> int:
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
    size = _size(path)
    if index <= 0 or size == 0:
        return 0, 0
    reader = SeriesReader(source.folder, source.stem)
    with open(path, "rb") as f:
        marks = reader._marks(size)
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


def meta_payload(meta: dict) -> dict:
    """experiment.json as the server's ``meta``: its local ``id`` renamed, so it
    never shadows the server's own id."""
    meta = dict(meta)
    local_id = meta.pop("id", None)
    if local_id is not None:
        meta["local_id"] = local_id
    meta.pop("path", None)
    return meta


class Replicator:
    """Upload what one experiment directory holds and a server does not.

    >>> rep = Replicator(exp.path, Api(url, token), "default", url)  # doctest: +SKIP
    >>> while not rep.run_pass():  # doctest: +SKIP
    ...     pass
    """

    def __init__(
        self,
        path: str,
        api: Api,
        namespace: str,
        url: str,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self.path = path
        self.api = api
        self.namespace = namespace
        self.url = url
        self.max_batch_bytes = max_batch_bytes
        self.state = SyncState(path, url, namespace)
        # Once per session the cursors are checked against what the server holds.
        self._reconciled = False

    # ---- counting (no network) ----------------------------------------------------
    def pending(self) -> Pending:
        return pending(self.path, self.url, self.namespace)

    # ---- one pass -------------------------------------------------------------------
    def run_pass(self, progress: Callable[[int], None] | None = None) -> bool:
        """Send what is pending now; True when the server held everything at the end.

        Raises ``Unavailable`` (try later) or ``RemoteError`` (request refused).
        """
        with self.state.locked() as state:
            for _attempt in range(3):
                try:
                    return self._run(state, progress)
                except NotFound:
                    # The server lost the experiment (a new database?): start over.
                    state.forget_server()
                    state.save()
                    self._reconciled = False
                except Conflict:
                    # A batch would leave a gap: the server holds less than our cursors
                    # say. Resume every file from what it does hold.
                    self._reconciled = False
                except RemoteError as error:
                    if error.status != 413 or self.max_batch_bytes <= _CHUNK:
                        raise
                    # A proxy in front of the server may take less than the API's 32 MiB.
                    self.max_batch_bytes = max(_CHUNK, self.max_batch_bytes // 4)
            return self._run(state, progress)

    def _run(self, state: SyncState, progress) -> bool:
        meta_bytes = _read_bytes(os.path.join(self.path, META))
        if not meta_bytes:
            raise NotReady(f"{self.path} holds no {META} yet")
        meta = _codec.loads(meta_bytes)
        if not state.experiment_id:
            self._upsert(state, meta, meta_bytes, progress)
        if not self._reconciled:
            self._reconcile(state)
        done = self._push_documents(state, progress)
        done = self._push_series(state, progress) and done
        # Last, so that a server showing COMPLETED holds all the data before it.
        meta_bytes = _read_bytes(os.path.join(self.path, META)) or meta_bytes
        if state.digest(META) != digest(meta_bytes):
            self._upsert(state, _codec.loads(meta_bytes), meta_bytes, progress)
        return done

    def _upsert(self, state: SyncState, meta: dict, meta_bytes: bytes, progress=None) -> None:
        prefix = meta.get("prefix")
        if not prefix:
            raise ValueError(f"{self.path}/{META} has no prefix")
        record = self.api.request(
            "POST",
            "/experiments",
            json={"namespace": self.namespace, "prefix": prefix, "meta": meta_payload(meta)},
        )
        state.experiment_id = str(record["id"])
        state.set_digest(META, digest(meta_bytes))
        state.save()
        if progress:
            progress(len(meta_bytes))

    def _reconcile(self, state: SyncState) -> None:
        """Start every cursor where the server's holdings end (``/progress``)."""
        held = self.api.get(f"/experiments/{state.experiment_id}/progress") or {}
        metric_counts = held.get("metrics") or {}
        moved = False
        for source in sources(self.path):
            if source.kind == "metric":
                count = int(metric_counts.get(source.name, 0) or 0)
            else:
                count = int(held.get(source.kind, 0) or 0)
            rel = source.relpath(self.path)
            cursor = state.cursor(rel)
            if cursor is not None and cursor[1] == count:
                continue
            if count == 0 and cursor is None:
                continue
            offset, line = offset_of_line(source, count)
            state.set_cursor(rel, offset, line)
            moved = True
        if moved:
            # The server is not where we left it (restored, or synced by someone
            # else): send the small documents again rather than trust the digests.
            for rel in DOCUMENTS:
                state.set_digest(rel, None)
        state.save()
        self._reconciled = True

    def _push_documents(self, state: SyncState, progress) -> bool:
        for rel, kind in DOCUMENTS.items():
            data = _read_bytes(os.path.join(self.path, rel))
            if not data:
                continue
            d = digest(data)
            if state.digest(rel) == d:
                continue
            self.api.request("PUT", f"/experiments/{state.experiment_id}/documents/{kind}", body=data)
            state.set_digest(rel, d)
            state.save()
            if progress:
                progress(len(data))
        return True

    def _push_series(self, state: SyncState, progress) -> bool:
        done = True
        batch: list[tuple[Source, int, list[bytes], int, int]] = []
        batch_bytes = 0
        for source in sources(self.path):
            path = source.data_path
            size = _size(path)
            rel = source.relpath(self.path)
            offset, index = state.cursor(rel) or (0, 0)
            if size < offset:
                # Shorter than what was sent: rewritten behind our back; resync.
                offset, index = offset_of_line(source, index)
            while offset < size:
                budget = self.max_batch_bytes - batch_bytes if source.kind == "metric" else self.max_batch_bytes
                lines, end = read_lines(path, offset, size, max(budget, _CHUNK))
                if not lines:
                    break  # only a line still being written
                if source.kind == "metric":
                    batch.append((source, index, lines, offset, end))
                    batch_bytes += end - offset
                    if batch_bytes >= self.max_batch_bytes:
                        self._send_metrics(state, batch, progress)
                        batch, batch_bytes = [], 0
                else:
                    self._send_records(state, source, index, lines, offset, end, progress)
                offset, index = end, index + len(lines)
            if _size(path) > size:
                done = False  # more arrived while sending
        if batch:
            self._send_metrics(state, batch, progress)
        return done

    def _send_metrics(self, state: SyncState, batch, progress) -> None:
        parts = []
        for source, index, lines, _start, _end in batch:
            parts.append(
                b'{"name":' + orjson.dumps(source.name) + b',"start_index":' + str(index).encode()
                + b',"points":[' + b",".join(lines) + b"]}"
            )
        body = b'{"series":[' + b",".join(parts) + b"]}"
        reply = self.api.request("POST", f"/experiments/{state.experiment_id}/metrics", body=body) or {}
        counts = reply.get("counts") or {}
        for source, index, lines, _start, end in batch:
            after = index + len(lines)
            held = counts.get(source.name)
            if isinstance(held, int) and held < after:
                # The server holds fewer than it should (it lost a batch we thought it
                # had): go back to where its holdings end. Idempotent, so always safe.
                end, after = offset_of_line(source, held)
            state.set_cursor(source.relpath(self.path), end, after)
        state.save()
        if progress:
            progress(sum(end - start for _s, _i, _l, start, end in batch))

    def _send_records(self, state: SyncState, source: Source, index: int, lines, start: int, end: int,
                      progress) -> None:
        body = b'{"start_index":' + str(index).encode() + b',"records":[' + b",".join(lines) + b"]}"
        self.api.request("POST", f"/experiments/{state.experiment_id}/{source.kind}", body=body)
        state.set_cursor(source.relpath(self.path), end, index + len(lines))
        state.save()
        if progress:
            progress(end - start)


def pending(path: str, url: str, namespace: str) -> Pending:
    """What of ``path`` the target has not acknowledged yet (local files only)."""
    state = read_state(path, url, namespace)
    out = Pending()
    for source in sources(path):
        size = _size(source.data_path)
        offset, _index = state.cursor(source.relpath(path)) or (0, 0)
        if size <= offset:
            continue
        n, end = count_lines(source.data_path, offset, size)
        out.bytes += end - offset
        if source.kind == "metric":
            out.points += n
        elif source.kind == "logs":
            out.logs += n
        else:
            out.checkpoints += n
    for rel in (*DOCUMENTS, META):
        data = _read_bytes(os.path.join(path, rel))
        if data and state.digest(rel) != digest(data):
            out.documents.append({META: "status"}.get(rel) or rel.split("/")[0].split(".")[0])
            out.bytes += len(data)
    return out


def namespace_of(path: str, default: str | None = None) -> str:
    meta = read_document(os.path.join(path, META))
    return default or meta.get("namespace") or "default"
