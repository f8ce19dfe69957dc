"""``mldash sync``: upload whatever a root holds that a server does not.

Runs recorded fully offline have no cursor yet and upload from zero (or from
what the server already holds, by its ``/progress``); runs whose uploader gave
up at ``finish()`` continue from their cursor. Cursors move after every
acknowledged batch, so an interrupted sync resumes where it stopped and never
duplicates a point.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..params import read_document
from ._replicate import META, NotReady, Pending, Replicator, pending


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


def plan(root: str, url: str | None = None, namespace: str | None = None) -> tuple[list[Job], SyncResult]:
    """What each experiment under ``root`` still has to upload, and where to."""
    from ..store import find_experiments

    jobs: list[Job] = []
    result = SyncResult()
    for path in find_experiments(root):
        meta = read_document(os.path.join(path, META))
        prefix = meta.get("prefix") or os.path.relpath(path, root)
        target = (url or meta.get("remote") or "").rstrip("/")
        if not target:
            result.no_remote.append(prefix)
            continue
        ns = namespace or meta.get("namespace") or "default"
        todo = pending(path, target, ns)
        if todo:
            jobs.append(Job(path, prefix, target, ns, todo))
        else:
            result.up_to_date.append(prefix)
    return jobs, result


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
                        break
                    time.sleep(min(backoff.next(error.retry_after), give_up_after))
                except (RemoteError, NotReady, OSError, ValueError) as error:
                    result.failed[job.prefix] = str(error)
                    break
                else:
                    backoff.reset()
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
) -> SyncResult:
    """Upload every experiment under ``root`` (no progress bar; for scripts).

    >>> from mldash.remote.sync import sync_root  # doctest: +SKIP
    >>> sync_root(".mldash", "http://127.0.0.1:8000").failed  # doctest: +SKIP
    {}
    """
    jobs, result = plan(root, url, namespace)
    return run(jobs, token, result, give_up_after=give_up_after)
