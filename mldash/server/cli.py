"""``mldash server`` and ``mldash token create/list/revoke``.

Heavy imports (fastapi, uvicorn, sqlalchemy, boto3) happen inside the commands,
so ``mldash --help`` stays fast.
"""

from __future__ import annotations

import ipaddress
import os
import sys

import click

DEFAULT_DATA = os.path.join("~", ".mldash-server")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_storage(data: str | None, db: str | None, blob: str | None) -> tuple[str, str]:
    """The database and blob URLs: given ones, else SQLite and a folder under the data dir."""
    data = os.path.abspath(os.path.expanduser(data or os.environ.get("MLDASH_SERVER_DATA") or DEFAULT_DATA))
    db = db or os.environ.get("MLDASH_SERVER_DB") or "sqlite:///" + os.path.join(data, "mldash.db")
    blob = blob or os.environ.get("MLDASH_SERVER_BLOB") or os.path.join(data, "chunks")
    return db, blob


def _storage_options(fn):
    fn = click.option("--s3-endpoint", envvar="MLDASH_S3_ENDPOINT", help="Endpoint URL of an S3-compatible store (MinIO, moto, R2...).")(fn)
    fn = click.option("--blob", help="Where cold metric chunks go: a folder, or s3://bucket/prefix. [default: DATA/chunks]")(fn)
    fn = click.option("--db", help="Database URL: sqlite:///path.db or postgresql://user@host/db. [default: SQLite in DATA]")(fn)
    fn = click.option("--data", type=click.Path(file_okay=False), help=f"Folder for the embedded store. [default: $MLDASH_SERVER_DATA or {DEFAULT_DATA}]")(fn)
    return fn


def _open_store(data, db, blob, s3_endpoint):
    from .storage import Store

    db, blob = resolve_storage(data, db, blob)
    try:
        return Store(db, blob, s3_endpoint=s3_endpoint)
    except Exception as error:  # a bad URL or an unreachable database: say which
        raise click.ClickException(f"cannot open the store (db {db}, blobs {blob}): {error}") from None


def register(main: click.Group) -> None:
    @main.command("server")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback needs auth.")
    @click.option("--port", default=8765, show_default=True, type=int)
    @_storage_options
    @click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
    @click.option(
        "--auth",
        type=click.Choice(["auto", "required", "off"]),
        default="auto",
        show_default=True,
        help="auto: open until the first token is created, then required; required: always; off: open (loopback only).",
    )
    @click.option("--no-ui", is_flag=True, help="Serve only the API, not the dashboard.")
    @click.option("--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
    def server_command(host, port, data, db, blob, s3_endpoint, workers, auth, no_ui, log_level) -> None:
        """Run the team server: the HTTP API (/api/v1, docs at /docs) and the dashboard.

        \b
        Embedded (SQLite + a folder):   mldash server
        Team (PostgreSQL + S3):         mldash server --host 0.0.0.0 \\
            --db postgresql://mldash@dbhost/mldash --blob s3://bucket/mldash --workers 4
        On any address but loopback, create a token first: mldash token create NAME --write '*'
        """
        import orjson
        import uvicorn

        from .auth import list_tokens

        db_url, blob_url = resolve_storage(data, db, blob)
        if not is_loopback(host):
            store = _open_store(data, db, blob, s3_endpoint)
            active = [t for t in list_tokens(store) if t["revoked_at"] is None]
            store.close()
            if auth == "off" or (auth == "auto" and not active):
                raise click.ClickException(
                    f"refusing to serve {host} without authentication: anyone who can reach it could read and "
                    "write every experiment. Create a token first (mldash token create NAME --write '*' "
                    "with the same --db), or pass --auth required, or bind 127.0.0.1."
                )
            auth = "required"  # revoking the last token must never open the server
        os.environ["MLDASH_SERVER_CONFIG"] = orjson.dumps(
            {"db": db_url, "blob": blob_url, "s3_endpoint": s3_endpoint, "auth": auth, "ui": not no_ui}
        ).decode()
        if port == 0:  # a free port, found here so that the line below can name it
            import socket

            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        click.echo(f"mldash server on http://{host}:{port}  (db {_redact(db_url)}, chunks {blob_url}, auth {auth}, workers {workers})", err=True)
        options = {}
        try:
            import httptools  # noqa: F401

            options["http"] = "httptools"
        except ImportError:
            pass
        try:
            import uvloop  # noqa: F401

            options["loop"] = "uvloop"
        except ImportError:
            pass
        uvicorn.run(
            "mldash.server.app:factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
            **options,
        )

    _register_gc(main)

    @main.group("token")
    def token_group() -> None:
        """Manage API tokens of a team server (stored hashed in its database)."""

    @token_group.command("create")
    @click.argument("name")
    @click.option("--read", "read", multiple=True, help="Namespace it may read ('*' for all). Repeatable.")
    @click.option("--write", "write", multiple=True, help="Namespace it may write (and read). Repeatable.")
    @_storage_options
    def token_create(name, read, write, data, db, blob, s3_endpoint) -> None:
        """Create a token and print its secret (shown once).

        \b
        mldash token create ci --write team-a --read '*'
        """
        from .auth import create_token

        store = _open_store(data, db, blob, s3_endpoint)
        try:
            token_id, secret = create_token(store, name, read, write)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        finally:
            store.close()
        click.echo(f"token {token_id} ({name}) created; keep the secret, it is not stored:", err=True)
        click.echo(secret)

    @token_group.command("list")
    @_storage_options
    def token_list(data, db, blob, s3_endpoint) -> None:
        """List tokens: id, name, scopes, created, revoked."""
        import datetime as dt

        from .auth import list_tokens

        store = _open_store(data, db, blob, s3_endpoint)
        rows = list_tokens(store)
        store.close()
        if not rows:
            click.echo("No tokens.")
            return
        when = lambda t: dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"  # noqa: E731
        click.echo(f"{'id':>4}  {'name':20}  {'read':20}  {'write':20}  {'created':16}  revoked")
        for t in rows:
            click.echo(
                f"{t['id']:>4}  {t['name'][:20]:20}  {','.join(t['read'])[:20]:20}  {','.join(t['write'])[:20]:20}  "
                f"{when(t['created_at']):16}  {when(t['revoked_at'])}"
            )

    @token_group.command("revoke")
    @click.argument("token_id", type=int)
    @_storage_options
    def token_revoke(token_id, data, db, blob, s3_endpoint) -> None:
        """Revoke a token by id (servers notice within two seconds)."""
        from .auth import revoke_token

        store = _open_store(data, db, blob, s3_endpoint)
        done = revoke_token(store, token_id)
        store.close()
        if not done:
            raise click.ClickException(f"no active token with id {token_id}")
        click.echo(f"token {token_id} revoked")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _register_gc(main: click.Group) -> None:
    @main.command("gc")
    @click.option("--older-than", default="24h", show_default=True,
                  help="Grace period: leave what was used more recently (90, 30m, 24h, 7d).")
    @click.option("--dry-run", is_flag=True, help="Say what would be freed; free nothing.")
    @_storage_options
    def gc_command(older_than, dry_run, data, db, blob, s3_endpoint) -> None:
        """Free the team server's file storage that no file holds: the bytes of deleted
        or replaced files, and uploads nobody went on with (S3 multipart parts, temp
        files). Safe while the server runs.

        \b
        mldash gc --db postgresql://mldash@db/mldash --blob s3://bucket/mldash --dry-run
        """
        from ._files_gc import parse_age

        try:
            grace = parse_age(older_than)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--older-than") from None
        db_url, blob_url = resolve_storage(data, db, blob)
        for url in (db_url, blob_url):  # a mistyped path must not make a new, empty store
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None if "://" in url else url
            if path is not None and not os.path.exists(path):
                raise click.ClickException(f"no mldash server store at {path}: check --data, --db and --blob")
        store = _open_store(data, db, blob, s3_endpoint)
        try:
            found = store.collect_garbage(grace, dry_run=dry_run)
        finally:
            store.close()
        verb = "would free" if dry_run else "freed"
        click.echo(f"{verb} {found['blobs']} file blob{'s' * (found['blobs'] != 1)} ({_size(found['blob_bytes'])}) "
                   f"and {found['uploads']} abandoned upload{'s' * (found['uploads'] != 1)} "
                   f"({_size(found['upload_bytes'])})")
        if found["not_in_store"]:
            click.echo(f"warning: {found['not_in_store']} unused blob(s) the database names are not in the blob store "
                       f"{_redact(blob_url)}; they were left alone (is --blob right?)", err=True)


def _redact(url: str) -> str:
    """A database URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: mldash server")
