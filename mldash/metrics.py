"""Metric series: ``exp.metrics("loss").append(value=0.5, step=1)``."""

from __future__ import annotations

import os
from typing import Any, Iterable

from ._checks import MAX_TEXT, check_text
from ._hooks import RunHooks
from ._lines import count_points
from ._media import MEDIA_TYPES, load as media_load
from ._naming import check_field_name, metric_parts
from ._native import speedups
from ._queue import PLAIN
from ._runfolder import check_range, metric_folder, read_series
from ._series import SeriesReader

if speedups is not None:
    from ._speedups import MetricQueue, set_max_text, stamp

    set_max_text(MAX_TEXT)
else:
    from ._queue import MetricQueue, stamp


def coerce_value(key: Any, value: Any) -> Any:
    """Check one field on the caller's thread; return what the writer will store.

    numpy scalars and CPU tensors become Python numbers here (cheap and exact).
    A tensor on an accelerator is cloned, not read: ``.item()`` would wait for
    the device, so the writer thread reads it later.
    """
    check_field_name(key)
    cls = value.__class__
    if cls is str:
        return check_text(value, f"field {key!r}")
    if cls in PLAIN:
        return value
    if cls in MEDIA_TYPES:  # mldash.Image / Histogram: checked and copied when made
        return value
    if isinstance(value, (bool, int, float, str)):  # subclasses such as np.float64
        return value.item() if hasattr(value, "item") else value
    module = cls.__module__
    if module == "torch" or module.startswith("torch."):
        if value.numel() != 1:
            raise TypeError(
                f"field {key!r}: only a one-element tensor can be stored, got shape {tuple(value.shape)}"
            )
        if value.device.type == "cpu":
            return value.item()
        return value.detach().reshape(()).clone()
    if module == "numpy" or module.startswith("numpy"):
        if getattr(value, "size", 1) != 1:
            raise TypeError(
                f"field {key!r}: only a numpy scalar can be stored, got shape {getattr(value, 'shape', '?')}"
            )
        return value.item()
    if hasattr(value, "__float__") and not isinstance(value, (list, tuple, dict)):
        return float(value)  # Decimal, Fraction, jax and tensorflow scalars
    raise TypeError(
        f"field {key!r} has a value of type {cls.__name__}; metric values must be numbers, "
        "bools, strings, None, numpy/torch scalars, or mldash.Image / mldash.Histogram"
    )


def _coerce_fields(fields: dict) -> dict:
    """Checked fields: text that JSON cannot hold (a lone surrogate) or too much of
    it fails here, at the call, not later on the writer thread or the server."""
    checked = {k: coerce_value(k, v) for k, v in fields.items()}
    text = sum(len(v) for v in checked.values() if v.__class__ is str) + sum(map(len, checked))
    if text > MAX_TEXT:
        raise ValueError(
            f"a point holds {text:,} characters of text (field names and strings); at most {MAX_TEXT:,} are allowed"
        )
    return checked


def _check_batch(points: list) -> list[dict]:
    """The slow path: check every point, with a clear error at the first bad one."""
    checked = []
    for point in points:
        if not isinstance(point, dict):
            raise TypeError(f"append_batch() points must be dicts, got {type(point).__name__}")
        if not point:
            raise ValueError("append_batch() got an empty point")
        checked.append(_coerce_fields(point))  # a copy: the caller may reuse its dict
    return checked


class Metric(MetricQueue):
    """One named series of points. Get it with ``exp.metrics(name)``.

    ``append`` comes from ``MetricQueue``: in C where it was built.
    """

    __slots__ = ("name", "_hooks", "_folder", "has_media", "_media_load")

    def __init__(self, path: str, name: str, hooks: RunHooks) -> None:
        metric_parts(name)
        super().__init__()
        self.name = name
        self._hooks = hooks
        self._folder = metric_folder(path, name)
        self.has_media = False  # an Image or Histogram was queued: the writer makes them
        self._media_load = 0  # what the media queued weigh, in queue entries (see queued())
        # _trigger is 0: the first append takes the slow path, which starts the experiment.

    def _append_fields(self, fields: dict) -> None:
        """The checked path of ``append``: numpy, torch and other values, field
        names not seen before, bad input."""
        if not fields:
            raise ValueError("append() needs at least one field, e.g. append(value=0.5, step=1)")
        checked = _coerce_fields(fields)
        media = media_load(checked)
        if media:
            self._note_media(media)
        self._push(checked)
        if self.queued() >= self._trigger:
            self._on_trigger()

    def _note_media(self, load: int) -> None:
        self.has_media = True  # before the point is queued: the writer must see it
        self._media_load += load

    def _on_trigger(self) -> None:
        self._hooks.pressure(self)

    # ---- the run's side: its writer drains the queue, its triggers pace it --------------
    @property
    def folder(self) -> str:
        """Where the series' files are."""
        return self._folder

    @property
    def trigger(self) -> int:
        """Queue length at which an append takes the slow path (0: the next one does)."""
        return self._trigger

    @trigger.setter
    def trigger(self, value: int) -> None:
        self._trigger = value

    def queued(self) -> int:
        """Queue entries not taken by the writer yet (a point is several), and what the
        images and histograms among them weigh (their bytes / ``_media.LOAD_BYTES``):
        the writer's trigger and backpressure measure this."""
        return len(self._pending) + self._media_load

    def queued_points(self) -> int:
        return count_points(list(self._pending))

    def take(self) -> list:
        """Everything queued, removed from the queue (the writer's side)."""
        self._media_load = 0
        return self._take()

    def append_batch(self, points: Iterable[dict]) -> None:
        """Add many points at once; each is a dict of fields. All get one timestamp.

        >>> exp.metrics("loss").append_batch([{"value": 0.5, "step": 1}])  # doctest: +SKIP
        """
        if isinstance(points, dict):
            raise TypeError("append_batch() takes a list of dicts; use append(**fields) for one point")
        if not isinstance(points, list):
            points = list(points)
        if not points:
            return
        at = stamp()
        if not self._push_batch(points, at):
            checked = _check_batch(points)  # raises at the first bad point: nothing queued
            media = sum(map(media_load, checked))
            if media:
                self._note_media(media)
            for fields in checked:
                self._push(fields, at)
        if self.queued() >= self._trigger:
            self._on_trigger()

    def read(self, start_index: int = 0, limit: int = 1000) -> dict:
        """Points ``start_index`` onwards, at most ``limit`` of them.

        Returns ``{"data": [{"index", "timestamp", "data"}], "start_index",
        "end_index", "total", "has_more"}``; ``end_index`` is the index of the
        last point returned, so the next page starts at ``end_index + 1``.
        """
        check_range(start_index, limit)
        self._hooks.before_read()
        remote = None if os.path.exists(self._folder) else self._hooks.remote()
        if remote is not None:
            return remote.read_metric(self.name, start_index, limit)
        return read_series(self._folder, start_index, limit)

    def to_pandas(self):
        """Every point at full resolution as a pandas DataFrame: the ``index``, the
        write ``timestamp`` (UTC) and one column per field (docs/analysis.md). Needs
        the ``analysis`` extra."""
        from ._frames import series_frame

        self._hooks.before_read()
        return series_frame(self._folder)

    def to_polars(self):
        """The same points as a polars DataFrame (``index`` a column); needs polars."""
        from ._frames import series_polars

        self._hooks.before_read()
        return series_polars(self._folder)

    def __len__(self) -> int:
        self._hooks.before_read()
        return SeriesReader(self._folder).count()

    def __repr__(self) -> str:
        return f"Metric({self.name!r})"
