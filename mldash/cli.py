"""The ``mldash`` command: ls, show, ui, server, sync."""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys

try:
    import click
except ImportError:  # pragma: no cover - the message is the feature
    click = None


def _need_cli() -> None:
    if click is None:
        sys.exit("The mldash command needs click and rich: pip install 'mldash[cli]'")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _duration(meta: dict) -> str:
    if meta.get("duration") is not None and meta.get("status") != "RUNNING":
        seconds = meta["duration"]
    elif meta.get("started_at"):
        import time

        seconds = (meta.get("duration") or 0) + time.time() - (meta.get("resumed_at") or meta["started_at"])
    else:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    if value is None:
        return "-"
    return str(value)


_STATUS_STYLE = {"RUNNING": "cyan", "COMPLETED": "green", "FAILED": "bold red", "CANCELLED": "yellow"}


def _status(meta: dict) -> str:
    status = meta.get("status") or "?"
    style = _STATUS_STYLE.get(status, "")
    text = f"[{style}]{status}[/]" if style else status
    if meta.get("stale"):
        text += " [dim](process gone)[/]"
    return text


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def print_experiments(rows: list[dict], title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ._runfolder import headline

    table = Table(title=title, title_justify="left")
    for column in ("experiment", "status", "started", "duration", "latest metrics"):
        table.add_column(column, overflow="fold")
    for meta in rows:
        latest = meta.get("metrics") or {}
        shown = ", ".join(f"{name}={_fmt(headline(p))}" for name, p in list(latest.items())[:4])
        if len(latest) > 4:
            shown += f", +{len(latest) - 4}"
        table.add_row(
            escape(meta.get("prefix", "?")),
            _status(meta),
            _when(meta.get("started_at")),
            _duration(meta),
            escape(shown),
        )
    _console().print(table)


if click is not None:

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
    def ls_command(root, remote, token, project, status) -> None:
        """List experiments with status, times and latest metric values."""
        if remote:
            from .remote.client import list_remote_experiments

            try:
                rows = list_remote_experiments(remote, token, project=project, status=status)
            except RuntimeError as error:  # unreachable or refused: the message says which
                raise click.ClickException(str(error)) from None
            title = f"experiments on {remote}"
        else:
            from ._runfolder import experiment_summary, find_experiments

            root = root or os.environ.get("MLDASH_ROOT") or ".mldash"
            rows = [experiment_summary(p) for p in find_experiments(root)]
            rows = [
                r for r in rows
                if (project is None or r.get("project") == project)
                and (status is None or r.get("status") == status)
            ]
            title = f"experiments in {os.path.abspath(root)}"
        rows.sort(key=lambda r: r.get("started_at") or 0, reverse=True)
        if not rows:
            click.echo(f"No experiments found ({title}).")
            return
        print_experiments(rows, title)

    @main.command("show")
    @click.argument("prefix")
    @click.option("--root", type=click.Path(file_okay=False), help="Local root (default .mldash).")
    @click.option("--logs", "log_count", default=20, show_default=True, help="How many recent logs.")
    @click.option("--console", "console_count", default=20, show_default=True,
                  help="How many of the last console lines.")
    def show_command(prefix, root, log_count, console_count) -> None:
        """Show one experiment: parameters, metrics and its last logs."""
        from rich.markup import escape
        from rich.table import Table

        from ._runfolder import LOGS_DIR, experiment_summary, metric_folder, read_log_records, resolve

        root = root or os.environ.get("MLDASH_ROOT") or ".mldash"
        try:
            path = resolve(root, prefix)
        except (FileNotFoundError, ValueError) as error:
            raise click.ClickException(str(error)) from None
        meta = experiment_summary(path)
        console = _console()
        console.print(f"[bold]{escape(meta.get('prefix', prefix))}[/]  {_status(meta)}")
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

        if meta["params"]:
            table = Table(title="parameters", title_justify="left")
            table.add_column("name")
            table.add_column("value", overflow="fold")
            for key in sorted(meta["params"]):
                table.add_row(escape(key), escape(_fmt(meta["params"][key])))
            console.print(table)
        if meta["summary"]:
            table = Table(title="summary", title_justify="left")
            table.add_column("name")
            table.add_column("value", overflow="fold")
            for key in sorted(meta["summary"]):
                table.add_row(escape(key), escape(_fmt(meta["summary"][key])))
            console.print(table)
        if meta["metrics"]:
            table = Table(title="metrics (latest point)", title_justify="left")
            for column in ("series", "points", "index", "time", "fields"):
                table.add_column(column, overflow="fold")
            from ._series import SeriesReader

            for name, point in meta["metrics"].items():
                count = SeriesReader(metric_folder(path, name)).count()
                fields = ", ".join(f"{k}={_fmt(v)}" for k, v in point["data"].items())
                table.add_row(
                    escape(name), str(count), str(point["index"]), _when(point["timestamp"]), escape(fields)
                )
            console.print(table)
        logs_folder = os.path.join(path, LOGS_DIR)
        total = read_log_records(logs_folder, 0, 0)["total"]
        records = read_log_records(logs_folder, max(0, total - log_count), log_count)["data"]
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
        from rich.text import Text

        from ._console import console_tail

        tail = console_tail(path, console_count) if console_count > 0 else []
        if tail:
            console.print(f"[bold]console (last {len(tail)} lines)[/]")
            for record in tail:  # ANSI colours rendered, nothing else interpreted
                console.print(Text.from_ansi(record.get("text", ""), style="red" if record.get("stream") == "stderr" else ""))

else:  # pragma: no cover

    def main() -> None:
        _need_cli()


def _register_optional_commands() -> None:
    """Commands whose modules bring their own dependencies (server, ui, sync)."""
    if click is None:
        return
    for module in ("mldash.ui.cli", "mldash.server.cli", "mldash.remote.cli"):
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
