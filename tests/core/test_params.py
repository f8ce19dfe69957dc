"""Parameters: merged, flattened with ".", from every config object a user has."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import os
import pathlib
import types

import numpy as np
import pydantic
import pytest
import torch
from omegaconf import OmegaConf

import mldash
from _procs import run_python


def test_set_merges_and_later_values_win(exp):
    exp.params.set(lr=0.1, batch_size=32)
    exp.params.set(lr=0.01, epochs=3)
    assert exp.params.get() == {"lr": 0.01, "batch_size": 32, "epochs": 3}


def test_nested_dicts_flatten_with_dots_and_unflatten_on_request(exp):
    exp.params.set(model={"arch": "resnet", "head": {"dropout": 0.1}}, seed=1)
    assert exp.params.get() == {"model.arch": "resnet", "model.head.dropout": 0.1, "seed": 1}
    assert exp.params.get(flatten=False) == {"model": {"arch": "resnet", "head": {"dropout": 0.1}}, "seed": 1}


@dataclasses.dataclass
class Optim:
    name: str = "adam"
    lr: float = 1e-3


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 3
    optim: Optim = dataclasses.field(default_factory=Optim)


class PydanticConfig(pydantic.BaseModel):
    width: int = 64
    tags: list[str] = ["a", "b"]


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "config, expected",
    [
        (argparse.Namespace(lr=0.1, amp=True), {"lr": 0.1, "amp": True}),
        (types.SimpleNamespace(lr=0.2), {"lr": 0.2}),
        (TrainConfig(), {"epochs": 3, "optim.name": "adam", "optim.lr": 1e-3}),
        (PydanticConfig(), {"width": 64, "tags": ["a", "b"]}),
        (OmegaConf.create({"a": {"b": 1}, "c": "${a.b}"}), {"a.b": 1, "c": 1}),
    ],
    ids=["argparse", "SimpleNamespace", "nested-dataclass", "pydantic", "omegaconf-resolved"],
)
def test_config_objects_are_accepted_as_they_are(exp, config, expected):
    exp.params.set(config)
    assert exp.params.get() == expected


def test_config_files_are_read_by_path(exp, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"json": {"x": 1}}))
    (tmp_path / "b.yaml").write_text("yaml:\n  y: 2\n")
    (tmp_path / "c.toml").write_text("[toml]\nz = 3\n")
    exp.params.set(str(tmp_path / "a.json"), tmp_path / "b.yaml", tmp_path / "c.toml")
    assert exp.params.get() == {"json.x": 1, "yaml.y": 2, "toml.z": 3}


def test_a_missing_or_unknown_config_file_fails_at_the_call(exp, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config file"):
        exp.params.set(str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match=".json, .yaml or .toml"):
        exp.params.set(str(tmp_path / "config.ini"))


def test_values_that_are_not_json_are_converted(exp):
    exp.params.set(
        np_float=np.float32(0.5),
        np_int=np.int64(7),
        tensor=torch.tensor(2.5),
        path=pathlib.Path("/data/x"),
        color=Color.RED,
        cls=TrainConfig,
        fn=math.sqrt,
        shape=(3, 224, 224),
        nan=float("nan"),
    )
    got = exp.params.get()
    assert got["np_float"] == 0.5 and got["np_int"] == 7 and got["tensor"] == 2.5
    assert got["path"] == "/data/x" and got["color"] == "red"
    assert got["cls"].endswith("TrainConfig") and got["fn"] == "math.sqrt"
    assert got["shape"] == [3, 224, 224]
    assert math.isnan(got["nan"])


def test_an_object_that_is_not_a_config_is_a_clear_type_error(exp):
    with pytest.raises(TypeError, match="cannot read a int"):
        exp.params.set(42)


def test_the_parameters_file_is_replaced_atomically(exp):
    exp.params.set(a=1)
    folder = pathlib.Path(exp.path) / "parameters"
    for i in range(20):
        exp.params.set(**{f"k{i}": i})
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == ["parameters.json"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]
    assert json.loads((folder / "parameters.json").read_text())["k19"] == 19


def test_two_processes_setting_params_on_one_run_merge(root):
    code = (
        "import mldash, sys\n"
        "exp = mldash.Experiment('params/shared', root=sys.argv[1])\n"
        "for i in range(30):\n"
        "    exp.params.set(**{f'{sys.argv[2]}{i}': i})\n"
        "exp.finish()\n"
    )
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), tag]) for tag in "ab"]
    assert [p.wait(60) for p in procs] == [0, 0]
    params = mldash.Experiment("params/shared", root=root).params.get()
    assert len(params) == 60


def test_params_are_readable_from_another_process_without_starting_it(exp, root):
    exp.params.set(lr=0.3)
    out = run_python(
        "import mldash, sys; e = mldash.Experiment('core/run', root=sys.argv[1]); "
        "print(e.params.get()['lr'], e.status)",
        str(root),
    ).stdout.split()
    assert out == ["0.3", "RUNNING"]
    assert os.path.isdir(exp.path)
