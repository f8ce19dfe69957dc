"""What the store refuses: each error carries the HTTP status app.py answers with."""

from __future__ import annotations


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status to answer with
    and ``code``, when set, a word a client can act on (sent beside the detail)."""

    status = 400
    code: str | None = None


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class Collision(Conflict):
    """Another run (another local id) already holds this namespace and prefix.

    Two runs that did not resume each other must never merge; the client is told
    to upload under another name or namespace, or to delete the server's copy.
    """

    code = "collision"


def no_experiment(exp_id: int) -> NotFound:
    return NotFound(f"no experiment with id {exp_id}")


class Unavailable(StoreError):
    """The store cannot take the request now (its disk or object store failed): try later."""

    status = 503
