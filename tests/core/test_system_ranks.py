"""The machines of a distributed run: ranks other than zero record theirs into rank zero's run.

Each machine appears once (its first process samples it), as ``sys/rank/<rank>/...`` series
labelled by host and rank; everything else of the run stays rank zero's.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

import mldash
from mldash._system import rank_share

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                  "SLURM_PROCID", "SLURM_LOCALID")


@pytest.fixture
def launcher(monkeypatch):
    """Set the variables a launcher sets: ``launcher(RANK=1, LOCAL_RANK=0)``."""
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU probing here

    def set_vars(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))

    return set_vars


@pytest.mark.parametrize("labels, mine, launchers, share", [
    ({"rank": 3}, "", None, "machine"),  # no local rank known: a machine of its own
    ({"rank": 3, "local_rank": 0}, "", None, "machine"),
    ({"rank": 3, "local_rank": 1}, "", None, None),  # its machine is local rank 0's
    ({"rank": 3, "local_rank": 1}, "1", None, "gpus"),  # a GPU of its own (SLURM --gpus-per-task)
    ({"rank": 3, "local_rank": 1}, "1", "1", None),  # the launcher's setting, which every rank has
    ({"rank": 3, "local_rank": 1}, "0,1", "0,1,2,3", "gpus"),
])
def test_each_machine_and_gpu_is_recorded_by_one_rank(labels, mine, launchers, share):
    env = {"CUDA_VISIBLE_DEVICES": mine} if mine else {}
    assert rank_share(labels, env, lambda: launchers) == share


def test_another_rank_appends_its_machine_to_rank_zeros_run_and_nothing_else(root, launcher):
    zero = mldash.Experiment("ddp/named", root=root, system_metrics=False).start()
    zero.metrics("loss").append(value=1.0, step=0)
    launcher(RANK=1, LOCAL_RANK=0)
    other = mldash.Experiment("ddp/named", root=root, system_metrics=60).attach_rank()
    other.finish()
    zero.finish()
    assert zero.status == "COMPLETED"
    names = zero.metric_names()
    assert {"sys/rank/1/cpu", "sys/rank/1/memory", "sys/rank/1/disk"} <= set(names)
    assert not any(n.startswith("sys/") and not n.startswith("sys/rank/1/") for n in names)
    point = zero.metrics("sys/rank/1/memory").read()["data"][0]["data"]
    assert (point["host"], point["rank"], point["local_rank"]) == (socket.gethostname(), 1, 0)
    assert point["process_rss_bytes"] > 0
    assert zero.info()["sessions"] == 1  # the other rank neither started nor finished the run
    assert zero.read_console()["total"] == 0 and zero.read_logs()["total"] == 0


def test_another_rank_started_first_leaves_the_run_to_rank_zero(root, launcher):
    launcher(SLURM_PROCID=2)
    other = mldash.Experiment("ddp/early", root=root, system_metrics=60).attach_rank()
    zero = mldash.Experiment("ddp/early", root=root, system_metrics=False).start()
    other.finish()
    zero.finish()
    with open(os.path.join(zero.path, "experiment.json")) as f:
        meta = json.load(f)
    assert meta["status"] == "COMPLETED" and meta["sessions"] == 1
    assert "sys/rank/2/cpu" in zero.metric_names()


def test_a_second_process_of_a_machine_records_nothing(root, launcher):
    launcher(RANK=1, LOCAL_RANK=1)
    exp = mldash.Experiment("ddp/second", root=root, system_metrics=60).attach_rank()
    exp.finish()
    assert not os.path.exists(exp.path)


def test_system_metrics_off_records_nothing_on_any_rank(root, launcher):
    launcher(RANK=4, LOCAL_RANK=0)
    exp = mldash.Experiment("ddp/off", root=root, system_metrics=False).attach_rank()
    exp.finish()
    assert not os.path.exists(exp.path)


@pytest.mark.parametrize("rank, env, error", [
    (None, {}, "rank zero calls start()"),
    (0, {"RANK": 3}, "rank zero calls start()"),
    (-1, {}, "rank must be an int >= 0"),
    (True, {}, "rank must be an int >= 0"),
    ("1", {}, "rank must be an int >= 0"),
])
def test_attach_rank_refuses_rank_zero_and_bad_ranks(root, launcher, rank, env, error):
    launcher(**env)
    with pytest.raises(ValueError, match=error):
        mldash.Experiment("ddp/bad", root=root).attach_rank(rank)


def test_attach_rank_refuses_a_run_this_process_already_records(root, launcher):
    with mldash.Experiment("ddp/twice", root=root, system_metrics=False) as exp:
        with pytest.raises(RuntimeError, match="already running"):
            exp.attach_rank(1)
