"""The caller's side of an Image or Histogram (see ``_media``): its input checks and
the private snapshot it takes: the lazy numpy/Pillow loader, the slab allocator the
snapshots are cut from, and the checks of an image's shape and caption.

numpy is imported on first use only; torch, PIL and matplotlib never (taken from
``sys.modules``).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import weakref
from typing import Any

from ._checks import check_text

MAX_BINS = 512
MAX_SIDE = 32768  # pixels a side
MAX_CAPTION = 10_000  # characters


_HWC, _CHW = "HWC", "CHW"
_CHANNELS = (1, 3, 4)
_NUMPY_KINDS = {"u": "uint8", "b": "bool", "f": "float"}


class _Missing:
    """Pillow or numpy, loaded on first use; a clear error at the call when absent."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def __call__(self, name: str, what: str):
        module = self.loaded.get(name)
        if module is None:
            try:
                module = importlib.import_module(name)
            except ImportError as error:
                package = {"PIL": "Pillow"}.get(name.split(".")[0], name.split(".")[0])
                raise ImportError(
                    f"{what} needs {package}, which is not installed: pip install 'mldash[media]' ({error})"
                ) from None
            self.loaded[name] = module
        return module


_need = _Missing()


class _Buffers:
    """Memory for snapshots. Fresh memory costs a page fault per 4 KiB on its first
    write, several times the copy itself (~110 µs against ~10 µs for 192 KiB on this
    project's VM), so snapshots are cut from slabs of ``SLAB`` bytes:

    - numpy backs a new slab with huge pages where the kernel offers them (a fault
      per 2 MiB, not per 4 KiB);
    - the writer gives a snapshot's buffer back once its image is encoded (or its
      histogram reduced); a slab whose every cut came back is kept (``KEEP`` of them
      at most) and cut again: warm memory, no faults. A cut never given back (an
      Image never appended) just keeps its slab alive until it is freed itself.

    Buffers larger than an eighth of a slab are allocated on their own.
    """

    SLAB = 16 << 20
    KEEP = 2
    ALIGN = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slab = None
        self._used = 0
        self._live: dict[int, list] = {}  # id(slab): [weakref to it, cuts not given back]
        self._spare: list = []

    def take(self, np, nbytes: int):
        if nbytes > self.SLAB // 8:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            if self._slab is None or self._used + nbytes > self.SLAB:
                self._retire()
                self._slab = self._spare.pop() if self._spare else np.empty(self.SLAB, np.uint8)
                self._used = 0
                self._live[id(self._slab)] = [weakref.ref(self._slab), 0]  # a dead slab's entry is replaced
            start = self._used
            self._used += -(-nbytes // self.ALIGN) * self.ALIGN
            self._live[id(self._slab)][1] += 1
            return self._slab[start : start + nbytes]

    def give(self, buffer) -> None:
        slab = getattr(buffer, "base", None)
        if slab is None:
            return
        with self._lock:
            entry = self._live.get(id(slab))
            if entry is None or entry[0]() is not slab:
                return
            entry[1] -= 1
            if entry[1] == 0 and slab is not self._slab:
                del self._live[id(slab)]
                if len(self._spare) < self.KEEP:
                    self._spare.append(slab)

    def _retire(self) -> None:
        """The current slab is full: it is reused once its cuts come back (see give)."""
        slab = self._slab
        if slab is not None and self._live[id(slab)][1] == 0:
            del self._live[id(slab)]
            if len(self._spare) < self.KEEP:
                self._spare.append(slab)
        for key in [k for k, (ref, _) in self._live.items() if ref() is None]:
            del self._live[key]  # slabs freed with cuts never given back


_buffers = _Buffers()


def _after_fork() -> None:
    global _buffers
    _buffers = _Buffers()  # its lock may have been held by a thread the child does not have


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _snapshot(np, array):
    """(a C-contiguous copy of ``array``, the recycled buffer that holds it)."""
    buffer = _buffers.take(np, array.nbytes)
    copy = buffer.view(array.dtype).reshape(array.shape)
    np.copyto(copy, array, casting="no")
    return copy, buffer


def _tensor_snapshot(torch, tensor):
    """(a copy of a CPU tensor in a recycled buffer, the buffer)."""
    np = _need("numpy", "mldash")
    nbytes = tensor.numel() * tensor.element_size()
    buffer = _buffers.take(np, nbytes)
    copy = torch.from_numpy(buffer).view(tensor.dtype).view(tensor.shape)
    copy.copy_(tensor)
    return copy, buffer


def _torch_of(value: Any):
    """torch, when ``value`` is one of its tensors (torch is loaded then), else None."""
    module = value.__class__.__module__
    if module == "torch" or module.startswith("torch."):
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            return torch
    return None


def _is_instance(value: Any, module: str, cls: str) -> bool:
    loaded = sys.modules.get(module)
    kind = getattr(loaded, cls, None)  # None too while another thread is still importing it
    return isinstance(kind, type) and isinstance(value, kind)


def _check_caption(caption: Any) -> str | None:
    if caption is None:
        return None
    if not isinstance(caption, str):
        raise TypeError(f"an image's caption must be a str or None, not {type(caption).__name__}")
    if len(caption) > MAX_CAPTION:
        raise ValueError(f"an image's caption is {len(caption):,} characters long; at most {MAX_CAPTION:,} are allowed")
    return check_text(caption, "image caption")


def _layout(shape: tuple, prefer: str, what: str) -> tuple[str, int, int, int]:
    """(layout, height, width, channels) of an image array of ``shape``: HW, HWC or
    CHW with 1, 3 or 4 channels; ``prefer`` decides when both would fit."""
    if len(shape) == 2:
        h, w, c, layout = shape[0], shape[1], 1, _HWC
    elif len(shape) == 3:
        first, last = shape[0] in _CHANNELS, shape[-1] in _CHANNELS
        if (prefer == _HWC and last) or (last and not first):
            layout = _HWC
        elif first:
            layout = _CHW
        else:
            raise ValueError(
                f"{what} of shape {tuple(shape)} is not an image: 3 dimensions need 1, 3 or 4 channels "
                "first (CHW) or last (HWC)"
            )
        h, w, c = (shape[0], shape[1], shape[2]) if layout == _HWC else (shape[1], shape[2], shape[0])
    else:
        raise ValueError(
            f"{what} of shape {tuple(shape)} is not an image: it must be HW, HWC or CHW (2 or 3 dimensions); "
            "log a batch as one image per field or per point"
        )
    if h < 1 or w < 1:
        raise ValueError(f"{what} of shape {tuple(shape)} is empty")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"{what} is {w}x{h} pixels; at most {MAX_SIDE} a side are allowed")
    return layout, h, w, c
