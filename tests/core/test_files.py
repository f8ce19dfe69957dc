"""exp.files(...): the ml-dash builder over the run's content-addressed store (docs/files.md).

Records have ml-dash's keys; the same bytes are stored once; a record is appended
only after its blob is complete; a delete is a tombstone; saves start (or resume)
the run as other writes do; ``save(wait=False)`` hands the hash to a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mldash
from mldash import _filestore

ML_DASH_KEYS = ["id", "experimentId", "path", "filename", "description", "tags", "bindrs", "contentType",
                "sizeBytes", "checksum", "metadata", "uploadedAt", "updatedAt", "deletedAt"]


def blob(tmp_path: Path, name: str, size: int, seed: int = 0) -> Path:
    path = tmp_path / name
    chunk = hashlib.sha256(f"{name}-{seed}".encode()).digest() * 2048  # 64 KiB of a pattern
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size % len(chunk)])
    return path


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def index_lines(exp) -> list[dict]:
    return [json.loads(line) for line in Path(_filestore.index_path(exp.path)).read_bytes().splitlines()]


def blobs_on_disk(exp) -> list[str]:
    base = Path(exp.path) / "files" / "blobs" / "sha256"
    return sorted(p.parent.name + p.name for p in base.rglob("*") if p.is_file()) if base.exists() else []


def test_save_returns_ml_dash_s_record_and_list_download_delete_work(exp, tmp_path):
    source = blob(tmp_path, "model.pt", 300_000)
    record = exp.files(file_path=str(source), prefix="/models", description="best so far", tags=["best"],
                       metadata={"epoch": 3, "loss": float("nan")}).save()
    assert list(record) == ML_DASH_KEYS
    assert record["path"] == "/models" and record["filename"] == "model.pt" and record["experimentId"] == "core/run"
    assert record["sizeBytes"] == 300_000 and record["checksum"] == sha(source)
    assert record["contentType"] == "application/octet-stream" and record["tags"] == ["best"]
    assert record["uploadedAt"].endswith("Z") and record["deletedAt"] is None
    assert record["metadata"]["epoch"] == 3 and record["metadata"]["loss"] != record["metadata"]["loss"]
    assert blobs_on_disk(exp) == [record["checksum"]]

    assert [f["id"] for f in exp.files(prefix="/models").list()] == [record["id"]]
    assert exp.files(prefix="models/").list() == exp.files(prefix="/models").list()
    assert exp.files(prefix="/model").list() == []  # a folder, not a string prefix
    assert exp.files(prefix="/").list() == exp.files().list() == exp.files.list()

    out = exp.files(file_id=record["id"]).download(dest_path=str(tmp_path / "out.pt"))
    assert out == str(tmp_path / "out.pt") and sha(out) == record["checksum"]
    folder = tmp_path / "into"
    folder.mkdir()
    assert exp.files(file_id=record["id"], dest_path=str(folder)).download() == str(folder / "model.pt")

    gone = exp.files(file_id=record["id"]).delete()
    assert gone["id"] == record["id"] and gone["deletedAt"].endswith("Z")
    assert exp.files.list() == [] and blobs_on_disk(exp) == []
    assert [line["op"] for line in index_lines(exp)] == ["save", "delete"]  # append-only: a tombstone
    with pytest.raises(FileNotFoundError, match="no file with id"):
        exp.files(file_id=record["id"]).download(dest_path=str(tmp_path / "again.pt"))
    with pytest.raises(ValueError):  # ml-dash raises ValueError: both catch it
        exp.files(file_id=record["id"]).delete()


def test_the_same_bytes_are_stored_once_and_freed_with_their_last_record(exp, tmp_path):
    a = blob(tmp_path, "a.bin", 10_000)
    first = exp.files(file_path=str(a), prefix="/x").save()
    second = exp.files(file_path=str(a), prefix="/y").save(to="copy.bin")
    assert first["checksum"] == second["checksum"] and first["id"] != second["id"]
    assert blobs_on_disk(exp) == [first["checksum"]]
    exp.files(file_id=first["id"]).delete()
    assert blobs_on_disk(exp) == [first["checksum"]]  # still held by the second record
    exp.files(file_id=second["id"]).delete()
    assert blobs_on_disk(exp) == []


def test_saving_the_same_path_and_name_again_replaces_the_file_as_ml_dash_does(exp, tmp_path):
    old = exp.files(prefix="/ckpt").save_blob(b"epoch 1", "latest.pt")
    new = exp.files(prefix="/ckpt").save_blob(b"epoch 2", "latest.pt")
    assert [f["id"] for f in exp.files(prefix="/ckpt").list()] == [new["id"]]
    lines = index_lines(exp)
    assert [line["op"] for line in lines] == ["save", "delete", "save"]
    assert lines[1] == {**lines[1], "id": old["id"], "replacedBy": new["id"]}
    assert blobs_on_disk(exp) == [new["checksum"]]


def test_the_helpers_write_straight_into_the_store(exp, tmp_path):
    config = exp.files(prefix="/cfg").save_json({"lr": 1e-3, "layers": [64, 32]}, "config.json")
    assert config["contentType"] == "application/json" and config["path"] == "/cfg"
    assert json.loads(Path(_filestore.blob_path(exp.path, config["checksum"])).read_bytes()) == {"lr": 1e-3, "layers": [64, 32]}
    nested = exp.files(prefix="/cfg").save_json([1, 2], to="sub/list.json")  # 0.11's keyword, a sub-folder
    assert (nested["path"], nested["filename"]) == ("/cfg/sub", "list.json")
    pkl = exp.files(prefix="/data").save_pkl({"a": (1, 2)}, "data.pkl")
    assert pickle.loads(Path(_filestore.blob_path(exp.path, pkl["checksum"])).read_bytes()) == {"a": (1, 2)}
    text = exp.files.save_text("hello ☃", to="notes/readme.txt")
    assert (text["path"], text["filename"], text["contentType"]) == ("/notes", "readme.txt", "text/plain")
    assert not os.listdir(os.path.join(exp.path, "files", ".tmp"))  # no copy left behind
    with pytest.raises(ValueError, match="file name is required"):
        exp.files().save_json({"a": 1})


def test_save_torch_and_save_fig(exp, tmp_path):
    torch = pytest.importorskip("torch")
    record = exp.files(prefix="/models").save_torch({"w": torch.arange(6.0)}, "weights.pt")
    loaded = torch.load(_filestore.blob_path(exp.path, record["checksum"]))
    assert torch.equal(loaded["w"], torch.arange(6.0))

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1, 4, 9])
    png = exp.files(prefix="/plots").save_fig(fig, "curve.png", dpi=50)
    assert png["contentType"] == "image/png"
    assert Path(_filestore.blob_path(exp.path, png["checksum"])).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)  # closed, as ml-dash does
    plt.plot([0, 1])
    current = exp.files(prefix="/plots").save_fig()  # the current figure, figure.png
    assert current["filename"] == "figure.png"


def test_a_save_starts_the_run_and_one_after_finish_resumes_it_like_a_log(root, tmp_path):
    exp = mldash.Experiment("files/lifecycle", root=root)
    record = exp.files(file_path=str(blob(tmp_path, "a.txt", 10))).save()
    assert exp.status == "RUNNING" and record["path"] == "/"
    exp.finish()
    assert exp.status == "COMPLETED"
    exp.files(file_path=str(blob(tmp_path, "b.txt", 10))).save()
    assert exp.status == "RUNNING"
    assert exp.info()["sessions"] == 2  # after the writer recorded the resume
    exp.finish()


def test_reads_do_not_start_a_run(root):
    exp = mldash.Experiment("files/unread", root=root)
    assert exp.files.list() == [] and not os.path.exists(exp.path)


def test_ml_dash_0_11_forms(exp, tmp_path):
    source = blob(tmp_path, "local_model.pt", 5000)
    record = exp.files("models").upload(str(source), to="remote_model.pt", tags=["t"])
    assert (record["path"], record["filename"]) == ("/models", "remote_model.pt")
    assert exp.files("models/remote_model.pt").exists() and not exp.files("models/nope.pt").exists()
    assert [f["id"] for f in exp.files("models").list("*.pt")] == [record["id"]]
    assert exp.files("models").list("*.png") == []
    assert exp.files(tags=["t"]).list() == [record] and exp.files(tags=["other"]).list() == []
    out = exp.files("models/remote_model.pt").download(to=str(tmp_path / "o.pt"))
    assert sha(out) == record["checksum"]
    paths = exp.files.download("models/*.pt", to=str(tmp_path / "many"))
    assert paths == [str(tmp_path / "many" / "remote_model.pt")]
    assert exp.files.upload(str(source), to="x/y.pt")["path"] == "/x"
    assert exp.files("models/remote_model.pt").delete()["id"] == record["id"]
    assert not exp.files("models/remote_model.pt").exists()


def test_save_wait_false_returns_a_future_once_the_copy_is_taken(exp, tmp_path):
    source = blob(tmp_path, "big.bin", 12 << 20)
    digest = sha(source)
    future = exp.files(file_path=str(source), prefix="/ckpt").save(wait=False)
    source.unlink()  # the copy is taken: the source may go
    record = future.result(timeout=60)
    assert record["checksum"] == digest and record["sizeBytes"] == 12 << 20
    assert exp.files(prefix="/ckpt").list() == [record]
    small = exp.files(prefix="/ckpt").save_json({"a": 1}, "meta.json", wait=False).result(timeout=60)
    assert small["filename"] == "meta.json"


def test_an_exiting_interpreter_waits_for_saves_still_hashing(root, tmp_path):
    source = blob(tmp_path, "big.bin", 24 << 20)
    script = (
        "import mldash, sys\n"
        "exp = mldash.Experiment('files/exit', root=sys.argv[1])\n"
        "exp.files(file_path=sys.argv[2], prefix='/ckpt').save(wait=False)\n"
        # no finish, no wait: the process simply ends
    )
    subprocess.run([sys.executable, "-c", script, str(root), str(source)], check=True, timeout=120)
    exp = mldash.Experiment("files/exit", root=root)
    (record,) = exp.files.list()
    assert record["checksum"] == sha(source) and exp.status == "COMPLETED"


def test_a_large_file_streams_through_little_memory(root, tmp_path):
    source = blob(tmp_path, "large.bin", 256 << 20)
    script = (
        "import mldash, resource, sys\n"
        "exp = mldash.Experiment('files/mem', root=sys.argv[1])\n"
        "exp.start()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "r = exp.files(file_path=sys.argv[2]).save()\n"
        "exp.files(file_id=r['id']).download(dest_path=sys.argv[2] + '.out')\n"
        "exp.files(file_path=sys.argv[2], prefix='/b').save(wait=False).result()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
        "exp.finish()\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(root), str(source)], check=True, timeout=300,
                         capture_output=True, text=True)
    assert int(out.stdout.split()[-1]) < 32, f"peak RSS grew by {out.stdout.split()[-1]} MiB for a 256 MiB file"


def test_a_save_killed_midway_leaves_no_record_and_its_copy_is_swept(root, tmp_path):
    source = blob(tmp_path, "big.bin", 64 << 20)
    script = (
        "import mldash, os, sys, time\n"
        "import mldash._filecopy as filecopy\n"
        "filecopy._PIECE = 1 << 20\n"
        "real = os.sendfile\n"
        "def slow(*a):\n"
        "    time.sleep(0.05)\n"
        "    return real(*a)\n"
        "os.sendfile = slow\n"
        "exp = mldash.Experiment('files/killed', root=sys.argv[1])\n"
        "exp.files(file_path=sys.argv[2]).save()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(root), str(source)])
    tmp = root / "files" / "killed" / "files" / ".tmp"
    deadline = time.monotonic() + 60
    while not (tmp.exists() and any(p.stat().st_size > (4 << 20) for p in tmp.iterdir())):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    exp = mldash.Experiment("files/killed", root=root)
    assert exp.files.list() == [] and not (root / "files" / "killed" / "files" / "blobs").exists()
    exp.files(prefix="/next").save_text("after the crash", "note.txt")
    assert os.listdir(tmp) == []  # the dead process's copy is gone
    exp.finish()


def test_a_record_cut_by_a_crash_is_dropped_on_the_next_save(exp, tmp_path):
    first = exp.files().save_text("one", "one.txt")
    with open(_filestore.index_path(exp.path), "ab") as f:
        f.write(b'{"op":"save","id":"123","pa')  # a writer died mid-line
    assert [f["id"] for f in exp.files.list()] == [first["id"]]
    second = exp.files().save_text("two", "two.txt")
    assert [f["id"] for f in exp.files.list()] == [first["id"], second["id"]]
    assert len(index_lines(exp)) == 2


def test_saves_from_several_processes_all_land(root, tmp_path):
    script = (
        "import mldash, sys\n"
        "exp = mldash.Experiment('files/shared', root=sys.argv[1])\n"
        "exp.start()\n"
        "for i in range(20):\n"
        "    exp.files(prefix='/p' + sys.argv[2]).save_text(f'{sys.argv[2]} {i}', f'f{i}.txt')\n"
        "exp.finish()\n"
    )
    mldash.Experiment("files/shared", root=root).start().finish()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), str(k)]) for k in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    listed = mldash.Experiment("files/shared", root=root).files.list()
    assert len(listed) == 60 and len({f["id"] for f in listed}) == 60


def test_the_dashboard_s_functions_list_and_locate_a_run_s_files(exp, tmp_path):
    record = exp.files(prefix="/img").save_blob(b"\x89PNG...", "a.png")
    assert _filestore.list_files(exp.path) == [record]
    assert _filestore.list_files(exp.path, prefix="/img", pattern="*.png") == [record]
    assert _filestore.find_file(exp.path, record["id"]) == record
    assert Path(_filestore.blob_path(exp.path, record["checksum"])).read_bytes() == b"\x89PNG..."
