"""The ``mldash`` command: ls, show, ui, server, sync.

click and rich are core dependencies; ``import mldash`` loads neither (only this
module does, and rich only once a command prints).
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import os
import sys
import time

try:
    import click
except ImportError:  # a broken install: the message is the feature
    click = None

_MISSING = [name for name, found in (("click", click is not None), ("rich", importlib.util.find_spec("rich") is not None))
            if not found]


def _need_cli() -> None:
    sys.exit(
        f"The mldash command needs {' and '.join(_MISSING)}, which `pip install mldash` brings, but this "
        "Python lacks them (a broken or partial install): pip install 'click>=8.1' 'rich>=13'"
    )


# ---- durations and times, as people read them -------------------------------------
def _seconds(meta: dict, now: float | None = None) -> float | None:
    """A run's duration in seconds; a RUNNING run's so far. None when it never started."""
    status, duration = meta.get("status"), meta.get("duration")
    if status != "RUNNING" and isinstance(duration, (int, float)):
        return max(0.0, float(duration))
    start = meta.get("resumed_at") or meta.get("started_at")
    if not isinstance(start, (int, float)):
        return None
    if status == "RUNNING":  # earlier sessions' time, plus this session's so far
        return max(0.0, (duration or 0) + (time.time() if now is None else now) - start)
    finished = meta.get("finished_at")
    return max(0.0, finished - start) if isinstance(finished, (int, float)) else None


def _duration_text(seconds: float | None) -> str:
    """420ms, 12.3s, 4:05, 1:02:03, 2d 3:04:05 (truncated, as a clock counts)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _duration(meta: dict) -> str:
    return _duration_text(_seconds(meta))


def _when(ts: float | None) -> str:
    if not isinstance(ts, (int, float)) or not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _ago(ts: float | None, now: float) -> str:
    """A start time relative to now (42s ago, 5m ago, 3h ago, 12d ago); a date past 30 days."""
    if not isinstance(ts, (int, float)) or not ts:
        return "-"
    delta = now - ts
    if delta < -60 or delta >= 30 * 86400:  # far off, or in the future (another host's clock)
        return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d")
    delta = max(0.0, delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    if value is None:
        return "-"
    if isinstance(value, dict) and value.get("type") == "image":  # a media value, read back
        return f"image {value.get('width')}x{value.get('height')}"
    if isinstance(value, dict) and value.get("type") == "histogram":
        return f"histogram, {len(value.get('counts') or ())} bins"
    return str(value)


_STATUS_STYLE = {"RUNNING": "cyan", "COMPLETED": "green", "FAILED": "bold red", "CANCELLED": "yellow"}


def _status(meta: dict, gone: str = "process gone") -> str:
    """The status as rich markup, coloured."""
    from rich.markup import escape

    status = str(meta.get("status") or "?")
    style = _STATUS_STYLE.get(status, "")
    text = f"[{style}]{status}[/]" if style else escape(status)
    if meta.get("stale"):
        text += f" [dim]({gone})[/]"
    return text


# ---- the console: as wide as the terminal, unbounded where there is none ------------
_UNBOUNDED = 100_000


def _terminal_width() -> int | None:
    """$COLUMNS, else the width of the terminal on stdin, stdout or stderr, else None."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (OSError, ValueError):
            continue
        if width > 0:
            return width
    return None


def _console():
    """rich's Console; with no terminal at all (a cron job, CI, a subprocess) lines are
    not cut to rich's 80 columns but printed whole. Colour only on a terminal."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if _terminal_width() else _UNBOUNDED)


# ---- mldash ls: one run a line, columns chosen and shortened to fit -----------------
_HEADERS = {"prefix": "experiment", "status": "status", "started": "started",
            "duration": "duration", "metrics": "latest metrics"}
_ALL = ("prefix", "status", "started", "duration", "metrics")
# Tried in order until the table fits the width: (borders, columns, compact). Compact
# shows start times relative and may shorten the prefix and the metrics; the columns
# least needed go first: the start (rows are sorted by it), then the duration, then
# the metrics. The prefix and the status always stay.
_LAYOUTS = (
    (True, _ALL, False),
    (False, _ALL, False),
    (False, _ALL, True),
    (False, ("prefix", "status", "duration", "metrics"), True),
    (False, ("prefix", "status", "metrics"), True),
    (False, ("prefix", "status"), True),
)
_MIN_PREFIX = (32, 20)  # 32: "project/" and a default run name, 20261126-034612-3f9a07c2
_MIN_METRICS = 20  # one "train/loss=0.1234 +5"
_SHOWN_METRICS = 4


def _elide(text: str, width: int, middle: bool = True, head: int | None = None) -> str:
    """``text`` in at most ``width`` terminal cells, with "…" in the middle (``head``
    cells of the start kept, by default a third, the rest from the end) or at the end."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:max(width, 0)]
    room = width - 1
    head_room = (room // 3 if head is None else min(head, room // 2)) if middle else room
    start, used = "", 0
    for char in text:
        if used + cell_len(char) > head_room:
            break
        start += char
        used += cell_len(char)
    end, left = "", room - used
    for char in reversed(text if middle else ""):
        if cell_len(char) > left:
            break
        end = char + end
        left -= cell_len(char)
    return start + "…" + end


def _metrics_cell(items: list[tuple[str, str]], width: int | None) -> str:
    """Up to four ``name=value`` and a ``+N`` for the rest; fewer where ``width`` is short,
    then the first one's name shortened (its value kept), the count of the others kept."""
    from rich.cells import cell_len

    if not items:
        return ""
    texts = [f"{name}={value}" for name, value in items]
    for count in range(min(_SHOWN_METRICS, len(texts)), 0, -1):
        text = ", ".join(texts[:count]) + (f", +{len(texts) - count}" if len(texts) > count else "")
        if width is None or cell_len(text) <= width:
            return text
    more = f" +{len(texts) - 1}" if len(texts) > 1 else ""
    room = width - cell_len(more)
    name, value = items[0]
    if room - cell_len(value) - 1 >= 4:  # at least "t…ss" of the name
        return _elide(name, room - cell_len(value) - 1) + "=" + value + more
    return _elide(texts[0], width, middle=False)


def _ls_cells(meta: dict, now: float) -> dict:
    from ._runfolder import headline

    latest = meta.get("metrics") or {}
    names = sorted(latest, key=lambda name: name.startswith("sys/"))  # the run's own series first
    return {
        "meta": meta,
        "prefix": str(meta.get("prefix") or "?"),
        "started": _when(meta.get("started_at")),
        "ago": _ago(meta.get("started_at"), now),
        "duration": _duration_text(_seconds(meta, now)),
        "metrics": [(name, _fmt(headline(latest[name]))) for name in names],
    }


def _plain(cell: dict, column: str, compact: bool, width: int | None = None) -> str:
    """A cell's text, shortened to ``width`` where given."""
    if column == "prefix":
        return cell["prefix"] if width is None else _elide(cell["prefix"], width)
    if column == "status":
        meta = cell["meta"]
        gone = " (gone)" if compact else " (process gone)"
        return (meta.get("status") or "?") + (gone if meta.get("stale") else "")
    if column == "started":
        return cell["ago"] if compact else cell["started"]
    if column == "duration":
        return cell["duration"]
    return _metrics_cell(cell["metrics"], width)


def _fit(cells: list[dict], width: int) -> tuple[bool, tuple, bool, dict]:
    """The first layout whose table fits ``width``: (borders, columns, compact, widths).

    The prefix and the metrics are shortened only in a compact layout, the prefix to no
    less than 32 columns while a column can still go, then, beside the metrics alone, to
    no less than 20 before they go too.
    """
    from rich.cells import cell_len

    tries = [(layout, _MIN_PREFIX[0]) for layout in _LAYOUTS[:-1]]
    tries += [(_LAYOUTS[-2], _MIN_PREFIX[1]), (_LAYOUTS[-1], 0)]  # a column never comes back
    for (borders, columns, compact), min_prefix in tries:
        natural = {
            column: max([cell_len(_HEADERS[column])] + [cell_len(_plain(c, column, compact)) for c in cells])
            for column in columns
        }
        overhead = 3 * len(columns) + 1 if borders else 3 * (len(columns) - 1)
        room = width - overhead - sum(w for c, w in natural.items() if c not in ("prefix", "metrics"))
        if natural["prefix"] + natural.get("metrics", 0) <= room:
            return borders, columns, compact, natural
        if not compact:
            continue
        widths = dict(natural)
        if "metrics" in columns:
            least_metrics = min(natural["metrics"], _MIN_METRICS)
            if room < min(natural["prefix"], min_prefix) + least_metrics:
                continue
            widths["metrics"] = max(least_metrics, room - natural["prefix"])
            widths["prefix"] = room - widths["metrics"]
        else:  # the last layout: the prefix gets what is left
            widths["prefix"] = max(room, 1)
        return borders, columns, compact, widths
    raise AssertionError("the last layout always fits")  # pragma: no cover


def print_experiments(rows: list[dict], title: str, console=None) -> None:
    """The ``mldash ls`` table: one run a line, fitted to ``console.width``."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = console or _console()
    now = time.time()
    cells = [_ls_cells(meta, now) for meta in rows]
    borders, columns, compact, widths = _fit(cells, console.width)
    table = Table(box=box.HEAVY_HEAD if borders else box.SIMPLE_HEAD, show_edge=borders, pad_edge=borders)
    for column in columns:
        table.add_column(_HEADERS[column], width=widths[column], no_wrap=True, overflow="ellipsis")
    for cell in cells:
        values = []
        for column in columns:
            if column == "status":
                values.append(_status(cell["meta"], "gone" if compact else "process gone"))
            else:
                values.append(escape(_plain(cell, column, compact, widths[column])))
        table.add_row(*values)
    head = title.find("/")  # "experiments in /path/to/root": the path is what shortens
    title = _elide(title, console.width, head=head if head > 0 else None)
    console.print(Text(title, style="table.title"), no_wrap=True, overflow="ellipsis")
    console.print(table)


# ---- --json: for scripts -------------------------------------------------------------
_ROW_KEYS = ("prefix", "project", "folder", "name", "namespace", "path", "status", "stale",
             "started_at", "finished_at", "duration", "tags", "description", "host")


def _json_row(meta: dict, now: float) -> dict:
    """One run as ``ls --json`` gives it: the same keys for every run, local or remote."""
    row = {key: meta.get(key) for key in _ROW_KEYS}
    row["stale"] = bool(meta.get("stale"))
    row["duration"] = _seconds(meta, now)
    row["tags"] = list(meta.get("tags") or [])
    row["params"] = meta.get("params") or {}
    row["summary"] = meta.get("summary") or {}
    row["metrics"] = {
        name: {"index": point.get("index"), "timestamp": point.get("timestamp"), "data": point.get("data") or {}}
        for name, point in (meta.get("metrics") or {}).items()
    }
    return row


def _print_json(value) -> None:
    """Indented JSON; NaN, ±inf and integers past 64 bits tagged as mldash stores them:
    {"$float": "NaN"}, {"$int": "<digits>"} (see mldash/_codec.py)."""
    import orjson

    from . import _codec

    click.echo(_codec.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _root(root: str | None) -> str:
    """ROOT, else $MLDASH_ROOT, else .mldash; a folder that does not exist is an error."""
    root = root or os.environ.get("MLDASH_ROOT") or ".mldash"
    if not os.path.isdir(root):
        raise click.ClickException(
            f"no runs at {os.path.abspath(root)}: the folder does not exist (runs are written to "
            ".mldash/ in the folder the program ran in, or to $MLDASH_ROOT)"
        )
    return root


def _no_such_run(root: str, prefix: str, error: Exception) -> click.ClickException:
    """The error of an unknown prefix, with the runs it may have meant."""
    import difflib

    from ._runfolder import find_experiments

    if isinstance(error, ValueError):  # not a prefix at all (../.., a control character)
        return click.ClickException(str(error))
    base = os.path.abspath(root)
    known = [os.path.relpath(path, base).replace(os.sep, "/") for path in find_experiments(root)]
    inside = [p for p in known if p.startswith(prefix.strip("/") + "/")]
    near = inside[:3] or difflib.get_close_matches(prefix, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else " (mldash ls lists them)"
    return click.ClickException(f"{error}{hint}")


def _print_run(meta: dict, path: str, counts: dict, total: int, records: list, tail: list) -> None:
    """What ``mldash show`` prints for one run."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = _console()
    console.print(f"[bold]{escape(meta.get('prefix', '?'))}[/]  {_status(meta)}")
    facts = [
        ("path", path),
        ("started", _when(meta.get("started_at"))),
        ("finished", _when(meta.get("finished_at"))),
        ("duration", _duration(meta)),
        ("host", f"{meta.get('host', '-')} (pid {meta.get('pid', '-')})"),
        ("command", " ".join(meta.get("argv") or [])),
    ]
    git = meta.get("git")
    if git:
        facts.append(("git", f"{git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''}"))
    if meta.get("tags"):
        facts.append(("tags", ", ".join(meta["tags"])))
    if meta.get("description"):
        facts.append(("description", meta["description"]))
    best = meta.get("best_checkpoint")
    if best:
        facts.append(("best checkpoint", f"{best.get('path')} (score {_fmt(best.get('score'))})"))
    for key, value in facts:
        console.print(f"  [dim]{key:>15}[/]  {escape(str(value))}")

    for title, document in (("parameters", meta["params"]), ("summary", meta["summary"])):
        if document:
            table = Table(title=title, title_justify="left")
            table.add_column("name")
            table.add_column("value", overflow="fold")
            for key in sorted(document):
                table.add_row(escape(key), escape(_fmt(document[key])))
            console.print(table)
    if meta["metrics"]:
        table = Table(title="metrics (latest point)", title_justify="left")
        for column in ("series", "points", "index", "time", "fields"):
            table.add_column(column, overflow="fold")
        for name, point in meta["metrics"].items():
            fields = ", ".join(f"{k}={_fmt(v)}" for k, v in point["data"].items())
            table.add_row(
                escape(name), str(counts[name]), str(point["index"]), _when(point["timestamp"]), escape(fields)
            )
        console.print(table)
    if records:
        table = Table(title=f"last {len(records)} of {total} logs", title_justify="left")
        for column in ("time", "level", "message"):
            table.add_column(column, overflow="fold")
        for record in records:
            level = record.get("level", "info")
            style = {"error": "red", "fatal": "bold red", "warn": "yellow", "debug": "dim"}.get(level, "")
            table.add_row(
                _when(record.get("timestamp")),
                f"[{style}]{level}[/]" if style else level,
                escape(record.get("message", "")),
            )
        console.print(table)
        errors = [r for r in records if r.get("level") in ("error", "fatal")]
        trace = (errors[-1].get("metadata") or {}).get("traceback") if errors else None
        if trace:
            console.print("[bold red]last error[/]")
            console.print(escape(trace), style="red")
    if tail:
        console.print(f"[bold]console (last {len(tail)} lines)[/]")
        for record in tail:  # ANSI colours rendered, nothing else interpreted
            console.print(Text.from_ansi(record.get("text", ""), style="red" if record.get("stream") == "stderr" else ""))


if not _MISSING:

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="mldash")
    def main() -> None:
        """mldash: track parameters, metrics and logs of training runs.

        \b
        Runs are written under .mldash/ (or $MLDASH_ROOT) by mldash.Experiment;
        these commands list them, show one, serve the dashboard or a team server,
        and upload runs to a server.
        """

    @main.command("ls")
    @click.argument("root", required=False, type=click.Path(file_okay=False))
    @click.option("--remote", help="List the experiments on this server instead (URL).")
    @click.option("--token", envvar="MLDASH_TOKEN", help="API token for --remote.")
    @click.option("--project", help="Only this project.")
    @click.option("--status", type=click.Choice(["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]))
    @click.option("--filter", "filter_text", metavar="EXPR",
                  help='Only runs matching EXPR, e.g. "params.lr < 1e-3 and status = COMPLETED" (docs/analysis.md).')
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the runs as one JSON array, nothing shortened (for scripts).")
    def ls_command(root, remote, token, project, status, filter_text, as_json) -> None:
        """List experiments with status, times and latest metric values."""
        if remote:
            if root:
                raise click.UsageError("give ROOT or --remote, not both")
            from .remote.client import list_remote_experiments

            try:
                rows = list_remote_experiments(remote, token, project=project, status=status, filter=filter_text)
            except ValueError as error:  # a filter the server refused: its caret message
                raise click.BadParameter(str(error), param_hint="--filter") from None
            except RuntimeError as error:  # unreachable or refused: the message says which
                raise click.ClickException(str(error)) from None
            title = f"experiments on {remote}"
        else:
            from ._runfolder import experiment_summary, find_experiments

            root = _root(root)
            rows = [experiment_summary(p) for p in find_experiments(root)]
            rows = [
                r for r in rows
                if (project is None or r.get("project") == project)
                and (status is None or r.get("status") == status)
            ]
            if filter_text:
                from ._runs import runs

                try:
                    keep = set(runs(filter_text, root=root, project=project).prefixes)
                except ValueError as error:  # the filter, with a caret under the place
                    raise click.BadParameter(str(error), param_hint="--filter") from None
                rows = [r for r in rows if r.get("prefix") in keep]
            title = f"experiments in {os.path.abspath(root)}"
        rows.sort(key=lambda r: r.get("started_at") or 0, reverse=True)
        if as_json:
            now = time.time()
            _print_json([_json_row(meta, now) for meta in rows])
            return
        if not rows:
            click.echo(f"No experiments found ({title}).")
            return
        print_experiments(rows, title)

    @main.command("show")
    @click.argument("prefix")
    @click.option("--root", type=click.Path(file_okay=False), help="Local root (default .mldash).")
    @click.option("--logs", "log_count", default=20, show_default=True, type=click.IntRange(min=0),
                  help="How many recent logs.")
    @click.option("--console", "console_count", default=20, show_default=True, type=click.IntRange(min=0),
                  help="How many of the last console lines.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the run as one JSON object, nothing shortened (for scripts).")
    def show_command(prefix, root, log_count, console_count, as_json) -> None:
        """Show one experiment: parameters, metrics and its last logs."""
        from ._console import console_tail
        from ._runfolder import LOGS_DIR, experiment_summary, metric_folder, read_log_records, resolve
        from ._series import SeriesReader

        root = _root(root)
        try:
            path = resolve(root, prefix)
        except (FileNotFoundError, ValueError) as error:
            raise _no_such_run(root, prefix, error) from None
        meta = experiment_summary(path)
        counts = {name: SeriesReader(metric_folder(path, name)).count() for name in meta["metrics"]}
        logs_folder = os.path.join(path, LOGS_DIR)
        total = read_log_records(logs_folder, 0, 0)["total"]
        records = read_log_records(logs_folder, max(0, total - log_count), log_count)["data"] if log_count else []
        tail = console_tail(path, console_count) if console_count > 0 else []
        if as_json:
            doc = _json_row(meta, time.time())
            doc["metrics"] = {name: {"count": counts[name], **point} for name, point in doc["metrics"].items()}
            doc["logs"] = {"total": total, "last": records}
            doc["console"] = tail
            doc["meta"] = {k: v for k, v in meta.items() if k not in ("params", "summary", "metrics", "path", "stale")}
            _print_json(doc)
            return
        _print_run(meta, path, counts, total, records, tail)

else:  # pragma: no cover

    def main() -> None:
        _need_cli()


def _register_optional_commands() -> None:
    """Commands whose modules bring their own dependencies (server, ui, sync)."""
    if _MISSING:
        return
    for module in ("mldash.ui.cli", "mldash.server.cli", "mldash.remote.cli", "mldash._export"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError as error:
            if error.name and error.name.startswith("mldash"):
                continue  # that part is not installed in this build
            raise
        mod.register(main)


_register_optional_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
