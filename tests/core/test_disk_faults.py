"""A full or read-only disk under a run: nothing accepted is lost at finish().

The data is written first; what the disk refuses goes to a rescue folder the
error names (StorageError.saved_to) or, when no place can hold it, stays in
memory until another finish() succeeds. Uses real mounts (a small tmpfs, a
read-only bind mount), so these tests need root; elsewhere they are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest

import mldash
from _disks import fill, mount, mounted


@pytest.fixture
def rescue_dir(tmp_path, monkeypatch):
    folder = tmp_path / "rescue"
    monkeypatch.setenv("MLDASH_RESCUE_DIR", str(folder))
    return folder


def rescued_values(folder: str, series: str = "loss") -> list:
    lines = (Path(folder) / "metrics" / series / "data.jsonl").read_bytes().splitlines()
    return [json.loads(line)[1]["v"] for line in lines]


def test_points_accepted_on_a_full_disk_are_rescued_at_finish(small_disk, rescue_dir):
    exp = mldash.Experiment("full/run", root=small_disk / "runs", flush_interval=0.05)
    os.makedirs(exp.path)
    fill(small_disk)
    m = exp.metrics("loss")
    for i in range(20_000):
        with contextlib.suppress(mldash.StorageError):  # reported on a later call: go on
            m.append(v=i)
    exp.log("still here")
    with pytest.raises(mldash.StorageError, match="could not write") as caught:
        exp.finish()
    saved = caught.value.saved_to
    assert saved is not None and saved.startswith(str(rescue_dir)) and saved in str(caught.value)
    assert rescued_values(saved) == list(range(20_000))
    assert b"still here" in (Path(saved) / "logs" / "logs.jsonl").read_bytes()
    assert json.loads((Path(saved) / "RESCUE.json").read_bytes())["prefix"] == "full/run"


def test_a_read_only_remount_under_a_resumed_run_loses_nothing(tmp_path, rescue_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    with mldash.Experiment("ro/run", root=disk, flush_interval=0.05) as exp:
        exp.metrics("loss").append(v=-1)
    view = tmp_path / "view"
    with mounted(view, "--bind", str(disk)):
        exp = mldash.Experiment("ro/run", root=view, flush_interval=0.05).start()
        exp.flush()
        mount("-o", "remount,bind,ro", str(view))
        m = exp.metrics("loss")
        for i in range(50_000):
            with contextlib.suppress(mldash.StorageError):
                m.append(v=i)
        with pytest.raises(mldash.StorageError) as caught:
            exp.finish()  # not an OSError from experiment.json's lock
    assert rescued_values(caught.value.saved_to) == list(range(50_000))
    assert [p["data"]["v"] for p in mldash.Experiment("ro/run", root=disk).metrics("loss").read()["data"]] == [-1]


def test_with_no_place_to_rescue_the_data_stays_in_memory_for_another_finish(small_disk, monkeypatch):
    full = small_disk / "everywhere"
    full.mkdir()
    monkeypatch.setenv("MLDASH_RESCUE_DIR", str(full))
    monkeypatch.setattr(tempfile, "tempdir", str(full))
    monkeypatch.setenv("HOME", str(full))
    monkeypatch.chdir(full)
    exp = mldash.Experiment("mem/run", root=small_disk / "runs", flush_interval=0.05)
    os.makedirs(exp.path)
    ballast = fill(small_disk)
    for i in range(5_000):
        with contextlib.suppress(mldash.StorageError):
            exp.metrics("loss").append(v=i)
    with pytest.raises(mldash.StorageError, match="kept in memory") as caught:
        exp.finish()
    assert caught.value.saved_to is None
    ballast.unlink()  # the user frees space
    exp.finish()
    again = mldash.Experiment("mem/run", root=small_disk / "runs")
    assert [p["data"]["v"] for p in again.metrics("loss").read(0, 10_000)["data"]] == list(range(5_000))
    assert again.status == "COMPLETED"


def test_on_a_read_only_disk_every_call_says_storage_error_and_says_it_once_per_failure(tmp_path, rescue_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    with mldash.Experiment("ro/calls", root=disk, flush_interval=0.05) as exp:
        exp.metrics("loss").append(v=0)
    view = tmp_path / "view"
    with mounted(view, "--bind", str(disk)):
        exp = mldash.Experiment("ro/calls", root=view, flush_interval=0.05).start()
        exp.flush()
        mount("-o", "remount,bind,ro", str(view))
        with pytest.raises(mldash.StorageError, match="were not stored"):
            exp.params.set(lr=1)
        with pytest.raises(mldash.StorageError, match="Do not record it again"):
            exp.checkpoint("best.ckpt", step=1, is_best=True)
        said = 0
        for i in range(3000):
            try:
                exp.metrics("loss").append(v=i)
            except mldash.StorageError:
                said += 1
            if i % 100 == 0:
                import time

                time.sleep(0.02)  # the writer retries (and fails) meanwhile
        assert said == 1
        with pytest.raises(mldash.StorageError):
            exp.flush()  # an explicit flush always says so
        with pytest.raises(mldash.StorageError) as caught:
            exp.finish()
    lines = (Path(caught.value.saved_to) / "logs" / "checkpoints.jsonl").read_bytes().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["path"] == "best.ckpt"  # recorded once
