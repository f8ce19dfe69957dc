"""``mldash export``: the runs table and every run's series, as files another tool reads.

```
OUT/runs.<ext>                          one row per run (as ``runs.to_pandas()``)
OUT/series/<prefix>/<metric>.<ext>      each series at full resolution: index, timestamp, fields
OUT/tensorboard/<prefix>/events.*       --format tensorboard: every numeric field as a scalar
```
``jsonl`` needs nothing beyond mldash and keeps values exactly (big ints and NaN as the
codec's ``$int``/``$float`` tags); ``csv`` and ``parquet`` go through pandas (and pyarrow),
the ``analysis`` extra (parquet writes a column it cannot type, such as ints past 64 bits,
as text); ``tensorboard`` through the ``tensorboard`` package. A reader: it
never imports the write side. Works the same on local runs and a server's
(``mldash.runs(remote=...)``).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from typing import Any, Callable, Iterable, Iterator

from . import _codec
from ._naming import metric_parts
from ._runfolder import iter_points

FORMATS = ("csv", "parquet", "jsonl", "tensorboard")
PAGE = 50_000  # points a read; a series is written page by page


def _points(metric) -> Iterator[dict]:
    return iter_points(metric.read, PAGE)


def _target(out: str, *parts: str) -> str:
    """A path below ``out`` from checked names (a prefix's or a metric's parts)."""
    path = os.path.join(out, *parts)
    if os.path.commonpath([os.path.abspath(path), os.path.abspath(out)]) != os.path.abspath(out):
        raise ValueError(f"{'/'.join(parts)!r} would be written outside {out}")  # never: names are checked
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _write_atomic(path: str, write: Callable[[str], None]) -> None:
    tmp = f"{path}.part"
    try:
        write(tmp)
        os.replace(tmp, path)  # a reader never sees half an export
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk keeps no half file
        raise


def _to_parquet(frame, path: str, index: bool) -> None:
    """Parquet holds one type a column: a column it cannot (ints past 64 bits, mixed kinds)
    is written as text, each value as ``str()`` (None stays null)."""
    import pyarrow as pa

    for column in frame.columns:
        if frame[column].dtype == object:
            try:
                pa.array(frame[column], from_pandas=True)
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                frame[column] = frame[column].map(lambda v: v if v is None or v != v else str(v))
    frame.to_parquet(path, index=index)


def _export_table(runs, fmt: str, path: str) -> None:
    if fmt == "jsonl":
        from ._frames import _run_row

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                for run in runs:
                    f.write(_codec.dumps_line(_run_row(run)))
    else:
        frame = runs.to_pandas()

        def write(tmp: str) -> None:
            if fmt == "csv":
                frame.to_csv(tmp, index=False)
            else:
                _to_parquet(frame, tmp, index=False)
    _write_atomic(path, write)


def _export_series(metric, fmt: str, path: str, advance: Callable[[int], None]) -> None:
    if fmt == "jsonl":
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                for point in _points(metric):
                    f.write(_codec.dumps_line({"index": point["index"], "timestamp": point["timestamp"],
                                               **point["data"]}))
                    advance(1)
    else:
        frame = metric.to_pandas()

        def write(tmp: str) -> None:
            if fmt == "csv":
                frame.to_csv(tmp)
            else:
                _to_parquet(frame, tmp, index=True)
            advance(len(frame))
    _write_atomic(path, write)


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int past a double's range
        return math.copysign(math.inf, value)


def _export_tensorboard(run, folder: str, advance: Callable[[int], None]) -> None:
    """One event file of the run's scalars, written with tensorboard's record format on a
    plain file (its EventFileWriter writes from a thread through TensorFlow's file layer
    where TensorFlow is installed, whose errors are not OSError): atomic, as the others."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise ImportError("--format tensorboard needs the tensorboard package: pip install tensorboard") from None
    os.makedirs(folder, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.mldash"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            for metric in run.metric_names():
                for point in _points(run.metrics(metric)):
                    data = point["data"]
                    step = data.get("step")
                    if isinstance(step, float) and step.is_integer():
                        step = int(step)  # 7.0 is step 7
                    step = step if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < 2**63 else point["index"]
                    fields = [(k, _scalar(v)) for k, v in data.items() if k not in ("step", "epoch") or len(data) == 1]
                    values = [summary_pb2.Summary.Value(tag=metric if k == "value" else f"{metric}/{k}", simple_value=v)
                              for k, v in fields if v is not None]
                    if values:
                        event = event_pb2.Event(wall_time=point["timestamp"], step=step,
                                                summary=summary_pb2.Summary(value=values))
                        writer.write(event.SerializeToString())
                    advance(1)

    _write_atomic(os.path.join(folder, name), write)
    for old in os.listdir(folder):  # an earlier export's events: TensorBoard would read both
        if old != name and old.startswith("events.out.tfevents.") and old.endswith(".mldash"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, old))


def export(runs, out: str, fmt: str, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``runs`` (``mldash.runs(...)``) under ``out`` in ``fmt``; ``progress(done, total)``
    hears of every point written. Returns counts: runs, series, points."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt in ("csv", "parquet"):
        from ._frames import _need

        _need("pandas")
        if fmt == "parquet":
            _need("pyarrow")
    os.makedirs(out, exist_ok=True)
    plan = [(run, name, len(run.metrics(name))) for run in runs for name in run.metric_names()]
    total, done = sum(n for _, _, n in plan), [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    if fmt == "tensorboard":
        for run in runs:
            _export_tensorboard(run, os.path.dirname(_target(out, "tensorboard", *run.prefix.split("/"), "events")), advance)
    else:
        _export_table(runs, fmt, _target(out, f"runs.{fmt}"))
        for run, name, _count in plan:
            parts = metric_parts(name)
            parts[-1] += f".{fmt}"
            _export_series(run.metrics(name), fmt, _target(out, "series", *run.prefix.split("/"), *parts), advance)
    return {"runs": len(runs), "series": len(plan), "points": done[0]}


def selected(all_runs, prefixes: Iterable[str]):
    """The runs named by ``prefixes`` (a run's prefix, or a folder of runs), in that order;
    a prefix that names none is a LookupError."""
    runs, chosen = list(all_runs), []
    for prefix in prefixes:
        prefix = prefix.strip("/")
        found = [r for r in runs if r.prefix == prefix or r.prefix.startswith(prefix + "/")]
        if not found:
            raise LookupError(f"no run {prefix!r}")
        chosen += [r for r in found if r not in chosen]
    from ._runs import Runs

    return Runs(chosen)


def register(main) -> None:
    """Add ``mldash export`` to the command line."""
    import click

    @main.command("export")
    @click.argument("prefixes", nargs=-1)
    @click.option("--filter", "filter_text", metavar="EXPR", help="The runs matching EXPR (docs/analysis.md).")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
    @click.option("--root", type=click.Path(file_okay=False), help="Local root (default $MLDASH_ROOT or .mldash).")
    @click.option("--remote", help="Export from this server instead (URL).")
    @click.option("--token", envvar="MLDASH_TOKEN", help="API token for --remote.")
    @click.option("--project", help="Only this project.")
    def export_command(prefixes, filter_text, fmt, out, root, remote, token, project) -> None:
        """Write the runs table and each run's series (PREFIX... or --filter) under --out."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from ._runs import runs

        if not prefixes and filter_text is None:
            raise click.UsageError("name the runs: PREFIX... or --filter EXPR (every run: --filter 'status != null')")
        if remote and root:
            raise click.UsageError("give --root or --remote, not both")
        try:
            found = runs(filter_text, project=project, root=None if remote else root, remote=remote, token=token)
            if prefixes:
                found = selected(found, prefixes)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--filter") from None
        except (LookupError, FileNotFoundError, RuntimeError) as error:
            raise click.ClickException(str(error.args[0] if error.args else error)) from None
        if not len(found):
            raise click.ClickException("no runs match")
        columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True, disable=not os.isatty(2)) as bar:
            task = bar.add_task("points", total=None)
            try:
                counts = export(found, out, fmt, lambda done, total: bar.update(task, completed=done, total=total))
            except ImportError as error:
                raise click.ClickException(str(error)) from None
            except OSError as error:  # a full or read-only disk, no permission
                where = f" ({error.filename})" if error.filename else ""
                raise click.ClickException(
                    f"cannot write the export to {out}: {error.strerror or error}{where}; the files written "
                    "before it are complete, the one it was writing is removed") from None
        click.echo(f"exported {counts['runs']} runs, {counts['series']} series, {counts['points']} points to {out}")
