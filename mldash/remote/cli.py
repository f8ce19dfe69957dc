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
def sync_command(root, remote, token, namespace, give_up_after) -> None:
    """Upload what the server does not have yet, for every run under ROOT.

    \b
    Runs recorded offline upload from the start; runs cut short (server down,
    finish() timed out, an interrupted sync) continue where they stopped.
    Nothing is sent twice. ROOT defaults to $MLDASH_ROOT or .mldash.
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
    jobs, result = plan(root, remote, namespace)
    if result.no_remote:
        console.print(
            f"[yellow]{len(result.no_remote)} run(s) have no remote; pass --remote URL or set MLDASH_URL:[/] "
            + escape(", ".join(result.no_remote[:5]))
            + (" ..." if len(result.no_remote) > 5 else "")
        )
    if not jobs:
        if result.up_to_date:
            console.print(f"All {len(result.up_to_date)} run(s) under {escape(os.path.abspath(root))} are up to date.")
        elif not result.no_remote:
            console.print(f"No experiments found under {escape(os.path.abspath(root))}.")
        if result.no_remote:
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
    if result.failed:
        for prefix, error in result.failed.items():
            console.print(f"[red]{escape(prefix)}: {escape(error)}[/]")
        console.print(
            "Run the same command again to continue; what was acknowledged is not sent twice."
        )
        raise SystemExit(1)
    if result.no_remote:
        raise SystemExit(1)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
