"""The command line (ls, show, --help) and the package layout, editable and as a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mldash

REPO = Path(__file__).resolve().parents[2]


def mldash_cli(*args: str, root: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mldash", *args], capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "COLUMNS": "200", **({"MLDASH_ROOT": str(root)} if root else {})},
    )


@pytest.fixture
def runs(root):
    ok = mldash.Experiment("vision/baseline", root=root)
    ok.params.set(lr=0.1, model={"depth": 18})
    for step in range(10):
        ok.metrics("train/loss").append(value=1.0 / (step + 1), step=step)
    ok.log("all good")
    ok.finish()
    bad = mldash.Experiment("vision/broken", root=root)
    try:
        with bad:
            bad.metrics("train/loss").append(value=3.0, step=0)
            raise RuntimeError("exploded at step 0")
    except RuntimeError:
        pass
    return root


def test_help_explains_every_command():
    out = mldash_cli("--help").stdout
    for command in ("ls", "show"):
        assert command in out
    assert "List experiments" in mldash_cli("ls", "--help").stdout


def test_ls_lists_runs_with_status_and_latest_metrics(runs):
    out = mldash_cli("ls", str(runs)).stdout
    assert "vision/baseline" in out and "COMPLETED" in out
    assert "vision/broken" in out and "FAILED" in out
    assert "train/loss=0.1" in out  # the last value of the baseline


def test_ls_filters_by_status(runs):
    out = mldash_cli("ls", str(runs), "--status", "FAILED").stdout
    assert "vision/broken" in out and "vision/baseline" not in out


def test_ls_on_an_empty_root_says_so(tmp_path):
    result = mldash_cli("ls", str(tmp_path))
    assert result.returncode == 0 and "No experiments found" in result.stdout


def test_show_prints_params_metrics_logs_and_the_error(runs):
    out = mldash_cli("show", "vision/baseline", root=runs).stdout
    assert "model.depth" in out and "18" in out
    assert "train/loss" in out and "all good" in out
    broken = mldash_cli("show", "vision/broken", root=runs).stdout
    assert "FAILED" in broken and "RuntimeError: exploded at step 0" in broken
    assert "Traceback" in broken


def test_show_of_an_unknown_or_escaping_prefix_is_a_clear_error(runs):
    for prefix in ("vision/nope", "../../etc"):
        result = mldash_cli("show", prefix, root=runs)
        assert result.returncode != 0
        assert "Error" in result.stderr


def test_integrations_import_from_the_integrations_folder():
    import mldash.integrations

    assert Path(mldash.integrations.__file__).parent == REPO / "integrations"


@pytest.mark.timeout(300)
def test_the_wheel_ships_integrations_as_mldash_integrations_and_the_compiled_append(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=280,
    )
    wheel = next(tmp_path.glob("mldash-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in (REPO / "integrations").glob("*.py"):
        assert f"mldash/integrations/{source.name}" in names
    for source in (REPO / "mldash").glob("*.py"):
        assert f"mldash/{source.name}" in names
    assert not any(n.startswith("integrations/") for n in names)
    assert any(n.startswith("mldash/_speedups.") and n.endswith(".so") for n in names)  # compiled
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mldash = mldash.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
