"""Real servers for tests: `mldash server` subprocesses, a throwaway PostgreSQL
cluster and moto's S3 server. Shared by the server and the remote-client tests.

Use the plain functions, or the pytest fixtures by importing them into a test
module (fixtures defined here are only seen where they are imported)::

    from _server_support import backend, moto_s3, postgres, server  # noqa: F401

    def test_something(server):          # runs once on "embedded", once on "postgres"
        httpx.get(server.url + "/api/v1/health")

``backend`` is parametrized over "embedded" (SQLite + a folder) and "postgres"
(a fresh database in a session-wide cluster + a fresh prefix in a moto bucket);
``backend.start_server()`` starts as many servers on that one store as a test needs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _procs import stop_process

PG_BIN = Path(os.environ.get("MLDASH_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "mldashpg"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# -- mldash server --------------------------------------------------------------


@dataclass
class ServerProcess:
    """One `mldash server` subprocess. ``url`` is e.g. http://127.0.0.1:41234."""

    args: list[str]
    port: int
    log_path: Path
    env: dict
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ServerProcess":
        import httpx

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mldash server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"mldash server not healthy after {timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self, timeout: float = 30) -> "ServerProcess":
        """Start again on the same port and store (after kill() or stop())."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(
    db: str | None = None,
    blob: str | None = None,
    *,
    data: str | os.PathLike | None = None,
    s3_endpoint: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    extra_args: list[str] = (),
    env: dict | None = None,
    timeout: float = 30,
) -> ServerProcess:
    """Start `mldash server` and wait until /api/v1/health answers.

    With no db/blob it runs embedded under ``data`` (a new temp folder if None).
    """
    if data is None and (db is None or blob is None):
        data = tempfile.mkdtemp(prefix="mldash-server-")
    port = port or free_port()
    args = [sys.executable, "-m", "mldash", "server", "--host", host, "--port", str(port)]
    if data is not None:
        args += ["--data", str(data)]
    if db:
        args += ["--db", db]
    if blob:
        args += ["--blob", blob]
    if s3_endpoint:
        args += ["--s3-endpoint", s3_endpoint]
    args += list(extra_args)
    full_env = {**os.environ, **AWS_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_dir = Path(data) if data is not None else Path(tempfile.mkdtemp(prefix="mldash-server-log-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(args, port, log_dir / f"server-{port}.log", full_env)
    return server.start(timeout)


def mldash_cli(*args: str, db: str | None = None, data: str | os.PathLike | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `mldash ARGS... [--db DB] [--data DATA]` (e.g. token create) and return the result."""
    extra = (["--db", db] if db else []) + (["--data", str(data)] if data is not None else [])
    return subprocess.run(
        [sys.executable, "-m", "mldash", *args, *extra], capture_output=True, text=True, timeout=60,
        env={**os.environ, **AWS_ENV, **(env or {})},
    )


# -- PostgreSQL -----------------------------------------------------------------


def _ensure_pg_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER], check=True)


def _as_pg_user(*cmd: str, **kw) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, **kw)


@dataclass
class PostgresCluster:
    """A throwaway cluster: ``url`` is the server, ``create_database()`` a fresh db in it."""

    data_dir: Path
    port: int
    _dbs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str | None = None) -> str:
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            _as_pg_user(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def pg_available() -> bool:
    return (PG_BIN / "initdb").exists() and shutil.which("runuser") is not None


def start_postgres(*, fsync: bool = False, timeout: float = 60) -> PostgresCluster:
    """initdb + pg_ctl start as an unprivileged user (PostgreSQL refuses root).

    Listens on 127.0.0.1 on a free port, trust auth for user ``postgres``.
    ``fsync=False`` for tests: we kill servers, never the machine.
    """
    if not pg_available():
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}")
    if os.geteuid() == 0:
        _ensure_pg_user()
    base = Path(tempfile.mkdtemp(prefix="mldash-pg-"))  # under /tmp: pytest's tmp dirs are root-only
    data_dir = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, PG_USER, PG_USER)
    _as_pg_user(str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", timeout=timeout)
    port = free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    _as_pg_user(
        str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(base / "postgres.log"), "-w", "-t", str(int(timeout)), "start",
        timeout=timeout + 10,
    )
    return PostgresCluster(data_dir, port)


# -- S3 (moto) ------------------------------------------------------------------


@dataclass
class MotoS3:
    proc: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **{k.lower(): v for k, v in AWS_ENV.items() if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")

    def make_bucket(self, name: str | None = None) -> str:
        name = name or "mldash-" + uuid.uuid4().hex[:12]
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto(timeout: float = 30) -> MotoS3:
    """moto's S3 server on a free loopback port (credentials: AWS_ENV)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **AWS_ENV},
    )
    wait_for_port(port, timeout, proc)
    return MotoS3(proc, port)


# -- pytest fixtures ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the whole session (skips if the binaries are missing)."""
    if not pg_available():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    cluster = start_postgres()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server for the whole session."""
    s3 = start_moto()
    yield s3
    s3.stop()


@dataclass
class Backend:
    """One fresh store (embedded, or a new PG database + S3 prefix) for one test."""

    kind: str
    db: str | None
    blob: str | None
    data: Path | None
    s3_endpoint: str | None
    servers: list = field(default_factory=list)

    def start_server(self, **kw) -> ServerProcess:
        server = start_server(self.db, self.blob, data=self.data, s3_endpoint=self.s3_endpoint, **kw)
        self.servers.append(server)
        return server

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`mldash ARGS` against this store (e.g. "token", "create", "ci", "--write", "*")."""
        extra = (["--s3-endpoint", self.s3_endpoint] if self.s3_endpoint else []) + (["--blob", self.blob] if self.blob else [])
        return mldash_cli(*args, *extra, db=self.db, data=self.data)

    def chunk_objects(self) -> list[str]:
        """Keys of the cold chunk objects written so far (folder or bucket)."""
        if self.blob and self.blob.startswith("s3://"):
            import boto3

            bucket, _, prefix = self.blob[5:].partition("/")
            client = boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        folder = Path(self.blob) if self.blob else Path(self.data) / "chunks"
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.mldc"))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def make_backend(kind: str, folder: Path, request) -> Backend:
    """A fresh store of ``kind`` ("embedded" or "postgres"); ``request`` gives the session fixtures."""
    if kind == "embedded":
        return Backend("embedded", None, None, Path(folder) / "server-data", None)
    cluster = request.getfixturevalue("postgres")
    s3 = request.getfixturevalue("moto_s3")
    bucket = s3.make_bucket()
    return Backend("postgres", cluster.create_database(), f"s3://{bucket}/chunks", Path(folder) / "server-data", s3.endpoint)


@pytest.fixture(scope="module", params=["embedded", "postgres"], name="backend")
def module_backend(request, tmp_path_factory):
    """One store per test module on each backend (what most server and remote
    tests share; the folders' conftests provide it as ``backend``)."""
    b = make_backend(request.param, tmp_path_factory.mktemp(request.param), request)
    yield b
    b.stop()


@pytest.fixture(scope="module", name="server")
def module_server(backend) -> ServerProcess:
    """One server on the module's store, for tests that each use prefixes of their own."""
    return backend.start_server()


@pytest.fixture(params=["embedded", "postgres"])
def backend(request, tmp_path):
    """A fresh store on each backend: embedded (SQLite + folder), PostgreSQL + moto S3."""
    b = make_backend(request.param, tmp_path, request)
    yield b
    b.stop()


@pytest.fixture
def server(backend) -> ServerProcess:
    """One running `mldash server` on ``backend``; ``server.url`` is its base URL."""
    return backend.start_server()
