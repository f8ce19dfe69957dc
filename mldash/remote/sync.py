"""``mldash sync``: upload whatever a root holds that a server does not.

Runs recorded fully offline have no cursor yet and upload from zero (or from
what the server already holds, by its ``/progress``); runs whose uploader gave
up at ``finish()`` continue from their cursor. Cursors move after every
acknowledged batch, so an interrupted sync resumes where it stopped and never
duplicates a point.

What the server refuses on its own is quarantined (``_replicate``) and listed in
``SyncResult.quarantined``, run by run, for as long as it is not accepted
(``accept_quarantined``): a run is "up to date" only when the server holds all
of it. A run the server refuses as a whole is listed there too, and retried by
every sync (the user may have removed the cause).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from .._runfolder import META_FILE, find_experiments, read_document
from ._files import Pending, pending, problems
from ._replicate import NotReady, Replicator, RunRefused
from ._state import Quarantine


@dataclass
class Job:
    path: str
    prefix: str
    url: str
    namespace: str
    pending: Pending


@dataclass
class SyncResult:
    uploaded: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    no_remote: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    # prefix -> its quarantine entries (records, keys, series or the whole run the
    # server refused), not accepted yet: such a run is not up to date.
    quarantined: dict[str, list[dict]] = field(default_factory=dict)
    # prefixes in ``failed`` whose failure may pass by itself (an unreachable server)
    retryable: set = field(default_factory=set)
    paths: dict[str, str] = field(default_factory=dict)  # prefix -> its local folder


def _record_problems(result: "SyncResult", prefix: str, path: str, url: str, namespace: str) -> None:
    found = problems(path, url, namespace)
    if found:
        result.quarantined[prefix] = found
    else:
        result.quarantined.pop(prefix, None)


def plan(
    root: str, url: str | None = None, namespace: str | None = None, accept_quarantined: bool = False
) -> tuple[list[Job], SyncResult]:
    """What each experiment under ``root`` still has to upload, and where to.

    ``accept_quarantined`` marks every quarantine entry listed so far as accepted:
    they stay in the file but no longer keep a run from being up to date.
    """

    jobs: list[Job] = []
    result = SyncResult()
    for path in find_experiments(root):
        meta = read_document(os.path.join(path, META_FILE))
        prefix = meta.get("prefix") or os.path.relpath(path, root)
        target = (url or meta.get("remote") or "").rstrip("/")
        if not target:
            result.no_remote.append(prefix)
            continue
        ns = namespace or meta.get("namespace") or "default"
        result.paths[prefix] = path
        if accept_quarantined:
            _accept(path, target, ns)
        todo = pending(path, target, ns)
        if todo:
            jobs.append(Job(path, prefix, target, ns, todo))
            continue
        _record_problems(result, prefix, path, target, ns)
        if prefix not in result.quarantined:
            result.up_to_date.append(prefix)
    return jobs, result


def _accept(path: str, url: str, namespace: str) -> None:
    quarantine = Quarantine(path, url, namespace)
    for entry in problems(path, url, namespace):
        if entry.get("index") is None and entry.get("kind") == "metric":  # found now, not listed yet
            quarantine.add(entry["kind"], entry["name"], None, entry["reason"])
    quarantine.accept_all()


def run(
    jobs: list[Job],
    token: str | None,
    result: SyncResult,
    progress: Callable[[int], None] | None = None,
    on_job: Callable[[Job], None] | None = None,
    give_up_after: float = 60.0,
) -> SyncResult:
    """Upload every job; a server that stays unreachable for ``give_up_after``
    seconds fails the remaining jobs instead of hanging."""
    from ._http import Api, Backoff, RemoteError, Unavailable

    apis: dict[str, Api] = {}

    def sent(n: int) -> None:
        result.bytes_sent += n
        if progress:
            progress(n)

    try:
        for job in jobs:
            if on_job:
                on_job(job)
            api = apis.get(job.url) or apis.setdefault(job.url, Api(job.url, token))
            replicator = Replicator(job.path, api, job.namespace, job.url)
            backoff = Backoff(cap=10.0)
            stuck_since = None
            while True:
                try:
                    if replicator.run_pass(progress=sent):
                        result.uploaded.append(job.prefix)
                        break
                    stuck_since = None
                except Unavailable as error:
                    now = time.monotonic()
                    stuck_since = stuck_since or now
                    if now - stuck_since >= give_up_after:
                        result.failed[job.prefix] = str(error)
                        result.retryable.add(job.prefix)
                        break
                    time.sleep(min(backoff.next(error.retry_after), give_up_after))
                except RunRefused:
                    break  # listed with the run's quarantine entries below
                except NotReady as error:
                    result.failed[job.prefix] = str(error)
                    result.retryable.add(job.prefix)
                    break
                except (RemoteError, OSError, ValueError) as error:
                    result.failed[job.prefix] = str(error)
                    break
                else:
                    backoff.reset()
            _record_problems(result, job.prefix, job.path, job.url, job.namespace)
    finally:
        for api in apis.values():
            api.close()
    return result


def sync_root(
    root: str,
    url: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
    give_up_after: float = 60.0,
    accept_quarantined: bool = False,
) -> SyncResult:
    """Upload every experiment under ``root`` (no progress bar; for scripts).

    The upload is complete when ``failed`` and ``quarantined`` are both empty.

    >>> from mldash.remote.sync import sync_root  # doctest: +SKIP
    >>> sync_root(".mldash", "http://127.0.0.1:8000").failed  # doctest: +SKIP
    {}
    """
    jobs, result = plan(root, url, namespace, accept_quarantined)
    return run(jobs, token, result, give_up_after=give_up_after)
