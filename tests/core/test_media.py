"""mldash.Image and mldash.Histogram as metric field values (docs/media.md).

What is stored (a PNG in the run's content-addressed files, bins and counts), what
read() gives back, the snapshot taken at the call, bad input refused at the call,
the tags in the codec and the checks, and points that cannot be made set aside.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mldash
from mldash import _codec, _filestore, _media
from mldash._checks import check_document, check_json

torch = pytest.importorskip("torch")
PIL_Image = pytest.importorskip("PIL.Image")


def rgb(h=32, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pixels(exp, value) -> np.ndarray:
    return np.asarray(mldash.Image.read(exp, value))


def one(exp, series, field):
    exp.flush()
    return exp.metrics(series).read()["data"][-1]["data"][field]


# ---- images: what is stored and read back -------------------------------------------------
def test_an_image_is_a_png_in_the_runs_files_and_reads_back_as_a_small_dict(exp):
    x = rgb()
    exp.metrics("samples").append(image=mldash.Image(x, caption="epoch 1"), step=1)
    value = one(exp, "samples", "image")
    assert value["type"] == "image" and value["format"] == "png"
    assert (value["width"], value["height"], value["caption"]) == (24, 32, "epoch 1")
    assert np.array_equal(pixels(exp, value), x)
    png = mldash.Image.read_bytes(exp, value)
    assert png.startswith(b"\x89PNG") and hashlib.sha256(png).hexdigest() == value["sha256"]
    assert len(png) == value["size"]
    (record,) = exp.files(prefix="/media/samples").list()
    assert record["id"] == value["file"] and record["checksum"] == value["sha256"]
    assert record["contentType"] == "image/png" and record["filename"] == value["filename"]
    assert record["metadata"] == {"media": "image", "series": "samples", "field": "image", "width": 24, "height": 32}
    # the same bytes through the files API
    out = exp.files(file_id=value["file"]).download(dest_path=str(exp.path) + "-copy.png")
    assert open(out, "rb").read() == png


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: rgb(), lambda: rgb()),
        (lambda: rgb()[:, :, 0], lambda: rgb()[:, :, 0]),  # HW: gray
        (lambda: rgb()[:, :, :1], lambda: rgb()[:, :, 0]),  # HWC with one channel
        (lambda: np.dstack([rgb(), rgb(seed=1)[:, :, :1]]), lambda: np.dstack([rgb(), rgb(seed=1)[:, :, :1]])),  # RGBA
        (lambda: np.ascontiguousarray(rgb().transpose(2, 0, 1)), lambda: rgb()),  # CHW, channels clearly first
        (lambda: rgb().transpose(1, 0, 2), lambda: rgb().transpose(1, 0, 2)),  # a strided view
        (lambda: np.array([[0.0, 0.5], [1.0, 2.0]]), lambda: np.array([[0, 128], [255, 255]], np.uint8)),  # clipped
        (lambda: np.array([[np.nan, -1.0]], np.float32), lambda: np.array([[0, 0]], np.uint8)),
        (lambda: np.array([[True, False]]), lambda: np.array([[255, 0]], np.uint8)),
        (lambda: np.float16(0.25) * np.ones((2, 2, 3), np.float16), lambda: np.full((2, 2, 3), 64, np.uint8)),
        (lambda: torch.from_numpy(rgb()).permute(2, 0, 1), lambda: rgb()),  # a CHW tensor (a view)
        (lambda: torch.ones(1, 4, 5) * 0.5, lambda: np.full((4, 5), 128, np.uint8)),
        (lambda: torch.ones(3, 4, 5, dtype=torch.bfloat16), lambda: np.full((4, 5, 3), 255, np.uint8)),
        (lambda: torch.zeros(6, 5, 3, dtype=torch.uint8), lambda: np.zeros((6, 5, 3), np.uint8)),  # HWC, clear
        (lambda: torch.ones(6, 7, requires_grad=True), lambda: np.full((6, 7), 255, np.uint8)),
        (lambda: PIL_Image.fromarray(rgb()), lambda: rgb()),
        (lambda: PIL_Image.fromarray(rgb()[:, :, 0], "L"), lambda: rgb()[:, :, 0]),
        (lambda: PIL_Image.fromarray(rgb()).convert("P"), lambda: np.asarray(PIL_Image.fromarray(rgb()).convert("P"))),
        (lambda: PIL_Image.fromarray(rgb()).convert("CMYK"), lambda: np.asarray(PIL_Image.fromarray(rgb()).convert("CMYK").convert("RGB"))),
        (lambda: [[0, 255], [255, 0]], None),  # nested lists of ints: an int64 array, refused
    ],
    ids=["hwc", "hw", "hwc1", "rgba", "chw-numpy", "strided", "float-clipped", "float-nan", "bool", "float16",
         "tensor-chw", "tensor-1hw", "tensor-bf16", "tensor-hwc", "tensor-grad", "pil-rgb", "pil-l", "pil-p",
         "pil-cmyk", "list-int"],
)
def test_the_inputs_an_image_takes(exp, make, expected):
    if expected is None:
        with pytest.raises(TypeError, match="not supported"):
            mldash.Image(make())
        return
    exp.metrics("samples").append(image=mldash.Image(make()), step=0)
    assert np.array_equal(pixels(exp, one(exp, "samples", "image")), expected())


def test_a_matplotlib_figure_is_drawn_at_the_call_and_keeps_its_own_canvas(exp):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    canvas = fig.canvas
    image = mldash.Image(fig, caption="loss curve")
    assert fig.canvas is canvas
    assert (image.width, image.height, image.channels) == (100, 75, 4)
    ax.plot([0, 1], [0, 1], color="red")  # drawn after the call: not in the stored image
    exp.metrics("plots").append(figure=image, step=0)
    stored = pixels(exp, one(exp, "plots", "figure"))
    assert stored.shape == (75, 100, 4)
    fig.canvas.draw()
    now = np.asarray(fig.canvas.buffer_rgba())
    assert not np.array_equal(stored, now)
    plt.close(fig)


def test_the_image_is_a_snapshot_a_buffer_reused_after_the_call_changes_nothing(exp):
    buffer = rgb()
    tensor = torch.from_numpy(rgb(seed=3)).permute(2, 0, 1)
    pil = PIL_Image.fromarray(rgb(seed=4))
    m = exp.metrics("samples")
    m.append(a=mldash.Image(buffer), b=mldash.Image(tensor), c=mldash.Image(pil), step=0)
    buffer[:] = 0
    tensor.zero_()
    pil.paste(0, (0, 0, 24, 32))
    exp.flush()
    data = m.read()["data"][0]["data"]
    assert np.array_equal(pixels(exp, data["a"]), rgb())
    assert np.array_equal(pixels(exp, data["b"]), rgb(seed=3))
    assert np.array_equal(pixels(exp, data["c"]), rgb(seed=4))


def test_the_same_bytes_are_stored_once(exp):
    m = exp.metrics("samples")
    for step in range(5):
        m.append(image=mldash.Image(rgb(), caption=f"step {step}"), step=step)
    m.append(other=mldash.Image(rgb()), step=5)  # another field: its own record, the same blob
    m.append(image=mldash.Image(rgb(seed=9)), step=6)
    exp.flush()
    values = [p["data"].get("image") or p["data"]["other"] for p in m.read()["data"]]
    assert len({v["sha256"] for v in values}) == 2
    assert [v["caption"] for v in values[:5]] == [f"step {s}" for s in range(5)]
    assert len({v["file"] for v in values[:5]}) == 1
    files = exp.files(prefix="/media").list()
    assert len(files) == 3 and len({f["checksum"] for f in files}) == 2
    blobs = [name for _, _, names in os.walk(os.path.join(exp.path, "files", "blobs")) for name in names]
    assert len(blobs) == 2


def test_images_stored_once_also_across_a_resumed_run(root):
    for _ in range(2):
        with mldash.Experiment("core/resumed", root=root) as exp:
            exp.metrics("samples").append(image=mldash.Image(rgb()), step=0)
    assert len(exp.files().list()) == 1
    values = [p["data"]["image"] for p in exp.metrics("samples").read()["data"]]
    assert len(values) == 2 and values[0]["file"] == values[1]["file"]


def test_images_and_numbers_in_one_point_and_in_batches(exp):
    m = exp.metrics("samples")
    m.append_batch([{"image": mldash.Image(rgb(seed=s)), "step": s, "loss": 0.5 / (s + 1)} for s in range(3)])
    m.append(step=3, loss=0.1)
    exp.flush()
    data = [p["data"] for p in m.read()["data"]]
    assert [d["step"] for d in data] == [0, 1, 2, 3]
    assert data[1]["loss"] == 0.25 and "image" not in data[3]
    assert np.array_equal(pixels(exp, data[2]["image"]), rgb(seed=2))


# ---- histograms ---------------------------------------------------------------------------
def test_a_histogram_is_stored_as_bins_and_counts_never_the_values(exp):
    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    exp.metrics("weights").append(w=mldash.Histogram(values, bins=16), step=0)
    h = one(exp, "weights", "w")
    assert h["type"] == "histogram" and len(h["bins"]) == 17 and len(h["counts"]) == 16
    counts, edges = np.histogram(values, bins=16, range=(float(values.min()), float(values.max())))
    assert h["counts"] == counts.tolist() and sum(h["counts"]) == h["count"] == 10_000
    assert np.allclose(h["bins"], edges)
    assert h["min"] == float(values.min()) and h["max"] == float(values.max())
    assert h["mean"] == pytest.approx(float(values.astype(np.float64).mean()))
    line = open(os.path.join(exp.path, "metrics", "weights", "data.jsonl"), "rb").read()
    assert len(line) < 2000  # bins and counts, not 10,000 values


@pytest.mark.parametrize(
    "values, count, low, high",
    [
        (torch.arange(10, dtype=torch.float32).reshape(2, 5), 10, 0.0, 9.0),
        (torch.ones(4, dtype=torch.bfloat16), 4, 1.0, 1.0),
        ([1, 2, 2, 3], 4, 1.0, 3.0),
        (np.arange(100, dtype=np.int64), 100, 0.0, 99.0),
        (np.full(7, 2.5), 7, 2.5, 2.5),  # one value: a bin around it
        (torch.randn(3, requires_grad=True), 3, None, None),
    ],
    ids=["tensor", "bf16", "list", "ints", "constant", "grad"],
)
def test_the_values_a_histogram_takes(exp, values, count, low, high):
    exp.metrics("weights").append(h=mldash.Histogram(values, bins=4), step=0)
    h = one(exp, "weights", "h")
    assert h["count"] == count and sum(h["counts"]) == count
    if low is not None:
        assert (h["min"], h["max"]) == (low, high)
    if low == high and low is not None:
        assert h["bins"][0] == low - 0.5 and h["bins"][-1] == high + 0.5


def test_the_histogram_is_a_snapshot_too(exp):
    values = np.arange(10.0)
    hist = mldash.Histogram(values, bins=2)
    values[:] = 100.0
    exp.metrics("weights").append(h=hist, step=0)
    assert one(exp, "weights", "h")["max"] == 9.0


# ---- bad input, at the call ---------------------------------------------------------------
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: mldash.Image(np.zeros((2, 3, 4, 3), np.uint8)), ValueError, "HW, HWC or CHW"),
        (lambda: mldash.Image(np.zeros((5, 6, 7), np.uint8)), ValueError, "1, 3 or 4 channels"),
        (lambda: mldash.Image(np.zeros((0, 6, 3), np.uint8)), ValueError, "empty"),
        (lambda: mldash.Image(np.zeros(5, np.uint8)), ValueError, "HW, HWC or CHW"),
        (lambda: mldash.Image(np.zeros((4, 4), np.int32)), TypeError, "int32 is not supported"),
        (lambda: mldash.Image(np.zeros((4, 4), np.uint16)), TypeError, "uint16 is not supported"),
        (lambda: mldash.Image(np.zeros((4, 4), np.complex64)), TypeError, "not supported"),
        (lambda: mldash.Image(np.array([["a"]])), TypeError, "not supported"),
        (lambda: mldash.Image(torch.zeros(3, 4, 4, dtype=torch.int64)), TypeError, "torch.int64 is not supported"),
        (lambda: mldash.Image(torch.zeros(8, 3, 4, 4)), ValueError, "one image per field"),
        (lambda: mldash.Image("cat.png"), TypeError, "takes a numpy array"),
        (lambda: mldash.Image(None), TypeError, "takes a numpy array"),
        (lambda: mldash.Image({"a": 1}), TypeError, "takes a numpy array"),
        (lambda: mldash.Image(rgb(), caption=3), TypeError, "caption must be a str"),
        (lambda: mldash.Image(rgb(), caption="x" * 10_001), ValueError, "at most 10,000"),
        (lambda: mldash.Image(rgb(), caption="\ud800"), ValueError, "not valid Unicode"),
        (lambda: mldash.Image(np.zeros((1, 40_000), np.uint8)), ValueError, "at most 32768"),
        (lambda: mldash.Histogram(np.array([1.0, np.nan, np.inf])), ValueError, "1 NaN and 1 infinite of 3"),
        (lambda: mldash.Histogram(torch.tensor([1.0, float("nan")])), ValueError, "1 NaN"),
        (lambda: mldash.Histogram([]), ValueError, "no values"),
        (lambda: mldash.Histogram(np.zeros(3), bins=0), ValueError, "from 1 to 512"),
        (lambda: mldash.Histogram(np.zeros(3), bins=513), ValueError, "from 1 to 512"),
        (lambda: mldash.Histogram(np.zeros(3), bins=True), TypeError, "bins must be an int"),
        (lambda: mldash.Histogram(np.zeros(3), bins=8.0), TypeError, "bins must be an int"),
        (lambda: mldash.Histogram(np.array(["a", "b"])), TypeError, "not supported"),
        (lambda: mldash.Histogram(np.array([True])), TypeError, "not supported"),
        (lambda: mldash.Histogram(torch.ones(2, dtype=torch.complex64)), TypeError, "not supported"),
        (lambda: mldash.Histogram("abc"), TypeError, "takes an array"),
        (lambda: mldash.Histogram(None), TypeError, "takes an array"),
    ],
)
def test_bad_media_fail_at_the_call(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_histogram_takes_a_numpy_int_for_its_bins(exp):
    exp.metrics("w").append(h=mldash.Histogram([1.0, 2.0], bins=np.int64(3)), step=0)
    assert len(one(exp, "w", "h")["counts"]) == 3


def test_media_names_are_reserved_tags_for_users_dicts_and_field_names(exp):
    for key in ("$image", "$histogram"):
        with pytest.raises(ValueError, match="reserved"):
            exp.metrics("m").append(**{key: 1.0})
        with pytest.raises(ValueError, match="reserved"):
            exp.params.set(**{key: 1})
        with pytest.raises(ValueError, match="reserved"):
            exp.log("x", metadata={key: {"file": "1"}})
    with pytest.raises(TypeError, match="mldash.Image"):
        exp.metrics("m").append(value=[1, 2])  # the message names what may be stored


# ---- the codec's tags and the shared checks ------------------------------------------------
IMAGE = {"file": "123", "sha256": "ab" * 32, "width": 2, "height": 3, "format": "png", "size": 10}
HIST = {"bins": [0.0, 0.5, 1.0], "counts": [1, 2], "min": 0.0, "max": 1.0, "mean": 0.6, "count": 3}


def test_the_codec_reads_media_tags_back_as_typed_dicts():
    line = _codec.dumps([1, {"i": {"$image": IMAGE}, "h": {"$histogram": HIST}}])
    t, data = _codec.loads(line)
    assert data["i"] == {"type": "image", **IMAGE, "caption": None}
    assert data["h"] == {"type": "histogram", **HIST}
    assert _codec.is_tag({"$image": IMAGE}) and _codec.is_tag({"$histogram": HIST})


@pytest.mark.parametrize(
    "tag",
    [
        {"$image": {**IMAGE, "sha256": "AB" * 32}},
        {"$image": {**IMAGE, "width": 0}},
        {"$image": {k: v for k, v in IMAGE.items() if k != "file"}},
        {"$image": {**IMAGE, "caption": 3}},
        {"$image": "x"},
        {"$image": IMAGE, "extra": 1},
        {"$histogram": {**HIST, "counts": [1]}},
        {"$histogram": {**HIST, "counts": [1, -2]}},
        {"$histogram": {**HIST, "min": float("nan")}},
        {"$histogram": {**HIST, "count": True}},
        {"$histogram": {**HIST, "bins": list(range(600)), "counts": [0] * 599}},
    ],
)
def test_a_malformed_media_tag_is_no_tag_and_the_checks_refuse_it(tag):
    assert not _codec.is_tag(tag)
    with pytest.raises(ValueError, match="reserved"):
        check_json({"field": tag}, "point", tagged=True)


def test_the_checks_take_well_formed_media_tags_as_stored():
    check_json({"i": {"$image": IMAGE}, "h": {"$histogram": HIST}}, "point", tagged=True)
    with pytest.raises(ValueError, match="reserved"):
        check_document({"x": {"$image": IMAGE}}, "params")  # not as the local API's input


# ---- the queue: media take the checked path, in C and in Python ---------------------------
def test_media_values_take_the_checked_path_of_both_queues(queue_module):
    seen = []

    class Queue(queue_module.MetricQueue):
        __slots__ = ()

        def _on_trigger(self):
            pass

        def _append_fields(self, fields):
            seen.append(dict(fields))
            self._push(dict(fields))

    q = Queue()
    q._trigger = 10**9
    q._push({"image": 0.0, "step": 0}, b"1")  # names checked before: a number would be fast
    image = mldash.Image(rgb())
    q.append(image=image, step=1)
    assert seen == [{"image": image, "step": 1}]
    assert q._push_batch([{"image": image, "step": 2}], b"1") is False
    assert q._take()[-4:][2:] == [image, 1]


def test_the_pure_python_queue_stores_the_same_media(tmp_path):
    """The same script under the C queue and under MLDASH_PURE_PYTHON=1 stores the
    same lines (but for times and file ids) and the same blobs."""
    script = textwrap.dedent(
        """
        import json, os, sys
        import numpy as np
        import mldash
        root = sys.argv[1]
        with mldash.Experiment("p/r", root=root) as exp:
            m = exp.metrics("s")
            for step in range(3):
                x = np.full((4, 5, 3), step * 40, np.uint8)
                m.append(image=mldash.Image(x, caption=str(step)), step=step)
            m.append_batch([{"h": mldash.Histogram(np.arange(10.0), bins=5), "step": 3}])
        out = []
        for p in m.read()["data"]:
            d = {k: ({kk: vv for kk, vv in v.items() if kk != "file"} if isinstance(v, dict) else v)
                 for k, v in p["data"].items()}
            out.append(d)
        print(json.dumps(out, sort_keys=True))
        """
    )
    results = []
    for pure in ("", "1"):
        env = {**os.environ, "MLDASH_PURE_PYTHON": pure}
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"root{pure}")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        results.append(done.stdout)
    assert results[0] == results[1]
    assert json.loads(results[0])[3]["h"]["counts"] == [2, 2, 2, 2, 2]


# ---- the writer: points it cannot make, a failing disk, the load ---------------------------
def test_a_point_whose_image_cannot_be_encoded_is_set_aside_with_a_warning(exp, monkeypatch):
    real = _media._encode_png

    def fussy(image):
        if image.size == (1, 1):
            raise ValueError("Pillow refused it")
        return real(image)

    monkeypatch.setattr(_media, "_encode_png", fussy)
    m = exp.metrics("samples")
    m.append(image=mldash.Image(rgb()), step=0)
    m.append(image=mldash.Image(np.zeros((1, 1), np.uint8)), other=mldash.Image(rgb(seed=5)), step=1)
    m.append(image=mldash.Image(rgb(seed=2)), step=2)
    exp.flush()
    assert [p["data"]["step"] for p in m.read()["data"]] == [0, 2]
    (warning,) = exp.read_logs(level="warn")["data"]
    assert "could not store a point of series 'samples': Pillow refused it" in warning["message"]
    assert warning["metadata"]["series"] == "samples"
    assert len(exp.files().list()) == 2  # no file for the point set aside


def test_a_full_disk_while_storing_a_png_loses_no_point(exp, monkeypatch):
    real = _media._write_durably
    broken = {"on": True}

    def write(path, data):
        if broken["on"]:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(_media, "_write_durably", write)
    m = exp.metrics("samples")
    m.append(value=1.0, step=0)
    exp.flush()
    m.append(image=mldash.Image(rgb()), step=1)
    with pytest.raises(mldash.StorageError, match="No space left"):
        exp.flush()
    with pytest.raises(mldash.StorageError, match="kept in memory"):  # the report, once: the point is queued
        m.append(image=mldash.Image(rgb(seed=1)), step=2)
    broken["on"] = False  # the user frees some space
    exp.flush()
    data = [p["data"] for p in m.read()["data"]]
    assert [d["step"] for d in data] == [0, 1, 2]
    assert np.array_equal(pixels(exp, data[1]["image"]), rgb())
    assert np.array_equal(pixels(exp, data[2]["image"]), rgb(seed=1))
    assert not os.listdir(os.path.join(exp.path, "files", ".tmp"))


def test_images_a_dead_disk_still_holds_at_finish_are_rescued_with_their_pngs(root, monkeypatch, tmp_path):
    monkeypatch.setenv("MLDASH_RESCUE_DIR", str(tmp_path / "rescue"))
    monkeypatch.setattr(_media, "_write_durably", lambda path, data: (_ for _ in ()).throw(OSError(28, "No space")))
    exp = mldash.Experiment("core/dead", root=root)
    exp.metrics("samples").append(image=mldash.Image(rgb(), caption="kept"), step=0)
    with pytest.raises(mldash.StorageError) as caught:
        exp.finish()
    saved = caught.value.saved_to
    assert saved is not None
    line = open(os.path.join(saved, "metrics", "samples", "data.jsonl"), "rb").read()
    value = _codec.loads(line)[1]["image"]
    assert value["caption"] == "kept"
    png = open(os.path.join(saved, *_filestore.blob_relpath(value["sha256"]).split("/")), "rb").read()
    assert np.array_equal(np.asarray(PIL_Image.open(io.BytesIO(png))), rgb())
    (record,) = _filestore.read_records(saved)
    assert record["id"] == value["file"] and record["checksum"] == value["sha256"]


def test_queued_media_weigh_their_bytes_in_the_writers_load(root):
    exp = mldash.Experiment("core/load", root=root, flush_interval=60).start()
    m = exp.metrics("samples")
    m.append(step=0, image=1.0)
    image = mldash.Image(np.zeros((256, 256, 3), np.uint8))
    before = m.queued()
    m.trigger = 10**9
    m.append(image=image, step=1)
    assert m.queued() - before == 4 + 256 * 256 * 3 // _media.LOAD_BYTES + 1
    m.take()
    assert m.queued() == 0
    exp.finish()


def test_import_mldash_loads_neither_pillow_numpy_torch_nor_matplotlib():
    code = "import sys, mldash; print(sorted(m for m in ('PIL', 'numpy', 'torch', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_without_pillow_an_image_fails_at_the_call_saying_what_to_install():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["PIL"] = None
        import numpy as np, mldash
        try:
            mldash.Image(np.zeros((2, 2), np.uint8))
        except ImportError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "needs Pillow" in done.stdout and "mldash[media]" in done.stdout, done.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_logged_without_a_device_sync(exp):
    x = torch.rand(3, 64, 64, device="cuda")
    w = torch.randn(100_000, device="cuda")
    expected_image = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call below raises
    try:
        exp.metrics("samples").append(image=mldash.Image(x), weights=mldash.Histogram(w, bins=32), step=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    x.zero_()  # after the call, on the same stream: the snapshot was taken before
    data = exp.metrics("samples")
    exp.flush()
    point = data.read()["data"][0]["data"]
    assert np.array_equal(pixels(exp, point["image"]), expected_image)
    h = point["weights"]
    assert h["count"] == 100_000 and sum(h["counts"]) == 100_000
    assert h["min"] == pytest.approx(w.min().item()) and h["max"] == pytest.approx(w.max().item())


def test_an_image_of_an_array_is_made_while_another_thread_is_still_importing_pil(exp, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "PIL.Image", types.ModuleType("PIL.Image"))  # partly initialized: no Image yet
    image = mldash.Image(rgb())
    assert image.width == 24


def test_snapshot_memory_is_cut_from_slabs_and_reused_once_the_writer_is_done_with_it(exp):
    buffers = _media._Buffers()
    buffers.SLAB = 1 << 20
    cuts = [buffers.take(np, 100_000) for _ in range(10)]  # ten fit in one slab, the next starts another
    first = cuts[0].base
    assert first is not None and all(c.base is first for c in cuts)
    eleventh = buffers.take(np, 100_000)
    assert eleventh.base is not None and eleventh.base is not first
    for cut in cuts:
        buffers.give(cut)
    assert buffers._spare == [first]  # every cut back: kept, warm
    buffers.give(eleventh)
    for _ in range(9):
        buffers.take(np, 100_000)
    assert buffers.take(np, 100_000).base is first  # the full slab is replaced by the spare one
    assert buffers.take(np, 200_000).base is None  # a big buffer has memory of its own
    # the run's own: a snapshot's buffer is given back when its image is encoded
    image = mldash.Image(rgb())
    buffer = image._buffer
    image.encode()
    assert image._buffer is None and image._data is None and buffer is not None
