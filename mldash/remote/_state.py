"""What of one experiment directory a server already holds: ``.sync/state.json``.

One entry per target (server URL + namespace), so syncing a run to a second
server starts that server from zero without forgetting the first. An entry
holds the server's experiment id, a cursor per append-only file
(``[byte offset, line index]`` of the first line not yet acknowledged) and a
digest per whole-file document (parameters, summary, experiment.json) as last
sent.

The file is replaced atomically after every acknowledged batch, so a crash
loses at most the cursor move of one batch; the server ignores the points it
already has when that batch is sent again. ``.sync/lock`` (flock) makes the
uploader thread and a concurrent ``mldash sync`` take turns.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

from .. import _codec
from ..params import read_document, write_atomic

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

    def forget_server(self) -> None:
        """The server lost this experiment (or is a new one): start again from /progress."""
        self.entry["id"] = None
        self.entry["cursors"] = {}
        self.entry["digests"] = {}


def read_state(path: str, url: str, namespace: str) -> SyncState:
    """The state without taking the lock (for counting what is pending)."""
    state = SyncState(path, url, namespace)
    state.load()
    return state
