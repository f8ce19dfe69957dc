"""API tokens: created by ``mldash token create``, stored as sha256 hashes.

A token carries the namespaces it may read and write ("*" means all); write
implies read. A request without a valid token gets 401 when auth is on; one
naming a namespace outside its token's gets 403; one naming an experiment (by
id, or by prefix in the dashboard) that the token may not read gets 404, as for
a missing one, so existence cannot be probed.

>>> token_id, secret = create_token(store, "ci", read=["team"], write=["team"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select, update

from .schema import tokens
from .storage import Store, check_namespace

TOKEN_PREFIX = "mldash_"
_CACHE_SECONDS = 2.0  # revocations take effect within this time


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _namespaces(values) -> list[str]:
    return sorted({v if v == "*" else check_namespace(v) for v in values or ()})


def create_token(store: Store, name: str, read=(), write=()) -> tuple[int, str]:
    """Store a new token; return its id and the secret (shown once, never stored)."""
    read, write = _namespaces(read), _namespaces(write)
    if not read and not write:
        raise ValueError("a token needs at least one namespace to read or write (--read NS / --write NS, '*' for all)")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.writing() as conn:
        token_id = conn.execute(
            tokens.insert().values(
                name=name, secret_hash=hash_secret(secret), read=read, write=write, created_at=time.time()
            )
        ).inserted_primary_key[0]
    return token_id, secret


def list_tokens(store: Store) -> list[dict]:
    with store.reading() as conn:
        rows = conn.execute(select(tokens).order_by(tokens.c.id)).all()
    return [
        {"id": r.id, "name": r.name, "read": r.read, "write": r.write, "created_at": r.created_at, "revoked_at": r.revoked_at}
        for r in rows
    ]


def revoke_token(store: Store, token_id: int) -> bool:
    with store.writing() as conn:
        result = conn.execute(
            update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=time.time())
        )
    return result.rowcount > 0


@dataclass(frozen=True)
class Scope:
    """What one caller may do. ``OPEN`` is the scope of an open (loopback) server."""

    read: frozenset = field(default_factory=frozenset)
    write: frozenset = field(default_factory=frozenset)
    name: str = "open"

    def can(self, action: str, namespace: str) -> bool:
        allowed = self.write if action == "write" else self.read | self.write
        return "*" in allowed or namespace in allowed

    def readable(self) -> list[str] | None:
        """Namespaces this caller may read; None means all of them."""
        allowed = self.read | self.write
        return None if "*" in allowed else sorted(allowed)


OPEN = Scope(read=frozenset({"*"}), write=frozenset({"*"}))


class Unauthorized(Exception):
    status = 401


class Forbidden(Exception):
    status = 403


class Authenticator:
    """Resolves the Authorization header of a request to a Scope.

    ``mode``: "required" (always check tokens), "off" (open), or "auto" (open
    until the first token is created, then always checked, even after revoking).
    """

    def __init__(self, store: Store, mode: str = "auto") -> None:
        if mode not in ("auto", "required", "off"):
            raise ValueError(f"auth mode must be auto, required or off, got {mode!r}")
        self.store = store
        self.mode = mode
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Scope | None]] = {}
        self._active: tuple[float, bool] = (0.0, False)

    def enabled(self) -> bool:
        if self.mode != "auto":
            return self.mode == "required"
        checked_at, active = self._active
        if time.monotonic() - checked_at > _CACHE_SECONDS:
            with self.store.reading() as conn:
                # Any token ever created, revoked ones too: revoking the last token
                # must not silently open the server.
                active = bool(conn.execute(select(func.count()).select_from(tokens)).scalar())
            self._active = (time.monotonic(), active)
        return active

    def cached_scope(self, authorization: str | None) -> Scope | None:
        """``scope()`` when it needs no database query (the usual case), else None.

        Lets the event loop resolve a caller without a thread hop; the answer
        (or the Unauthorized raised) is exactly what ``scope()`` would give.
        """
        now = time.monotonic()
        if self.mode == "off" or (self.mode == "auto" and now - self._active[0] <= _CACHE_SECONDS and not self._active[1]):
            return OPEN
        if not authorization:
            return None  # scope() decides (it may need to refresh whether auth is on)
        kind, _, secret = authorization.partition(" ")
        cached = self._cache.get(hash_secret(secret.strip()))
        if cached is None or now - cached[0] >= _CACHE_SECONDS:
            return None
        if self.mode == "auto" and now - self._active[0] > _CACHE_SECONDS:
            return None
        return self.scope(authorization)

    def scope(self, authorization: str | None) -> Scope:
        if not self.enabled():
            return OPEN
        if not authorization:
            raise Unauthorized("this server needs an API token: send 'Authorization: Bearer <token>' (create one with `mldash token create`)")
        kind, _, secret = authorization.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        digest = hash_secret(secret.strip())
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            scope = cached[1]
        else:
            with self.store.reading() as conn:
                row = conn.execute(
                    select(tokens).where(tokens.c.secret_hash == digest, tokens.c.revoked_at.is_(None))
                ).first()
            scope = None if row is None else Scope(frozenset(row.read), frozenset(row.write), row.name)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now, scope)
        if scope is None:
            raise Unauthorized("unknown or revoked API token")
        return scope


def require(scope: Scope, action: str, namespace: str) -> None:
    if not scope.can(action, namespace):
        raise Forbidden(f"token {scope.name!r} may not {action} namespace {namespace!r}")
