"""The rest of ml-dash's files builder, so its users' code runs unchanged: ``update()``
(new description, tags or metadata), ``duplicate()`` (the same bytes under another
name, kept once), ``read_text()``, ``save_image()`` and ``save_video()``.

Each change is a line appended to the run's files index, as a save is, so it
reads back after a restart and replicates as the other records do."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

import mldash
from mldash import _filestore

PIL = pytest.importorskip("PIL.Image")


# ---- update -------------------------------------------------------------------------------
def test_update_changes_only_what_was_passed_and_reads_back_after_a_restart(exp, root):
    record = exp.files(prefix="/models", description="first", tags=["a"], metadata={"k": 1}).save_text("x", to="m.txt")
    updated = exp.files(file_id=record["id"], tags=["best", "final"]).update()
    assert updated["tags"] == ["best", "final"] and updated["description"] == "first" and updated["metadata"] == {"k": 1}
    assert updated["updatedAt"] != record["updatedAt"] and updated["uploadedAt"] == record["uploadedAt"]
    exp.files("models/m.txt", description="second", metadata={"k": 2, "nan": math.nan}).update()  # by path
    again = mldash.Experiment(exp.prefix, root=root).files(prefix="/models").list()
    assert [(f["id"], f["description"], f["tags"]) for f in again] == [(record["id"], "second", ["best", "final"])]
    assert again[0]["metadata"]["k"] == 2 and math.isnan(again[0]["metadata"]["nan"])
    assert exp.files(prefix="/models", tags=["best"]).list()[0]["id"] == record["id"]  # listing by the new tag


UPDATE_ERRORS = [
    (lambda exp, rid: exp.files(file_id=rid).update(), ValueError, "nothing to update"),
    (lambda exp, rid: exp.files(file_id="nope", tags=["x"]).update(), FileNotFoundError, "no file with id 'nope'"),
    (lambda exp, rid: exp.files(file_id=rid, tags=["a\x00"]).update(), ValueError, "NUL"),
    (lambda exp, rid: exp.files(file_id=rid, metadata=[1]).update(), TypeError, "metadata"),
    (lambda exp, rid: exp.files(file_id=rid, description=5).update(), TypeError, "description"),
]


@pytest.mark.parametrize("call, error, words", UPDATE_ERRORS, ids=[w for _, _, w in UPDATE_ERRORS])
def test_a_bad_update_is_a_clear_error_at_the_call_and_changes_nothing(exp, call, error, words):
    record = exp.files(tags=["kept"]).save_text("x", to="a.txt")
    before = Path(_filestore.index_path(exp.path)).read_bytes()
    with pytest.raises(error, match=words):
        call(exp, record["id"])
    assert Path(_filestore.index_path(exp.path)).read_bytes() == before


def test_an_update_leaves_a_finished_runs_status_alone(root):
    exp = mldash.Experiment("files/failed", root=root, system_metrics=False, capture_console=False)
    record = exp.files().save_text("x", to="a.txt")
    exp.finish(status="FAILED")
    again = mldash.Experiment("files/failed", root=root, system_metrics=False, capture_console=False)
    assert again.files(file_id=record["id"], tags=["looked-at"]).update()["tags"] == ["looked-at"]
    assert again.status == "FAILED" and not again.running  # only the file's record changed, as in ml-dash


def test_a_deleted_file_cannot_be_updated(exp):
    record = exp.files().save_text("x", to="a.txt")
    exp.files(file_id=record["id"]).delete()
    with pytest.raises(FileNotFoundError):
        exp.files(file_id=record["id"], tags=["x"]).update()


# ---- duplicate ----------------------------------------------------------------------------
def test_duplicate_stores_the_same_bytes_once_under_a_new_name(exp, tmp_path):
    snapshot = exp.files("models", tags=["epoch"]).save_blob(b"weights" * 1000, to="model_00005.pt")
    latest = exp.files(description="the newest").duplicate(snapshot, to="models/latest.pt")
    assert latest["path"] == "/models" and latest["filename"] == "latest.pt" and latest["id"] != snapshot["id"]
    assert latest["checksum"] == snapshot["checksum"] and latest["description"] == "the newest"
    assert latest["tags"] == [] and latest["sizeBytes"] == 7000
    assert exp.files().duplicate(snapshot, to="weights.json")["contentType"] == "application/json"  # from its name
    blobs = [p for p in Path(exp.path, "files", "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1  # one copy of the bytes for both records
    again = exp.files(file_id=snapshot["id"]).duplicate(snapshot["id"], to="/models/latest.pt")  # replaces it
    names = [(f["filename"], f["id"]) for f in exp.files(prefix="/models").list()]
    assert names == [("model_00005.pt", snapshot["id"]), ("latest.pt", again["id"])]
    exp.files(file_id=snapshot["id"]).delete()
    out = exp.files(file_id=again["id"]).download(dest_path=str(tmp_path / "back.pt"))
    assert Path(out).read_bytes() == b"weights" * 1000  # its bytes stay while a record holds them


@pytest.mark.parametrize("source, to, error, words", [
    (None, "a.pt", ValueError, "file id or a file's record"),
    ({"no": "id"}, "a.pt", ValueError, "file id or a file's record"),
    ("missing", "a.pt", FileNotFoundError, "no file with id 'missing'"),
    ("ok", "models/", ValueError, "must end with a file name"),
    ("ok", "../../etc/passwd", ValueError, ".."),
    ("ok", 5, TypeError, "to must be a str"),
])
def test_a_bad_duplicate_is_a_clear_error(exp, source, to, error, words):
    record = exp.files().save_text("x", to="a.txt")
    with pytest.raises(error, match=words):
        exp.files().duplicate(record["id"] if source == "ok" else source, to=to)


# ---- read_text ----------------------------------------------------------------------------
def test_read_text_reads_a_file_by_path_or_id_in_any_encoding(exp):
    record = exp.files("configs").save_text("lr: 0.1\nname: ünï\n", to="view.yaml")
    assert exp.files("configs/view.yaml").read_text() == "lr: 0.1\nname: ünï\n"
    assert exp.files(file_id=record["id"]).read_text(encoding="latin-1") == "lr: 0.1\nname: ünï\n".encode().decode("latin-1")
    with pytest.raises(FileNotFoundError):
        exp.files("configs/other.yaml").read_text()


def test_read_text_reads_as_a_file_opened_in_text_mode_does(exp):
    record = exp.files().save_blob(b"a\r\nb\rc\n", to="dos.txt")
    assert exp.files(file_id=record["id"]).read_text() == "a\nb\nc\n"  # universal newlines, as ml-dash's open()
    assert exp.files(file_id=record["id"]).read_text(encoding=None) == "a\nb\nc\n"  # the locale's encoding
    with pytest.raises(UnicodeDecodeError):
        exp.files().save_blob(b"\xff\xfe\x00", to="bin.dat") and exp.files("bin.dat").read_text()


def test_read_text_refuses_a_damaged_copy(exp):
    record = exp.files().save_text("hello", to="a.txt")
    Path(_filestore.blob_path(exp.path, record["checksum"])).write_bytes(b"jello")
    with pytest.raises(mldash.StorageError, match="damaged"):
        exp.files(file_id=record["id"]).read_text()


# ---- save_image ---------------------------------------------------------------------------
def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(PIL.open(io.BytesIO(data)))


def test_save_image_keeps_uint8_pixels_and_scales_floats_as_ml_dash_does(exp, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    record = exp.files("frames").save_image(rgb, to="frame_001.png")
    assert record["contentType"] == "image/png" and record["path"] == "/frames"
    assert np.array_equal(_pixels(Path(exp.files(file_id=record["id"]).download(dest_path=str(tmp_path / "a.png"))).read_bytes()), rgb)
    floats = exp.files().save_image(np.linspace(0, 1, 12).reshape(3, 4), to="gray.png")
    got = _pixels(Path(exp.files(file_id=floats["id"]).download(dest_path=str(tmp_path / "g.png"))).read_bytes())
    assert got.dtype == np.uint8 and got[0, 0] == 0 and got[-1, -1] == 255
    wide = exp.files().save_image(np.array([[10.0, 20.0], [30.0, 50.0]]), to="wide.png")  # stretched to 0..255
    got = _pixels(Path(exp.files(file_id=wide["id"]).download(dest_path=str(tmp_path / "w.png"))).read_bytes())
    assert got.tolist() == [[0, 63], [127, 255]]


def test_save_image_as_jpeg_takes_quality_and_drops_alpha_onto_white(exp, tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent: white once flattened
    small = exp.files().save_image(rgba, to="a.jpg", quality=10)
    big = exp.files().save_image(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), to="b.jpeg")
    assert small["contentType"] == "image/jpeg" and big["sizeBytes"] > small["sizeBytes"]
    got = _pixels(Path(exp.files(file_id=small["id"]).download(dest_path=str(tmp_path / "a.jpg"))).read_bytes())
    assert got.shape == (16, 16, 3) and got.min() > 240
    gray_alpha = exp.files().save_image(np.zeros((4, 4, 2), np.uint8), to="la.jpg")  # LA, flattened onto white
    got = _pixels(Path(exp.files(file_id=gray_alpha["id"]).download(dest_path=str(tmp_path / "la.jpg"))).read_bytes())
    assert got.min() > 240
    pil = exp.files().save_image(PIL.new("RGB", (3, 2), (1, 2, 3)), to="pil.webp")
    assert pil["filename"] == "pil.webp" and pil["sizeBytes"] > 0


@pytest.mark.parametrize("image, to, error, words", [
    (np.zeros((4, 4, 3), np.uint8), "frame.txt", ValueError, "no image extension"),
    (np.zeros((4, 4, 3), np.uint8), "frame", ValueError, "no image extension"),
    (np.zeros((4, 4, 5)), "f.png", ValueError, "HxW or HxWxC"),
    (np.zeros((0, 4)), "f.png", ValueError, "HxW or HxWxC"),
    (np.array([[math.nan, 1.0]]), "f.png", ValueError, "NaN"),
    (np.array([["a", "b"]]), "f.png", TypeError, "numbers"),
    (np.zeros((4, 4), np.uint8), None, ValueError, "file name is required"),
])
def test_a_bad_image_is_a_clear_error_and_saves_nothing(exp, image, to, error, words):
    with pytest.raises(error, match=words):
        exp.files().save_image(image, to=to)
    assert exp.files().list() == []


def test_a_bad_jpeg_quality_is_a_clear_error(exp):
    with pytest.raises(ValueError, match="quality"):
        exp.files().save_image(np.zeros((4, 4, 3), np.uint8), to="a.jpg", quality=0)


# ---- save_video ---------------------------------------------------------------------------
def _frames(n=6, shape=(10, 12, 3)):
    return [np.full(shape, 40 * k, np.uint8) for k in range(n)]


def test_save_video_as_gif_holds_every_frame_at_the_frame_rate(exp, tmp_path):
    record = exp.files("videos", tags=["rollout"]).save_video(_frames(), to="episode.gif", fps=10)
    assert record["path"] == "/videos" and record["contentType"] == "image/gif" and record["tags"] == ["rollout"]
    gif = PIL.open(exp.files(file_id=record["id"]).download(dest_path=str(tmp_path / "e.gif")))
    assert gif.n_frames == 6 and gif.info["duration"] == 100
    gif.seek(5)
    assert np.asarray(gif.convert("RGB"))[0, 0].tolist() == [200, 200, 200]
    floats = exp.files().save_video(np.linspace(0, 1, 4 * 5 * 5).reshape(4, 5, 5), to="gray.gif")  # one array, 0..1
    assert PIL.open(exp.files(file_id=floats["id"]).download(dest_path=str(tmp_path / "g.gif"))).n_frames == 4
    single = exp.files().save_video([np.full((5, 5, 1), v, np.uint8) for v in (0, 99)], to="c1.gif", fps=np.float64(4))
    gif = PIL.open(exp.files(file_id=single["id"]).download(dest_path=str(tmp_path / "c1.gif")))
    assert gif.n_frames == 2 and gif.info["duration"] == 250


def test_save_video_as_mp4_through_imageio(exp, tmp_path):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    frames = [np.full((32, 48, 3), 30 * k, np.uint8) for k in range(8)]
    record = exp.files().save_video(frames, to="run.mp4", fps=8)
    assert record["contentType"] == "video/mp4" and record["sizeBytes"] > 0
    back = iio.imread(exp.files(file_id=record["id"]).download(dest_path=str(tmp_path / "r.mp4")), extension=".mp4")
    assert back.shape[0] == 8 and back.shape[1:3] == (32, 48)
    assert abs(int(back[7, 0, 0, 0]) - 7 * 30) < 8  # lossy, but the right frame in its place


def test_a_video_ffmpeg_cannot_write_saves_nothing(exp):
    pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    with pytest.raises(ValueError, match="imageio wrote nothing"):
        exp.files().save_video(_frames(), to="bad.mp4", codec="no-such-codec")
    with pytest.raises(ValueError, match="cannot write '.txt' videos"):
        exp.files().save_video(_frames(), to="v.txt")
    assert exp.files().list() == []


@pytest.mark.parametrize("frames, kwargs, error, words", [
    ([], {}, ValueError, "at least one frame"),
    (5, {}, TypeError, "list of arrays"),
    ([np.zeros((4, 4)), np.zeros((5, 4))], {}, ValueError, "all of one shape"),
    ([np.full((4, 4), 2.0)], {}, ValueError, "from 0 to 1"),
    ([np.full((4, 4), 300)], {}, ValueError, "from 0 to 255"),
    (_frames(), {"fps": 0}, ValueError, "fps"),
    (_frames(), {"fps": math.nan}, ValueError, "fps"),
    (_frames(), {"fps": 0.001}, ValueError, "fps must be a number from 0.001526 to 100 for .gif"),
    (_frames(), {"fps": 1000}, ValueError, "fps must be"),
    (_frames(), {"fps": "10"}, ValueError, "fps must be"),
    ([np.zeros((4, 4, 2), np.uint8)], {}, ValueError, "C 1, 3 or 4"),
])
def test_bad_frames_are_a_clear_error_and_save_nothing(exp, frames, kwargs, error, words):
    with pytest.raises(error, match=words):
        exp.files().save_video(frames, to="v.gif", **kwargs)
    assert exp.files().list() == []


def test_a_video_without_an_extension_is_a_clear_error(exp):
    with pytest.raises(ValueError, match="no extension"):
        exp.files().save_video(_frames(), to="episode")


# ---- the index ----------------------------------------------------------------------------
def test_an_update_is_one_appended_line_that_the_shared_check_takes(exp):
    record = exp.files().save_text("x", to="a.txt")
    exp.files(file_id=record["id"], description="d").update()
    last = json.loads(Path(_filestore.index_path(exp.path)).read_bytes().splitlines()[-1])
    assert last["op"] == "update" and last["id"] == record["id"] and last["description"] == "d"
    assert "tags" not in last and "metadata" not in last  # only what was passed
    assert _filestore.check_record(last, 2) == last
    with pytest.raises(ValueError, match="at least one of description, tags, metadata"):
        _filestore.check_record({"op": "update", "id": record["id"], "timestamp": 1.0}, 3)
