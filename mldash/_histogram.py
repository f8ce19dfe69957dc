"""``mldash.Histogram``: the distribution of many values as a metric field value
(docs/media.md); its check and snapshot on the caller's thread, its reduction to
bins and counts on the writer's (see ``_media``)."""

from __future__ import annotations

import math
import operator
import sys
from typing import Any

from . import _media_snapshot
from ._media_snapshot import MAX_BINS, _need, _snapshot, _torch_of


class Histogram:
    """The distribution of many values as a metric field value:
    ``append(weights=mldash.Histogram(w, bins=64))``.

    ``values``: a numpy array, a torch tensor (any device) or a list of numbers,
    of any shape (flattened); ``bins``: 1 to 512 bins of equal width from the
    values' min to their max. Reduced on the writer thread to
    ``{"type": "histogram", "bins": [bins + 1 edges], "counts": [bins],
    "min", "max", "mean", "count"}``; the values themselves are never stored.
    NaN and ±inf are refused at the call (a CUDA tensor is looked at on the writer
    thread instead, so as not to wait for the GPU: its point is then set aside
    with a warning in the run's log).
    """

    __slots__ = ("bins", "nbytes", "_values", "_range", "_event", "_stats", "_buffer")

    def __init__(self, values: Any, bins: int = 64) -> None:
        if isinstance(bins, bool) or not hasattr(bins, "__index__"):
            raise TypeError(f"mldash.Histogram: bins must be an int from 1 to {MAX_BINS}, not {type(bins).__name__}")
        bins = operator.index(bins)  # numpy ints too
        if not 1 <= bins <= MAX_BINS:
            raise ValueError(f"mldash.Histogram: bins must be from 1 to {MAX_BINS}, got {bins}")
        self.bins = int(bins)
        self._event = self._buffer = None
        self._range: tuple[float, float] | None = None
        self._stats: dict | None = None
        torch = _torch_of(values)
        if torch is not None:
            self._from_tensor(torch, values)
        else:
            self._from_array(values)

    def _from_array(self, values: Any) -> None:
        np = _need("numpy", "mldash.Histogram")
        if isinstance(values, (str, bytes, dict)) or values is None:
            raise TypeError(f"mldash.Histogram takes an array, a tensor or a list of numbers, not {type(values).__name__}")
        try:
            array = np.asarray(values)
        except Exception as error:
            raise TypeError(f"mldash.Histogram cannot read a {type(values).__name__} as an array: {error}") from None
        if array.dtype.kind not in "iuf":
            raise TypeError(f"mldash.Histogram: values of {array.dtype} are not supported; use ints or floats")
        if array.size == 0:
            raise ValueError("mldash.Histogram: no values")
        low, high = array.min(), array.max()  # NaN and inf show in these (NaN propagates)
        if array.dtype.kind == "f" and not (math.isfinite(low) and math.isfinite(high)):
            nan = int(np.isnan(array).sum())
            inf = int(np.isinf(array).sum())
            raise ValueError(
                f"mldash.Histogram: the values hold {nan:,} NaN and {inf:,} infinite of {array.size:,}; "
                "a histogram takes finite values (drop them first, e.g. x[np.isfinite(x)])"
            )
        self._range = (float(low), float(high))
        self._values, self._buffer = _snapshot(np, array)  # the caller may change its array from now on
        self.nbytes = array.nbytes

    def _from_tensor(self, torch, tensor) -> None:
        if tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise TypeError(f"mldash.Histogram: values of {tensor.dtype} are not supported; use ints or floats")
        if tensor.numel() == 0:
            raise ValueError("mldash.Histogram: no values")
        tensor = tensor.detach()
        self.nbytes = tensor.numel() * tensor.element_size()
        if tensor.device.type == "cpu":
            if tensor.dtype in (torch.float16, torch.bfloat16):
                tensor = tensor.float()  # numpy has no bfloat16
            self._from_array(tensor.numpy())
            return
        # On an accelerator: a copy on the device, and an event; the range, the NaN check
        # and the counts are computed on the writer thread, which alone waits for them.
        self._values = tensor.reshape(-1).clone()
        if tensor.device.type == "cuda":
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(tensor.device))
            self._event = event

    def __repr__(self) -> str:
        return f"mldash.Histogram(bins={self.bins})"

    # ---- the writer's side ----------------------------------------------------------------
    def reduce(self) -> dict:
        """The stored form (without its tag): bins, counts, min, max, mean, count."""
        if self._stats is None:
            if self._range is None:
                self._stats = self._reduce_on_device()
            else:
                self._stats = self._reduce_array()
            buffer, self._buffer = self._buffer, None
            self._values = self._event = None
            _media_snapshot._buffers.give(buffer)
        return self._stats

    def _reduce_array(self) -> dict:
        np = _need("numpy", "mldash.Histogram")
        values = self._values.reshape(-1)
        low, high = self._range
        lo, hi = (low - 0.5, high + 0.5) if low == high else (low, high)
        counts, _ = np.histogram(values, bins=self.bins, range=(lo, hi))
        edges = np.linspace(lo, hi, self.bins + 1)
        mean = float(values.mean(dtype=np.float64))
        return _stats(edges.tolist(), counts.tolist(), low, high, mean, int(values.size))

    def _reduce_on_device(self) -> dict:
        torch = sys.modules["torch"]
        if self._event is not None:
            self._event.synchronize()
        values = self._values
        if not values.is_floating_point():
            values = values.double()  # histc takes floats; ints below 2**53 stay exact
        elif values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        low, high = (v.item() for v in torch.aminmax(values))
        if not (math.isfinite(low) and math.isfinite(high)):
            nan = int(torch.isnan(values).sum().item())
            inf = int(torch.isinf(values).sum().item())
            raise ValueError(
                f"the histogram's values hold {nan:,} NaN and {inf:,} infinite of {values.numel():,}; "
                "a histogram takes finite values"
            )
        lo, hi = (low - 0.5, high + 0.5) if low == high else (low, high)
        counts = torch.histc(values, bins=self.bins, min=lo, max=hi).cpu().tolist()
        mean = (values.sum(dtype=torch.float64) / values.numel()).item()
        edges = [lo + (hi - lo) * k / self.bins for k in range(self.bins + 1)]
        return _stats(edges, [int(c) for c in counts], low, high, mean, int(values.numel()))


def _stats(edges: list, counts: list, low: float, high: float, mean: float, count: int) -> dict:
    return {"bins": [float(e) for e in edges], "counts": counts, "min": float(low), "max": float(high),
            "mean": float(mean), "count": count}
