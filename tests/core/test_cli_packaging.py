"""The command line (ls, show, --help) and the package layout, editable and as a wheel.

The command line comes with a plain `pip install mldash`: click and rich are core
dependencies, and nothing of an extra is needed to list and show runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import mldash

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


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


def test_click_and_rich_are_core_dependencies_and_the_cli_extra_still_installs():
    core = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    assert {"click", "rich"} <= core
    assert PYPROJECT["optional-dependencies"]["cli"] == []  # pip install 'mldash[cli]' still works


def plain_install_modules() -> set[str]:
    """The top-level modules a plain `pip install mldash` brings: mldash's own and those
    of its core dependencies and theirs, as installed here (no extra)."""
    wanted, todo = set(), list(PYPROJECT["dependencies"])
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in wanted:
            wanted.add(name)
            try:
                todo += metadata.requires(requirement.name) or []
            except metadata.PackageNotFoundError:
                pytest.fail(f"{requirement.name}, a core dependency of mldash, is not installed here")
    tops = {top for top, dists in metadata.packages_distributions().items()
            if any(canonicalize_name(d) in wanted for d in dists)}
    return tops | {"mldash"}


PLAIN = """
import importlib.abc, json, runpy, sys
allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names)
class PlainInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"No module named {top!r} (not in a plain install)", name=top)
sys.meta_path.insert(0, PlainInstall())
for name in [m for m in sys.modules if m.partition(".")[0] not in allowed and not m.startswith("_")]:
    del sys.modules[name]
if sys.argv[2] == "import":
    __import__(sys.argv[3])
else:
    sys.argv = ["mldash", *sys.argv[2:]]
    runpy.run_module("mldash", run_name="__main__", alter_sys=True)
"""


def test_ls_and_show_work_with_only_what_a_plain_pip_install_brings(runs):
    allowed = plain_install_modules()
    assert not allowed & {"starlette", "fastapi", "uvicorn", "sqlalchemy", "numpy", "boto3"}

    def plain(*args):
        return subprocess.run([sys.executable, "-c", PLAIN, json.dumps(sorted(allowed)), *args],
                              capture_output=True, text=True, timeout=60,
                              env={**__import__("os").environ, "COLUMNS": "200", "MLDASH_ROOT": str(runs)})

    listing = plain("ls")
    assert listing.returncode == 0, listing.stderr
    assert "vision/baseline" in listing.stdout and "COMPLETED" in listing.stdout
    shown = plain("show", "vision/broken")
    assert shown.returncode == 0 and "RuntimeError: exploded at step 0" in shown.stdout, shown.stderr
    assert json.loads(plain("ls", "--json").stdout)[0]["prefix"] == "vision/broken"
    assert plain("--help").returncode == 0
    blocked = plain("import", "starlette")  # installed here for the dashboard, not in a plain install
    assert blocked.returncode == 1 and "not in a plain install" in blocked.stderr


def test_without_click_the_command_says_what_is_missing_and_how_to_mend_it():
    script = "import sys, runpy; sys.modules['click'] = None; sys.argv = ['mldash', 'ls']; " \
             "runpy.run_module('mldash', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "needs click" in result.stderr and "pip install mldash" in result.stderr
    assert "pip install 'click>=8.1' 'rich>=13'" in result.stderr


def test_integrations_import_from_the_integrations_folder():
    import mldash.integrations

    assert Path(mldash.integrations.__file__).parent == REPO / "integrations"


@pytest.mark.timeout(300)
def test_the_wheel_ships_integrations_as_mldash_integrations_and_the_compiled_parts(tmp_path):
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
    for compiled in ("_speedups", "_pointparse"):  # the append and the DataFrame line parser
        assert any(n.startswith(f"mldash/{compiled}.") and n.endswith(".so") for n in names), compiled
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mldash = mldash.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    wheel_metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    for name in ("click", "rich"):  # required by a plain install, not only with an extra
        assert re.search(rf"^Requires-Dist: {name}>=[0-9.]+\s*$", wheel_metadata, re.M), name
    assert re.search(r"^Provides-Extra: cli\s*$", wheel_metadata, re.M)
