"""`mldash gc` on each backend: the bytes of deleted or replaced files and uploads
nobody went on with are freed once their grace period is over; what a live file of
the namespace holds, or what a client was just told is there, is never touched."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest
from _files_support import data, new_experiment, put, save_record, upload
from _server_support import backend  # noqa: F401 (a fresh store per test: gc sees all of it)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PART = 5 << 20


@pytest.fixture
def api(backend):
    server = backend.start_server(env={"MLDASH_S3_PART_SIZE": str(PART)})
    with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
        yield client


def s3(backend):
    import boto3

    bucket = backend.blob[5:].partition("/")[0]
    client = boto3.client("s3", endpoint_url=backend.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return client, bucket


def file_objects(backend) -> list[str]:
    """The blob store's file objects (not metric chunks), as keys."""
    if backend.blob:
        client, bucket = s3(backend)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if "/files/" in "/" + o["Key"])
    folder = Path(backend.data) / "chunks" / "files"
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def pending_uploads(backend) -> int:
    if backend.blob:
        client, bucket = s3(backend)
        return len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    folder = Path(backend.data) / "chunks" / ".uploads"
    return len(list(folder.iterdir())) if folder.exists() else 0


def save(api, exp, file_id, content, start, **extra):
    upload(api, exp, content)
    answer = api.post(f"/experiments/{exp}/files", json={"start_index": start, "records": [save_record(file_id, content, **extra)]})
    assert answer.status_code == 200, answer.text


def delete(api, exp, file_id, start):
    tombstone = {"op": "delete", "id": file_id, "deletedAt": "2026-01-02T00:00:00Z", "timestamp": 1.0}
    assert api.post(f"/experiments/{exp}/files", json={"start_index": start, "records": [tombstone]}).status_code == 200


def test_gc_frees_the_bytes_no_live_file_holds_and_keeps_the_rest(backend, api):
    a, b = new_experiment(api, "team-a"), new_experiment(api, "team-b")
    other = new_experiment(api, "team-a")
    gone, kept, shared = data(3000, "gone"), data(4000, "kept"), data(5000, "shared")
    save(api, a, "g", gone, 0, filename="gone.pt")
    save(api, a, "k", kept, 1, filename="kept.pt")
    save(api, a, "s1", shared, 2, filename="s1.pt")
    save(api, other, "s2", shared, 0, filename="s2.pt")  # the same bytes, one blob in team-a
    save(api, b, "x", gone, 0)  # the same bytes in another namespace: its own blob
    delete(api, a, "g", 3)
    delete(api, a, "s1", 4)
    before = file_objects(backend)
    assert len(before) == 4

    dry = backend.cli("gc", "--older-than", "0", "--dry-run")
    assert dry.returncode == 0 and "would free 1 file blob (2.9 KiB)" in dry.stdout, dry.stderr
    assert file_objects(backend) == before
    ran = backend.cli("gc", "--older-than", "0")
    assert ran.returncode == 0 and "freed 1 file blob (2.9 KiB) and 0 abandoned uploads" in ran.stdout, ran.stderr
    after = file_objects(backend)
    assert len(after) == 3 and not any(hashlib.sha256(gone).hexdigest()[2:] in k and "team-a" in k for k in after)
    assert api.get(f"/experiments/{a}/files/k").content == kept
    assert api.get(f"/experiments/{other}/files/s2").content == shared
    assert api.get(f"/experiments/{b}/files/x").content == gone
    again = backend.cli("gc", "--older-than", "0")
    assert "freed 0 file blobs" in again.stdout  # nothing left to free
    # The freed bytes can be sent again: the server asks for them.
    assert api.post(f"/experiments/{a}/blobs/missing", json={"sha256": [hashlib.sha256(gone).hexdigest()]}).json()[
        "missing"] == [hashlib.sha256(gone).hexdigest()]


def test_within_the_grace_period_nothing_is_freed_and_being_asked_about_counts_as_use(backend, api):
    exp = new_experiment(api)
    content = data(3000)
    save(api, exp, "f", content, 0)
    delete(api, exp, "f", 1)
    assert "freed 0 file blobs" in backend.cli("gc").stdout  # the default grace: a day
    checksum = hashlib.sha256(content).hexdigest()
    # A client told the server holds the bytes may send a record for them next.
    assert api.post(f"/experiments/{exp}/blobs/missing", json={"sha256": [checksum]}).json() == {"missing": []}
    assert "freed 0 file blobs" in backend.cli("gc", "--older-than", "30m").stdout
    assert "freed 1 file blob" in backend.cli("gc", "--older-than", "0").stdout


def test_gc_aborts_an_upload_nobody_went_on_with(backend, api):
    exp = new_experiment(api)
    content = data(12 << 20)
    checksum, upload_id = hashlib.sha256(content).hexdigest(), uuid.uuid4().hex
    first = put(api, exp, content[: 6 << 20], size=len(content), upload=upload_id, checksum=checksum).json()
    assert first["present"] is False and first["received"] > 0 and pending_uploads(backend) == 1
    assert "0 abandoned uploads" in backend.cli("gc").stdout  # still within a day
    ran = backend.cli("gc", "--older-than", "0")
    assert "and 1 abandoned upload (" in ran.stdout, ran.stdout + ran.stderr
    assert pending_uploads(backend) == 0
    status = api.get(f"/experiments/{exp}/blobs/{checksum}", params={"upload": upload_id}).json()
    assert status == {"present": False, "received": 0}  # a client coming back starts over
    resumed = put(api, exp, content, size=len(content), upload=upload_id, checksum=checksum)
    assert resumed.json() == {"present": True, "received": len(content)}


@pytest.mark.parametrize("age", ["soon", "-1h", "nan", "1e999d"])
def test_a_bad_grace_period_is_a_clear_error(backend, age):
    result = backend.cli("gc", "--older-than", age)
    assert result.returncode == 2 and "--older-than" in result.stderr and "Traceback" not in result.stderr


def test_a_store_from_before_used_at_gets_the_column_and_counts_from_creation(backend, api):
    import sqlalchemy

    exp = new_experiment(api)
    save(api, exp, "f", data(3000), 0)
    delete(api, exp, "f", 1)
    for server in backend.servers:
        server.stop()
    url = backend.db or "sqlite:///" + str(Path(backend.data) / "mldash.db")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("ALTER TABLE file_blobs DROP COLUMN used_at"))  # the schema before it
    engine.dispose()
    ran = backend.cli("gc", "--older-than", "0")
    assert ran.returncode == 0 and "freed 1 file blob" in ran.stdout, ran.stderr
    assert "added the column file_blobs.used_at" in ran.stderr


def test_bytes_sent_again_after_gc_land_on_an_object_of_their_own(backend, api):
    """A re-upload of freed bytes never shares the old object's key, so a gc freeing
    the old copy at that moment cannot remove the new one."""
    exp = new_experiment(api)
    content = data(3000)
    save(api, exp, "f", content, 0)
    old = file_objects(backend)
    delete(api, exp, "f", 1)
    assert "freed 1 file blob" in backend.cli("gc", "--older-than", "0").stdout
    save(api, exp, "g", content, 2)
    new = file_objects(backend)
    assert len(new) == 1 and new != old
    assert api.get(f"/experiments/{exp}/files/g").content == content


def test_an_upload_resumed_within_the_grace_period_is_left_alone(backend, api):
    import time

    exp = new_experiment(api)
    content = data(12 << 20)
    checksum, upload_id = hashlib.sha256(content).hexdigest(), uuid.uuid4().hex
    first = put(api, exp, content[: 6 << 20], size=len(content), upload=upload_id, checksum=checksum).json()
    time.sleep(2.5)
    again = put(api, exp, content[first["received"]: first["received"] + 10], size=len(content),
                offset=first["received"], upload=upload_id, checksum=checksum).json()
    assert again["present"] is False
    assert "0 abandoned uploads" in backend.cli("gc", "--older-than", "2").stdout  # its last PUT was just now
    assert pending_uploads(backend) == 1


def test_gc_pointed_at_the_wrong_blob_store_frees_nothing_and_says_so(backend, api, tmp_path):
    exp = new_experiment(api)
    save(api, exp, "f", data(3000), 0)
    delete(api, exp, "f", 1)
    elsewhere = tmp_path / "other-blobs"
    elsewhere.mkdir()
    extra = ["--s3-endpoint", backend.s3_endpoint] if backend.s3_endpoint else []
    from _server_support import mldash_cli

    wrong = mldash_cli("gc", "--older-than", "0", "--blob", str(elsewhere), *extra, db=backend.db, data=backend.data)
    assert wrong.returncode == 0 and "freed 0 file blobs" in wrong.stdout
    assert "not in the blob store" in wrong.stderr and "is --blob right?" in wrong.stderr
    assert "freed 1 file blob" in backend.cli("gc", "--older-than", "0").stdout  # the right store: freed then


def test_gc_on_a_path_with_no_store_makes_none(tmp_path):
    from _server_support import mldash_cli

    result = mldash_cli("gc", data=tmp_path / "typo")
    assert result.returncode == 1 and "no mldash server store at" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_an_upload_still_streaming_is_left_alone(backend, tmp_path):
    """A slow PUT marks its upload alive while it streams, so gc leaves it be."""
    import threading
    import time

    server = backend.start_server(env={"MLDASH_S3_PART_SIZE": str(PART), "MLDASH_UPLOAD_ALIVE_S": "0.3"})
    content = data(6 << 20)
    checksum, upload_id = hashlib.sha256(content).hexdigest(), uuid.uuid4().hex
    with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
        exp = new_experiment(api)

        def slowly():
            for k in range(0, len(content), 256 << 10):
                time.sleep(0.15)
                yield content[k: k + (256 << 10)]

        answer = {}
        sender = threading.Thread(target=lambda: answer.update(put(api, exp, slowly(), size=len(content), upload=upload_id,
                                                                   checksum=checksum).json()))
        sender.start()
        time.sleep(2.0)  # well into the PUT, which takes ~3.6 s
        collected = backend.cli("gc", "--older-than", "1")
        sender.join(60)
    assert "0 abandoned uploads" in collected.stdout, collected.stdout + collected.stderr
    assert answer == {"present": True, "received": len(content)}
