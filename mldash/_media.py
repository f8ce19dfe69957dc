"""Images and histograms as metric field values (docs/media.md).

>>> exp.metrics("samples").append(image=mldash.Image(x, caption="epoch 3"), step=3)  # doctest: +SKIP
>>> exp.metrics("weights").append(hist=mldash.Histogram(w, bins=64), step=3)  # doctest: +SKIP

Two sides, as for every append:

- the caller's: ``Image(...)`` and ``Histogram(...)`` check their input (shape,
  dtype, NaN: a clear error at the call) and take a private snapshot of it, and
  nothing more: a numpy array or a CPU tensor is copied (a caller that reuses its
  buffer must not change what was logged; a 256x256 RGB image is a 192 KiB copy,
  a few µs), a PIL image too; a CUDA tensor is copied asynchronously into pinned
  host memory (an image) or on the device (a histogram's values), with a CUDA
  event recorded on the current stream, so the call never waits for the GPU. A
  matplotlib figure is drawn on the caller's thread (matplotlib is not
  thread-safe), which costs what a ``draw()`` costs (milliseconds); only the
  pixels are kept.
- the writer thread's (``resolve``): it waits on the event where there is one,
  encodes the PNG (Pillow) or reduces the values to bins and counts (numpy; torch
  for a CUDA tensor), stores each PNG in the run's content-addressed files
  (``_filestore``: the same bytes once, a ``files.jsonl`` record under
  ``/media/<series>``, so it replicates like any saved file) and puts a small
  tagged dict in the point in its place: ``{"$image": {...}}`` or
  ``{"$histogram": {...}}`` (the tag names live in ``_codec``, which reads them
  back as ``{"type": "image", ...}``).

torch, PIL and matplotlib are never imported here: an object of theirs can only
be given once its own package is loaded, so they are taken from ``sys.modules``
(numpy and Pillow are imported on the first Image or Histogram).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import time
from typing import Any

from . import _codec, _media_snapshot
from ._histogram import Histogram, _stats  # noqa: F401  (importable from here as before)
from ._media_snapshot import (  # noqa: F401  (importable from here as before)
    _CHANNELS, _CHW, _HWC, _NUMPY_KINDS, MAX_BINS, MAX_CAPTION, MAX_SIDE, _after_fork, _Buffers,
    _check_caption, _is_instance, _layout, _Missing, _need, _snapshot, _tensor_snapshot, _torch_of,
)

PNG_LEVEL = 1  # zlib's fastest: the writer's throughput matters more than ~10% of size
MEDIA_PREFIX = "/media"  # where an image's file is listed: /media/<series>
# A queued image or histogram counts as its bytes / LOAD_BYTES queue entries towards
# the writer's trigger and its backpressure (Metric.queued()): with the run's limits
# (40,000 and 800,000 entries) the writer is woken once ~12 MiB of media wait, and
# appends wait for it past ~256 MiB.
LOAD_BYTES = 320


class Image:
    """An image as a metric field value: ``append(image=mldash.Image(x, caption=...))``.

    ``x`` is a numpy array (HW, HWC; CHW too where the channels are clearly first)
    of uint8, bool, or float in [0, 1] (values outside are clipped, NaN is black);
    a torch tensor (CHW, HW, or HWC where the channels are clearly last) of those
    dtypes or bfloat16, on any device; a PIL image; a matplotlib figure; or
    anything numpy can read (a TensorFlow or JAX array). 1, 3 or 4 channels (gray,
    RGB, RGBA). Stored as a PNG in the run's files; read back as
    ``{"type": "image", "file", "sha256", "path", "width", "height", "caption", ...}``.
    """

    __slots__ = ("caption", "width", "height", "channels", "nbytes", "_kind", "_data", "_layout", "_event", "_png",
                 "_buffer")

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self.caption = _check_caption(caption)
        self._event = self._buffer = None
        self._png: tuple | None = None  # (PNG bytes, sha256) once encoded on the writer
        torch = _torch_of(data)
        if torch is not None:
            self._from_tensor(torch, data)
        elif _is_instance(data, "PIL.Image", "Image"):
            self._from_pil(data)
        elif _is_instance(data, "matplotlib.figure", "Figure"):
            self._from_figure(data)
        else:
            self._from_array(data)
        _need("PIL.Image", "mldash.Image")  # the writer encodes with it: say so now if it is missing

    # ---- the caller's side: check and snapshot -----------------------------------------
    def _from_array(self, data: Any) -> None:
        np = sys.modules.get("numpy")
        if np is None or not isinstance(data, np.ndarray):
            if data is None or isinstance(data, (str, bytes, dict, int, float, bool)) or not (
                hasattr(data, "__array__") or isinstance(data, (list, tuple))
            ):
                raise TypeError(
                    f"mldash.Image takes a numpy array, a torch tensor, a PIL image or a matplotlib figure, "
                    f"not {type(data).__name__}"
                )
            np = _need("numpy", "mldash.Image")
            try:
                data = np.asarray(data)  # a TensorFlow or JAX array, nested lists
            except Exception as error:
                raise TypeError(f"mldash.Image cannot read a {type(data).__name__} as an array: {error}") from None
        array = np.asarray(data)  # a subclass (masked, matrix) as a plain array
        kind = array.dtype.kind
        if kind not in _NUMPY_KINDS or (kind == "u" and array.dtype.itemsize != 1):
            raise TypeError(
                f"mldash.Image: an array of {array.dtype} is not supported; use uint8 (0-255), bool, "
                "or floats in [0, 1]"
            )
        self._layout, self.height, self.width, self.channels = _layout(array.shape, _HWC, "mldash.Image: an array")
        # A copy: the caller may reuse its buffer as soon as append() returns.
        self._kind = "array"
        self._data, self._buffer = _snapshot(np, array)
        self.nbytes = array.nbytes

    def _from_tensor(self, torch, tensor) -> None:
        allowed = (torch.uint8, torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)
        if tensor.dtype not in allowed:
            raise TypeError(
                f"mldash.Image: a tensor of {tensor.dtype} is not supported; use uint8 (0-255), bool, "
                "or floats in [0, 1]"
            )
        self._layout, self.height, self.width, self.channels = _layout(tuple(tensor.shape), _CHW, "mldash.Image: a tensor")
        tensor = tensor.detach()
        self.nbytes = tensor.numel() * tensor.element_size()
        device = tensor.device.type
        if device == "cpu":
            self._kind = "tensor"
            self._data, self._buffer = _tensor_snapshot(torch, tensor)
        elif device == "cuda":
            # No .cpu() here (it would wait for the GPU): an asynchronous copy into pinned
            # memory, on the current stream, and an event the writer thread waits on.
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(tensor.device))
            self._kind, self._data, self._event = "tensor", host, event
        else:  # mps, xpu...: a copy on the device, read on the writer thread
            self._kind, self._data = "device", tensor.clone()

    def _from_pil(self, image) -> None:
        self.width, self.height = image.size
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"mldash.Image: a PIL image of {self.width}x{self.height} pixels; 1 to {MAX_SIDE} a side are allowed")
        self.channels = len(image.getbands())
        self._kind, self._data, self._layout = "pil", image.copy(), None
        self.nbytes = self.width * self.height * max(1, self.channels)

    def _from_figure(self, figure) -> None:
        # Drawn here: matplotlib is not thread-safe. A canvas of its own (Agg) for the
        # drawing, so the figure's own (interactive) canvas is left as it was.
        np = _need("numpy", "mldash.Image")
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        own = figure.canvas
        try:
            canvas = FigureCanvasAgg(figure)
            canvas.draw()
            pixels = np.asarray(canvas.buffer_rgba()).copy()
        finally:
            figure.set_canvas(own)
        self._layout, self.height, self.width, self.channels = _layout(pixels.shape, _HWC, "mldash.Image: a figure")
        self._kind, self._data = "array", pixels
        self.nbytes = pixels.nbytes

    def __repr__(self) -> str:
        caption = f", caption={self.caption!r}" if self.caption is not None else ""
        return f"mldash.Image({self.width}x{self.height}x{self.channels}{caption})"

    # ---- reading back -----------------------------------------------------------------------
    @staticmethod
    def read_bytes(exp: Any, value: dict) -> bytes:
        """The PNG of an image field as ``read()`` returns it (``{"type": "image", ...}``),
        from the run's files: its local folder, else the team server (a run read
        from elsewhere). Checked against the SHA-256 recorded."""
        if not isinstance(value, dict) or value.get("type") != "image":
            raise TypeError("Image.read_bytes() takes an image field as read() returns it: {'type': 'image', ...}")
        from ._filestore import blob_path, check_checksum, check_file_id

        sha, file_id = check_checksum(value.get("sha256")), check_file_id(value.get("file"))
        try:
            with open(blob_path(exp.path, sha), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="mldash-image-") as folder:
                path = exp.files(file_id=file_id).download(dest_path=os.path.join(folder, "image.png"))
                with open(path, "rb") as f:
                    data = f.read()
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError(f"the stored bytes of image file {file_id} do not match its SHA-256 {sha}")
        return data

    @staticmethod
    def read(exp: Any, value: dict):
        """The image of an image field as ``read()`` returns it, as a PIL image (loaded)."""
        PIL_Image = _need("PIL.Image", "mldash.Image.read")
        image = PIL_Image.open(io.BytesIO(Image.read_bytes(exp, value)))
        image.load()
        return image

    # ---- the writer's side ----------------------------------------------------------------
    def encode(self) -> tuple[bytes, str]:
        """(the PNG, its SHA-256); done once: the pixels are dropped then, so a point
        kept for a retry (a full disk) holds the PNG only."""
        if self._png is None:
            png = _encode_png(self._pil_image())
            self._png = (png, hashlib.sha256(png).hexdigest())
            buffer, self._buffer = self._buffer, None
            self._data = self._event = None
            _media_snapshot._buffers.give(buffer)  # nothing refers to it now: the next snapshot reuses it
        return self._png

    def _pil_image(self):
        PIL_Image = _need("PIL.Image", "mldash.Image")
        if self._kind == "pil":
            image = self._data
            if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return image
        np = _need("numpy", "mldash.Image")
        if self._event is not None:
            self._event.synchronize()  # this thread waits for the copy, the caller never did
        data = self._data
        if self._kind == "device":
            data = data.cpu()
        if self._kind in ("tensor", "device"):
            torch = sys.modules["torch"]
            if data.dtype in (torch.bfloat16, torch.float16):
                data = data.float()
            data = data.numpy()
        array = np.asarray(data)
        if self._layout == _CHW:
            array = array.transpose(1, 2, 0)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.dtype.kind == "f":
            array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
            array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        elif array.dtype.kind == "b":
            array = array.astype(np.uint8) * 255
        mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}[array.shape[2]]
        return PIL_Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _encode_png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_LEVEL)
    return out.getvalue()



MEDIA_TYPES = (Image, Histogram)


def load(fields: dict) -> int:
    """What the media among ``fields`` weigh in queue entries (0: none)."""
    total = 0
    for value in fields.values():
        if value.__class__ is Image or value.__class__ is Histogram:
            total += 1 + value.nbytes // LOAD_BYTES
    return total


# ---- the writer thread: media in queued entries become tagged dicts ------------------------
def _safe_part(text: str) -> str:
    part = re.sub(r"[^A-Za-z0-9._=+-]", "_", text)[:100].lstrip(".")
    return part or "image"


def resolve(entries: list, series: str, sink) -> tuple[list, list]:
    """Replace each Image and Histogram in queued ``entries`` (see ``_queue.py``) by
    the tagged dict stored in its place, in place; the PNGs go to ``sink`` first.

    Returns (the entries without the points whose media could not be made, those
    points with the error). An OSError (the disk) is raised as is, with ``entries``
    left partly resolved and every PNG made so far kept on its Image, so the retry
    stores the rest and encodes nothing twice. Entries that are not well-formed
    points are left as they are (the writer's encoding sets them aside).
    """
    images: list[tuple[int, int, Image, str]] = []  # (its point's start, where in entries, the image, its field)
    failed: dict[int, tuple[int, Exception]] = {}  # a point's start: (its end, the error)
    i, n = 0, len(entries)
    while i + 1 < n and entries[i + 1].__class__ is tuple:
        names = entries[i + 1]
        end = i + 2 + len(names)
        for j in range(min(len(names), n - i - 2)):
            value = entries[i + 2 + j]
            try:
                if value.__class__ is Histogram:
                    entries[i + 2 + j] = {_codec.HISTOGRAM_TAG: value.reduce()}
                elif value.__class__ is Image:
                    value.encode()
                    images.append((i, i + 2 + j, value, names[j]))
            except OSError:
                raise
            except Exception as error:  # a CUDA histogram with NaN, an image Pillow refuses
                failed.setdefault(i, (end, error))
        i = end
    images = [item for item in images if item[0] not in failed]  # no file for a point set aside
    if images:
        stored = sink.store(series, [(image, name) for _, _, image, name in images])
        for (_, where, image, _), record in zip(images, stored):
            entries[where] = {_codec.IMAGE_TAG: _image_tag(image, record)}
    if not failed:
        return entries, []
    kept: list = []
    bad: list = []
    start = 0
    for at, (end, error) in sorted(failed.items()):
        kept += entries[start:at]
        bad.append((entries[at:end], error))
        start = end
    kept += entries[start:]
    return kept, bad


def _image_tag(image: Image, record: dict) -> dict:
    png, sha = image.encode()
    tag = {"file": record["id"], "sha256": sha, "path": record["path"], "filename": record["filename"],
           "width": image.width, "height": image.height, "format": "png", "size": len(png)}
    if image.caption is not None:
        tag["caption"] = image.caption
    return tag


class RunMedia:
    """Stores the writer's PNGs in the run's files (``_filestore``'s layout): each blob
    written to a temp file, fsynced and renamed into place, then one append of their
    records to ``files/files.jsonl`` under its lock. An image already recorded under
    the same name (same series, field and bytes) reuses its record."""

    def __init__(self, run_path: str, experiment_prefix: str) -> None:
        self.path = run_path
        self.prefix = experiment_prefix
        self._known: dict[tuple[str, str], dict] | None = None

    def _names(self) -> dict:
        if self._known is None:
            from ._filestore import fold, read_records

            self._known = {(f["path"], f["filename"]): f for f in fold(read_records(self.path))}
        return self._known

    def store(self, series: str, images: list[tuple[Image, str]]) -> list[dict]:
        from . import _filewrite
        from ._filestore import TMP_DIR, blob_path, encode_record, files_folder, index_path
        from ._runfolder import locked

        known = self._names()
        folder = _media_prefix(series)
        out: list[dict | None] = []
        new: list[dict] = []
        todo: dict[str, bytes] = {}
        for image, field in images:
            png, sha = image.encode()
            filename = f"{_safe_part(field)}_{sha[:16]}.png"
            record = known.get((folder, filename))
            if record is None:
                record = _record(self.prefix, folder, filename, png, sha, image, series, field)
                known[(folder, filename)] = record
                new.append(record)
                todo[sha] = png
            out.append(record)
        if not new:
            return out
        try:
            tmp = os.path.join(files_folder(self.path), TMP_DIR)
            os.makedirs(tmp, exist_ok=True)
            folders = set()
            for sha, png in todo.items():
                blob = blob_path(self.path, sha)
                if _present(blob, len(png)):
                    continue
                part = os.path.join(tmp, f"{os.getpid()}-{os.urandom(6).hex()}.part")
                _write_durably(part, png)
                os.makedirs(os.path.dirname(blob), exist_ok=True)
                os.replace(part, blob)
                folders.update((os.path.dirname(blob), os.path.dirname(os.path.dirname(blob))))
            for path in folders:
                _filewrite._fsync_dir(path)
            index = index_path(self.path)
            with locked(index):
                _filewrite._append(index, [encode_record(r) for r in new])
        except BaseException:
            for record in new:  # not recorded: the retry records them
                known.pop((record["path"], record["filename"]), None)
            raise
        return out


class RescueMedia:
    """Stores PNGs into a rescue folder's files (``Writer.rescue``): ``add(relpath, data)``."""

    def __init__(self, add, experiment_prefix: str) -> None:
        self.add = add
        self.prefix = experiment_prefix
        self.blobs: set[str] = set()

    def store(self, series: str, images: list[tuple[Image, str]]) -> list[dict]:
        from ._filestore import FILES_DIR, INDEX_FILE, blob_relpath, encode_record

        folder = _media_prefix(series)
        out = []
        for image, field in images:
            png, sha = image.encode()
            record = _record(self.prefix, folder, f"{_safe_part(field)}_{sha[:16]}.png", png, sha, image, series, field)
            if sha not in self.blobs:
                self.blobs.add(sha)
                self.add(blob_relpath(sha), png)
            self.add(f"{FILES_DIR}/{INDEX_FILE}", encode_record(record) + b"\n")
            out.append(record)
        return out


def _media_prefix(series: str) -> str:
    from ._filestore import check_prefix

    try:
        return check_prefix(f"{MEDIA_PREFIX}/{series}")
    except ValueError:  # a series name near the length limit
        return MEDIA_PREFIX


def _record(prefix: str, folder: str, filename: str, png: bytes, sha: str, image: Image, series: str, field: str) -> dict:
    from ._filestore import SAVE
    from ._filewrite import _new_id, _now_iso

    now = time.time()
    return {
        "op": SAVE, "id": _new_id(now), "experimentId": prefix, "path": folder, "filename": filename,
        "description": None, "tags": [], "bindrs": [], "contentType": "image/png", "sizeBytes": len(png),
        "checksum": sha, "metadata": {"media": "image", "series": series, "field": field, "width": image.width,
                                      "height": image.height},
        "uploadedAt": _now_iso(now), "timestamp": now,
    }


def _present(blob: str, size: int) -> bool:
    try:
        return os.stat(blob).st_size == size
    except FileNotFoundError:
        return False


def _write_durably(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)
