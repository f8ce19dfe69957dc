"""``mldash ui [ROOT]``: serve the dashboard over local runs."""

from __future__ import annotations

import os
import socket
import sys

import click

DEFAULT_PORT = 8750


def _bind(host: str, port: int) -> socket.socket:
    """Bind first, so the printed URL has the real port (``--port 0`` picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({error.strerror}); try --port 0 for a free port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def register(main: click.Group) -> None:
    @main.command("ui")
    @click.argument("root", required=False, type=click.Path(file_okay=False))
    @click.option("--port", "-p", default=DEFAULT_PORT, show_default=True, help="Port (0 picks a free one).")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a web browser.")
    @click.option(
        "--token",
        envvar="MLDASH_UI_TOKEN",
        help="Require this bearer token to read (recommended with --host other than 127.0.0.1).",
    )
    @click.option("--title", default="mldash", show_default=True, help="Title shown in the page.")
    @click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        envvar="MLDASH_UI_CACHE",
        help="Where parsed columns of big series are kept between runs "
        "(default $XDG_CACHE_HOME/mldash/ui or ~/.cache/mldash/ui).",
    )
    @click.option("--no-cache", is_flag=True, help="Keep no parsed columns on disk.")
    def ui_command(root, port, host, open_browser, token, title, cache_dir, no_cache) -> None:
        """Serve the dashboard over the runs in ROOT (default $MLDASH_ROOT or .mldash).

        \b
        Experiments table, one run's charts/logs/errors/checkpoints, and a
        compare view; it reads the files as training writes them, so running
        experiments update live. Read-only: it never changes ROOT (parsed
        columns of big series are cached under --cache-dir instead).
        """
        try:
            import uvicorn

            from .app import create_app, token_auth
            from .local import LocalSource
        except ImportError as error:  # pragma: no cover - the message is the feature
            raise click.ClickException(
                f"the dashboard needs starlette, uvicorn and numpy ({error}): pip install 'mldash[ui]'"
            ) from None

        root = root or os.environ.get("MLDASH_ROOT") or ".mldash"
        if not os.path.isdir(root):
            click.echo(f"note: {os.path.abspath(root)} does not exist yet; runs will appear once written.", err=True)
        if not _is_loopback(host) and not token:
            click.echo(
                f"warning: serving {os.path.abspath(root)} on {host} to anyone who can reach it; "
                "pass --token to require one.",
                err=True,
            )
        source = LocalSource(root, cache=False if no_cache else (cache_dir or True))
        source.warm_recent()  # in the background: the newest big series, before anyone asks
        app = create_app(source, auth=token_auth(token) if token else None, title=title)
        sock = _bind(host, port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        url = f"http://{shown}:{sock.getsockname()[1]}/"
        click.echo(f"mldash dashboard for {os.path.abspath(root)}")
        click.echo(f"  open {url}{'?token=' + token if token else ''}  (Ctrl+C to stop)")
        sys.stdout.flush()
        if open_browser:
            import webbrowser

            try:
                if not webbrowser.open(url):
                    click.echo("  (no browser found; open the URL above)")
            except Exception:  # a broken browser setup must not stop the server
                click.echo("  (could not start a browser; open the URL above)")
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        finally:
            source.close()
