"""The files endpoints against a real `mldash server` on each backend: embedded (SQLite
+ a folder) and PostgreSQL + S3 (moto, in 5 MiB multipart parts).

Bytes are streamed and checked by SHA-256 (nothing kept on a mismatch), uploads
resume after a break or a restart of the server (also where the hash cannot follow:
S3), a namespace's blob is never uploaded twice, files are listed and served with
ranges only once their bytes are complete, and records take the local API's rules
(the hostile-input tables).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import httpx
import pytest
from _files_support import data, new_experiment, put, save_record, upload
from hostile_inputs import BAD_FILE_IDS, BAD_FILE_METADATA, BAD_FILE_NAMES, BAD_FILE_PREFIXES, BAD_FILE_TAGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PART = 5 << 20


@pytest.fixture(scope="module")
def srv(backend):
    return backend.start_server(env={"MLDASH_S3_PART_SIZE": str(PART)})


@pytest.fixture(scope="module")
def api(srv):
    with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as client:
        yield client


def test_a_file_uploads_lists_and_downloads_with_ranges(api):
    exp = new_experiment(api)
    content = data(12 << 20)  # three S3 parts
    checksum = hashlib.sha256(content).hexdigest()
    assert api.post(f"/experiments/{exp}/blobs/missing", json={"sha256": [checksum]}).json() == {"missing": [checksum]}
    upload(api, exp, content)
    assert api.post(f"/experiments/{exp}/blobs/missing", json={"sha256": [checksum]}).json() == {"missing": []}
    record = save_record("1", content, tags=["best"])
    assert api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": [record]}).json() == {"accepted": 1, "total": 1}
    listed = api.get(f"/experiments/{exp}/files").json()
    assert listed["total"] == 1 and listed["files"][0]["checksum"] == checksum and listed["files"][0]["deletedAt"] is None
    assert api.get(f"/experiments/{exp}/files", params={"prefix": "/models", "tag": "best"}).json()["total"] == 1
    assert api.get(f"/experiments/{exp}/files", params={"prefix": "/model"}).json()["total"] == 0
    assert api.get(f"/experiments/{exp}/files", params={"pattern": "*.pt"}).json()["total"] == 1
    assert api.get(f"/experiments/{exp}/files/1/record").json() == listed["files"][0]

    whole = api.get(f"/experiments/{exp}/files/1")
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["x-checksum-sha256"] == checksum and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "application/octet-stream" and "attachment" in whole.headers["content-disposition"]
    for header, start, end in (("bytes=0-99", 0, 100), (f"bytes={PART - 10}-{PART + 9}", PART - 10, PART + 10),
                               ("bytes=-1000", len(content) - 1000, len(content)), (f"bytes={len(content) - 5}-", len(content) - 5, len(content))):
        part = api.get(f"/experiments/{exp}/files/1", headers={"Range": header})
        assert part.status_code == 206 and part.content == content[start:end], header
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(content)}"
    for header in (f"bytes={len(content)}-", "bytes=9-3", "bytes=-0", "bytes=x-y", "bytes=1_0-20", "bytes=+1-5"):
        refused = api.get(f"/experiments/{exp}/files/1", headers={"Range": header})
        assert refused.status_code == 416 and refused.headers["content-range"] == f"bytes */{len(content)}", header
    assert api.get(f"/experiments/{exp}/progress").json()["files"] == 1


def test_an_upload_resumes_where_the_server_holds_bytes(api):
    exp = new_experiment(api)
    content = data(13 << 20)
    checksum, upload_id = hashlib.sha256(content).hexdigest(), uuid.uuid4().hex
    first = put(api, exp, content[: 7 << 20], size=len(content), upload=upload_id, checksum=checksum).json()
    assert first["present"] is False and first["received"] in (7 << 20, PART)  # S3 keeps whole parts only
    held = api.get(f"/experiments/{exp}/blobs/{checksum}", params={"upload": upload_id}).json()
    assert held == {"present": False, "received": first["received"]}
    wrong = put(api, exp, content[:100], size=len(content), upload=upload_id, checksum=checksum)
    assert wrong.status_code == 409 and wrong.json()["received"] == first["received"] and wrong.json()["code"] == "offset"
    rest = put(api, exp, content[first["received"]:], size=len(content), offset=first["received"], upload=upload_id,
               checksum=checksum)
    assert rest.json() == {"present": True, "received": len(content)}
    assert api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": [save_record("r", content)]}).status_code == 200
    assert api.get(f"/experiments/{exp}/files/r").content == content


def test_an_upload_resumes_after_the_server_restarts(backend, srv, api):
    """The hash of the bytes received so far is gone with the process: rebuilt from the
    temp file (embedded), or checked on the completed object (S3)."""
    exp = new_experiment(api)
    content = data(11 << 20)
    checksum, upload_id = hashlib.sha256(content).hexdigest(), uuid.uuid4().hex
    first = put(api, exp, content[: 6 << 20], size=len(content), upload=upload_id, checksum=checksum).json()
    assert first["received"] > 0
    srv.kill()
    srv.restart()
    rest = put(api, exp, content[first["received"]:], size=len(content), offset=first["received"], upload=upload_id,
               checksum=checksum)
    assert rest.status_code == 200 and rest.json()["present"], rest.text
    assert api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": [save_record("k", content)]}).status_code == 200
    assert hashlib.sha256(api.get(f"/experiments/{exp}/files/k").content).hexdigest() == checksum


@pytest.mark.parametrize("size", [1000, 7 << 20], ids=["small", "multipart"])
def test_bytes_that_do_not_hash_to_their_name_are_not_kept(api, size):
    exp = new_experiment(api)
    content = data(size)
    claimed = hashlib.sha256(b"something else").hexdigest()
    refused = put(api, exp, content, upload=uuid.uuid4().hex, checksum=claimed)
    assert refused.status_code == 400 and "hash to" in refused.json()["detail"] and "nothing was kept" in refused.json()["detail"]
    assert api.post(f"/experiments/{exp}/blobs/missing", json={"sha256": [claimed]}).json() == {"missing": [claimed]}
    too_long = put(api, exp, content, size=size - 1, upload=uuid.uuid4().hex, checksum=hashlib.sha256(content).hexdigest())
    assert too_long.status_code == 400 and "runs past" in too_long.json()["detail"]


def test_a_namespace_holds_each_blob_once_and_other_namespaces_do_not_share_it(api):
    a, b = new_experiment(api), new_experiment(api)
    other = new_experiment(api, namespace="elsewhere")
    content = data(2 << 20)
    checksum = upload(api, a, content)
    assert api.post(f"/experiments/{b}/blobs/missing", json={"sha256": [checksum]}).json() == {"missing": []}
    again = put(api, b, content, upload=uuid.uuid4().hex, checksum=checksum)
    assert again.json() == {"present": True, "received": len(content)}  # nothing stored twice
    # Another namespace cannot claim the bytes by naming their hash: it must send them.
    assert api.post(f"/experiments/{other}/blobs/missing", json={"sha256": [checksum]}).json() == {"missing": [checksum]}
    api.post(f"/experiments/{other}/files", json={"start_index": 0, "records": [save_record("s", content)]})
    assert api.get(f"/experiments/{other}/files").json()["total"] == 0
    assert api.get(f"/experiments/{other}/files/s").status_code == 404


def test_a_file_is_listed_only_once_its_bytes_are_in_and_until_its_tombstone(api):
    exp = new_experiment(api)
    content = data(3000)
    records = [save_record("early", content)]
    assert api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": records}).status_code == 200
    assert api.get(f"/experiments/{exp}/files").json()["total"] == 0
    waiting = api.get(f"/experiments/{exp}/files/early")
    assert waiting.status_code == 404 and "not uploaded yet" in waiting.json()["detail"]
    upload(api, exp, content)
    assert [f["id"] for f in api.get(f"/experiments/{exp}/files").json()["files"]] == ["early"]
    tombstone = {"op": "delete", "id": "early", "deletedAt": "2026-01-02T00:00:00Z", "timestamp": time.time()}
    skipped = {"op": "skipped", "timestamp": time.time(), "note": "a stand-in"}
    answer = api.post(f"/experiments/{exp}/files", json={"start_index": 1, "records": [tombstone, skipped]})
    assert answer.json() == {"accepted": 2, "total": 3}
    assert api.get(f"/experiments/{exp}/files").json()["total"] == 0
    assert "deleted" in api.get(f"/experiments/{exp}/files/early").json()["detail"]
    # Idempotent by index; a gap is refused.
    assert api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": records}).json()["accepted"] == 0
    gap = api.post(f"/experiments/{exp}/files", json={"start_index": 9, "records": records})
    assert gap.status_code == 409 and "send from index 3" in gap.json()["detail"]


def test_listing_pages(api):
    exp = new_experiment(api)
    content = data(100)
    upload(api, exp, content)
    records = [save_record(f"f{k}", content, filename=f"f{k}.pt") for k in range(7)]
    api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": records})
    first = api.get(f"/experiments/{exp}/files", params={"limit": 3}).json()
    last = api.get(f"/experiments/{exp}/files", params={"limit": 3, "offset": 6}).json()
    assert [f["id"] for f in first["files"]] == ["f0", "f1", "f2"] and first["has_more"] and first["total"] == 7
    assert [f["id"] for f in last["files"]] == ["f6"] and not last["has_more"]


def test_a_saved_page_is_never_served_as_a_page(api):
    exp = new_experiment(api)
    page = b"<script>alert(1)</script>"
    upload(api, exp, page)
    record = save_record("h", page, filename="x.html", contentType="text/html")
    api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": [record]})
    for params in ({}, {"inline": "true"}):
        served = api.get(f"/experiments/{exp}/files/h", params=params)
        assert served.headers["content-type"] == "application/octet-stream"
        assert served.headers["x-content-type-options"] == "nosniff" and "sandbox" in served.headers["content-security-policy"]
        assert served.headers["content-disposition"].startswith("attachment")
    png = b"\x89PNG\r\n\x1a\n"
    upload(api, exp, png)
    api.post(f"/experiments/{exp}/files", json={"start_index": 1, "records": [save_record("p", png, filename="a.png", contentType="image/png")]})
    shown = api.get(f"/experiments/{exp}/files/p", params={"inline": "true"})
    assert shown.headers["content-type"] == "image/png" and shown.headers["content-disposition"].startswith("inline")


def test_a_files_name_is_given_plain_for_old_clients_and_exact_encoded(api):
    exp = new_experiment(api)
    upload(api, exp, b"x")
    record = save_record("q", b"x", filename='résumé "v2"; a=b.txt', contentType="text/plain")
    api.post(f"/experiments/{exp}/files", json={"start_index": 0, "records": [record]})
    disposition = api.get(f"/experiments/{exp}/files/q").headers["content-disposition"]
    assert disposition == ('attachment; filename="r_sum_ _v2__ a=b.txt"; '
                           "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22%3B%20a%3Db.txt")


# -- records take the local API's rules: the hostile-input tables ------------------------
def _bad_records():
    content = b"x"
    rows = []
    for value, _e, message in BAD_FILE_PREFIXES:
        rows.append((f"path {value!r}", save_record("a", content, path=value if not isinstance(value, str) or value.startswith("/") else "/" + value), message))
    for value, _e, message in BAD_FILE_NAMES:
        rows.append((f"filename {value!r}", save_record("a", content, filename=value), message))
    for value, _e, message in BAD_FILE_TAGS:
        rows.append((f"tags {value!r}", save_record("a", content, tags=value), message))
        rows.append((f"update tags {value!r}", {"op": "update", "id": "a", "tags": value, "timestamp": 1.0}, message))
    for value, _e, message in BAD_FILE_IDS:
        rows.append((f"id {value!r}", save_record(value, content), message))
    for value, _e, message in BAD_FILE_METADATA:
        if isinstance(value, dict) and any(not isinstance(k, str) or not isinstance(v, (str, int, float)) for k, v in value.items()):
            continue  # not JSON at all: cannot even be sent
        if value == {"$float": "NaN"}:
            continue  # as stored, that is a NaN: the local API refuses it from a user, the server reads it so
        if not isinstance(value, dict):
            message = "metadata must be an object"
        rows.append((f"metadata {value!r}", save_record("a", content, metadata=value), message))
    rows += [
        ("op", {"op": "rename", "id": "a", "timestamp": 1.0}, "op must be"),
        ("timestamp", save_record("a", content, timestamp="now"), "timestamp must be"),
        ("checksum", save_record("a", content, checksum="ABC"), "SHA-256"),
        ("size", save_record("a", content, sizeBytes=-1), "sizeBytes"),
        ("path not normalised", save_record("a", content, path="/models/"), "must be written as"),
        ("description NUL", save_record("a", content, description="a\x00b"), "NUL"),
        ("update of nothing", {"op": "update", "id": "a", "timestamp": 1.0}, "at least one of"),
        ("update description NUL", {"op": "update", "id": "a", "description": "a\x00", "timestamp": 1.0}, "NUL"),
        ("update metadata", {"op": "update", "id": "a", "metadata": [1], "timestamp": 1.0}, "metadata must be"),
        ("not an object", "a string", "must be an object"),
    ]
    return rows


BAD_RECORDS = _bad_records()


def test_a_bad_record_gets_a_400_naming_it_and_nothing_is_stored(api):
    import orjson

    exp = new_experiment(api)
    failures = []
    for what, record, message in BAD_RECORDS:
        try:
            body = orjson.dumps({"start_index": 0, "records": [record]})
        except TypeError:
            body = ('{"start_index": 0, "records": [' + __import__("json").dumps(record) + "]}").encode()
        answer = api.post(f"/experiments/{exp}/files", content=body, headers={"Content-Type": "application/json"})
        if answer.status_code == 400 and "ud800" in repr(record) and "not valid JSON" in answer.text:
            continue  # a lone surrogate cannot even arrive: JSON holds none
        if answer.status_code != 400 or "file record 0" not in answer.text and "record" not in answer.text:
            failures.append(f"{what}: {answer.status_code} {answer.text[:200]}")
        elif message.lower() not in answer.text.lower() and not __import__("re").search(message, answer.json()["detail"]):
            failures.append(f"{what}: {answer.text[:200]} lacks {message!r}")
    assert not failures, "\n".join(failures)
    assert api.get(f"/experiments/{exp}/progress").json()["files"] == 0


def test_bad_upload_parameters_are_refused(api):
    exp = new_experiment(api)
    checksum = hashlib.sha256(b"x").hexdigest()
    for params, status in (({"upload": "short", "offset": 0, "size": 1}, 422), ({"upload": "u" * 16, "offset": 2, "size": 1}, 400),
                           ({"upload": "../../etc", "offset": 0, "size": 1}, 422), ({"upload": "u" * 16, "offset": -1, "size": 1}, 422),
                           ({"upload": "u" * 16, "offset": 0, "size": 2**60}, 422)):
        assert api.put(f"/experiments/{exp}/blobs/{checksum}", params=params, content=b"x").status_code == status, params
    assert api.put(f"/experiments/{exp}/blobs/{'G' * 64}", params={"upload": "u" * 16, "offset": 0, "size": 1}, content=b"x").status_code == 422
    gz = api.put(f"/experiments/{exp}/blobs/{checksum}", params={"upload": "u" * 16, "offset": 0, "size": 1}, content=b"x",
                 headers={"Content-Encoding": "gzip"})
    assert gz.status_code == 400
    other = uuid.uuid4().hex
    put(api, exp, b"ab", size=4, upload=other, checksum=hashlib.sha256(b"abcd").hexdigest())
    reused = put(api, exp, b"zz", size=2, upload=other, checksum=hashlib.sha256(b"zz").hexdigest())
    assert reused.status_code == 400 and "upload" in reused.json()["detail"]
    assert api.post(f"/experiments/{exp}/blobs/missing", json={"sha256": ["nope"]}).status_code == 400
    assert api.get(f"/experiments/{exp}/files", params={"prefix": "../x"}).status_code == 400
    assert api.get(f"/experiments/{exp}/files/..%2Fx").status_code in (404, 422)
    assert api.get("/experiments/999999/files").status_code == 404


def test_a_large_upload_is_not_held_in_the_server_s_memory(backend, srv, api):
    psutil = pytest.importorskip("psutil")
    exp = new_experiment(api)
    size = 192 << 20
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    for _ in range(size >> 20):
        digest.update(block)
    server = psutil.Process(srv.proc.pid)
    before = server.memory_info().rss

    def body():
        for _ in range(size >> 20):
            yield block

    answer = api.put(f"/experiments/{exp}/blobs/{digest.hexdigest()}", params={"upload": uuid.uuid4().hex, "offset": 0, "size": size},
                     content=body(), headers={"Content-Length": str(size)})
    assert answer.json()["present"], answer.text
    grown = (server.memory_info().rss - before) >> 20
    assert grown < 64 + (2 * 64 if backend.kind == "postgres" else 0), f"the server grew by {grown} MiB"


def test_a_media_tag_naming_another_namespaces_file_shows_nothing_of_it(api, srv):
    """A run may store any well-formed $image tag; what it names is looked up in that
    run's own files only (and blobs in its own namespace), by id or by checksum."""
    victim_prefix = f"files/{uuid.uuid4().hex[:8]}"
    victim = api.post("/experiments", json={"namespace": "media-victim", "prefix": victim_prefix}).json()["id"]
    secret = data(3000, "secret")
    checksum = upload(api, victim, secret)
    record = save_record("secretfile", secret, path="/media/samples", filename="0.png", contentType="image/png")
    api.post(f"/experiments/{victim}/files", json={"start_index": 0, "records": [record]})
    prefix = f"files/{uuid.uuid4().hex[:8]}"
    thief = api.post("/experiments", json={"namespace": "media-thief", "prefix": prefix}).json()["id"]
    tag = {"$image": {"file": "secretfile", "sha256": checksum, "width": 1, "height": 1, "format": "png"}}
    sent = api.post(f"/experiments/{thief}/metrics",
                    json={"series": [{"name": "samples", "start_index": 0, "points": [[1_700_000_000_000, {"image": tag}]]}]})
    assert sent.status_code == 200, sent.text
    assert api.get(f"/experiments/{thief}/files/secretfile").status_code == 404
    api.post(f"/experiments/{thief}/files", json={"start_index": 0, "records": [dict(record)]})  # claim it by name
    assert api.get(f"/experiments/{thief}/files/secretfile").status_code == 404
    dashboard = srv.url + "/ui/api/file"
    for params in ({"id": "secretfile"}, {"sha": checksum}):
        shown = httpx.get(dashboard, params={"prefix": f"media-thief:{prefix}", **params}, timeout=30)
        assert shown.status_code == 404 and secret not in shown.content, params
    own = httpx.get(dashboard, params={"prefix": f"media-victim:{victim_prefix}", "id": "secretfile"}, timeout=30)
    assert own.status_code == 200 and own.content == secret  # the same request for the run that holds it
