"""What of one experiment directory a server already holds: ``.sync/state.json``.

One entry per target (server URL + namespace), so syncing a run to a second
server starts that server from zero without forgetting the first. An entry
holds the server's experiment id, a cursor per append-only file
(``[byte offset, line index]`` of the first line not yet acknowledged), a
digest per whole-file document (parameters, summary, experiment.json) as last
sent, and the id of each saved file's upload under way (``uploads``: SHA-256 ->
upload id; the server says how many bytes of it it holds).

The file is replaced atomically after every acknowledged batch, so a crash
loses at most the cursor move of one batch; the server ignores the points it
already has when that batch is sent again. ``.sync/lock`` (flock) makes the
uploader thread and a concurrent ``mldash sync`` take turns.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from typing import Iterator

from .. import _codec
from .._runfolder import read_document, write_atomic

SYNC_DIR = ".sync"
STATE_FILE = "state.json"


def target_key(url: str, namespace: str) -> str:
    return f"{url.rstrip('/')}|{namespace}"


class SyncState:
    """The sync state of one experiment directory for one target."""

    def __init__(self, path: str, url: str, namespace: str) -> None:
        self.path = path
        self.folder = os.path.join(path, SYNC_DIR)
        self.file = os.path.join(self.folder, STATE_FILE)
        self.key = target_key(url, namespace)
        self.entry: dict = {}
        self._document: dict = {}

    @contextmanager
    def locked(self) -> Iterator["SyncState"]:
        """Hold the experiment's sync lock and the freshly loaded state."""
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(os.path.join(self.folder, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.load()
            yield self
        finally:
            os.close(fd)

    def load(self) -> None:
        try:
            document = read_document(self.file)
        except ValueError:  # a damaged state only costs a resync from /progress
            document = {}
        self._document = document if isinstance(document, dict) else {}
        targets = self._document.setdefault("targets", {})
        self.entry = targets.setdefault(self.key, {})
        self.entry.setdefault("cursors", {})
        self.entry.setdefault("digests", {})
        self.entry.setdefault("uploads", {})

    def save(self) -> None:
        self._document["version"] = 1
        os.makedirs(self.folder, exist_ok=True)
        write_atomic(self.file, _codec.dumps(self._document))

    # ---- the entry ---------------------------------------------------------------
    @property
    def experiment_id(self) -> str | None:
        return self.entry.get("id")

    @experiment_id.setter
    def experiment_id(self, value: str | None) -> None:
        self.entry["id"] = value

    def cursor(self, relpath: str) -> tuple[int, int] | None:
        found = self.entry["cursors"].get(relpath)
        return (int(found[0]), int(found[1])) if found else None

    def set_cursor(self, relpath: str, offset: int, index: int) -> None:
        self.entry["cursors"][relpath] = [offset, index]

    def digest(self, relpath: str) -> str | None:
        return self.entry["digests"].get(relpath)

    def set_digest(self, relpath: str, digest: str | None) -> None:
        if digest is None:
            self.entry["digests"].pop(relpath, None)
        else:
            self.entry["digests"][relpath] = digest

    def upload_id(self, sha256: str) -> str | None:
        """The id of the upload of a saved file's bytes under way (to resume it)."""
        return self.entry["uploads"].get(sha256)

    def set_upload_id(self, sha256: str, upload_id: str | None) -> None:
        if upload_id is None:
            self.entry["uploads"].pop(sha256, None)
        else:
            self.entry["uploads"][sha256] = upload_id

    def forget_server(self) -> None:
        """The server lost this experiment (or is a new one): start again from /progress."""
        self.entry["id"] = None
        self.entry["cursors"] = {}
        self.entry["digests"] = {}
        self.entry["uploads"] = {}


def read_state(path: str, url: str, namespace: str) -> SyncState:
    """The state without taking the lock (for counting what is pending)."""
    state = SyncState(path, url, namespace)
    state.load()
    return state


QUARANTINE_FILE = "quarantine.jsonl"
# What one entry is about: the whole run, one experiment.json field, one key of a
# document, one line of an append-only file, or (index None) a whole metric series.
RUN, META_KIND = "run", "meta"


def quarantine_path(path: str) -> str:
    return os.path.join(path, SYNC_DIR, QUARANTINE_FILE)


class Quarantine:
    """What the server refused on its own, per target: ``.sync/quarantine.jsonl``.

    The records themselves stay where they are in the run's files (the local copy
    is never changed); an entry says which one (kind, name, index), why (the
    server's answer) and shows its start. It lives beside the sync state, in the
    run's ``.sync`` folder, so nothing reads it as data. ``accepted`` entries
    (``mldash sync --accept-quarantined``) are kept but no longer make a sync fail.

    Written under the sync lock (by the replicator) and replaced atomically.
    """

    def __init__(self, path: str, url: str, namespace: str) -> None:
        self.file = quarantine_path(path)
        self.target = target_key(url, namespace)
        self._all: list[dict] = []
        self.load()

    def load(self) -> None:
        self._all = read_quarantine_file(self.file)

    def entries(self, include_accepted: bool = True) -> list[dict]:
        return [e for e in self._all if e.get("target") == self.target and (include_accepted or not e.get("accepted"))]

    def add(self, kind: str, name: str | None, index: int | None, reason: str, excerpt: str | None = None) -> dict:
        """Record (or refresh) one entry; the entry comes back with ``new`` True when
        it was not listed yet (a refreshed entry keeps ``accepted`` if its reason is unchanged)."""
        entry = {"target": self.target, "kind": kind, "name": name, "index": index, "reason": reason}
        if excerpt is not None:
            entry["excerpt"] = excerpt
        for k, old in enumerate(self._all):
            if _same(old, entry):
                entry["accepted"] = bool(old.get("accepted")) and old.get("reason") == reason
                entry["at"] = old.get("at")
                self._all[k] = entry
                self._save()
                return {**entry, "new": False}
        entry["at"] = time.time()
        entry["accepted"] = False
        self._all.append(entry)
        self._save()
        return {**entry, "new": True}

    def drop(self, kind: str, name: str | None = None, *, keep: set | None = None) -> None:
        """Forget this target's entries of ``kind`` (and ``name`` if given) but those
        whose name is in ``keep``: the server took them after all."""
        before = len(self._all)
        self._all = [
            e for e in self._all
            if not (
                e.get("target") == self.target and e.get("kind") == kind
                and (name is None or e.get("name") == name)
                and not (keep and e.get("name") in keep)
            )
        ]
        if len(self._all) != before:
            self._save()

    def drop_entry(self, kind: str, name: str | None, index: int | None) -> None:
        """Forget one entry (its record turned out not to be at fault)."""
        probe = {"target": self.target, "kind": kind, "name": name, "index": index}
        kept = [e for e in self._all if not _same(e, probe)]
        if len(kept) != len(self._all):
            self._all = kept
            self._save()

    def accept_all(self) -> int:
        """Mark this target's records as accepted (no longer reported). A refusal of
        the whole run is never accepted: nothing of the run is on the server, and
        saying nothing about that would be a silent loss."""
        n = 0
        for entry in self._all:
            if entry.get("target") == self.target and not entry.get("accepted") and entry.get("kind") != RUN:
                entry["accepted"] = True
                n += 1
        if n:
            self._save()
        return n

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        write_atomic(self.file, b"".join(_codec.dumps_line(e) for e in self._all))


def _same(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("target", "kind", "name", "index"))


def read_quarantine_file(file: str) -> list[dict]:
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.splitlines():
        try:
            entry = _codec.loads(line)
        except ValueError:
            continue  # a damaged line only costs its report
        if isinstance(entry, dict):
            out.append(entry)
    return out
