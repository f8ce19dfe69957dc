"""`mldash export` and `mldash ls --filter`: runs chosen by prefix or by the filter language,
written as files another tool reads, exactly (jsonl) or through pandas (csv, parquet),
or as TensorBoard event files."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

import mldash
from _disks import fill, mount, mounted
from mldash import _codec


def cli(*args: str, cwd=None):
    return subprocess.run([sys.executable, "-m", "mldash", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def runs_root(root):
    for lr, name in ((1e-4, "small"), (1e-2, "large")):
        with mldash.Experiment(f"vision/{name}", root=root, system_metrics=False) as exp:
            exp.params.set(lr=lr, model={"depth": 50})
            for step in range(5):
                exp.metrics("val/loss").append(value=1.0 / (step + 1) + lr, step=step)
            exp.metrics("odd").append(big=2**70, nan=math.nan, step=0)
    return root


def read_jsonl(path) -> list[dict]:
    with open(path, "rb") as f:
        return [_codec.loads(line) for line in f]


def test_jsonl_export_writes_the_runs_table_and_every_series_exactly(runs_root, tmp_path):
    out = tmp_path / "out"
    result = cli("export", "--filter", "params.lr < 1e-3", "--format", "jsonl", "--out", str(out), "--root", str(runs_root))
    assert result.returncode == 0, result.stderr
    assert "exported 1 runs, 2 series, 6 points" in result.stdout
    (row,) = read_jsonl(out / "runs.jsonl")
    assert row["prefix"] == "vision/small" and row["params.lr"] == 1e-4 and row["params.model.depth"] == 50
    assert row["metrics.val/loss.min"] == pytest.approx(0.2 + 1e-4)
    points = read_jsonl(out / "series" / "vision" / "small" / "val" / "loss.jsonl")
    assert [(p["index"], p["step"]) for p in points] == [(i, i) for i in range(5)]
    assert points[0]["value"] == 1.0 + 1e-4 and points[0]["timestamp"] > 1.7e9
    (odd,) = read_jsonl(out / "series" / "vision" / "small" / "odd.jsonl")
    assert odd["big"] == 2**70 and math.isnan(odd["nan"])  # exact: the codec's tags
    assert not (out / "series" / "vision" / "large").exists()


def test_csv_and_parquet_exports_read_back_with_pandas(runs_root, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    for fmt, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        out = tmp_path / fmt
        result = cli("export", "vision/large", "--format", fmt, "--out", str(out), "--root", str(runs_root))
        assert result.returncode == 0, result.stderr
        table = read(out / f"runs.{fmt}")
        assert list(table["prefix"]) == ["vision/large"] and table["params.lr"].iloc[0] == 1e-2
        loss = read(out / "series" / "vision" / "large" / "val" / f"loss.{fmt}")
        assert list(loss["step"]) == [0, 1, 2, 3, 4]
        assert loss["value"].tolist() == pytest.approx([1.0 / (s + 1) + 1e-2 for s in range(5)])


def test_a_folder_prefix_exports_every_run_in_it(runs_root, tmp_path):
    result = cli("export", "vision", "--format", "jsonl", "--out", str(tmp_path / "o"), "--root", str(runs_root))
    assert result.returncode == 0, result.stderr
    assert sorted(r["prefix"] for r in read_jsonl(tmp_path / "o" / "runs.jsonl")) == ["vision/large", "vision/small"]


def test_tensorboard_export_reads_back_as_scalars(runs_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    for _ in range(2):  # a second export into the same folder replaces the first
        result = cli("export", "vision/small", "--format", "tensorboard", "--out", str(out), "--root", str(runs_root))
        assert result.returncode == 0, result.stderr
    assert len(list((out / "tensorboard" / "vision" / "small").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(out / "tensorboard" / "vision" / "small"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"val/loss", "odd/big", "odd/nan"}
    loss = events.Scalars("val/loss")
    assert [e.step for e in loss] == [0, 1, 2, 3, 4]
    assert loss[4].value == pytest.approx(0.2 + 1e-4)


@pytest.mark.parametrize("args, code, message", [
    ((), 2, "name the runs: PREFIX... or --filter EXPR"),
    (("--filter", "params.lr <"), 2, "^"),  # the caret under the place
    (("vision/missing",), 1, "no run 'vision/missing'"),
    (("--filter", "params.lr > 1"), 1, "no runs match"),
    (("vision", "--format", "xml"), 2, "'xml' is not one of"),
])
def test_export_errors_are_clear_and_write_nothing(runs_root, tmp_path, args, code, message):
    result = cli("export", *args, "--out", str(tmp_path / "o"), "--root", str(runs_root))
    assert result.returncode == code and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "runs.jsonl").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tensorboard"])
def test_export_to_a_full_disk_fails_clearly_and_leaves_no_half_file(runs_root, small_disk, fmt):
    if fmt == "tensorboard":
        pytest.importorskip("tensorboard")
    ballast = fill(small_disk)
    ballast.unlink()
    with open(ballast, "wb") as f:  # leave a little room: the export starts, then fails
        f.write(b"\0" * ((1 << 20) - (48 << 10)))
    many = mldash.Experiment("vision/long", root=runs_root, system_metrics=False)
    with many:
        many.metrics("val/loss").append_batch([{"value": i / 7, "step": i} for i in range(20000)])
    result = cli("export", "vision", "--format", fmt, "--out", str(small_disk / "o"), "--root", str(runs_root))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write the export to" in result.stderr and "No space left on device" in result.stderr
    assert not [p for p in (small_disk / "o").rglob("*.part")]


def test_export_to_a_read_only_disk_fails_clearly(runs_root, small_disk):
    view = small_disk.parent / "ro"
    with mounted(view, "--bind", str(small_disk)):
        mount("-o", "remount,bind,ro", str(view))
        result = cli("export", "vision", "--out", str(view / "o"), "--root", str(runs_root))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write the export to" in result.stderr and "Read-only file system" in result.stderr


def test_ls_filter_lists_only_the_matching_runs(runs_root):
    result = cli("ls", str(runs_root), "--filter", "metrics.val/loss.last < 0.21", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["prefix"] for row in __import__("json").loads(result.stdout)] == ["vision/small"]
    bad = cli("ls", str(runs_root), "--filter", "params.lr <<")
    assert bad.returncode == 2 and "^" in bad.stderr and "Traceback" not in bad.stderr


def test_export_from_a_server_writes_what_a_local_export_writes(root, tmp_path, monkeypatch):
    from _server_support import start_server

    monkeypatch.setenv("MLDASH_SYNC_TIMEOUT", "60")  # finish() waits until the server has it all
    with start_server(data=tmp_path / "server") as server:
        with mldash.Experiment("team/run", root=root, remote=server.url, system_metrics=False) as exp:
            exp.params.set(lr=0.5)
            for step in range(3):
                exp.metrics("loss").append(value=float(step), step=step)
        remote = cli("export", "--filter", "params.lr = 0.5", "--format", "jsonl", "--out", str(tmp_path / "r"),
                     "--remote", server.url)
    assert remote.returncode == 0, remote.stderr
    local = cli("export", "team/run", "--format", "jsonl", "--out", str(tmp_path / "l"), "--root", str(root))
    assert local.returncode == 0, local.stderr
    series = ("series", "team", "run", "loss.jsonl")
    assert read_jsonl(tmp_path.joinpath("r", *series)) == read_jsonl(tmp_path.joinpath("l", *series))
    (row,) = read_jsonl(tmp_path / "r" / "runs.jsonl")
    assert row["prefix"] == "team/run" and row["params.lr"] == 0.5 and row["metrics.loss.max"] == 2.0
