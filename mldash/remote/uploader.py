"""The background uploader of ``Experiment(remote=URL)``: local-first replication.

Every write lands in the local experiment directory first (the core's writer).
This thread tails those files and sends what the server lacks, so the training
loop never waits on the network: a slow server, a server that is down at start
or one that dies mid-run only delays the upload. Failed passes are retried with
exponential backoff and jitter, honouring ``Retry-After``; the server ignores
points it already holds, so a retry never duplicates anything.

``finish()`` waits at most ``MLDASH_SYNC_TIMEOUT`` seconds (default 10) for the
upload to catch up, then says what is still pending and the ``mldash sync``
command that uploads it.

A record the server refuses on its own is quarantined (see ``_replicate``): said
once on stderr, listed in ``<run>/.sync/quarantine.jsonl``, and the upload goes
on past it. A run the server refuses as a whole (another run holds its prefix)
stops the thread: nothing of it is uploaded, and ``finish()`` says what to do.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time

from ._http import RunAddress

DEFAULT_SYNC_TIMEOUT = 10.0
# How often the thread looks for new lines when nobody wakes it. The core's
# writer flushes every flush_interval (0.5 s by default); looking twice as
# often would only cost the training loop CPU.
POLL_INTERVAL = 1.0
# Quarantined records said one by one on stderr; past this, once that there are more.
_LOUD_QUARANTINE = 10


def sync_timeout(value: float | None = None) -> float:
    """Seconds ``finish()`` waits for the upload: ``value`` (``exp.sync_timeout``), else
    ``$MLDASH_SYNC_TIMEOUT``, else 10."""
    if value is None:
        env = os.environ.get("MLDASH_SYNC_TIMEOUT")
        value = float(env) if env else DEFAULT_SYNC_TIMEOUT
    return max(0.0, float(value))


def sync_command(root: str, url: str, namespace: str | None) -> str:
    """The exact command that uploads what a run left pending."""
    words = ["mldash", "sync", root, "--remote", url]
    if namespace and namespace != "default":
        words += ["--namespace", namespace]
    return " ".join(shlex.quote(w) for w in words)


class Uploader:
    """Replicates one running experiment to ``exp.remote`` from a daemon thread.

    The core creates it when an experiment with ``remote`` starts, calls
    ``wake()`` after parameters change or a flush, and ``close()`` in ``finish()``.

    >>> exp = mldash.Experiment("p/run", remote="http://127.0.0.1:8000")  # doctest: +SKIP
    >>> exp.metrics("loss").append(value=0.5)   # local write; uploaded in the background  # doctest: +SKIP
    """

    def __init__(self, run: RunAddress, poll_interval: float = POLL_INTERVAL) -> None:
        self.run = run
        self.url = run.url.rstrip("/")
        self.token = run.token
        self.namespace = run.namespace
        self.path = run.path
        self.poll_interval = poll_interval
        self.error: BaseException | None = None  # the last failure, None once caught up again
        self.caught_up = False
        self.refused: BaseException | None = None  # the server refuses the whole run
        self.quarantined: list[dict] = []  # records quarantined by this session
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._closing = False  # finish() asked for a last pass
        self._stop = False  # give up: the thread ends after its current request
        self._finished = False  # a pass that began after close() reached the end
        self._warned: str | None = None
        self._thread = threading.Thread(target=self._run, name="mldash-uploader", daemon=True)
        self._thread.start()

    # ---- the caller's side ------------------------------------------------------------
    def wake(self) -> None:
        """Look for new data now rather than at the next poll (cheap, never blocks)."""
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` s, default ``sync_timeout()``) for the upload to
        catch up; True when it did. Otherwise print what is pending and how to sync."""
        timeout = sync_timeout(timeout)
        deadline = time.monotonic() + timeout
        self._wait_for_saves(deadline)
        with self._cond:
            self._closing = True
            self._wake.set()
            while not self._finished and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            finished = self._finished
            self._stop = True
            self._wake.set()
        if not finished:
            self._report_pending()
        if self.quarantined:
            from ._state import quarantine_path

            print(
                f"mldash: {self.run.prefix}: {len(self.quarantined)} record(s) the server refused are not on "
                f"{self.url}; they stay in the local files and are listed in {quarantine_path(self.path)} "
                "(`mldash sync` lists them too).",
                file=sys.stderr,
            )
        return finished

    def _wait_for_saves(self, deadline: float) -> None:
        """Files still being saved in the background (``save(wait=False)``) are part of the
        run: their records come before the last pass, within the same deadline."""
        import concurrent.futures

        from .._filestore import pending_saves

        saves = pending_saves(self.path)
        if saves:
            concurrent.futures.wait(saves, timeout=max(0.0, deadline - time.monotonic()))

    def pending(self):
        """What the server has not acknowledged yet (from local files, no network)."""
        from ._files import pending

        return pending(self.path, self.url, self.namespace)

    # ---- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        from ._http import Api, Backoff, RemoteError, Unavailable
        from ._replicate import NotReady, Replicator, RunRefused

        api = None
        try:
            api = Api(self.url, self.token)
            replicator = Replicator(self.path, api, self.namespace, self.url, on_quarantine=self._on_quarantine)
            backoff = Backoff()
            delay = 0.0
            while not self._stop:
                if delay:
                    # Backing off: only close() cuts the wait short (once), not wake().
                    self._sleep(delay, interruptible_by_close=True)
                else:
                    self._wake.wait(self.poll_interval)
                if self._stop:
                    break
                self._wake.clear()
                closing = self._closing
                try:
                    done = replicator.run_pass()
                except NotReady:
                    delay = 0.05  # the writer thread is about to write experiment.json
                    continue
                except Unavailable as error:
                    self._note_failure(error)
                    delay = backoff.next(error.retry_after)
                    continue
                except RunRefused as error:
                    # Not a passing state: retrying cannot help until the user acts.
                    self.refused = error
                    self._note_failure(error, loud=True)
                    return
                except RemoteError as error:
                    # Refused (401/403/413...): it will not fix itself soon; keep the
                    # data local, say so once, and try again rarely.
                    self._note_failure(error, loud=True)
                    delay = max(backoff.next(), 30.0)
                    continue
                except Exception as error:  # a bug must not kill the thread silently
                    self._note_failure(error, loud=True)
                    delay = backoff.next()
                    continue
                backoff.reset()
                delay = 0.0
                self.error = None
                self.caught_up = done
                if closing and done:
                    with self._cond:
                        self._finished = True
                        self._cond.notify_all()
                    return
                if not done:
                    self._wake.set()  # more arrived during the pass
        finally:
            if api is not None:
                api.close()
            with self._cond:
                self._cond.notify_all()

    def _sleep(self, delay: float, interruptible_by_close: bool) -> None:
        end = time.monotonic() + delay
        closing_seen = self._closing
        while not self._stop:
            left = end - time.monotonic()
            if left <= 0:
                return
            with self._cond:
                self._cond.wait(min(left, 0.2))
            if interruptible_by_close and self._closing and not closing_seen:
                return  # finish() is a good moment to try once more right away

    def _note_failure(self, error: BaseException, loud: bool = False) -> None:
        self.error = error
        self.caught_up = False
        if loud and str(error) != self._warned:
            self._warned = str(error)
            print(
                f"mldash: uploading {self.run.prefix} to {self.url} failed: {error}. "
                "The run continues and keeps everything locally.",
                file=sys.stderr,
            )

    def _on_quarantine(self, entry: dict) -> None:
        from ._files import describe_problem

        from ._state import quarantine_path

        self.quarantined.append(entry)
        if len(self.quarantined) <= _LOUD_QUARANTINE:
            print(
                f"mldash: {self.run.prefix}: {self.url} refused {describe_problem(entry)}. It stays in the local "
                "files and is quarantined (not uploaded); the rest of the run goes on uploading.",
                file=sys.stderr,
            )
        elif len(self.quarantined) == _LOUD_QUARANTINE + 1:
            print(
                f"mldash: {self.run.prefix}: more records were refused; all are listed in "
                f"{quarantine_path(self.path)} (and by `mldash sync`).",
                file=sys.stderr,
            )

    def _report_pending(self) -> None:
        if self.refused is not None:
            print(
                f"mldash: {self.run.prefix}: nothing of this run was uploaded: {self.refused}.\n"
                f"mldash: everything is saved in {self.path}. Upload it under another namespace "
                f"(`{sync_command(self.run.root, self.url, 'NAMESPACE')}`) or, once the server's copy "
                f"is deleted, with:\n    {sync_command(self.run.root, self.url, self.namespace)}",
                file=sys.stderr,
            )
            return
        try:
            pending = self.pending()
        except OSError:
            pending = None
        if pending is not None and not pending:
            return
        reason = f" ({self.error})" if self.error is not None else " (still uploading)"
        what = pending.describe() if pending is not None else "some data"
        print(
            f"mldash: {self.run.prefix}: {what} not on {self.url} yet{reason}.\n"
            f"mldash: everything is saved in {self.path}; upload the rest with:\n"
            f"    {sync_command(self.run.root, self.url, self.namespace)}",
            file=sys.stderr,
        )
