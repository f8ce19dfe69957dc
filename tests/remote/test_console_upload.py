"""The console (console/console.jsonl) replicated like the logs (issue 14): the
uploader and `mldash sync` send it, the server reads it back exactly as the local
``read_console`` does, an upload resumes where it stopped, and a line the server
refuses is quarantined while the rest goes through."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

import mldash
from mldash.remote._http import Api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SCRIPT = (
    "import mldash, sys\n"
    "exp = mldash.Experiment(sys.argv[2], root=sys.argv[1], remote=sys.argv[3] or None, capture_console=True)\n"
    "with exp:\n"
    "    for i in range(int(sys.argv[4])):\n"
    "        print(f'step {i}: loss {1 / (i + 1):.3f} \\u00e9\\t\\U0001F600')\n"
    "    print('\\rprogress 50%', end='', flush=True)\n"
    "    print()\n"
    "    print('warning: slow', file=sys.stderr)\n"
    "    exp.metrics('loss').append(value=0.5)\n"
)


def run(root, prefix: str, url: str | None, lines: int = 50) -> mldash.Experiment:
    env = {**os.environ, "MLDASH_CAPTURE_CONSOLE": "1", "MLDASH_SYNC_TIMEOUT": "60"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(root), prefix, url or "", str(lines)],
                            capture_output=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    exp = mldash.Experiment(prefix, root=root)
    assert exp.read_console(0, 10)["total"] > lines, "the run recorded no console"
    return exp


def sync(root, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mldash", "sync", str(root), "--remote", url],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "400"})


def remote_console(url: str, prefix: str, tmp_path) -> dict:
    """read_console from a machine with no local copy."""
    reader = mldash.Experiment(prefix, root=tmp_path / f"elsewhere-{time.monotonic_ns()}", remote=url)
    out = reader.read_console(0, 10**6)
    assert not os.path.exists(reader.path), "reading must not create a local copy"
    return out


def server_progress(url: str, prefix: str) -> dict:
    api = Api(url, None)
    try:
        record = api.get("/experiments/lookup", params={"namespace": "default", "prefix": prefix})
        return api.get(f"/experiments/{record['id']}/progress")
    finally:
        api.close()


def append_lines(exp: mldash.Experiment, *lines: bytes) -> None:
    with open(os.path.join(exp.path, "console", "console.jsonl"), "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def record(text: str, stream: str = "stdout", **extra) -> bytes:
    return orjson.dumps({"timestamp": time.time(), "stream": stream, "text": text, **extra})


def test_a_remote_run_uploads_its_console_and_the_server_reads_back_the_local_copy(server, root, tmp_path):
    exp = run(root, "console/remote", server.url)
    local = exp.read_console(0, 10**6)
    assert any(r["stream"] == "stderr" for r in local["data"])
    assert remote_console(server.url, exp.prefix, tmp_path) == local
    assert server_progress(server.url, exp.prefix)["console"] == local["total"]

    # More output later (here written by hand): the next sync sends only that.
    append_lines(exp, record("later \x00 line"), record("half", partial=True), record("half done", "stderr"))
    result = sync(root, server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    after = exp.read_console(0, 10**6)
    assert after["total"] == local["total"] + 3
    assert remote_console(server.url, exp.prefix, tmp_path) == after
    # Without its state file the uploader resumes from the server's count: nothing twice.
    for name in os.listdir(os.path.join(exp.path, ".sync")):
        if name.endswith(".json") and "quarantine" not in name:
            os.remove(os.path.join(exp.path, ".sync", name))
    assert sync(root, server.url).returncode == 0
    assert remote_console(server.url, exp.prefix, tmp_path) == after
    assert server_progress(server.url, exp.prefix)["console"] == after["total"]


def test_mldash_sync_uploads_a_console_written_offline_and_quarantines_a_bad_line(server, root, tmp_path):
    exp = run(root, "console/offline", None, lines=20)
    assert not os.path.exists(os.path.join(exp.path, ".sync"))
    bad = exp.read_console(0, 0)["total"]
    # A lone surrogate (an older writer's, say): no JSON reader takes it.
    append_lines(exp, b'{"timestamp":1700000000.5,"stream":"stdout","text":"bad \\ud800 line"}', record("after the bad one"))

    result = sync(root, server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"console line {bad}" in result.stdout, result.stdout

    local = exp.read_console(0, 10**6)
    assert local["total"] == bad + 2 and [r["index"] for r in local["data"]][-1] == bad + 1  # the bad line is skipped
    theirs = remote_console(server.url, exp.prefix, tmp_path)
    assert theirs["total"] == local["total"]
    stand_in = theirs["data"][bad]
    assert stand_in["index"] == bad and stand_in["stream"] == "stderr" and stand_in["timestamp"] == 1700000000.5
    assert stand_in["text"].startswith(f"[mldash] console line {bad} was not uploaded: ")
    assert [r for r in theirs["data"] if r["index"] != bad] == local["data"]
    assert theirs["data"][-1]["text"] == "after the bad one"
