"""The remote writer, remote reads and ``mldash sync`` against a real ``mldash`` server.

Every run is written locally first; these tests check that what the server ends
up holding is exactly the local copy, whatever happens to the server meanwhile.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

import mldash
from mldash import _codec
from mldash.remote._http import Api, Backoff, Unavailable, parse_retry_after
from mldash.remote._files import pending
from mldash.remote._replicate import Replicator
from mldash.remote.client import list_remote_experiments
from mldash.remote.sync import sync_root

from _server_support import free_port, make_backend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# ---- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture(params=["embedded", "postgres"])
def fresh_backend(request, tmp_path):
    """A store of its own, for a test that kills and restarts its server."""
    b = make_backend(request.param, tmp_path, request)
    yield b
    b.stop()


@pytest.fixture
def embedded_backend(request, tmp_path):
    b = make_backend("embedded", tmp_path, request)
    yield b
    b.stop()


@pytest.fixture
def quick_sync(monkeypatch):
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "60")


def canonical(value) -> bytes:
    """JSON with NaN/inf tagged (so NaN equals NaN) and keys sorted (PostgreSQL's
    JSONB keeps its own key order)."""
    return orjson.dumps(orjson.loads(_codec.dumps(value)), option=orjson.OPT_SORT_KEYS)


def read_all_metric(exp: mldash.Experiment, name: str) -> dict:
    return exp.metrics(name).read(0, 10**7)


def server_progress(url: str, prefix: str, namespace: str = "default") -> dict:
    api = Api(url, None)
    try:
        record = api.get("/experiments/lookup", params={"namespace": namespace, "prefix": prefix})
        return api.get(f"/experiments/{record['id']}/progress")
    finally:
        api.close()


def server_record(url: str, prefix: str, namespace: str = "default") -> dict:
    api = Api(url, None)
    try:
        return api.get("/experiments/lookup", params={"namespace": namespace, "prefix": prefix})
    finally:
        api.close()


def remote_view(url: str, prefix: str, tmp_path: Path) -> mldash.Experiment:
    """The experiment as seen from a machine with no local copy."""
    empty = tmp_path / f"empty-{time.monotonic_ns()}"
    return mldash.Experiment(prefix, root=empty, remote=url)


def assert_server_holds_local_copy(local: mldash.Experiment, url: str, tmp_path: Path) -> None:
    """Every series, log, parameter and summary value reads back identically from the server."""
    remote = remote_view(url, local.prefix, tmp_path)
    names = local.metric_names()
    assert names, "the local run wrote no metrics"
    for name in names:
        mine = read_all_metric(local, name)
        theirs = read_all_metric(remote, name)
        assert theirs["total"] == mine["total"], name
        assert [p["index"] for p in theirs["data"]] == list(range(mine["total"])), name
        assert canonical(theirs) == canonical(mine), name
    assert canonical(remote.read_logs(0, 10**6)) == canonical(local.read_logs(0, 10**6))
    assert canonical(remote.params.get()) == canonical(local.params.get())
    assert canonical(remote.summary.get()) == canonical(local.summary.get())
    assert not os.path.exists(remote.path), "reading must not create a local copy"
    api = Api(url, None)
    try:
        record = api.get("/experiments/lookup", params={"namespace": "default", "prefix": local.prefix})
        held = api.get(f"/experiments/{record['id']}")
    finally:
        api.close()
    assert canonical(held.get("checkpoints") or []) == canonical(local.checkpoints())


def write_everything(exp: mldash.Experiment, points: int = 3000) -> None:
    exp.params.set(lr=1e-3, model={"depth": 4, "act": "gelu"}, weird=float("nan"))
    special = {10: float("nan"), 20: float("inf"), 30: float("-inf")}
    exp.metrics("train/loss").append_batch(
        [{"value": special.get(i, 1.0 / (i + 1)), "step": i} for i in range(points)]
    )
    for epoch in range(3):
        exp.metrics("val/accuracy").append(value=0.5 + epoch / 10, epoch=epoch, ok=True, tag="v", none=None)
    for level in mldash.LEVELS:
        exp.log(f"a {level} line", level=level, metadata={"level": level, "x": [1, 2.5, float("inf")]})
    exp.checkpoint("ckpt/epoch=2.ckpt", step=points, epoch=2, score=0.4, is_best=True)
    exp.summary.set(train_runtime=12.5, best={"score": 0.4})


# ---- behaviour ---------------------------------------------------------------------------
def test_remote_run_arrives_complete_and_identical_to_local_copy(server, root, tmp_path, quick_sync):
    exp = mldash.Experiment("remote/identical", root=root, remote=server.url)
    with exp:
        write_everything(exp)
    assert os.path.isfile(os.path.join(exp.path, "metrics", "train", "loss", "data.jsonl")), "local-first"
    assert_server_holds_local_copy(exp, server.url, tmp_path)
    assert server_record(server.url, exp.prefix)["status"] == "COMPLETED"


def test_failed_run_reaches_the_server_as_failed_with_its_error_log(server, root, tmp_path, quick_sync):
    exp = mldash.Experiment("remote/failing", root=root, remote=server.url)
    with pytest.raises(ZeroDivisionError):
        with exp:
            exp.metrics("loss").append(value=1.0)
            1 / 0
    assert server_record(server.url, exp.prefix)["status"] == "FAILED"
    errors = remote_view(server.url, exp.prefix, tmp_path).read_logs(level="error")["data"]
    assert errors and errors[-1]["metadata"]["error_type"] == "ZeroDivisionError"


def test_read_with_no_local_copy_pages_and_filters_like_a_local_read(server, root, tmp_path, quick_sync):
    exp = mldash.Experiment("remote/reader", root=root, remote=server.url, namespace="readers")
    with exp:
        write_everything(exp, points=2500)
    remote = mldash.Experiment("remote/reader", root=tmp_path / "elsewhere", remote=server.url, namespace="readers")
    for start, limit in ((0, 10), (1200, 100), (2490, 100), (2500, 10), (5000, 1)):
        assert canonical(remote.metrics("train/loss").read(start, limit)) == canonical(
            exp.metrics("train/loss").read(start, limit)
        ), (start, limit)
    for level in ("warn", "error"):
        assert canonical(remote.read_logs(level=level)) == canonical(exp.read_logs(level=level))
    assert remote.params.get(flatten=False)["model"] == {"depth": 4, "act": "gelu"}
    # Another namespace holds nothing under that prefix: it reads as empty, like a new local run.
    other = mldash.Experiment("remote/reader", root=tmp_path / "other", remote=server.url)
    assert other.metrics("train/loss").read() == {
        "data": [], "start_index": 0, "end_index": -1, "total": 0, "has_more": False
    }
    assert other.params.get() == {}


def test_writes_after_finish_resume_the_upload(server, root, tmp_path, quick_sync):
    exp = mldash.Experiment("remote/resumed", root=root, remote=server.url)
    with exp:
        exp.metrics("loss").append_batch([{"value": i} for i in range(100)])
    with mldash.Experiment("remote/resumed", root=root, remote=server.url) as again:
        again.metrics("loss").append_batch([{"value": i} for i in range(100, 150)])
        again.log("second session")
    assert server_progress(server.url, exp.prefix)["metrics"] == {"loss": 150}
    assert_server_holds_local_copy(again, server.url, tmp_path)


def test_server_down_at_start_then_started_later_receives_everything(embedded_backend, root, tmp_path, quick_sync):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exp = mldash.Experiment("remote/late-server", root=root, remote=url)
    exp.start()
    started = time.monotonic()
    for i in range(2000):
        exp.metrics("loss").append(value=float(i), step=i)
    exp.log("written while the server was down")
    exp.params.set(lr=0.1)
    assert time.monotonic() - started < 5, "training must not wait for an unreachable server"
    embedded_backend.start_server(port=port)
    for i in range(2000, 3000):
        exp.metrics("loss").append(value=float(i), step=i)
    exp.finish()
    assert_server_holds_local_copy(exp, url, tmp_path)
    assert server_record(url, exp.prefix)["status"] == "COMPLETED"


def test_server_killed_mid_run_and_restarted_holds_exactly_what_was_written(
    fresh_backend, root, tmp_path, quick_sync, monkeypatch
):
    own_server = fresh_backend.start_server()
    exp = mldash.Experiment("remote/killed", root=root, remote=own_server.url, flush_interval=0.05)
    exp.start()
    stop = threading.Event()
    written = {"n": 0}

    def train() -> None:
        while not stop.is_set():
            i = written["n"]
            exp.metrics("train/loss").append_batch([{"value": float(i + k), "step": i + k} for k in range(50)])
            exp.log(f"step {i}")
            written["n"] = i + 50
            time.sleep(0.005)

    trainer = threading.Thread(target=train)
    trainer.start()
    finished = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the server has received part of the run
            try:
                if server_progress(own_server.url, exp.prefix)["metrics"].get("train/loss", 0) >= 2000:
                    break
            except Exception:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the uploader never reached the server")
        own_server.kill()  # SIGKILL: no shutdown, a request may be cut in the middle
        time.sleep(1.5)  # training goes on while the server is gone
        own_server.start()
        time.sleep(1.0)  # ... and after it is back
        stop.set()
        trainer.join()
        exp.finish()
        finished = True
    finally:
        stop.set()
        trainer.join()
        if not finished:
            monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "0")  # failing anyway: don't wait
            exp.finish()
    local_total = len(exp.metrics("train/loss"))
    assert local_total == written["n"]
    held = server_progress(own_server.url, exp.prefix)
    assert held["metrics"] == {"train/loss": local_total}
    assert held["logs"] == exp.read_logs(0, 0)["total"]
    assert_server_holds_local_copy(exp, own_server.url, tmp_path)


def test_finish_with_server_down_prints_the_sync_command_that_uploads_the_rest(
    embedded_backend, root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exp = mldash.Experiment("remote/offline-finish", root=root, remote=url)
    with exp:
        exp.metrics("loss").append_batch([{"value": float(i)} for i in range(500)])
        exp.log("hello")
    err = capsys.readouterr().err
    assert "500 metric points" in err and "1 log" in err
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("mldash sync"))
    assert command == f"mldash sync {shlex.quote(exp.root)} --remote {url}"
    assert pending(exp.path, url, "default")

    # The printed command, run as printed, uploads the rest.
    embedded_backend.start_server(port=port)
    result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not pending(exp.path, url, "default")
    assert_server_holds_local_copy(exp, url, tmp_path)
    assert server_record(url, exp.prefix)["status"] == "COMPLETED"


def test_finish_returns_within_the_sync_timeout_when_the_server_is_unreachable(root, monkeypatch, capsys):
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "1.5")
    url = f"http://127.0.0.1:{free_port()}"
    exp = mldash.Experiment("remote/bounded", root=root, remote=url)
    exp.metrics("loss").append(value=1.0)
    started = time.monotonic()
    exp.finish()
    took = time.monotonic() - started
    # Unbounded, it would wait for ever; the slack is for a loaded CI machine.
    assert took < 1.5 + 8.0, f"finish() took {took:.1f}s with a 1.5s sync timeout"
    assert exp.status == "COMPLETED"
    assert "mldash sync" in capsys.readouterr().err


def test_offline_run_then_mldash_sync_uploads_it(server, root, tmp_path):
    exp = mldash.Experiment("offline/run", root=root)  # no remote at all
    with exp:
        write_everything(exp, points=5000)
    assert not os.path.exists(os.path.join(exp.path, ".sync"))

    result = subprocess.run(
        [sys.executable, "-m", "mldash", "sync", str(root), "--remote", server.url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Uploaded 1 run(s)" in result.stdout
    assert_server_holds_local_copy(exp, server.url, tmp_path)
    assert server_record(server.url, exp.prefix)["status"] == "COMPLETED"

    again = subprocess.run(
        [sys.executable, "-m", "mldash", "sync", str(root), "--remote", server.url],
        capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr


def test_sync_resumes_after_interruption_and_never_sends_a_point_twice(server, root, tmp_path):
    exp = mldash.Experiment("offline/interrupted", root=root)
    with exp:
        for name in ("a", "b", "c"):
            exp.metrics(name).append_batch([{"value": float(i), "step": i} for i in range(10_000)])
        exp.log("done")
    total_bytes = pending(exp.path, server.url, "default").bytes

    # A sync cut short after two batches (Ctrl-C, a dropped connection...).
    api = Api(server.url, None)
    replicator = Replicator(exp.path, api, "default", server.url, max_batch_bytes=128 * 1024)
    sent = []

    def interrupt_after_two(n: int) -> None:
        sent.append(n)
        if len(sent) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replicator.run_pass(progress=interrupt_after_two)
    api.close()
    held = sum(server_progress(server.url, exp.prefix)["metrics"].values())
    assert 0 < held < 30_000

    result = sync_root(str(root), server.url)
    assert result.uploaded == [exp.prefix] and not result.failed
    assert result.bytes_sent < total_bytes - sum(sent) / 2, "the resumed sync sent again what was acknowledged"
    assert server_progress(server.url, exp.prefix)["metrics"] == {"a": 10_000, "b": 10_000, "c": 10_000}
    assert_server_holds_local_copy(exp, server.url, tmp_path)


def test_sync_without_its_state_file_resumes_from_what_the_server_holds(server, root, tmp_path):
    exp = mldash.Experiment("offline/lost-state", root=root)
    with exp:
        exp.metrics("loss").append_batch([{"value": float(i)} for i in range(10_000)])
    assert sync_root(str(root), server.url).uploaded == [exp.prefix]
    with mldash.Experiment("offline/lost-state", root=root) as more:
        more.metrics("loss").append_batch([{"value": float(i)} for i in range(10_000, 10_100)])
    for name in os.listdir(os.path.join(exp.path, ".sync")):
        os.unlink(os.path.join(exp.path, ".sync", name))  # cursors lost

    result = sync_root(str(root), server.url)
    assert result.uploaded == [exp.prefix]
    metric_bytes = os.path.getsize(os.path.join(exp.path, "metrics", "loss", "data.jsonl"))
    assert result.bytes_sent < metric_bytes / 10, "it re-sent points the server already held"
    assert server_progress(server.url, exp.prefix)["metrics"] == {"loss": 10_100}
    assert_server_holds_local_copy(more, server.url, tmp_path)


def test_mldash_ls_remote_lists_the_servers_experiments(server, root, quick_sync):
    with mldash.Experiment("listing/ok", root=root, remote=server.url) as exp:
        exp.metrics("loss").append(value=0.25)
    with mldash.Experiment("listing/cancelled", root=root, remote=server.url) as exp:
        exp.finish("CANCELLED")

    rows = {r["prefix"]: r for r in list_remote_experiments(server.url, None, project="listing")}
    assert set(rows) == {"listing/ok", "listing/cancelled"}
    assert rows["listing/ok"]["status"] == "COMPLETED"
    assert rows["listing/ok"]["metrics"]["loss"]["data"] == {"value": 0.25}

    result = subprocess.run(
        [sys.executable, "-m", "mldash", "ls", "--remote", server.url, "--status", "CANCELLED"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "listing/cancelled" in result.stdout and "CANCELLED" in result.stdout
    assert "listing/ok" not in result.stdout


def test_a_refused_token_never_stops_training_and_sync_with_the_right_one_uploads(
    embedded_backend, root, tmp_path, monkeypatch, capsys
):
    created = embedded_backend.cli("token", "create", "ci", "--write", "team")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[0]
    url = embedded_backend.start_server().url
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "1")

    exp = mldash.Experiment("secure/run", root=root, remote=url, token="not-a-token", namespace="team")
    with exp:
        exp.metrics("loss").append_batch([{"value": float(i)} for i in range(100)])
    assert exp.status == "COMPLETED" and len(exp.metrics("loss")) == 100
    err = capsys.readouterr().err
    assert "401" in err and "MLDASH_TOKEN" in err
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("mldash sync"))
    assert command.endswith("--namespace team")

    result = subprocess.run(
        shlex.split(command), capture_output=True, text=True, timeout=120, env={**os.environ, "MLDASH_TOKEN": token}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reader = mldash.Experiment("secure/run", root=tmp_path / "reader", remote=url, token=token, namespace="team")
    assert canonical(reader.metrics("loss").read(0, 1000)) == canonical(exp.metrics("loss").read(0, 1000))


def test_ls_remote_on_an_unreachable_server_says_so_without_a_traceback():
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "mldash", "ls", "--remote", url],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{url} is unreachable" in result.stderr and "Traceback" not in result.stderr


def test_sync_of_an_unreachable_server_gives_up_and_says_how_to_continue(root):
    with mldash.Experiment("offline/nowhere", root=root) as exp:
        exp.metrics("loss").append(value=1.0)
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "mldash", "sync", str(root), "--remote", url, "--give-up-after", "1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    assert "offline/nowhere" in result.stdout and "unreachable" in result.stdout
    assert "Run the same command again" in result.stdout
    assert pending(exp.path, url, "default").points == 1


def test_import_mldash_does_not_load_requests():
    code = "import sys, mldash, mldash.cli; assert 'requests' not in sys.modules, 'requests loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_backoff_grows_with_jitter_and_honours_retry_after():
    backoff = Backoff(base=0.5, cap=8.0)
    delays = [backoff.next() for _ in range(8)]
    for n, delay in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 8.0
    assert backoff.next(retry_after=20.0) >= 20.0
    backoff.reset()
    assert backoff.next() <= 0.5
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(http_date) <= 31


def test_an_unreachable_server_is_reported_as_unavailable_not_raised_raw():
    api = Api(f"http://127.0.0.1:{free_port()}", None)
    with pytest.raises(Unavailable, match="connection refused"):
        api.get("/health")
    api.close()
