"""Series read through the compiled line parser (mldash/_frames_native.py): the
parser stops at any line it does not take, and the Python way reads on from there,
so whatever a series holds the frame is the one the Python way alone gives."""

from __future__ import annotations

import math
import os

import pytest

from mldash import _frames, _frames_native
from mldash._frames import series_frame

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytestmark = pytest.mark.skipif(_frames.pointparse is None, reason="the compiled parser is not built")


# Series that make the compiled parser stop and start again: each gives the same
# frame (values, dtypes, index) with and without it, in blocks and segments of
# any size.
TRICKY = {
    "plain": [{"value": i / 7, "step": i, "epoch": i // 10} for i in range(300)],
    "int turns float": [{"value": i} for i in range(100)] + [{"value": i + 0.5} for i in range(100)],
    "float meets an int past 2**53": [{"value": 0.5}] * 50 + [{"value": 2**53 + 1}] + [{"value": 0.25}] * 50,
    "odd values": [{"value": v} for v in [1.0, math.nan, "text", None, True, 2**70, -0.0, 5e-324, 1e-300,
                                          1.7976931348623157e308, -math.inf] * 20],
    "fields change": [{"a": 1.0, "b": 2} for _ in range(100)] + [{"b": 3, "a": 4.0} for _ in range(100)]
    + [{"a": 5.0, "b": 6, "c": 7.0} for _ in range(100)],
    "floats and a bool": [{"value": 0.5}] * 100 + [{"value": True}] + [{"value": 0.25}] * 10,
    "floats then an int past 64 bits": [{"value": 0.5}] * 100 + [{"value": 2**70}],
    "fields that come and go": [{"value": i / 3, "step": i, **({"lr": 0.1} if i % 2 else {})} for i in range(300)],
    "key order that alternates": [({"value": 0.5, "step": i} if i % 2 else {"step": i, "value": 0.5}) for i in range(300)],
    "names to escape": [{'q"uote': i * 0.1, "ünï\\code": i, "back\\slash": -i} for i in range(100)],
}


@pytest.mark.parametrize("name", list(TRICKY))
@pytest.mark.parametrize("block_size, segment", [(64, 64), (1000, 128), (1 << 20, 1 << 20)])
def test_the_compiled_parser_gives_the_frame_python_gives(exp, monkeypatch, name, block_size, segment):
    m = exp.metrics("s")
    m.append_batch(TRICKY[name])
    exp.flush()
    with open(os.path.join(m.folder, "data.jsonl"), "ab") as f:
        f.write(b'[1,{"value":\n' + b'[1700000000000,{"value":1.5}]\n' * 3)  # a damaged line, then plain ones
    monkeypatch.setattr(_frames_native, "SEGMENT", segment)
    monkeypatch.setattr(_frames_native, "FIRST_MISS", 32)
    compiled = series_frame(m.folder, block_size=block_size)
    monkeypatch.setattr(_frames, "pointparse", None)
    python = series_frame(m.folder, block_size=block_size)
    assert compiled.dtypes.to_dict() == python.dtypes.to_dict()
    assert compiled.index.equals(python.index) and len(compiled) == len(TRICKY[name]) + 3
    pd.testing.assert_frame_equal(compiled, python, check_exact=True)


def test_one_odd_line_sends_only_a_short_run_the_python_way(exp, monkeypatch):
    m = exp.metrics("s")
    m.append_batch([{"value": i * 0.5, "step": i} for i in range(20000)])
    m.append(value="odd", step=20000)
    m.append_batch([{"value": i * 0.5, "step": i} for i in range(20001, 40000)])
    exp.flush()
    python_lines = []
    python_way = _frames._add_lines
    monkeypatch.setattr(_frames, "_add_lines",
                        lambda pa, out, lines, count: python_lines.append(lines.count(b"\n")) or python_way(
                            pa, out, lines, count))
    frame = series_frame(m.folder)
    assert frame["value"].iloc[20000] == "odd" and frame["step"].tolist() == list(range(40000))
    assert 0 < sum(python_lines) < 2000  # FIRST_MISS bytes' worth, not the rest of the block


def test_a_series_of_text_goes_the_python_way_in_runs_that_grow(exp, monkeypatch):
    m = exp.metrics("s")
    m.append_batch([{"note": f"n{i}"} for i in range(5000)])
    exp.flush()
    runs = []
    python_way = _frames._add_lines
    monkeypatch.setattr(_frames, "_add_lines",
                        lambda pa, out, lines, count: runs.append(len(lines)) or python_way(pa, out, lines, count))
    monkeypatch.setattr(_frames_native, "FIRST_MISS", 256)
    assert series_frame(m.folder)["note"].tolist() == [f"n{i}" for i in range(5000)]
    assert len(runs) < 12 and runs[1] > runs[0]  # doubling: a few calls, not one a line


# lines the writer never writes, but a hand-edited or damaged file may hold
ODD_LINES = {
    "an empty line": b"\n",
    "two points on one line": b'[1700000000000,{"value":1.0}],[1700000000000,{"value":2.0}]\n',
    "a time past 64 bits": b'[99999999999999999999,{"value":1.0}]\n',
}


@pytest.mark.parametrize("name", list(ODD_LINES))
@pytest.mark.parametrize("block_size", [64, 1 << 20])
def test_an_odd_line_is_skipped_with_its_index_as_read_skips_it(exp, monkeypatch, name, block_size):
    m = exp.metrics("s")
    m.append_batch([{"value": 0.5, "step": i} for i in range(5)])
    exp.flush()
    with open(os.path.join(m.folder, "data.jsonl"), "ab") as f:
        f.write(ODD_LINES[name] + b'[1700000000000,{"value":0.25,"step":9}]\n')
    expected = {p["index"]: p["data"]["value"] for p in m.read()["data"]}
    assert list(expected) == [0, 1, 2, 3, 4, 6]
    compiled = series_frame(m.folder, block_size=block_size)
    monkeypatch.setattr(_frames, "pointparse", None)
    python = series_frame(m.folder, block_size=block_size)
    assert compiled["value"].to_dict() == python["value"].to_dict() == expected


def test_a_file_that_shrinks_while_it_is_read_ends_the_read():
    """The size was taken first; the file then lost its tail mid-line (truncated, or
    copied over in place): the read stops at what is there, not in a loop that grows."""
    import io

    f = io.BytesIO(b'[1,{"value":0.5}]\n' * 10 + b'[1,{"val')
    blocks = [bytes(memoryview(buf)[:end]) for buf, end in _frames._blocks(f, 280, 64)]
    assert b"".join(blocks) == b'[1,{"value":0.5}]\n' * 10


def test_fields_that_change_every_line_go_the_python_way_after_a_few_tries(exp, monkeypatch):
    m = exp.metrics("s")
    m.append_batch([{"value": i / 3, "step": i, **({"lr": 0.1} if i % 2 else {})} for i in range(20000)])
    exp.flush()
    calls = []
    real = _frames_native.pointparse

    class Counting:
        @staticmethod
        def parse_points(*args):
            calls.append(1)
            return real.parse_points(*args)

    monkeypatch.setattr(_frames_native, "pointparse", Counting)
    frame = series_frame(m.folder)
    assert frame["step"].tolist() == list(range(20000)) and frame["lr"].isna().sum() == 10000
    assert len(calls) < 40, len(calls)  # not one a line

