"""``mldash sync``, added to the ``mldash`` command by ``register(main)``."""

from __future__ import annotations

import os

import click


def register(main: click.Group) -> None:
    main.add_command(sync_command)


@click.command("sync")
@click.argument("root", required=False, type=click.Path(file_okay=False))
@click.option(
    "--remote",
    envvar="MLDASH_URL",
    help="Server URL (default $MLDASH_URL, else the remote each run was started with).",
)
@click.option("--token", envvar="MLDASH_TOKEN", help="API token (default $MLDASH_TOKEN).")
@click.option("--namespace", help="Namespace on the server (default: each run's own, else 'default').")
@click.option(
    "--give-up-after",
    default=60.0,
    show_default=True,
    type=float,
    help="Seconds an unreachable server is retried before the sync fails.",
)
@click.option(
    "--accept-quarantined",
    is_flag=True,
    help="Stop reporting (and failing on) the records the server refused so far; they stay listed in each run's .sync/quarantine.jsonl.",
)
def sync_command(root, remote, token, namespace, give_up_after, accept_quarantined) -> None:
    """Upload what the server does not have yet, for every run under ROOT.

    \b
    Runs recorded offline upload from the start; runs cut short (server down,
    finish() timed out, an interrupted sync) continue where they stopped.
    Nothing is sent twice. ROOT defaults to $MLDASH_ROOT or .mldash.

    \b
    A record the server refuses is quarantined: listed here and in the run's
    .sync/quarantine.jsonl, skipped, and the rest goes through. The exit
    status is 1 while anything is quarantined (see --accept-quarantined),
    could not be uploaded, or has no remote.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from .sync import plan, run

    root = root or os.environ.get("MLDASH_ROOT") or ".mldash"
    console = Console(highlight=False, soft_wrap=True)
    if not os.path.isdir(root):
        raise click.ClickException(f"no such directory {os.path.abspath(root)!r}")
    jobs, result = plan(root, remote, namespace, accept_quarantined)
    if result.no_remote:
        console.print(
            f"[yellow]{len(result.no_remote)} run(s) have no remote; pass --remote URL or set MLDASH_URL:[/] "
            + escape(", ".join(result.no_remote[:5]))
            + (" ..." if len(result.no_remote) > 5 else "")
        )
    if not jobs:
        if result.up_to_date and not result.quarantined:
            console.print(f"All {len(result.up_to_date)} run(s) under {escape(os.path.abspath(root))} are up to date.")
        elif result.up_to_date:
            console.print(f"{len(result.up_to_date)} run(s) under {escape(os.path.abspath(root))} are up to date.")
        elif not result.no_remote and not result.quarantined:
            console.print(f"No experiments found under {escape(os.path.abspath(root))}.")
        _print_quarantined(console, result)
        if result.no_remote or result.quarantined:
            raise SystemExit(1)
        return
    total = sum(job.pending.bytes for job in jobs)
    console.print(
        f"Uploading {len(jobs)} run(s) ({_size(total)}) to "
        + escape(", ".join(sorted({job.url for job in jobs})))
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("sync", total=total)

        def on_job(job) -> None:
            bar.update(task, description=escape(job.prefix))

        def advance(n: int) -> None:
            bar.advance(task, n)

        try:
            run(jobs, token, result, progress=advance, on_job=on_job, give_up_after=give_up_after)
        except KeyboardInterrupt:
            bar.stop()
            console.print("Interrupted. Run the same command again to continue where it stopped.")
            raise SystemExit(130) from None
        bar.update(task, description="done" if not result.failed else "stopped", completed=max(total, result.bytes_sent))
    if result.uploaded:
        console.print(f"[green]Uploaded {len(result.uploaded)} run(s).[/]")
    _print_quarantined(console, result)
    if result.failed:
        for prefix, error in result.failed.items():
            console.print(f"[red]{escape(prefix)}: {escape(error)}[/]")
        if result.retryable:
            console.print("Run the same command again to continue; what was acknowledged is not sent twice.")
        else:
            console.print(
                "Fix what the server answered (a token, say), then run the same command again; "
                "what was acknowledged is not sent twice."
            )
    if result.failed or result.no_remote or result.quarantined:
        raise SystemExit(1)


def _print_quarantined(console, result) -> None:
    """Each record (series point, log, key...) or run the server refused, and why."""
    from rich.markup import escape

    from ._files import describe_problem
    from ._state import quarantine_path

    if not result.quarantined:
        return
    n = sum(len(entries) for entries in result.quarantined.values())
    console.print(
        f"[red]The server refused {n} record(s) of {len(result.quarantined)} run(s); they are quarantined: "
        "not uploaded, kept in the local files, and the rest of each run went through:[/]"
    )
    for prefix, entries in result.quarantined.items():
        for entry in entries:
            console.print(f"  {escape(prefix)}: {escape(describe_problem(entry))}")
    for prefix in result.quarantined:
        path = result.paths.get(prefix)
        if path:
            console.print(f"  listed in {escape(quarantine_path(path))}")
    if any(e.get("kind") == "run" for entries in result.quarantined.values() for e in entries):
        console.print(
            "A run refused as a whole uploads nothing: when another run holds its name on the server, upload it "
            "under another --namespace or another name (docs/remote.md, \"a collision\"); it is retried on every sync."
        )
    console.print(
        "Once you have dealt with refused records, `mldash sync --accept-quarantined` stops reporting them."
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
