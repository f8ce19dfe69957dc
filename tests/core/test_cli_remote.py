"""`mldash ls --remote URL --json`: a team server's runs with the same keys as local ones."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from _server_support import free_port, start_server

import mldash


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(token):
        raise AssertionError(f"{token} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(data=tmp_path_factory.mktemp("server")) as running:
        yield running


def test_ls_remote_json_lists_the_servers_runs_like_local_ones(server, root, monkeypatch):
    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "60")  # finish() waits until the server has it all
    with mldash.Experiment("team/run", root=root, remote=server.url, tags=["shared"]) as exp:
        exp.params.set(lr=0.1, seed=2**70)
        exp.metrics("loss").append(value=math.nan, step=1)
        exp.metrics("acc").append(value=0.5, step=1)
    result = subprocess.run(
        [sys.executable, "-m", "mldash", "ls", "--remote", server.url, "--project", "team", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    [row] = strict_json(result.stdout)
    local = json.loads(subprocess.run([sys.executable, "-m", "mldash", "ls", str(root), "--json"],
                                      capture_output=True, text=True, timeout=60, check=True).stdout)[0]
    assert list(row) == list(local)  # the same keys in the same order
    for key in ("prefix", "status", "started_at", "finished_at", "duration", "tags", "params"):
        assert row[key] == local[key], key
    assert row["path"] is None and row["namespace"] == "default"  # no folder here; the server's namespace
    assert row["params"]["seed"] == {"$int": str(2**70)}
    assert row["metrics"]["loss"]["data"]["value"] == {"$float": "NaN"}
    assert row["metrics"]["acc"]["data"] == {"value": 0.5, "step": 1}


def test_ls_remote_json_on_an_unreachable_server_is_an_error_with_nothing_on_stdout():
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "mldash", "ls", "--remote", url, "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert f"{url} is unreachable" in result.stderr and "Traceback" not in result.stderr
