"""Checkpoint files kept with the run: ``exp.checkpoint(path, upload=True)``.

The file (or a checkpoint folder's files) is copied into the run's files under
/checkpoints in the background; the checkpoint's record, naming the stored files,
follows once the copies are complete, and finish() waits for it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

import mldash


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_uploaded_checkpoint_is_stored_and_its_record_names_the_file(root, tmp_path):
    ckpt = tmp_path / "epoch=3.ckpt"
    ckpt.write_bytes(b"weights" * 10_000)
    with mldash.Experiment("ck/file", root=root, system_metrics=False) as exp:
        exp.checkpoint(ckpt, step=300, score=0.41, is_best=True, upload=True)
        ckpt.write_bytes(b"overwritten by the next save")  # the copy was taken at the call
    (record,) = exp.checkpoints()
    assert record["step"] == 300 and record["score"] == 0.41 and "upload_error" not in record
    (stored,) = record["files"]
    assert stored["filename"] == "epoch=3.ckpt" and stored["path"] == "/checkpoints"
    assert stored["checksum"] == hashlib.sha256(b"weights" * 10_000).hexdigest()
    assert exp.best_checkpoint["files"] == record["files"]
    out = exp.files(file_id=stored["id"], dest_path=str(tmp_path / "back.ckpt")).download()
    assert open(out, "rb").read() == b"weights" * 10_000


def test_a_checkpoint_folder_is_stored_file_by_file(root, tmp_path):
    folder = tmp_path / "checkpoint-500"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"m" * 1000)
    (folder / "sub" / "optimizer.pt").write_bytes(b"o" * 10)
    with mldash.Experiment("ck/folder", root=root, system_metrics=False) as exp:
        exp.checkpoint(folder, step=500, upload=True)
    (record,) = exp.checkpoints()
    assert sorted((f["path"], f["filename"]) for f in record["files"]) == [
        ("/checkpoints/checkpoint-500", "model.safetensors"), ("/checkpoints/checkpoint-500/sub", "optimizer.pt")]
    listed = {f["filename"]: f["checksum"] for f in exp.files(prefix="/checkpoints/checkpoint-500/sub").list()}
    assert listed == {"optimizer.pt": sha256(folder / "sub" / "optimizer.pt")}


def test_without_upload_only_the_record_is_kept(root, tmp_path):
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"x")
    with mldash.Experiment("ck/plain", root=root, system_metrics=False) as exp:
        exp.checkpoint(ckpt, step=1)
    assert "files" not in exp.checkpoints()[0] and exp.files.list() == []


@pytest.mark.parametrize("make, error", [
    (lambda tmp: tmp / "missing.ckpt", FileNotFoundError),
    (lambda tmp: "/dev/null", ValueError),  # not a regular file
])
def test_an_upload_that_cannot_start_fails_at_the_call_and_records_nothing(root, tmp_path, make, error):
    with mldash.Experiment("ck/bad", root=root, system_metrics=False) as exp:
        with pytest.raises(error):
            exp.checkpoint(make(tmp_path), step=1, upload=True)
    assert exp.checkpoints() == [] and exp.files.list() == []


def test_keep_final_stores_best_and_last_once_each_alias(root, tmp_path):
    from mldash._checkpoints import keep_final

    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(b"best")
    last.write_bytes(b"best")  # the same bytes: stored once, listed under both aliases
    with mldash.Experiment("ck/final", root=root, system_metrics=False) as exp:
        keep_final(exp.files, str(best), str(last), {"step": 7})
    files = {f["path"]: f for f in exp.files.list()}
    assert set(files) == {"/checkpoints/best", "/checkpoints/last"}
    assert files["/checkpoints/best"]["metadata"] == {"alias": "best", "source": str(best), "step": 7}
    assert files["/checkpoints/best"]["checksum"] == files["/checkpoints/last"]["checksum"]


def test_finish_waits_for_a_background_save(root, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    exp = mldash.Experiment("ck/wait", root=root, system_metrics=False)
    future = exp.files(prefix="/w").save(str(big), wait=False)
    exp.finish()
    assert future.done() and [f["filename"] for f in exp.files.list()] == ["big.bin"]


def test_a_checkpoint_killed_midway_has_no_record_and_what_it_stored_is_whole(root, tmp_path):
    """kill -9 while a checkpoint folder is copied in the background: no checkpoint record
    (it is written after the last copy), each file already stored is complete and
    listed, the dead copy is swept by the next save, and the run reads and resumes."""
    folder = tmp_path / "checkpoint-9"
    folder.mkdir()
    sources = {}
    for k in range(6):
        content = hashlib.sha256(str(k).encode()).digest() * (1 << 17)  # 4 MiB each
        (folder / f"shard-{k}.bin").write_bytes(content)
        sources[f"shard-{k}.bin"] = hashlib.sha256(content).hexdigest()
    script = (
        "import mldash, os, sys, time\n"
        "real = os.fsync\n"
        "def slow(fd):  # a slow disk: each stored file takes 0.4 s to reach it\n"
        "    time.sleep(0.4)\n"
        "    return real(fd)\n"
        "os.fsync = slow\n"
        "exp = mldash.Experiment('ck/killed', root=sys.argv[1], system_metrics=False)\n"
        "exp.start()\n"
        "exp.checkpoint(sys.argv[2], step=9, upload=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(root), str(folder)])
    index = root / "ck" / "killed" / "files" / "files.jsonl"
    deadline = time.monotonic() + 120
    while not (index.exists() and index.read_bytes().count(b"\n") >= 2):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    exp = mldash.Experiment("ck/killed", root=root, system_metrics=False)
    assert exp.checkpoints() == []
    stored = exp.files(prefix="/checkpoints").list()
    assert 2 <= len(stored) < 6
    for record in stored:
        assert record["checksum"] == sources[record["filename"]]
        out = exp.files(file_id=record["id"], dest_path=str(tmp_path / record["filename"])).download()
        assert hashlib.sha256(open(out, "rb").read()).hexdigest() == sources[record["filename"]]
    with exp:  # resumes: the same checkpoint again, whole this time
        exp.checkpoint(folder, step=9, upload=True)
    (record,) = exp.checkpoints()
    assert sorted(f["filename"] for f in record["files"]) == sorted(sources)
    assert os.listdir(root / "ck" / "killed" / "files" / ".tmp") == []
