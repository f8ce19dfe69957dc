"""Saved files replicated through the local-first uploader and `mldash sync`, on both
backends: the bytes go before their record, a blob the server holds is never sent
again, an interrupted upload resumes from what the server holds, `mldash sync` shows
the bytes, a damaged local copy is quarantined while the rest goes through, and a run
with no local copy lists and downloads its files from the server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mldash
from mldash import _filestore
from mldash.remote import _upload_files
from mldash.remote._http import Api
from mldash.remote.sync import sync_root

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def content(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    block = hashlib.sha256(f"{name}{time.monotonic_ns()}".encode()).digest() * 8192  # 256 KiB
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[: size % len(block)])
    return path


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def elsewhere(url: str, prefix: str, tmp_path: Path) -> mldash.Experiment:
    """The run as a machine without its folder sees it."""
    return mldash.Experiment(prefix, root=tmp_path / f"elsewhere-{time.monotonic_ns()}", remote=url)


def server_files(url: str, prefix: str) -> list[dict]:
    api = Api(url, None)
    try:
        record = api.get("/experiments/lookup", params={"namespace": "default", "prefix": prefix})
        return api.get(f"/experiments/{record['id']}/files")["files"]
    finally:
        api.close()


@pytest.fixture
def sent(monkeypatch):
    """The bytes each blob PUT carried: (sha256 in the URL, offset, length)."""
    calls = []
    real = Api.send_stream

    def spy(self, method, path, body, *, params=None, **kw):
        calls.append((path.rsplit("/", 1)[-1], params["offset"], len(body)))
        return real(self, method, path, body, params=params, **kw)

    monkeypatch.setattr(Api, "send_stream", spy)
    return calls


def test_a_remote_run_uploads_its_files_and_a_reader_elsewhere_gets_them(server, root, tmp_path, sent):
    model = content(tmp_path, "model.pt", 9 << 20)
    exp = mldash.Experiment("files/remote", root=root, remote=server.url)
    saved = exp.files(file_path=str(model), prefix="/models", tags=["best"], metadata={"epoch": 2}).save()
    exp.files(prefix="/cfg").save_json({"lr": 0.1}, "config.json")
    exp.files(prefix="/copy").save(str(model))  # the same bytes again
    gone = exp.files(prefix="/tmp").save_text("scratch", "scratch.txt")
    exp.files(file_id=gone["id"]).delete()
    exp.finish()

    local = exp.files.list()
    assert [f["filename"] for f in server_files(server.url, exp.prefix)] == ["model.pt", "config.json", "model.pt"]
    reader = elsewhere(server.url, exp.prefix, tmp_path)
    assert reader.files.list() == local
    assert reader.files(prefix="/models").list() == [saved]
    out = reader.files(file_id=saved["id"]).download(dest_path=str(tmp_path / "back.pt"))
    assert sha(out) == saved["checksum"] and not os.path.exists(reader.path)
    with pytest.raises(FileNotFoundError, match="no local copy"):
        reader.files(file_id=saved["id"]).delete()
    assert not os.path.exists(reader.path)  # deleting did not start a local run
    assert sum(1 for s, _o, _n in sent if s == saved["checksum"]) == 1, sent  # its bytes went once


def test_updates_and_duplicates_replicate_and_read_back_elsewhere(server, root, tmp_path, sent):
    exp = mldash.Experiment("files/changed", root=root, remote=server.url)
    snapshot = exp.files("models", description="epoch 5").save_blob(b"w" * 50_000, to="model_00005.pt")
    exp.files(file_id=snapshot["id"], tags=["best"], metadata={"score": 0.9}).update()
    latest = exp.files().duplicate(snapshot, to="models/latest.pt")
    exp.files("configs").save_text("lr: 0.1", to="view.yaml")
    exp.finish()

    local = exp.files.list()
    assert server_files(server.url, exp.prefix) == local
    reader = elsewhere(server.url, exp.prefix, tmp_path)
    shown = {f["filename"]: f for f in reader.files.list()}
    assert shown["model_00005.pt"]["tags"] == ["best"] and shown["model_00005.pt"]["metadata"] == {"score": 0.9}
    assert shown["model_00005.pt"]["description"] == "epoch 5" and shown["latest.pt"]["id"] == latest["id"]
    assert reader.files("configs/view.yaml").read_text() == "lr: 0.1" and not os.path.exists(reader.path)
    assert sum(1 for s, _o, _n in sent if s == snapshot["checksum"]) == 1, sent  # duplicated, sent once
    with pytest.raises(FileNotFoundError, match="no local copy"):
        reader.files(file_id=latest["id"], tags=["x"]).update()
    assert not os.path.exists(reader.path)


def test_an_offline_run_syncs_its_files_with_byte_progress(server, root, tmp_path):
    model = content(tmp_path, "weights.bin", 6 << 20)
    exp = mldash.Experiment("files/offline", root=root)
    record = exp.files(file_path=str(model), prefix="/w").save()
    exp.finish()
    result = subprocess.run([sys.executable, "-m", "mldash", "sync", str(root), "--remote", server.url],
                            capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6.3 MB" in result.stdout or "MB" in result.stdout, result.stdout  # the file's bytes are counted
    assert [f["id"] for f in server_files(server.url, exp.prefix)] == [record["id"]]
    again = subprocess.run([sys.executable, "-m", "mldash", "sync", str(root), "--remote", server.url],
                           capture_output=True, text=True, timeout=180)
    assert "up to date" in again.stdout


def test_a_second_run_with_the_same_bytes_sends_none_of_them(server, root, tmp_path, sent):
    base = content(tmp_path, "base.pt", 3 << 20)
    for name in ("files/dedup-a", "files/dedup-b"):
        exp = mldash.Experiment(name, root=root)
        exp.files(file_path=str(base)).save()
        exp.finish()
    result = sync_root(str(root), server.url)
    assert not result.failed and not result.quarantined
    assert [s for s, _o, _n in sent].count(sha(base)) == 1
    assert server_files(server.url, "files/dedup-b")[0]["checksum"] == sha(base)


def test_an_upload_cut_short_resumes_from_what_the_server_holds(server, root, tmp_path, sent, monkeypatch):
    big = content(tmp_path, "big.bin", 24 << 20)
    exp = mldash.Experiment("files/resume", root=root)
    record = exp.files(file_path=str(big)).save()
    exp.finish()

    real_iter = _upload_files._Body.__iter__

    def dies_midway(body):
        at = body.f.tell()
        for piece in real_iter(body):
            if at >= 14 << 20:  # past 14 MiB the connection always drops: the server stays behind
                raise ConnectionResetError("cut")
            at += len(piece)
            yield piece

    monkeypatch.setattr(_upload_files._Body, "__iter__", dies_midway)
    first = sync_root(str(root), server.url, give_up_after=0.5)
    assert first.failed, "the upload should have been cut"
    state = json.loads((Path(exp.path) / ".sync" / "state.json").read_text())
    (uploads,) = [t["uploads"] for t in state["targets"].values()]
    assert list(uploads) == [record["checksum"]]  # the upload's id is kept, to resume it

    monkeypatch.setattr(_upload_files._Body, "__iter__", real_iter)
    sent.clear()
    second = sync_root(str(root), server.url)
    assert not second.failed and not second.quarantined
    ((_sha, offset, length),) = sent
    assert offset >= 5 << 20 and offset + length == 24 << 20, sent  # not from the start
    reader = elsewhere(server.url, exp.prefix, tmp_path)
    assert sha(reader.files(file_id=record["id"]).download(dest_path=str(tmp_path / "b.bin"))) == sha(big)


def test_a_run_killed_mid_upload_resumes_with_mldash_sync(server, root, tmp_path):
    big = content(tmp_path, "huge.bin", 96 << 20)
    script = (
        "import mldash, sys\n"
        "exp = mldash.Experiment('files/killed', root=sys.argv[1], remote=sys.argv[3])\n"
        "exp.files(file_path=sys.argv[2]).save()\n"
        "exp.flush()\n"
        "import time; time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(root), str(big), server.url])
    state = root / "files" / "killed" / ".sync" / "state.json"
    deadline = time.monotonic() + 60
    while not (state.exists() and '"uploads":{"' in state.read_text()):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.01)
    time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    result = sync_root(str(root), server.url)
    assert not result.failed and not result.quarantined
    (listed,) = server_files(server.url, "files/killed")
    assert listed["checksum"] == sha(big)


def test_a_damaged_local_copy_is_quarantined_and_the_rest_goes_through(server, root, tmp_path):
    exp = mldash.Experiment("files/damaged", root=root)
    bad = exp.files(prefix="/a").save_blob(b"original bytes" * 1000, "bad.bin")
    good = exp.files(prefix="/b").save_blob(b"fine" * 1000, "good.bin")
    exp.finish()
    with open(_filestore.blob_path(exp.path, bad["checksum"]), "r+b") as f:
        f.write(b"X")  # bit rot
    result = sync_root(str(root), server.url)
    (entry,) = result.quarantined["files/damaged"]
    assert entry["kind"] == "files" and entry["index"] == 0 and "damaged" in entry["reason"]
    assert [f["id"] for f in server_files(server.url, exp.prefix)] == [good["id"]]
    os.unlink(_filestore.blob_path(exp.path, good["checksum"]))  # gone after the upload: no matter
    assert sync_root(str(root), server.url, accept_quarantined=True).quarantined == {}


def test_a_missing_local_copy_is_quarantined_unless_its_file_was_deleted(server, root, tmp_path):
    exp = mldash.Experiment("files/missing", root=root)
    lost = exp.files().save_blob(b"lost" * 100, "lost.bin")
    deleted = exp.files().save_blob(b"deleted" * 100, "deleted.bin")
    exp.files(file_id=deleted["id"]).delete()  # its bytes go with it, before any upload
    exp.finish()
    os.unlink(_filestore.blob_path(exp.path, lost["checksum"]))
    result = sync_root(str(root), server.url)
    (entry,) = result.quarantined["files/missing"]
    assert entry["index"] == 0 and "missing from the run folder" in entry["reason"]
    assert server_files(server.url, exp.prefix) == []
    api = Api(server.url, None)
    try:
        exp_id = api.get("/experiments/lookup", params={"namespace": "default", "prefix": exp.prefix})["id"]
        assert api.get(f"/experiments/{exp_id}/progress")["files"] == 3  # stand-in, save, tombstone: indices kept
    finally:
        api.close()


def test_finish_waits_for_a_background_save_before_the_last_upload(server, root, tmp_path):
    big = content(tmp_path, "late.bin", 40 << 20)
    exp = mldash.Experiment("files/late", root=root, remote=server.url)
    exp.sync_timeout = 120
    future = exp.files(file_path=str(big)).save(wait=False)
    exp.finish()
    assert future.done()
    assert [f["checksum"] for f in server_files(server.url, exp.prefix)] == [sha(big)]


def test_pending_counts_the_bytes_of_files(root, tmp_path):
    from mldash.remote._files import pending

    exp = mldash.Experiment("files/pending", root=root)
    exp.files(file_path=str(content(tmp_path, "p.bin", 2 << 20))).save()
    exp.finish()
    todo = pending(exp.path, "http://127.0.0.1:1", "default")
    assert todo.files == 1 and todo.file_bytes == 2 << 20 and todo.bytes > 2 << 20
    assert "1 file record (2.1 MB of files)" in todo.describe()
