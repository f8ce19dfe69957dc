"""Poison pills: values the local API accepts must never block replication.

The rule (issue 11, items 4, 5 and 8): what the local API accepts, the server
accepts and reads back exactly, on SQLite and on PostgreSQL; what it refuses
fails at the local call. A record the server still refuses (an older run's
data, a body over a proxy's limit) is quarantined: listed with the server's
reason, skipped, and everything after it goes through; `mldash sync` names it
and exits 1. Two runs that did not resume each other never merge under one
prefix. The server checks every document against the schema readers rely on.
"""

from __future__ import annotations

import http.server
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

import mldash
from mldash import _codec
from mldash.remote._http import Api
from mldash.remote._files import pending

from _server_support import ServerProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
T0 = 1_700_000_000_000


# ---- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture
def quick_sync(monkeypatch):
    # Long enough for a loaded machine; on the old code a poison pill made finish()
    # wait this long and leave the rest pending.
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "30")


def canonical(value) -> bytes:
    """JSON with NaN/inf/big ints tagged and keys sorted (JSONB keeps its own order)."""
    return orjson.dumps(orjson.loads(_codec.dumps(value)), option=orjson.OPT_SORT_KEYS)


def sync(root, url, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mldash", "sync", str(root), "--remote", url, *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "400", **(env or {})},
    )


def server_experiment(url: str, prefix: str, namespace: str = "default") -> dict | None:
    api = Api(url, None)
    try:
        try:
            record = api.get("/experiments/lookup", params={"namespace": namespace, "prefix": prefix})
        except Exception:
            return None
        held = api.get(f"/experiments/{record['id']}")
        held["progress"] = api.get(f"/experiments/{record['id']}/progress")
        return held
    finally:
        api.close()


def quarantine_path(path: str) -> str:
    """Where a run lists what the server refused (docs/remote.md)."""
    return os.path.join(path, ".sync", "quarantine.jsonl")


def quarantined(path: str) -> list[dict]:
    try:
        with open(quarantine_path(path), "rb") as f:
            return [orjson.loads(line) for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


def assert_server_holds_exactly(local: mldash.Experiment, url: str, tmp_path: Path, namespace: str = "default") -> None:
    """Every series, log, checkpoint, parameter, summary value and tag reads back
    from the server exactly as from the local files."""
    remote = mldash.Experiment(local.prefix, root=tmp_path / f"empty-{time.monotonic_ns()}", remote=url,
                               namespace=None if namespace == "default" else namespace)
    for name in local.metric_names():
        mine, theirs = local.metrics(name).read(0, 10**7), remote.metrics(name).read(0, 10**7)
        assert theirs["total"] == mine["total"], name
        assert canonical(theirs) == canonical(mine), name
    assert canonical(remote.read_logs(0, 10**6)) == canonical(local.read_logs(0, 10**6))
    assert canonical(remote.params.get()) == canonical(local.params.get())
    assert canonical(remote.summary.get()) == canonical(local.summary.get())
    held = server_experiment(url, local.prefix, namespace)
    assert canonical(held["checkpoints"]) == canonical(local.checkpoints())
    info = local.info()
    for key in ("description", "tags", "status", "best_checkpoint"):
        assert canonical(held.get(key)) == canonical(info.get(key)), key
    assert held["local_id"] == info["id"]
    assert set(held["progress"]["metrics"]) == set(local.metric_names())


# ---- what the local API accepts arrives exactly; what it refuses fails at the call -------
BIG = 2**70 + 1
NULS = "\x00" * 900_000  # 5.4 MB once escaped: a line longer than one batch


def _metric(**fields):
    return lambda exp: exp.metrics("poison").append(**fields)


def _new_run(**kwargs):
    def start(exp: mldash.Experiment) -> None:
        with mldash.Experiment("poison/other", root=exp.root, **kwargs) as other:
            other.metrics("loss").append(value=1.0)

    return start


# (description, what to log, None when the local API accepts it, else the error it raises)
POISON = [
    ("NUL in a metric string", _metric(text="a\x00b", value=1.0), None),
    ("900,000 NULs in one metric string", _metric(text=NULS), None),
    ("a 2 MB string in one point (700,000 three-byte characters)", _metric(text="€" * 700_000), None),
    ("control characters and emoji in a metric string", _metric(text="tab\there\nnew line \x7f 🚀"), None),
    ("an int past 64 bits in a metric", _metric(value=BIG, negative=-BIG), None),
    ("NaN and ±inf in a metric", _metric(a=math.nan, b=math.inf, c=-math.inf), None),
    ("non-ASCII metric and field names", lambda exp: exp.metrics("損失/訓練").append(**{"Δ": 1.0, "名前": "値"}), None),
    ("NUL in a log message", lambda exp: exp.log("before\x00after", level="error"), None),
    ("NUL in log metadata, key and value", lambda exp: exp.log("m", metadata={"k\x00": "v\x00", "n": [1, "\x00"]}), None),
    ("a 900,000-character log message with NULs", lambda exp: exp.log("x\x00" * 450_000), None),
    ("an int past 64 bits and NaN in log metadata", lambda exp: exp.log("m", metadata={"big": BIG, "nan": math.nan}), None),
    ("an int past 64 bits and NaN in parameters", lambda exp: exp.params.set(big=BIG, nan=math.nan, nested={"inf": math.inf}), None),
    ("an int past 64 bits in the summary", lambda exp: exp.summary.set(big=-BIG, text="ünïcode"), None),
    ("a best checkpoint with a big int and NaN", lambda exp: exp.checkpoint("ck/1.pt", step=3, n=BIG, s=math.nan, is_best=True), None),
    ("tags and a description", _new_run(tags=["a", "b c"], description="üñí\ttabbed"), None),
    ("a lone surrogate in a log message", lambda exp: exp.log("bad \ud800 text"), ValueError),
    ("a lone surrogate in a metric string", _metric(text="bad \udcff"), ValueError),
    ("NUL in a metric field name", lambda exp: exp.metrics("poison").append(**{"a\x00b": 1}), ValueError),
    ("a 2,000,000-character string in one point", _metric(text="x" * 2_000_000), ValueError),
    ("NUL in a parameter", lambda exp: exp.params.set(lr="0.1\x00"), ValueError),
    ("NUL in a summary value", lambda exp: exp.summary.set(note="\x00"), ValueError),
    ("NUL in a checkpoint path", lambda exp: exp.checkpoint("ck/\x00.pt", step=1), ValueError),
    ("a metric name with a leading dot", lambda exp: exp.metrics(".hidden").append(value=1), ValueError),
    ("a metric name with a leading-dot part", lambda exp: exp.metrics("a/.b").append(value=1), ValueError),
    ('namespace "a b"', _new_run(namespace="a b"), ValueError),
    ("NUL in a description", _new_run(description="a\x00b"), ValueError),
    ("NUL in a tag", _new_run(tags=["a\x00"]), ValueError),
]


@pytest.mark.parametrize("description, log, error", POISON, ids=[row[0] for row in POISON])
def test_what_the_local_api_accepts_reaches_the_server_exactly(server, root, tmp_path, quick_sync, description, log, error):
    exp = mldash.Experiment(f"poison/case-{POISON.index((description, log, error))}", root=root, remote=server.url)
    with exp:
        exp.metrics("ok").append_batch([{"value": i / 3, "step": i} for i in range(50)])
        exp.log("start")
        if error is None:
            log(exp)
        else:
            with pytest.raises(error):
                log(exp)
        exp.metrics("ok").append(value=-1.0, step=50)  # and what comes after it
        exp.log("end")
    assert not pending(exp.path, server.url, "default"), f"{description}: left pending"
    assert quarantined(exp.path) == [], f"{description}: quarantined"
    assert_server_holds_exactly(exp, server.url, tmp_path)
    other = Path(root) / "poison" / "other"
    if error is None and other.exists():  # a second run started by the row (tags, description)
        run = mldash.Experiment("poison/other", root=root)
        assert sync(root, server.url).returncode == 0
        assert_server_holds_exactly(run, server.url, tmp_path)


# ---- what the server still refuses is quarantined, and everything else goes through ------
def _append(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def _crafted_run(root: Path) -> mldash.Experiment:
    """A run holding what an older version (or a hand edit) could leave on disk,
    bypassing today's local checks: a NUL field name, an unknown log level, a
    series in a dot folder, a NUL in a parameter and tags that are one string."""
    exp = mldash.Experiment("poison/crafted", root=root)
    with exp:
        exp.metrics("loss").append_batch([{"value": float(i), "step": i} for i in range(100)])
        exp.metrics("acc").append_batch([{"value": i / 100} for i in range(30)])
        exp.log("first")
        exp.params.set(lr=0.1, depth=4)
    base = Path(exp.path)
    _append(base / "metrics/loss/data.jsonl", b'[%d,{"a\\u0000b":1}]' % T0,
            *[b'[%d,{"value":%d.5,"step":%d}]' % (T0 + i, i, 101 + i) for i in range(20)])
    _append(base / "logs/logs.jsonl",
            b'{"index":1,"timestamp":1.5,"level":"loud","message":"odd","metadata":null}',
            b'{"index":2,"timestamp":2.5,"level":"info","message":"after the odd one","metadata":{"k":"v\\u0000"}}')
    (base / "metrics/.hidden").mkdir()
    _append(base / "metrics/.hidden/data.jsonl", b'[%d,{"value":1}]' % T0)
    params = base / "parameters/parameters.json"
    params.write_bytes(params.read_bytes()[:-1] + b',"bad":"a\\u0000b"}')
    meta = orjson.loads((base / "experiment.json").read_bytes())
    meta["tags"] = "one-string"
    (base / "experiment.json").write_bytes(orjson.dumps(meta))
    return exp


def test_refused_records_are_quarantined_named_by_sync_and_the_rest_goes_through(server, root, tmp_path):
    exp = _crafted_run(root)
    first = sync(root, server.url)
    out = first.stdout
    assert first.returncode == 1, out + first.stderr
    for words in ("metric 'loss' point 100", "control character", "log 1", "unknown log level 'loud'",
                  "metric '.hidden' (every point)", "must not start with '.'", "parameters key 'bad'", "NUL",
                  "experiment.json field 'tags'", "meta.tags must be a list", "poison/crafted", quarantine_path(exp.path)):
        assert words in out, f"{words!r} not in:\n{out}"
    assert "up to date" not in out and "Run the same command again" not in out

    held = server_experiment(server.url, exp.prefix)
    assert held["progress"]["metrics"] == {"loss": 121, "acc": 30}
    assert held["progress"]["logs"] == 3
    assert held.get("tags") is None and held["params"] == {"lr": 0.1, "depth": 4}
    assert held["status"] == "COMPLETED" and held["local_id"] == exp.info()["id"]  # the other fields went through
    remote = mldash.Experiment(exp.prefix, root=tmp_path / "reader", remote=server.url)
    local = exp.metrics("loss").read(0, 1000)["data"]
    theirs = remote.metrics("loss").read(0, 1000)["data"]
    assert canonical(theirs[:100] + theirs[101:]) == canonical(local[:100] + local[101:])
    assert theirs[100] == {"index": 100, "timestamp": T0 / 1000, "data": {}}  # the stand-in keeps indices aligned
    assert canonical(remote.metrics("acc").read(0, 100)) == canonical(exp.metrics("acc").read(0, 100))
    logs = remote.read_logs(0, 10)["data"]
    assert [r["message"] for r in (logs[0], logs[2])] == ["first", "after the odd one"]
    assert logs[2]["metadata"] == {"k": "v\x00"}
    assert logs[1]["level"] == "warn" and "not uploaded" in logs[1]["message"]

    entries = {(e["kind"], e["name"], e["index"]) for e in quarantined(exp.path)}
    assert entries == {("metric", "loss", 100), ("logs", None, 1), ("metric", ".hidden", None),
                       ("parameters", "bad", None), ("meta", "tags", None)}

    again = sync(root, server.url)  # nothing new to send, but still not complete
    assert again.returncode == 1 and "metric 'loss' point 100" in again.stdout and "up to date" not in again.stdout.split("\n")[0]
    accepted = sync(root, server.url, "--accept-quarantined")
    assert accepted.returncode == 0 and "up to date" in accepted.stdout, accepted.stdout
    assert sync(root, server.url).returncode == 0
    assert len(quarantined(exp.path)) == 5  # still listed, only accepted


def test_an_old_run_whose_only_problem_is_a_dot_series_is_not_up_to_date(server, root):
    exp = mldash.Experiment("poison/dot-only", root=root)
    with exp:
        exp.metrics("loss").append(value=1.0)
    assert sync(root, server.url).returncode == 0
    (Path(exp.path) / "metrics/a/.b").mkdir(parents=True)
    _append(Path(exp.path) / "metrics/a/.b/data.jsonl", b'[%d,{"value":1}]' % T0)
    result = sync(root, server.url)
    assert result.returncode == 1, result.stdout
    assert "metric 'a/.b' (every point)" in result.stdout and "All 1 run(s)" not in result.stdout


# A server whose request limit is far below the API's 32 MiB (as behind a proxy).
_SMALL_SERVER = """
import sys, uvicorn
from mldash.server.app import create_app
from mldash.server.storage import Store
db, blob, limit, port = sys.argv[1:]
uvicorn.run(create_app(Store(db, blob), max_body=int(limit), ui=False), host="127.0.0.1", port=int(port), log_level="warning")
"""


@pytest.fixture
def small_server(tmp_path):
    port = free_port()
    data = tmp_path / "small-server"
    data.mkdir()
    args = [sys.executable, "-c", _SMALL_SERVER, f"sqlite:///{data}/db.sqlite", str(data / "chunks"), str(256 * 1024), str(port)]
    server = ServerProcess(args, port, data / "server.log", {**os.environ, "PYTHONUNBUFFERED": "1"}).start()
    yield server
    server.stop()


def test_batches_are_split_to_fit_the_body_limit_and_a_record_too_big_for_any_request_is_quarantined(
    small_server, root, tmp_path, quick_sync, capsys
):
    exp = mldash.Experiment("poison/small-limit", root=root, remote=small_server.url)
    with exp:
        exp.metrics("loss").append_batch([{"value": i / 7, "step": i, "note": "x" * 40} for i in range(20_000)])
        exp.metrics("text").append(blob="y" * 300_000, step=0)  # fine locally, over this server's limit
        exp.metrics("text").append(blob="short", step=1)
        for i in range(2000):
            exp.log(f"line {i} " + "z" * 100)
    err = capsys.readouterr().err
    assert "metric 'text' point 0" in err and "quarantined" in err, err
    assert not pending(exp.path, small_server.url, "default")
    (entry,) = quarantined(exp.path)
    assert (entry["kind"], entry["name"], entry["index"]) == ("metric", "text", 0)
    assert "413" in entry["reason"]
    remote = mldash.Experiment(exp.prefix, root=tmp_path / "reader", remote=small_server.url)
    assert canonical(remote.metrics("loss").read(0, 10**6)) == canonical(exp.metrics("loss").read(0, 10**6))
    assert remote.metrics("text").read(0, 10)["data"][1]["data"] == {"blob": "short", "step": 1}
    assert canonical(remote.read_logs(0, 10**4)) == canonical(exp.read_logs(0, 10**4))

    result = sync(root, small_server.url)
    assert result.returncode == 1 and "metric 'text' point 0" in result.stdout and "413" in result.stdout


class _Always503(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"detail":"down for maintenance"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, *args):
        pass


def test_transient_errors_are_retried_and_never_quarantined(root, tmp_path):
    exp = mldash.Experiment("poison/transient", root=root)
    with exp:
        exp.metrics("loss").append_batch([{"value": float(i)} for i in range(100)])
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always503)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        result = sync(root, f"http://127.0.0.1:{stub.server_port}", "--give-up-after", "1")
    finally:
        stub.shutdown()
    assert result.returncode == 1 and "503" in result.stdout and "Run the same command again" in result.stdout
    assert quarantined(exp.path) == []
    dead = f"http://127.0.0.1:{free_port()}"
    assert sync(root, dead, "--give-up-after", "1").returncode == 1
    assert quarantined(exp.path) == [] and pending(exp.path, dead, "default").points == 100


# ---- two machines, one prefix: never merged ---------------------------------------------
def test_two_runs_under_one_prefix_from_two_machines_never_merge(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "30")
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    run_a = mldash.Experiment("shared/collide", root=machine_a, remote=server.url)
    with run_a:
        run_a.metrics("loss").append_batch([{"value": float(i), "step": i} for i in range(1000)])
    run_b = mldash.Experiment("shared/collide", root=machine_b, remote=server.url)
    with run_b:
        run_b.metrics("loss").append_batch([{"value": -float(i), "step": i} for i in range(1500)])
    assert run_b.status == "COMPLETED" and len(run_b.metrics("loss")) == 1500  # training never noticed
    err = capsys.readouterr().err
    id_a, id_b = run_a.info()["id"], run_b.info()["id"]
    assert id_a in err and id_b in err and "nothing of this run was uploaded" in err, err

    held = server_experiment(server.url, "shared/collide")
    assert held["progress"]["metrics"] == {"loss": 1000} and held["local_id"] == id_a
    assert_server_holds_exactly(run_a, server.url, tmp_path)

    refused = sync(machine_b, server.url)
    assert refused.returncode == 1, refused.stdout
    assert "the whole run" in refused.stdout and "409" in refused.stdout
    assert id_a in refused.stdout and id_b in refused.stdout and "--namespace" in refused.stdout
    assert server_experiment(server.url, "shared/collide")["progress"]["metrics"] == {"loss": 1000}
    # Nothing of run B is on the server: accepting quarantined records cannot hide that.
    for _ in range(2):
        still = sync(machine_b, server.url, "--accept-quarantined")
        assert still.returncode == 1 and "the whole run" in still.stdout, still.stdout

    # The remedy: another namespace (or deleting the server's copy).
    moved = sync(machine_b, server.url, "--namespace", "machine-b")
    assert moved.returncode == 0, moved.stdout
    assert_server_holds_exactly(run_b, server.url, tmp_path, namespace="machine-b")
    assert_server_holds_exactly(run_a, server.url, tmp_path)

    # Or another name: move the folder and rename it in experiment.json.
    renamed = machine_b / "shared" / "collide-b"
    os.rename(run_b.path, renamed)
    meta = orjson.loads((renamed / "experiment.json").read_bytes())
    meta.update(name="collide-b", prefix="shared/collide-b")
    (renamed / "experiment.json").write_bytes(orjson.dumps(meta))
    assert sync(machine_b, server.url).returncode == 0
    assert_server_holds_exactly(mldash.Experiment("shared/collide-b", root=machine_b), server.url, tmp_path)

    # Run A resumed in its own folder (same id) keeps uploading into its record.
    with mldash.Experiment("shared/collide", root=machine_a, remote=server.url) as resumed:
        resumed.metrics("loss").append_batch([{"value": 0.5, "step": 1000 + i} for i in range(500)])
    assert server_experiment(server.url, "shared/collide")["progress"]["metrics"] == {"loss": 1500}
    assert_server_holds_exactly(resumed, server.url, tmp_path)


_WRITER = """
import sys, mldash
root, url, series = sys.argv[1:]
with mldash.Experiment("shared/many-writers", root=root, remote=url) as exp:
    exp.metrics(series).append_batch([{"value": float(i)} for i in range(2000)])
    exp.metrics("common").append_batch([{"value": 1.0, "who": series} for i in range(300)])
    exp.log("hello from " + series)
"""


def test_several_processes_appending_to_one_folder_keep_uploading_into_one_run(server, root, tmp_path):
    first = mldash.Experiment("shared/many-writers", root=root)
    first.start()
    first.finish()  # the folder and its id exist, as when a launcher creates the run
    env = {**os.environ, "MLDASH_SYNC_TIMEOUT": "60"}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), server.url, f"rank{r}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(3)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert not any("refuse" in out or "409" in out for out in outputs), outputs
    assert sync(root, server.url).returncode == 0
    exp = mldash.Experiment("shared/many-writers", root=root)
    assert quarantined(exp.path) == []
    held = server_experiment(server.url, exp.prefix)
    assert held["progress"]["metrics"] == {"rank0": 2000, "rank1": 2000, "rank2": 2000, "common": 900}
    assert_server_holds_exactly(exp, server.url, tmp_path)


# ---- item 8: the server checks every document against its schema -----------------------
BAD_META = [
    ("tags", "a-string"),
    ("tags", ["ok", 3]),
    ("tags", ["bad\nline"]),
    ("argv", "python train.py"),
    ("argv", ["ok", None]),
    ("status", "DONE"),
    ("started_at", "yesterday"),
    ("sessions", -1),
    ("git", "main"),
    ("best_checkpoint", "ck.pt"),
    ("description", "a\x00b"),
]


@pytest.mark.parametrize("field, value", BAD_META, ids=[f"{f}={v!r}" for f, v in BAD_META])
def test_documents_that_would_break_readers_are_refused_naming_the_field(server, field, value):
    api = Api(server.url, None)
    try:
        good = api.request("POST", "/experiments", json={"prefix": "schema/good", "meta": {"tags": ["t"], "argv": ["x"]}})
        for method, path, body in (
            ("POST", "/experiments", {"prefix": f"schema/bad-{field}", "meta": {field: value}}),
            ("PATCH", f"/experiments/{good['id']}", {"meta": {field: value}}),
        ):
            response = api.session.request(method, f"{server.url}/api/v1{path}", data=_codec.dumps(body),
                                           headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (method, response.text)
            assert f"meta.{field}" in response.json()["detail"]
        listed = api.get("/experiments", params={"project": "schema"})
        assert [r["prefix"] for r in listed["experiments"]] == ["schema/good"]
        assert any(r["prefix"] == "schema/good" for r in api.get("/experiments", params={"limit": 10_000})["experiments"])
        record = api.get(f"/experiments/{good['id']}")
        assert record["tags"] == ["t"] and record["argv"] == ["x"]
    finally:
        api.close()


@pytest.mark.parametrize(
    "kind, document, words",
    [
        ("parameters", {"lr": "0.1\x00"}, "parameters 'lr'"),
        ("summary", {"k\x00": 1}, "summary name"),
        ("parameters", ["not", "an", "object"], "JSON object"),
    ],
)
def test_parameters_and_summary_are_checked_by_the_local_rule(server, kind, document, words):
    api = Api(server.url, None)
    try:
        exp = api.request("POST", "/experiments", json={"prefix": "schema/docs", "meta": {}})
        response = api.session.put(f"{server.url}/api/v1/experiments/{exp['id']}/documents/{kind}",
                                   data=_codec.dumps(document), headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and words in response.json()["detail"], response.text
    finally:
        api.close()


def test_the_uploader_sizes_requests_by_the_servers_body_limit():
    from mldash.remote._replicate import MAX_BATCH_BYTES, MAX_REQUEST
    from mldash.server.body import MAX_BODY

    assert MAX_REQUEST == MAX_BODY and MAX_BATCH_BYTES < MAX_REQUEST


def test_a_record_larger_than_any_request_is_quarantined_without_being_sent(server, root, tmp_path):
    from mldash.remote._replicate import Replicator

    exp = mldash.Experiment("poison/too-big", root=root)
    with exp:
        exp.metrics("loss").append_batch([{"value": float(i)} for i in range(10)])
    _append(Path(exp.path) / "metrics/loss/data.jsonl", b'[%d,{"s":"%s"}]' % (T0, b"w" * 200_000), b'[%d,{"value":11}]' % T0)
    api = Api(server.url, None)
    try:
        replicator = Replicator(exp.path, api, "default", server.url, max_request=100_000)
        assert replicator.run_pass()
    finally:
        api.close()
    (entry,) = quarantined(exp.path)
    assert (entry["kind"], entry["name"], entry["index"]) == ("metric", "loss", 10)
    assert "carries at most 100,000" in entry["reason"]
    held = server_experiment(server.url, exp.prefix)
    assert held["progress"]["metrics"] == {"loss": 12}
    remote = mldash.Experiment(exp.prefix, root=tmp_path / "reader", remote=server.url)
    assert [p["data"] for p in remote.metrics("loss").read(9, 3)["data"]] == [{"value": 9.0}, {}, {"value": 11}]
