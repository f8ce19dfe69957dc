"""Replicate one local experiment directory to a server, from where it stopped.

The local directory is the source of truth. Append-only files (metric series,
logs, console, checkpoints, the index of saved files) are read from each file's
cursor and sent as their raw lines (a saved file's bytes go first, through
``_upload_files``): the request body is assembled from the bytes on disk, so nothing is
decoded and re-encoded on the way. Whole-file documents (parameters, summary,
experiment.json) are sent again when their digest changes.

What the server refuses is isolated, never allowed to block what follows it
(a "poison pill"): a request answered 400, 413 or 422 is split in halves until
the records at fault stand alone; each is quarantined (listed with the
server's reason in ``.sync/quarantine.jsonl``, see ``_state.Quarantine``), a
stand-in takes its index on the server (so indices stay those of the local
files) and everything after it goes through. Only a record the server refuses
on its own is quarantined: when even the stand-in is refused, the fault is not
the record's and the error is raised as before. A run the server refuses as a
whole (another run holds its prefix: 409 "collision"; a namespace or prefix it
will not take) raises ``RunRefused`` and uploads nothing. Transient failures
(``Unavailable``) are never quarantined: they propagate and are retried.

Used by the uploader thread during a run and by ``mldash sync`` afterwards; what
a run folder holds for upload is read by ``_files``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

import orjson

from .. import _codec
from .._runfolder import DOCUMENTS, META_FILE
from ._files import (
    Pending,
    Source,
    digest,
    file_size,
    offset_of_line,
    pending,
    read_bytes,
    read_lines,
    sources,
)
from ._http import Api, Collision, Conflict, NotFound, Refused, RemoteError
from ._state import META_KIND, RUN, Quarantine, SyncState

# Raw bytes of lines per request, before gzip.
MAX_BATCH_BYTES = 4 << 20
# The most one request may carry, uncompressed: the server's limit (413 beyond;
# mldash.server.body.MAX_BODY, not imported: the client stays off the server
# package). A proxy in front of it may take less; a 413 lowers it for the session.
MAX_REQUEST = 32 * 1024 * 1024
_CHUNK = 1 << 16
_EXCERPT = 200  # characters of a quarantined record kept in its entry
_NOTE = 300  # characters of the server's reason in a stand-in record


class NotReady(Exception):
    """The run has not written its experiment.json yet (its writer thread does that
    first thing after start): nothing to upload for a moment."""


class RunRefused(RemoteError):
    """The server refuses the run itself: another run (another experiment.json id)
    holds its namespace and prefix, or it will not take the namespace or prefix.
    Nothing of it is uploaded until the user acts (see docs/remote.md); the
    refusal is recorded in the run's quarantine file."""


def meta_payload(meta: dict) -> dict:
    """experiment.json as the server's ``meta``: its local ``id`` renamed, so it
    never shadows the server's own id."""
    meta = dict(meta)
    local_id = meta.pop("id", None)
    if local_id is not None:
        meta["local_id"] = local_id
    meta.pop("path", None)
    return meta


@dataclass
class Entry:
    """Consecutive complete lines of one source: ``lines`` from line ``index`` on,
    bytes ``start`` to ``end`` of its file (every line plus its newline)."""

    source: Source
    index: int
    lines: list[bytes]
    start: int
    end: int


def split_entries(entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """Two halves by line count, keeping the order (an entry may be cut in two)."""
    total = sum(len(e.lines) for e in entries)
    half = total // 2
    left: list[Entry] = []
    right: list[Entry] = []
    seen = 0
    for e in entries:
        n = len(e.lines)
        if seen + n <= half:
            left.append(e)
        elif seen >= half:
            right.append(e)
        else:
            m = half - seen
            cut = e.start + sum(len(line) + 1 for line in e.lines[:m])
            left.append(Entry(e.source, e.index, e.lines[:m], e.start, cut))
            right.append(Entry(e.source, e.index + m, e.lines[m:], cut, e.end))
        seen += n
    return left, right


def metrics_body(entries: list[Entry]) -> bytes:
    parts = [
        b'{"name":' + orjson.dumps(e.source.name) + b',"start_index":' + str(e.index).encode()
        + b',"points":[' + b",".join(e.lines) + b"]}"
        for e in entries
    ]
    return b'{"series":[' + b",".join(parts) + b"]}"


def records_body(entry: Entry) -> bytes:
    return b'{"start_index":' + str(entry.index).encode() + b',"records":[' + b",".join(entry.lines) + b"]}"


_LEADING_MS = re.compile(rb"\[\s*(-?\d{1,18})\s*[,.]")


def stand_in(kind: str, line: bytes, index: int, reason: str) -> bytes:
    """What the server holds at the index of a quarantined record: a point with no
    fields, or a record saying it was not uploaded (same timestamp where readable)."""
    if kind == "metric":
        found = _LEADING_MS.match(line)
        ms = int(found.group(1)) if found else int(time.time() * 1000)
        return b"[%d,{}]" % ms
    try:
        ts = _codec.loads(line).get("timestamp")
    except Exception:
        try:  # the stdlib reader takes what orjson does not, such as a lone surrogate's escape
            ts = json.loads(line).get("timestamp")
        except Exception:
            ts = None
    if ts.__class__ not in (int, float) or ts != ts or abs(ts) > 1e11:
        ts = time.time()
    note = f"not uploaded: the server refused it ({reason[:_NOTE]}); it is kept in the run's local files"
    if kind == "logs":
        record = {"index": index, "timestamp": ts, "level": "warn", "message": f"[mldash] log {index} {note}",
                  "metadata": {"mldash_quarantined": True}}
    elif kind == "console":
        # As console/console.jsonl holds it (no index: the line number is the index).
        record = {"timestamp": ts, "stream": "stderr", "text": f"[mldash] console line {index} was {note}"}
    elif kind == "files":
        # A record of no file (op "skipped"): the server keeps the index, never lists it.
        record = {"op": "skipped", "timestamp": ts, "note": f"file record {index} was {note}"}
    else:
        record = {"index": index, "timestamp": ts, "path": None, "step": None, "mldash_quarantined": note}
    return _codec.dumps(record)


def _excerpt(line: bytes) -> str:
    return line[: _EXCERPT * 4].decode("utf-8", "replace")[:_EXCERPT]


def _reason(error: BaseException) -> str:
    detail = getattr(error, "detail", None) or str(error)
    status = getattr(error, "status", None)
    return f"the server answered {status}: {detail}" if status else detail


class Replicator:
    """Upload what one experiment directory holds and a server does not.

    ``on_quarantine(entry)`` is called for each record newly quarantined (the
    uploader prints it; ``mldash sync`` lists them all at the end).

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
        max_request: int = MAX_REQUEST,
        on_quarantine: Callable[[dict], None] | None = None,
    ) -> None:
        self.path = path
        self.api = api
        self.namespace = namespace
        self.url = url
        self.max_batch_bytes = max_batch_bytes
        self.max_request = max_request
        self.on_quarantine = on_quarantine
        self.state = SyncState(path, url, namespace)
        self.quarantine = Quarantine(path, url, namespace)
        self._local_id: str | None = None
        # Once per session the cursors are checked against what the server holds.
        self._reconciled = False

    # ---- counting (no network) ----------------------------------------------------
    def pending(self) -> Pending:
        return pending(self.path, self.url, self.namespace)

    # ---- one pass -------------------------------------------------------------------
    def run_pass(self, progress: Callable[[int], None] | None = None) -> bool:
        """Send what is pending now; True when the server held everything at the end
        (but what it refused, which is quarantined).

        Raises ``Unavailable`` (try later), ``RunRefused`` (the server will not take
        this run at all) or ``RemoteError`` (request refused: a token, say).
        """
        with self.state.locked() as state:
            self.quarantine.load()
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
            return self._run(state, progress)

    def _run(self, state: SyncState, progress) -> bool:
        meta_bytes = read_bytes(os.path.join(self.path, META_FILE))
        if not meta_bytes:
            raise NotReady(f"{self.path} holds no {META_FILE} yet")
        meta = _codec.loads(meta_bytes)
        self._local_id = meta.get("id") if isinstance(meta.get("id"), str) else None
        if not state.experiment_id:
            self._upsert(state, meta, meta_bytes, progress)
        if not self._reconciled:
            self._reconcile(state)
        done = self._push_documents(state, progress)
        done = self._push_series(state, progress) and done
        # Last, so that a server showing COMPLETED holds all the data before it.
        meta_bytes = read_bytes(os.path.join(self.path, META_FILE)) or meta_bytes
        if state.digest(META_FILE) != digest(meta_bytes):
            self._upsert(state, _codec.loads(meta_bytes), meta_bytes, progress)
        return done

    # ---- quarantine -------------------------------------------------------------------
    def _quarantine(self, kind: str, name: str | None, index: int | None, reason: str,
                    excerpt: str | None = None) -> None:
        entry = self.quarantine.add(kind, name, index, reason, excerpt)
        if entry.pop("new") and self.on_quarantine is not None:
            self.on_quarantine(entry)

    def _quarantine_keys(self, kind: str, refused: dict[str, BaseException]) -> None:
        """The keys of a document (or experiment.json) the server refused, exactly."""
        self.quarantine.drop(kind, keep=set(refused))
        for key, error in refused.items():
            self._quarantine(kind, key, None, _reason(error))

    def _refuse_run(self, error: RemoteError) -> None:
        reason = _reason(error)
        self._quarantine(RUN, None, None, reason)
        raise RunRefused(f"{self.url} refuses this run: {error.detail}", status=error.status, detail=error.detail)

    @staticmethod
    def _bisect_keys(send: Callable[[dict], None], items: list, error: Refused) -> dict[str, BaseException]:
        """``send`` refused a document of ``items`` (key, value): send it in halves
        (the server merges documents) and return the keys refused on their own."""
        refused: dict[str, BaseException] = {}

        def go(part: list, why: BaseException) -> None:
            if len(part) <= 1:
                if part:
                    refused[part[0][0]] = why
                return
            for half in (part[: len(part) // 2], part[len(part) // 2 :]):
                try:
                    send(dict(half))
                except Refused as again:
                    go(half, again)

        go(items, error)
        return refused

    # ---- experiment.json and documents --------------------------------------------
    def _upsert(self, state: SyncState, meta: dict, meta_bytes: bytes, progress=None) -> None:
        prefix = meta.get("prefix")
        if not prefix:
            raise ValueError(f"{self.path}/{META_FILE} has no prefix")
        payload = meta_payload(meta)
        # Every request carries the run's identity, so that no part of it can merge
        # into another run's record.
        pinned = {"local_id": payload["local_id"]} if "local_id" in payload else {}

        def send(part: dict) -> None:
            record = self.api.request(
                "POST", "/experiments", json={"namespace": self.namespace, "prefix": prefix, "meta": {**part, **pinned}}
            )
            state.experiment_id = str(record["id"])

        refused: dict[str, BaseException] = {}
        try:
            try:
                send(payload)
            except Refused as error:
                try:
                    send({})
                except Refused as whole:  # the namespace or prefix itself, not a field
                    self._refuse_run(whole)
                refused = self._bisect_keys(send, [(k, v) for k, v in payload.items() if k not in pinned], error)
        except Collision as error:
            self._refuse_run(error)
        self.quarantine.drop(RUN)
        self._quarantine_keys(META_KIND, refused)
        state.set_digest(META_FILE, digest(meta_bytes))
        state.save()
        if progress:
            progress(len(meta_bytes))

    def _reconcile(self, state: SyncState) -> None:
        """Start every cursor where the server's holdings end (``/progress``)."""
        held = self.api.get(f"/experiments/{state.experiment_id}/progress") or {}
        theirs = held.get("local_id")
        if theirs and self._local_id and theirs != self._local_id:
            # The id we kept now names another run's record (the server was reset,
            # say): look the prefix up again (which refuses a collision).
            raise NotFound(f"experiment {state.experiment_id} on {self.url} belongs to another run", status=404)
        metric_counts = held.get("metrics") or {}
        moved = False
        for source in sources(self.path):
            if source.problem:
                continue
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
            data = read_bytes(os.path.join(self.path, rel))
            if not data:
                continue
            d = digest(data)
            if state.digest(rel) == d:
                continue
            where = f"/experiments/{state.experiment_id}/documents/{kind}"
            refused: dict[str, BaseException] = {}
            try:
                self.api.request("PUT", where, body=data)
            except Refused as error:
                try:
                    document = _codec.loads(data)
                except ValueError:
                    document = None
                if not isinstance(document, dict):
                    refused = {None: error}  # not even a JSON object: the document as a whole
                else:
                    try:
                        self.api.request("PUT", where, json={})
                    except Refused:
                        raise error from None  # not the keys' fault
                    refused = self._bisect_keys(
                        lambda part: self.api.request("PUT", where, json=part), list(document.items()), error
                    )
            self._quarantine_keys(kind, refused)
            state.set_digest(rel, d)
            state.save()
            if progress:
                progress(len(data))
        return True

    # ---- append-only files ------------------------------------------------------------
    def _push_series(self, state: SyncState, progress) -> bool:
        done = True
        batch: list[Entry] = []
        batch_bytes = 0
        for source in sources(self.path):
            if source.problem:
                self._quarantine(source.kind, source.name, None, source.problem)
                continue
            path = source.data_path
            size = file_size(path)
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
                entry = Entry(source, index, lines, offset, end)
                if source.kind == "metric":
                    batch.append(entry)
                    batch_bytes += end - offset
                    if batch_bytes >= self.max_batch_bytes:
                        self._deliver(state, batch, progress)
                        batch, batch_bytes = [], 0
                else:
                    self._deliver(state, [entry], progress)
                offset, index = end, index + len(lines)
            if file_size(path) > size:
                done = False  # more arrived while sending
        if batch:
            self._deliver(state, batch, progress)
        return done

    def _body(self, entries: list[Entry]) -> bytes:
        return metrics_body(entries) if entries[0].source.kind == "metric" else records_body(entries[0])

    def _deliver(self, state: SyncState, entries: list[Entry], progress) -> None:
        """Send ``entries`` (one source's, or several metric series'); when the server
        refuses them (400/413/422), send each half on its own, down to single
        records, which are quarantined. Other errors propagate untouched."""
        body = self._body(entries)
        lines = sum(len(e.lines) for e in entries)
        if len(body) > self.max_request:
            if lines > 1:
                for half in split_entries(entries):
                    self._deliver(state, half, progress)
                return
            error: Refused = Refused(
                f"the record is {entries[0].end - entries[0].start:,} bytes; one request to {self.url} "
                f"carries at most {self.max_request:,}", status=413,
            )
        else:
            try:
                self._send(state, entries, body, progress)
                return
            except Refused as refused:
                error = refused
            if error.status == 413:  # a proxy, say, takes less than the server's limit
                self.max_request = min(self.max_request, len(body) - 1)
                self.max_batch_bytes = max(_CHUNK, min(self.max_batch_bytes, self.max_request // 2))
            if lines > 1:
                for half in split_entries(entries):
                    self._deliver(state, half, progress)
                return
        self._quarantine_record(state, entries[0], error, progress)

    def _quarantine_record(self, state: SyncState, entry: Entry, error: Refused, progress) -> None:
        """One record the server refused: list it, then put a stand-in at its index
        so that everything after it goes through. If even the stand-in is refused,
        the record is not at fault: the original error is raised instead."""
        source, line = entry.source, entry.lines[0]
        reason = _reason(error)
        name = source.name if source.kind == "metric" else None
        self._quarantine(source.kind, name, entry.index, reason, _excerpt(line))
        placeholder = Entry(source, entry.index, [stand_in(source.kind, line, entry.index, reason)], entry.start, entry.end)
        try:
            self._send(state, [placeholder], self._body([placeholder]), progress)
        except Refused:
            self.quarantine.drop_entry(source.kind, name, entry.index)
            raise error from None

    def _send(self, state: SyncState, entries: list[Entry], body: bytes, progress) -> None:
        """One request; on success the cursors move past ``entries``."""
        if entries[0].source.kind != "metric":
            (entry,) = entries
            if entry.source.kind == "files":  # the bytes first: no record on the server without them
                from ._upload_files import send_blobs

                send_blobs(self.api, state, state.experiment_id, self.path, entry.lines, progress)
            self.api.request("POST", f"/experiments/{state.experiment_id}/{entry.source.kind}", body=body)
            state.set_cursor(entry.source.relpath(self.path), entry.end, entry.index + len(entry.lines))
        else:
            reply = self.api.request("POST", f"/experiments/{state.experiment_id}/metrics", body=body) or {}
            counts = reply.get("counts") or {}
            for e in entries:
                end, after = e.end, e.index + len(e.lines)
                held = counts.get(e.source.name)
                if isinstance(held, int) and held < after:
                    # The server holds fewer than it should (it lost a batch we thought it
                    # had): go back to where its holdings end. Idempotent, so always safe.
                    end, after = offset_of_line(e.source, held)
                state.set_cursor(e.source.relpath(self.path), end, after)
        state.save()
        if progress:
            progress(sum(e.end - e.start for e in entries))
