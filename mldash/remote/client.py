"""Reading from a server: an experiment with no local copy, and ``ls --remote``.

Every read returns the shape of its local counterpart, so code that reads a
run does not care where the run lives:

>>> exp = mldash.Experiment("vision/resnet", remote="http://127.0.0.1:8000")  # doctest: +SKIP
>>> exp.metrics("train/loss").read(0, 100)["data"][0]  # doctest: +SKIP
{'index': 0, 'timestamp': 1767225600.123, 'data': {'value': 2.3, 'step': 0}}
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import _codec
from .._runfolder import DOCUMENTS as _DOCUMENT_KINDS
from .._runfolder import page
from ._http import Api, RunAddress

_PAGE = 5_000  # experiments per listing request (the server's largest page is 10,000)
_MAX_PAGE = 100_000  # the server's largest page


def _empty(start_index: int) -> dict:
    return page([], start_index, start_index - 1, 0)


class RemoteReader:
    """Reads one experiment from ``exp.remote``, addressed by (namespace, prefix).

    An experiment the server does not know reads as empty, exactly like a
    local experiment that was never written.
    """

    def __init__(self, run: RunAddress) -> None:
        self.namespace = run.namespace
        self.prefix = run.prefix
        self.api = Api(run.url, run.token)
        self._id: str | None = None

    def _experiment_id(self) -> str | None:
        if self._id is None:
            from ._http import NotFound

            try:
                record = self.api.get(
                    "/experiments/lookup", params={"namespace": self.namespace, "prefix": self.prefix}
                )
            except NotFound:
                return None  # not cached: it may appear later
            self._id = str(record["id"])
        return self._id

    def _get(self, path: str, params: dict | None = None) -> Any:
        from ._http import NotFound

        exp_id = self._experiment_id()
        if exp_id is None:
            return None
        try:
            return self.api.get(f"/experiments/{exp_id}{path}", params=params)
        except NotFound:
            return None

    def read_metric(self, name: str, start_index: int = 0, limit: int = 1000) -> dict:
        """Same shape as ``Metric.read``."""
        return self._paged("/metrics/read", {"name": name}, start_index, limit)

    def read_logs(self, start_index: int = 0, limit: int = 1000, level: str | None = None) -> dict:
        """Same shape as ``Experiment.read_logs``."""
        return self._paged("/logs", {"level": level} if level is not None else {}, start_index, limit)

    def read_console(self, start_index: int = 0, limit: int = 1000) -> dict:
        """Same shape as ``Experiment.read_console``."""
        return self._paged("/console", {}, start_index, limit)

    def _paged(self, path: str, params: dict, start_index: int, limit: int) -> dict:
        # The server caps one page at _MAX_PAGE; a local read has no cap, so a
        # larger limit is served as several pages stitched together.
        out = None
        start, left = start_index, limit
        while True:
            reply = self._get(path, {**params, "start_index": start, "limit": min(left, _MAX_PAGE)})
            if reply is None:
                return _empty(start_index)
            reply = _untag(reply)
            if out is None:
                out = reply
            else:
                out["data"].extend(reply["data"])
                out.update(total=reply["total"], has_more=reply["has_more"])
                if reply["data"]:
                    out["end_index"] = reply["end_index"]
            left -= len(reply["data"])
            if left <= 0 or not reply.get("has_more") or not reply["data"]:
                return out
            start = reply["end_index"] + 1

    def list_files(self) -> list[dict]:
        """The run's live files, as ``exp.files(...).list()`` gives them locally."""
        out: list[dict] = []
        while True:
            reply = self._get("/files", {"limit": 10_000, "offset": len(out)})
            if not reply:
                return out
            out.extend(_untag(reply.get("files") or []))
            if not reply.get("has_more") or not reply.get("files"):
                return out

    def download_file(self, record: dict, dest: str) -> str:
        """The bytes of ``record`` into ``dest`` (through a temp file beside it, renamed
        once their SHA-256 is the record's), streamed; returns ``dest``."""
        import hashlib
        import os

        from ._http import NotFound

        exp_id = self._experiment_id()
        if exp_id is None:
            raise FileNotFoundError(f"no experiment {self.prefix!r} on the server")
        try:
            response = self.api.open_stream(f"/experiments/{exp_id}/files/{record['id']}")
        except NotFound as error:
            raise FileNotFoundError(f"file {record['id']}: {error.detail}") from None
        part = f"{dest}.mldash-{os.getpid()}-{os.urandom(4).hex()}.part"
        digest = hashlib.sha256()
        try:
            with response, open(part, "wb") as f:
                for data in response.iter_content(1 << 20):
                    digest.update(data)
                    f.write(data)
            if digest.hexdigest() != record["checksum"]:
                raise OSError(f"the download of {record['filename']} hashes to {digest.hexdigest()}, "
                              f"not {record['checksum']}")
            os.replace(part, dest)
        except BaseException:
            try:
                os.unlink(part)
            except OSError:
                pass
            raise
        return dest

    def read_document(self, filename: str) -> dict:
        """``parameters/parameters.json`` or ``summary.json`` as a flat dict."""
        kind = _DOCUMENT_KINDS.get(filename)
        if kind is None:
            raise ValueError(f"no remote document for {filename!r}; use one of {', '.join(_DOCUMENT_KINDS)}")
        reply = self._get(f"/documents/{kind}")
        return _untag(reply) if reply else {}

    def close(self) -> None:
        self.api.close()


def _untag(obj: Any) -> Any:
    # The server returns NaN/inf as {"$float": ...}, as they are stored; reads give floats.
    return _codec.untag(obj)


def _latest(metrics: Any) -> dict:
    """The server's latest-point map in the local ``{name: point}`` shape."""
    out = {}
    if not isinstance(metrics, dict):
        return out
    for name, value in metrics.items():
        if isinstance(value, dict) and "last" in value:
            value = value["last"]
        if isinstance(value, list) and len(value) == 2:  # a raw stored line [ms, fields]
            value = {"timestamp": value[0] / 1000, "data": value[1]}
        if isinstance(value, dict):
            out[name] = value
    return out


def list_remote_experiments(
    url: str,
    token: str | None = None,
    project: str | None = None,
    status: str | None = None,
    namespace: str | None = None,
    limit: int | None = None,
    filter: str | None = None,
) -> list[dict]:
    """The server's experiments as rows shaped like ``mldash._runfolder.experiment_summary``
    (plus ``summary`` and ``metric_stats``: each series' headline ``key``, ``last``,
    ``min`` and ``max``). ``filter``: the filter language, run by the server in SQL;
    one it refuses is a ValueError with its caret.

    >>> rows = list_remote_experiments("http://127.0.0.1:8000", project="vision")  # doctest: +SKIP
    >>> rows[0]["prefix"], rows[0]["status"], rows[0]["metrics"]["loss"]["data"]  # doctest: +SKIP
    ('vision/resnet', 'COMPLETED', {'value': 0.12})
    >>> [r["prefix"] for r in list_remote_experiments(URL, filter="params.lr < 1e-3")]  # doctest: +SKIP
    """
    api = Api(url, token)
    rows: list[dict] = []
    try:
        offset = 0
        while True:
            params: dict = {"limit": _PAGE, "offset": offset}
            for key, value in (("namespace", namespace), ("project", project), ("status", status), ("filter", filter)):
                if value is not None:
                    params[key] = value
            reply = _get_filtered(api, "/experiments", params) or {}
            page = reply.get("experiments") or []
            try:  # C-fast; the Python walk only when needed
                tagged = _codec._TAG_BYTES in orjson.dumps(page)
            except TypeError:  # an int past 64 bits (a JSON reader gave it as is): walk
                tagged = True
            for record in page:
                if tagged:
                    record = _untag(record)
                row = dict(record.get("meta") or {})
                row.update({k: v for k, v in record.items() if k != "meta"})
                row["params"] = row.get("params") or {}
                row["summary"] = row.get("summary") or {}
                row["metrics"] = _latest(row.get("metrics"))
                row.setdefault("stale", False)
                rows.append(row)
            offset += len(page)
            total = reply.get("total")
            if not page or (total is not None and offset >= total) or (limit and len(rows) >= limit):
                break
    finally:
        api.close()
    return rows[:limit] if limit else rows


def remote_filter_keys(url: str, token: str | None = None, project: str | None = None, namespace: str | None = None) -> dict:
    """The keys a filter can use over the server's experiments this token may read:
    ``params``, ``summary`` and ``metrics`` (names), and ``keys``, all of them as a
    filter spells them (``metrics.<name>.last|min|max`` ...), for completion."""
    api = Api(url, token)
    try:
        params = {k: v for k, v in (("project", project), ("namespace", namespace)) if v is not None}
        return api.get("/experiments/keys", params=params) or {}
    finally:
        api.close()


def _get_filtered(api: Api, path: str, params: dict):
    """``api.get``; the server's refusal of a filter as the ValueError a local parse gives."""
    from ._http import RemoteError

    try:
        return api.get(path, params=params)
    except RemoteError as error:
        if getattr(error, "code", None) == "bad_filter":
            raise ValueError(error.detail) from None
        raise
