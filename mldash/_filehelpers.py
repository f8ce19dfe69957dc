"""The builder's ``save_*`` helpers (``exp.files(...).save_json(...)`` and the like):
each serializes its object straight into the store through ``_serialized``. A mixin
of ``mldash.files.FileBuilder``, which supplies ``_fields``, ``_target`` and ``_store``.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from typing import Any


class _SaveHelpers:
    """``FileBuilder``'s serializing helpers."""


    def save_json(self, obj: Any, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        """``obj`` as indented JSON (numpy and torch scalars, paths, enums converted)."""
        import json

        from .params import to_json_value

        data = json.dumps(obj, indent=2, ensure_ascii=False, default=to_json_value).encode()
        return self._serialized(lambda f: f.write(data), file_name, to, "application/json", wait, fields)

    def save_text(self, text: str, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        if not isinstance(text, str):
            raise TypeError(f"save_text() takes a str, not {type(text).__name__}")
        data = text.encode()
        return self._serialized(lambda f: f.write(data), file_name, to, None, wait, fields)

    def save_blob(self, data: bytes, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"save_blob() takes bytes, not {type(data).__name__}")
        return self._serialized(lambda f: f.write(data), file_name, to, None, wait, fields)

    def save_pkl(self, obj: Any, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        """``obj`` pickled (written straight into the store: no second copy)."""
        import pickle

        return self._serialized(lambda f: pickle.dump(obj, f), file_name, to, "application/octet-stream", wait, fields)

    def save_torch(self, obj: Any, file_name: str | None = None, *, to: str | None = None, wait: bool = True, **fields):
        """``torch.save(obj)`` straight into the store. torch is loaded here only (it
        already is, when ``obj`` holds tensors)."""
        torch = _module("torch", "save_torch")
        return self._serialized(lambda f: torch.save(obj, f), file_name, to, "application/octet-stream", wait, fields)

    def save_fig(self, fig: Any = None, file_name: str | None = None, *, to: str | None = None,
                 wait: bool = True, **savefig_kwargs):
        """A matplotlib figure (None: the current one) as ``file_name`` (default
        figure.png; the extension picks the format), then closed, as ml-dash does.
        Other keywords go to ``fig.savefig``."""
        fields = {k: savefig_kwargs.pop(k) for k in ("description", "tags", "metadata") if k in savefig_kwargs}
        name = to if to is not None else file_name if file_name is not None else "figure.png"
        if fig is None:
            fig = _module("matplotlib.pyplot", "save_fig").gcf()
        fmt = os.path.splitext(name)[1][1:].lower() or "png"
        savefig_kwargs.setdefault("format", fmt)

        def write(f) -> None:
            fig.savefig(f, **savefig_kwargs)

        record = self._serialized(write, None, name, None, wait, fields)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
        return record

    def save_image(self, image: Any, file_name: str | None = None, *, to: str | None = None, quality: int = 95,
                   wait: bool = True, **fields):
        """An image file (its extension picks the format: .png, .jpg, .webp, ...) of a
        numpy array (HxW or HxWxC; uint8 as is, floats up to 1 scaled by 255, any other
        range stretched to 0..255, as ml-dash does) or a PIL image. JPEG gets ``quality``
        and loses an alpha channel onto white. Needs Pillow (the ``media`` extra)."""
        pil = _module("PIL.Image", "save_image")
        name = _required(to if to is not None else file_name, "an image")
        picture = image if isinstance(image, pil.Image) else pil.fromarray(_image_bytes(image))
        kind = pil.registered_extensions().get(os.path.splitext(name)[1].lower())
        if kind is None:
            raise ValueError(f"save_image() picks the format from the file name; {name!r} has no image extension "
                             "(.png, .jpg, .webp, ...)")
        options: dict = {}
        if kind == "JPEG":
            if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
                raise ValueError(f"quality must be an int from 1 to 100, got {quality!r}")
            options = {"quality": quality, "optimize": True}
            if picture.mode in ("RGBA", "LA", "P"):
                picture = picture.convert("RGBA")
                background = pil.new("RGB", picture.size, (255, 255, 255))
                background.paste(picture, mask=picture.split()[-1])
                picture = background
            elif picture.mode not in ("RGB", "L"):
                picture = picture.convert("RGB")
        return self._serialized(lambda f: picture.save(f, format=kind, **options), None, name, None, wait, fields)

    def save_video(self, frames: Any, file_name: str | None = None, *, to: str | None = None, fps: float = 20,
                   wait: bool = True, **options):
        """A video of ``frames`` (a list of HxW or HxWxC arrays, or one array of them;
        uint8, bools, or floats from 0 to 1) at ``fps``, as ml-dash's ``save_video``:
        ``.gif`` by Pillow, any other format (``.mp4``: ``pip install imageio[ffmpeg]``)
        by imageio, which gets the other keywords."""
        fields = {k: options.pop(k) for k in ("description", "tags", "metadata") if k in options}
        name = _required(to if to is not None else file_name, "a video")
        extension = os.path.splitext(name)[1].lower()
        if not extension:
            raise ValueError(f"save_video() picks the format from the file name; {name!r} has no extension (.mp4, .gif)")
        try:
            fps = float(fps) if not isinstance(fps, (bool, str, bytes)) else math.nan
        except (TypeError, ValueError):
            fps = math.nan
        # A GIF's frame delay is whole hundredths of a second, 16 bits of them.
        low, high = (1 / 655.35, 100.0) if extension == ".gif" else (1e-6, math.inf)
        if not low <= fps <= high:
            raise ValueError(f"fps must be a number from {low:.4g} to {high:g} for {extension}, got {fps!r}")
        stack = _video_frames(frames)
        if extension == ".gif":
            pil = _module("PIL.Image", "save_video")
            images = [pil.fromarray(frame) for frame in stack]

            def write(f) -> None:
                images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
        else:
            iio = _module("imageio.v3", "save_video")
            import numpy as np

            def write(f) -> None:
                try:
                    data = iio.imwrite("<bytes>", np.stack(stack), extension=extension, fps=fps, **options)
                except (KeyError, IndexError, ValueError) as error:  # imageio's words for "no plugin for it"
                    raise ValueError(f"imageio cannot write {extension!r} videos: {error!r}") from None
                if not data:  # what imageio returns when ffmpeg failed (a bad codec, say)
                    raise ValueError(f"imageio wrote nothing for {name!r} (options {options}): nothing was saved")
                f.write(data)

        return self._serialized(write, None, name, None, wait, fields)

    def _serialized(self, write, file_name, to, content_type, wait: bool, fields: dict):
        fields = self._fields(fields.pop("description", None), fields.pop("tags", None), fields.pop("metadata", None),
                              extra=fields)
        prefix, name = self._target(_required(to if to is not None else file_name, "this helper"))
        return self._store.save_written(write, prefix, name, fields, content_type, wait)


def _required(name: Any, what: str) -> str:
    if name is None:
        raise ValueError(f"a file name is required when saving {what}: pass to=... (or file_name)")
    return name


def _module(name: str, helper: str):
    # The user's own framework, loaded on demand for the one helper that calls it
    # (importlib: the core of mldash has no import of it).
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"{helper}() needs {name.split('.')[0]}, which is not installed: {error}") from None
    return module


def _image_bytes(image: Any):
    """An array as 8-bit pixels, as ml-dash's save_image makes them."""
    import numpy as np

    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)) or not array.size:
        raise ValueError(f"an image is HxW or HxWxC (C 1 to 4), not an array of shape {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "biuf":
        raise TypeError(f"an image holds numbers, not {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("an image must not hold NaN or inf")
    top, low = array.max(), array.min()
    if top > 1.0:  # another range: stretched to 0..255
        array = (array - low) / (top - low) if top > low else np.zeros_like(array)
    return (np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)


def _video_frames(frames: Any) -> list:
    """The frames as uint8 arrays (skimage's img_as_ubyte, as ml-dash uses: floats are
    0..1, bools 0 or 255); all of one shape."""
    import numpy as np

    try:
        stack = [np.asarray(frame) for frame in frames]
    except TypeError:
        raise TypeError(f"frames must be a list of arrays or one array of them, not {type(frames).__name__}") from None
    if not stack:
        raise ValueError("frames is empty: a video needs at least one frame")
    out = []
    for i, frame in enumerate(stack):
        if frame.shape != stack[0].shape or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
            raise ValueError(f"frame {i} has shape {frame.shape}; every frame is HxW or HxWxC (C 1, 3 or 4), all of one shape")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.dtype == np.bool_:
            frame = frame.astype(np.uint8) * 255
        elif frame.dtype.kind == "f":
            if not (np.isfinite(frame).all() and frame.min() >= 0.0 and frame.max() <= 1.0):
                raise ValueError(f"frame {i}: float frames hold values from 0 to 1")
            frame = np.round(frame * 255).astype(np.uint8)
        elif frame.dtype != np.uint8:
            if frame.dtype.kind not in "iu" or frame.min() < 0 or frame.max() > 255:
                raise ValueError(f"frame {i}: {frame.dtype} frames hold values from 0 to 255")
            frame = frame.astype(np.uint8)
        out.append(frame)
    return out

