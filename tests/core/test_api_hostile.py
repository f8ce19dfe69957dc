"""Every field of the Python API against the hostile-input tables (tests/hostile_inputs.py).

A bad value fails at the call with a clear ValueError or TypeError, and leaves
nothing on disk outside the root; a good one is stored and read back exactly.
"""

from __future__ import annotations

import math
import os

import pytest
from hostile_inputs import (
    BAD_DOCUMENT_TEXT,
    BAD_LABELS,
    BAD_NAMESPACES,
    BAD_PATH_PARTS,
    BAD_PATHS,
    BAD_TEXT,
    BIG,
    GOOD_LABELS,
    GOOD_VALUES,
)

import mldash


def _exp(root, **kwargs):
    kwargs.setdefault("project", "p")
    kwargs.setdefault("name", "n")
    return mldash.Experiment(root=root, **kwargs)


# field -> a call that puts ``v`` into it
PATH_PART_FIELDS = {
    "project": lambda root, v: _exp(root, project=v).start(),
    "name": lambda root, v: _exp(root, name=v).start(),
    "project part": lambda root, v: mldash.Experiment(f"{v}/n" if isinstance(v, str) else v, root=root).start(),
    "folder part": lambda root, v: _exp(root, folder=f"f/{v}" if isinstance(v, str) else v).start(),
    "prefix part": lambda root, v: mldash.Experiment(f"p/{v}" if isinstance(v, str) else v, root=root).start(),
    "metric name part": lambda root, v: _exp(root).metrics(f"m/{v}" if isinstance(v, str) else v),
    "$MLDASH_PROJECT": None,  # below: needs the environment
}
PATH_FIELDS = {
    "prefix": lambda root, v: mldash.Experiment(v, root=root).start(),
    "folder": lambda root, v: _exp(root, folder=v).start(),
    "metric name": lambda root, v: _exp(root).metrics(v),
}
LABEL_FIELDS = {
    "tag": lambda root, v: _exp(root, tags=[v]).start(),
    "field name": lambda root, v: _exp(root).metrics("m").append(**{v: 1}) if isinstance(v, str) else _exp(root).metrics("m").append_batch([{v: 1}]),
    "field name in a batch": lambda root, v: _exp(root).metrics("m").append_batch([{"ok": 1}, {v: 1}]),
}
DOCUMENT_TEXT_FIELDS = {
    "description": lambda root, v: _exp(root, description=v).start(),
    "parameter value": lambda root, v: _exp(root).params.set(lr=v),
    "parameter name": lambda root, v: _exp(root).params.set({v: 1}),
    "nested parameter": lambda root, v: _exp(root).params.set(model={"head": {"kind": v}}),
    "summary value": lambda root, v: _exp(root).summary.set(best=v),
    "checkpoint path": lambda root, v: _exp(root).checkpoint(v, step=1),
    "checkpoint field": lambda root, v: _exp(root).checkpoint("c.ckpt", step=1, note=v),
}
TEXT_FIELDS = {
    "metric string": lambda root, v: _exp(root).metrics("m").append(text=v, step=1),
    "metric string in a batch": lambda root, v: _exp(root).metrics("m").append_batch([{"text": v}]),
    "log message": lambda root, v: _exp(root).log(v),
    "log metadata value": lambda root, v: _exp(root).log("m", metadata={"k": v}),
    "log metadata key": lambda root, v: _exp(root).log("m", metadata={v: 1}),
}


def _rows(fields: dict, table: list, composed: bool = False) -> list:
    """A row per field and value; ``composed`` fields put the value into a longer
    path, where a "/" in it or an empty part is another path's matter (BAD_PATHS
    has those)."""
    return [
        pytest.param(call, value, error, match, id=f"{field}-{value!r:.30}")
        for field, call in fields.items()
        if call is not None
        for value, error, match in table
        if not (composed and isinstance(value, str) and ("/" in value or not value))
    ]


def _outside(root) -> set[str]:
    """Everything under root's parent that is not root itself."""
    base = os.path.dirname(root)
    found = set()
    for folder, dirs, files in os.walk(base):
        if folder.startswith(str(root)):
            continue
        found.update(os.path.join(folder, n) for n in dirs + files)
    return found


@pytest.mark.parametrize(
    "call,value,error,match",
    _rows({k: PATH_PART_FIELDS[k] for k in ("project", "name")}, BAD_PATH_PARTS)
    + _rows(PATH_PART_FIELDS, BAD_PATH_PARTS, composed=True)
    + _rows(PATH_FIELDS, BAD_PATHS)
    + _rows(LABEL_FIELDS, BAD_LABELS)
    + _rows(DOCUMENT_TEXT_FIELDS, BAD_DOCUMENT_TEXT)
    + _rows(TEXT_FIELDS, BAD_TEXT),
)
def test_bad_value_fails_at_the_call_and_writes_nothing_outside(root, call, value, error, match):
    before = _outside(root)
    with pytest.raises(error, match=match):
        call(root, value)
    assert _outside(root) == before


@pytest.mark.parametrize("value,error,match", BAD_PATH_PARTS, ids=lambda v: repr(v)[:30])
def test_bad_project_from_the_environment_fails_at_the_call(root, monkeypatch, value, error, match):
    if not isinstance(value, str) or not value or "\x00" in value or "\ud800" in value or "\udfff" in value:
        pytest.skip("the environment cannot hold this value")
    monkeypatch.setenv("MLDASH_PROJECT", value)
    with pytest.raises(error, match=match):
        mldash.Experiment(name="n", root=root)


@pytest.mark.parametrize("value,error,match", BAD_NAMESPACES, ids=lambda v: repr(v)[:30])
def test_bad_namespace_fails_at_the_call(root, value, error, match):
    with pytest.raises(error, match=match):
        _exp(root, namespace=value)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"remote": 123}, TypeError, "remote must be a str"),
        ({"remote": "ftp://x"}, ValueError, "http:// or https://"),
        ({"remote": "http://a b"}, ValueError, "white space"),
        ({"token": 123}, TypeError, "token must be a str"),
        ({"token": "a b"}, ValueError, "printable ASCII"),
        ({"token": "tok\x00"}, ValueError, "printable ASCII"),
        ({"description": 123}, TypeError, "description must be a str"),
        ({"tags": "one"}, TypeError, "not one string"),
        ({"root": 5}, TypeError, "root must be a path"),
        ({"root": "a\x00b"}, ValueError, "NUL"),
        ({"flush_interval": math.inf}, ValueError, "from 0.001 to 3600 seconds"),
        ({"flush_interval": 1e300}, ValueError, "from 0.001 to 3600 seconds"),
        ({"flush_interval": math.nan}, ValueError, "from 0.001 to 3600 seconds"),
        ({"flush_interval": 0}, ValueError, "from 0.001 to 3600 seconds"),
        ({"flush_interval": -1}, ValueError, "from 0.001 to 3600 seconds"),
        ({"flush_interval": 1e-300}, ValueError, "from 0.001 to 3600 seconds"),  # would spin a core
        ({"flush_interval": "1"}, TypeError, "number of seconds"),
        ({"flush_interval": True}, TypeError, "number of seconds"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_bad_argument_fails_at_construction(root, kwargs, error, match):
    kwargs.setdefault("root", root)
    with pytest.raises(error, match=match):
        mldash.Experiment(project="p", name="n", **kwargs)


@pytest.mark.parametrize("text", ["inf", "nan", "-1", "soon"])
def test_bad_flush_interval_from_the_environment_fails_at_construction(root, monkeypatch, text):
    monkeypatch.setenv("MLDASH_FLUSH_INTERVAL", text)
    with pytest.raises(ValueError, match="MLDASH_FLUSH_INTERVAL"):
        _exp(root)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda e: e.checkpoint("c.ckpt", step="x"), TypeError, "step must be an int"),
        (lambda e: e.checkpoint("c.ckpt", step=-1), TypeError, "step must be an int"),
        (lambda e: e.checkpoint("c.ckpt", step=True), TypeError, "step must be an int"),
        (lambda e: e.checkpoint(b"c.ckpt"), TypeError, "checkpoint path must be a str"),
        (lambda e: e.log("m", level="warning"), ValueError, "unknown log level"),
        (lambda e: e.log("m", metadata=[1]), TypeError, "must be a dict"),
        (lambda e: e.log("m", metadata={"x": "y" * 9_000_000}), ValueError, "at most 1,000,000"),
        (lambda e: e.finish(status="DONE"), ValueError, "status must be one of"),
        (lambda e: e.metrics("m").append(), ValueError, "at least one field"),
        (lambda e: e.metrics("m").append(v=[1]), TypeError, "metric values must be"),
        (lambda e: e.metrics("m").append(a="x" * 600_000, b="y" * 600_000), ValueError, "a point holds"),
        (lambda e: e.metrics("m").read(-1), ValueError, "start_index"),
        (lambda e: e.read_logs(level="loud"), ValueError, "unknown log level"),
    ],
    ids=lambda v: getattr(v, "__name__", repr(v))[:40],
)
def test_bad_call_fails_clearly(root, call, error, match):
    with pytest.raises(error, match=match):
        call(_exp(root))


def _deep(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.params.set(deep=_deep(5000)),
        lambda e: e.summary.set(deep=_deep(5000)),
        lambda e: e.log("m", metadata=_deep(5000)),
        lambda e: e.checkpoint("c.ckpt", step=1, info=_deep(5000)),
    ],
    ids=["params", "summary", "log metadata", "checkpoint"],
)
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(root, call):
    with pytest.raises((ValueError, TypeError), match="deep|Recursion limit|nest"):
        call(_exp(root))


@pytest.mark.parametrize("label", GOOD_LABELS)
def test_good_labels_are_accepted_as_tags_and_field_names(root, label):
    with _exp(root, tags=[label]) as exp:
        exp.metrics("m").append(**{label: 1})
    assert label in exp.info()["tags"]
    assert exp.metrics("m").read()["data"][0]["data"] == {label: 1}


def test_good_values_are_stored_exactly_everywhere(root):
    values = {f"v{i}": v for i, v in enumerate(GOOD_VALUES)}
    with _exp(root) as exp:
        exp.metrics("m").append(**values)
        exp.metrics("b").append_batch([values, values])
        exp.params.set(**values)
        exp.summary.set(**values)
        exp.log("m", metadata=values)
        exp.checkpoint("c.ckpt", step=1, **values)
    again = _exp(root)
    assert again.metrics("m").read()["data"][0]["data"] == values
    assert [p["data"] for p in again.metrics("b").read()["data"]] == [values, values]
    assert {k: again.params.get()[k] for k in values} == values
    assert {k: again.summary.get()[k] for k in values} == values
    assert again.read_logs()["data"][0]["metadata"] == values
    assert {k: again.checkpoints()[0][k] for k in values} == values


def test_big_ints_keep_every_digit_and_stay_ints(root):
    with _exp(root) as exp:
        exp.metrics("m").append(step=BIG, value=-BIG)
        exp.params.set(seed=BIG)
    point = _exp(root).metrics("m").read()["data"][0]["data"]
    assert point == {"step": BIG, "value": -BIG} and type(point["step"]) is int
    assert _exp(root).params.get()["seed"] == BIG


def test_nul_is_data_in_metric_strings_and_logs(root):
    with _exp(root) as exp:
        exp.metrics("m").append(text="a\x00b")
        exp.log("nul\x00inside", metadata={"k": "\x00"})
    again = _exp(root)
    assert again.metrics("m").read()["data"][0]["data"]["text"] == "a\x00b"
    assert again.read_logs()["data"][0]["message"] == "nul\x00inside"
    assert again.read_logs()["data"][0]["metadata"] == {"k": "\x00"}


def test_a_damaged_log_record_does_not_break_reading_by_level(root):
    with _exp(root) as exp:
        exp.log("first", level="warn")
    logs = os.path.join(exp.path, "logs", "logs.jsonl")
    with open(logs, "ab") as f:  # as an old version wrote a record it could not encode
        f.write(b'{"index": 1, "timestamp": "1.0", "level": "\'warn\'", "message": "\'x\'"}\n')
    records = _exp(root).read_logs(level="info")["data"]
    assert [r["index"] for r in records] == [0, 1]
    assert [r["index"] for r in _exp(root).read_logs(level="warn")["data"]] == [0]


@pytest.mark.parametrize(
    "key", [v for v, _, _ in BAD_PATH_PARTS + BAD_PATHS + BAD_LABELS if isinstance(v, str)], ids=lambda v: repr(v)[:30]
)
def test_any_framework_key_becomes_a_valid_metric_name(root, key):
    from mldash._naming import metric_parts, safe_metric_name

    name = safe_metric_name(key)
    metric_parts(name)  # raises if it is not valid
    assert safe_metric_name(key) == name  # the same series every time
    _exp(root).metrics(name).append(v=1)


@pytest.mark.parametrize(
    "fields",
    [{"text": "x" * 1_000_001}, {"a": "x" * 600_000, "b": "y" * 600_000}],
    ids=["one long string", "two that add up"],
)
def test_too_much_ascii_text_fails_also_for_names_seen_before(root, fields):
    metric = _exp(root).metrics("m")
    metric.append(**{k: "short" for k in fields})  # the names are known: the fast path
    with pytest.raises(ValueError, match="at most 1,000,000"):
        metric.append(**fields)


@pytest.mark.parametrize("prefix", ["held/run/metrics/loss", "held/run/summary.json", "held/run/deeper/x"])
def test_a_run_cannot_start_inside_another_runs_folder(root, prefix):
    with mldash.Experiment("held/run", root=root) as held:
        held.metrics("loss").append(value=1)
    with pytest.raises(ValueError, match="share its folder"):
        mldash.Experiment(prefix, root=root).start()
    assert held.metric_names() == ["loss"]


def test_a_run_cannot_start_around_another_run(root):
    with mldash.Experiment("outer/mid/leaf", root=root):
        pass
    with pytest.raises(ValueError, match="share its folder"):
        mldash.Experiment("outer/mid", root=root).start()


@pytest.mark.parametrize(
    "argv, cwd_name", [(["train.py", "\udcff\udcfe"], None), (["train.py"], "d\udcff")], ids=["argv", "cwd"]
)
def test_text_from_the_environment_that_is_not_utf8_never_stops_the_data(root, tmp_path, monkeypatch, argv, cwd_name):
    import sys

    monkeypatch.setattr(sys, "argv", argv)
    if cwd_name is not None:
        folder = os.path.join(os.fsencode(tmp_path), os.fsencode(cwd_name))
        os.mkdir(folder)
        monkeypatch.chdir(folder)
    with _exp(root) as exp:
        exp.metrics("m").append(v=1)
    assert exp.metrics("m").read()["data"][0]["data"] == {"v": 1}
    info = exp.info()
    assert info["prefix"] == "p/n" and info["status"] == "COMPLETED"
    assert "\ufffd" in ("".join(info["argv"]) + info["cwd"])


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.metrics("m").append(**{"$float": "NaN"}),
        lambda e: e.metrics("m").append(**{"$int": 5}),
        lambda e: e.params.set({"$int": "5"}),
        lambda e: e.params.set(lst=[{"$int": "5"}]),
        lambda e: e.summary.set(v=[{"$float": "NaN"}]),
        lambda e: e.log("m", metadata={"v": {"$float": "NaN"}}),
        lambda e: e.checkpoint("c.ckpt", step=1, x={"$int": "9"}),
    ],
    ids=["field", "field int", "param key", "param list", "summary", "log metadata", "checkpoint"],
)
def test_the_codecs_tag_keys_are_refused_in_a_users_data(root, call):
    """{"$float": "NaN"} is how NaN is stored: a user's own such dict would read back as NaN."""
    with pytest.raises(ValueError, match="reserved"):
        call(_exp(root))


def test_a_name_longer_than_a_file_name_in_utf8_fails_at_the_call(root):
    with pytest.raises(ValueError, match="255 bytes"):
        _exp(root).metrics("é" * 150)
    with pytest.raises(ValueError, match="255 bytes"):
        _exp(root, project="é" * 150)


def test_many_long_field_names_count_toward_the_points_text(root):
    fields = {f"f{i:06d}" + "x" * 190: 1 for i in range(6_000)}
    with pytest.raises(ValueError, match="a point holds"):
        _exp(root).metrics("m").append(**fields)


def test_a_log_restored_from_a_rescue_folder_reads_with_its_line_number_as_index(root):
    with _exp(root) as exp:
        exp.log("first")
    with open(os.path.join(exp.path, "logs", "logs.jsonl"), "ab") as f:  # as the docs' `cat >>` does
        f.write(b'{"timestamp": 2.0, "level": "warn", "message": "rescued", "metadata": null}\n')
    assert [(r["index"], r["message"]) for r in _exp(root).read_logs()["data"]] == [(0, "first"), (1, "rescued")]
    assert [r["index"] for r in _exp(root).read_logs(level="warn")["data"]] == [1]
