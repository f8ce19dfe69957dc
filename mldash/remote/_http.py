"""One keep-alive HTTP session to an mldash server, and what its errors mean.

Errors fall in two kinds that callers treat differently:

- ``Unavailable``: try again later (connection refused, timeout, 429, 5xx).
  It carries the server's ``Retry-After`` when there was one.
- ``RemoteError``: the request itself is wrong (400, 401, 403, 413, ...);
  repeating it will not help. ``NotFound`` is the 404 case; ``Refused`` the
  answers about the request's content (400, 413, 422), which the replicator
  splits to find the records at fault; ``Collision`` a 409 saying another run
  already holds the namespace and prefix (not a gap to resync from).

``requests`` is imported here, never by ``import mldash``.
"""

from __future__ import annotations

import email.utils
import gzip
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from .. import _codec

API = "/api/v1"
# Below this size gzip costs more time than it saves on a local network.
_GZIP_MIN = 1024
USER_AGENT = "mldash-client"


@dataclass(frozen=True)
class RunAddress:
    """What the remote side knows of a run: its local folder and where it replicates."""

    url: str
    token: str | None
    namespace: str  # "default" when none was given
    prefix: str
    path: str  # the run's local folder
    root: str  # the local root it lies under (for the `mldash sync` command to print)


class RemoteError(RuntimeError):
    """The server refused a request; sending it again will not help."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail if detail is not None else message  # the server's own words


class NotFound(RemoteError):
    pass


class Conflict(RemoteError):
    """409: e.g. a batch would leave a gap in a series; the sender must resync."""


class Refused(RemoteError):
    """400, 413 or 422: the server will not take what this request carries (a value
    it cannot store, a body over its size limit). Sending it again will not help;
    sending it in parts finds the records at fault."""


class Collision(RemoteError):
    """409 with code "collision": the namespace and prefix belong to another run
    (another experiment.json id) on the server; the two are never merged."""


class Unavailable(RuntimeError):
    """The server cannot be reached or asked to come back later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Backoff:
    """Exponential backoff with jitter: ~base, 2*base, 4*base ... up to ``cap``.

    Each delay is drawn from [d/2, d] so that many clients that lost the same
    server do not all come back in the same instant.
    """

    def __init__(self, base: float = 0.5, cap: float = 15.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            # The server said when; never come back sooner (but don't sleep for hours).
            delay = max(delay, min(retry_after, 300.0))
        return delay


class Api:
    """A thin JSON client for the v1 API over one ``requests.Session``.

    >>> api = Api("http://127.0.0.1:8000", token=None)  # doctest: +SKIP
    >>> api.get("/health")  # doctest: +SKIP
    {'ok': True, 'version': '0.1.0'}
    """

    def __init__(self, url: str, token: str | None, timeout: tuple[float, float] = (3.05, 30.0)) -> None:
        import requests

        self._requests = requests
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: Any = None,
        body: bytes | None = None,
    ) -> Any:
        """Send one request; ``body`` is JSON already encoded (gzipped when large)."""
        headers = {}
        if json is not None:
            body = _codec.dumps(json, default=str)
        if body is not None:
            headers["Content-Type"] = "application/json"
            if len(body) >= _GZIP_MIN:
                body = gzip.compress(body, compresslevel=1, mtime=0)
                headers["Content-Encoding"] = "gzip"
        url = f"{self.url}{API}{path}"
        try:
            response = self.session.request(
                method, url, params=params, data=body, headers=headers, timeout=self.timeout
            )
        except self._requests.RequestException as error:
            raise Unavailable(f"{self.url} is unreachable ({_short(error)})") from None
        status = response.status_code
        if status < 300:
            content = response.content
            return _codec.loads(content) if content else None
        self._refuse(response, method, path)

    def send_stream(self, method: str, path: str, body, *, params: dict | None = None,
                    timeout: tuple[float, float] = (3.05, 300.0)) -> Any:
        """Send ``body`` (an iterable of bytes with ``len()``: a file's bytes, never
        gzipped, never read whole) and return the JSON answer; errors as ``request``'s."""
        url = f"{self.url}{API}{path}"
        headers = {"Content-Type": "application/octet-stream"}
        try:
            response = self.session.request(method, url, params=params, data=body, headers=headers, timeout=timeout)
        except self._requests.RequestException as error:
            raise Unavailable(f"{self.url} is unreachable ({_short(error)})") from None
        if response.status_code < 300:
            return _codec.loads(response.content) if response.content else None
        self._refuse(response, method, path)

    def open_stream(self, path: str, *, params: dict | None = None, headers: dict | None = None):
        """A GET whose body is read in pieces (``iter_content``); the caller closes it."""
        url = f"{self.url}{API}{path}"
        try:
            response = self.session.get(url, params=params, headers=headers, stream=True, timeout=self.timeout)
        except self._requests.RequestException as error:
            raise Unavailable(f"{self.url} is unreachable ({_short(error)})") from None
        if response.status_code < 300:
            return response
        try:
            self._refuse(response, "GET", path)
        finally:
            response.close()

    def _refuse(self, response, method: str, path: str) -> None:
        """Raise what a status >= 300 means (``Unavailable`` or a ``RemoteError``)."""
        status = response.status_code
        detail, code = _detail(response)
        if status in (408, 425, 429) or status >= 500:
            raise Unavailable(
                f"{self.url} answered {status}: {detail}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        kind = {404: NotFound, 409: Conflict, 400: Refused, 413: Refused, 422: Refused}.get(status, RemoteError)
        if status == 409 and code == "collision":
            kind = Collision
        hint = ""
        error_code = code
        if status == 401:
            hint = " (pass token= or set MLDASH_TOKEN)"
        elif status == 403:
            hint = " (the token may not write/read this namespace)"
        error = kind(f"{method} {path} -> {status}: {detail}{hint}", status=status, detail=detail)
        error.code = error_code
        error.body = _body_json(response)
        raise error


def _detail(response) -> tuple[str, str | None]:
    """The server's ``detail`` (else the start of the body) and its ``code``, if any."""
    try:
        data = orjson.loads(response.content)
        if isinstance(data, dict) and "detail" in data:
            code = data.get("code")
            return str(data["detail"]), code if isinstance(code, str) else None
    except orjson.JSONDecodeError:
        pass
    text = response.text.strip()
    return text[:200] or response.reason or "no detail", None


def _body_json(response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _short(error: BaseException) -> str:
    """The useful end of a requests/urllib3 error chain, not three nested reprs."""
    text = str(error)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                   "Remote end closed connection", "Connection aborted"):
        if marker in text:
            return marker.lower()
    return type(error).__name__
