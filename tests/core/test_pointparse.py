"""The compiled line parser behind DataFrames (mldash/_pointparse.c).

It may refuse any line (the Python way then reads it), but every value it gives
must be the one orjson.loads() gives for the same text, bit for bit, and it must
never read or write outside the buffers it is handed: its hostile lines also run
under AddressSanitizer and UBSan.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
from decimal import Decimal, getcontext
from pathlib import Path

import orjson
import pytest

from _sanitizer import sanitized_builds, sanitizer_report
from mldash._native import pointparse

np = pytest.importorskip("numpy")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

SOURCE = Path(__file__).resolve().parents[2] / "mldash" / "_pointparse.c"

pytestmark = pytest.mark.skipif(pointparse is None, reason="the compiled parser is not built (or MLDASH_PURE_PYTHON)")


def parse(data: bytes, keys=(b'"v"',), rows: int = 64, kinds: bytes | None = None):
    """(lines taken, bytes used, [timestamps], {key: [values]}) for ``data``."""
    out = np.zeros((len(keys) + 1, rows), dtype=np.int64)
    kinds = bytearray(kinds if kinds is not None else len(keys))
    n, used = pointparse.parse_points(data, tuple(keys), out, kinds)
    columns = {}
    for j, key in enumerate(keys):
        column = out[j + 1, :n]
        columns[key] = (column if kinds[j] == 1 else column.view(np.float64)).tolist()
    return n, used, out[0, :n].tolist(), columns


def taken(number: bytes):
    """The value the parser gives for one number, or None where it refuses it."""
    n, _, _, columns = parse(b'[0,{"v":' + number + b"}]\n")
    return columns[b'"v"'][0] if n else None


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


# ---- numbers: exact, or refused -------------------------------------------------------
@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_orjson_writes_reads_back_bit_for_bit(x):
    for text in (orjson.dumps(x), repr(x).encode()):
        got = taken(text)
        if abs(x) >= sys.float_info.min or x == 0:
            assert got is not None, f"{text!r} was refused"
        if got is not None:
            assert same(got, float(orjson.loads(text))), text


@settings(max_examples=3000, deadline=None)
@given(st.integers(1, 10**19 - 1), st.integers(-27, 27), st.booleans())
def test_decimals_of_up_to_19_digits_and_exponents_to_27_are_exact(digits, exponent, negative):
    text = ("-" if negative else "") + f"{digits}e{exponent}"
    got = taken(text.encode())
    assert got is not None and same(got, orjson.loads(text)), text


def test_halfway_cases_round_to_even_as_orjson_does():
    getcontext().prec = 50
    rng = random.Random(7)
    texts = [b"9007199254740993.0", b"9007199254740995.0", b"4503599627370497.5", b"0.5", b"2.5e-1"]
    for _ in range(400):
        x = rng.uniform(1, 2) * 2.0 ** rng.randint(-12, 12)
        mid = (Decimal(x) + Decimal(float(np.nextafter(x, math.inf)))) / 2
        texts.append(format(mid.normalize(), "e").encode())  # often over 19 digits: refused
    checked = 0
    for text in texts:
        got = taken(text)
        if got is not None:
            assert same(got, float(orjson.loads(text))), text
            checked += 1
    assert checked >= 5


INTS = [
    (b"0", 0), (b"-0", 0), (b"7", 7), (b"9223372036854775807", 2**63 - 1), (b"-9223372036854775808", -(2**63)),
    (b"9223372036854775808", None), (b"-9223372036854775809", None), (b"123456789012345678901", None),
]


@pytest.mark.parametrize("text, want", INTS, ids=[t.decode() for t, _ in INTS])
def test_ints_within_64_bits_are_taken_and_beyond_are_left_to_python(text, want):
    assert taken(text) == want and (want is None or type(taken(text)) is int)


# text: not JSON, or JSON that is not a plain number
REFUSED = [b"01", b"1.", b".5", b"-", b"+1", b"1e", b"1e+", b"0x10", b"1_0", b"nan", b"NaN", b"Infinity",
           b"-Infinity", b"true", b"null", b'"1"', b"[1]", b"{}", b"1e99999", b"1e309", b"1e-400", b"5e-324",
           b"2.2250738585072011e-308", b"1e000001", b"1 ", b" 1", b"1\x00", b"\xff"]


@pytest.mark.parametrize("text", REFUSED, ids=[repr(t) for t in REFUSED])
def test_anything_but_a_json_number_within_the_normal_doubles_is_refused(text):
    assert taken(text) is None


# beyond 19 digits, or an exponent past 27: the C library's strtod_l, in the "C" locale
RARE = [b"1e-28", b"1e28", b"6.637280796695756e-13", b"12345678901234567890.0", b"1.5e00001",
        b"1.00000000000000011102230246251565404236316680908203125", b"2.2250738585072014e-308",
        b"1.7976931348623157e308", b"-4.9e-300", b"123456789012345678901234567890e-50"]


@pytest.mark.parametrize("text", RARE, ids=[t.decode()[:24] for t in RARE])
def test_rare_numbers_go_through_the_c_library_exactly(text):
    assert same(taken(text), float(orjson.loads(text)))


@pytest.fixture(scope="module")
def comma_locale(tmp_path_factory):
    """LOCPATH holding de_DE.UTF-8 (a decimal comma), built here with localedef."""
    folder = tmp_path_factory.mktemp("locales")
    made = subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(folder / "de_DE.UTF-8")],
                          capture_output=True, text=True) if shutil.which("localedef") else None
    if made is None or not (folder / "de_DE.UTF-8").exists():
        pytest.skip("localedef or the de_DE locale source is missing")
    return str(folder)


def test_the_process_locale_does_not_change_the_decimal_point(comma_locale):
    code = (
        "import locale, numpy as np\n"
        "from mldash._native import pointparse\n"
        "locale.setlocale(locale.LC_ALL, 'de_DE.UTF-8')\n"
        "out = np.zeros((2, 1), dtype=np.int64)\n"
        "n, _ = pointparse.parse_points(b'[0,{\"v\":1.2345678901234567890123e-40}]\\n', (b'\"v\"',), out, bytearray(1))\n"
        "print(locale.localeconv()['decimal_point'], n, out[1].view(np.float64)[0] == 1.2345678901234567890123e-40)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LOCPATH": comma_locale})
    assert proc.stdout.split() == [",", "1", "True"], proc.stderr


# ---- lines: the writer's shape, else a stop ---------------------------------------------
LINES = [
    (b'[1,{"v":1.5}]\n', 1),
    (b'[1,{"v":1.5}]', 0),  # no newline yet
    (b'[1,{"v":1.5}]\r\n', 0),
    (b'[1, {"v":1.5}]\n', 0),  # whitespace: not the writer's
    (b'[1,{"v" :1.5}]\n', 0),
    (b'[1,{"w":1.5}]\n', 0),  # another name
    (b'[1,{"v":1.5,"w":2}]\n', 0),  # one more field
    (b'[1,{}]\n', 0),
    (b'[1.5,{"v":1}]\n', 0),  # a timestamp that is not an int
    (b'[1,{"v":1}]]\n', 0),
    (b'[1,{"v":1}\n', 0),
    (b'[1,{"v":{"$float":"nan"}}]\n', 0),  # a tag
    (b'[1,{"v":"x"}]\n', 0),
    (b'{"v":1}\n', 0),
    (b"\n", 0),
    (b"", 0),
    (b'[1,{"v":2}]\n[1,{"v":2}]\n[1,{"v":', 2),  # a partial last line stops it
    (b'[1,{"v":2}]\n[1,{"v":2.5}]\n', 1),  # an int column meets a float: the Python way widens it
]


@pytest.mark.parametrize("data, lines", LINES, ids=[repr(d[:30]) for d, _ in LINES])
def test_it_takes_only_lines_in_the_writers_shape(data, lines):
    n, used, _, _ = parse(data)
    assert n == lines
    assert used == (0 if not lines else len(b"".join(data.split(b"\n")[:lines])) + lines)


def test_fields_are_read_in_the_order_given_with_their_kinds():
    data = b'[5,{"value":0.25,"step":3}]\n[6,{"value":1,"step":4}]\n'
    n, used, stamps, columns = parse(data, keys=(b'"value"', b'"step"'))
    assert (n, used, stamps) == (2, len(data), [5, 6])
    assert columns == {b'"value"': [0.25, 1.0], b'"step"': [3, 4]}  # an int in a float column widens


def test_an_int_too_big_for_a_float_column_stops_it():
    assert parse(b'[1,{"v":0.5}]\n[1,{"v":9007199254740993}]\n')[0] == 1


def test_a_field_name_is_matched_as_its_json_text():
    key = orjson.dumps('a"b\\é')
    data = b"[1,{" + key + b":2}]\n"
    assert parse(data, keys=(key,))[0] == 1
    assert parse(data, keys=(b'"a\\"b\\\\\xc3\xa9"',))[0] == 1  # same bytes
    assert parse(data, keys=(b'"ab"',))[0] == 0


def test_it_stops_when_the_columns_are_full_and_says_where():
    data = b'[1,{"v":1}]\n' * 5
    n, used, _, _ = parse(data, rows=2)
    assert (n, used) == (2, 2 * len(b'[1,{"v":1}]\n'))


def test_the_kinds_it_is_handed_hold():
    assert parse(b'[1,{"v":3}]\n', kinds=b"\x02")[3] == {b'"v"': [3.0]}
    assert parse(b'[1,{"v":3.5}]\n', kinds=b"\x01")[0] == 0


BAD_CALLS = [
    (lambda out, k: pointparse.parse_points(b"", (b'"v"',), out), TypeError, "4 arguments"),
    (lambda out, k: pointparse.parse_points(b"", [b'"v"'], out, k), TypeError, "tuple of bytes"),
    (lambda out, k: pointparse.parse_points(b"", ('"v"',), out, k), TypeError, "tuple of bytes"),
    (lambda out, k: pointparse.parse_points(b"", (), out, bytearray()), ValueError, "1 to 256"),
    (lambda out, k: pointparse.parse_points(b"", (b"k",) * 257, out, bytearray(257)), ValueError, "1 to 256"),
    (lambda out, k: pointparse.parse_points(b"", (b'"v"',), bytes(16), k), BufferError, "not writable"),
    (lambda out, k: pointparse.parse_points(b"", (b'"v"',), out, bytes(1)), BufferError, "not writable"),
    (lambda out, k: pointparse.parse_points(b"", (b'"v"',), out, bytearray(2)), ValueError, "one byte per key"),
    (lambda out, k: pointparse.parse_points(b"", (b'"v"',), out, bytearray(b"\x03")), ValueError, "0, 1 or 2"),
    (lambda out, k: pointparse.parse_points(b"", (b'"v"',), memoryview(bytearray(40))[1:33], k), ValueError,
     "aligned"),
    (lambda out, k: pointparse.parse_points("text", (b'"v"',), out, k), TypeError, "bytes-like"),
]


@pytest.mark.parametrize("call, error, words", BAD_CALLS, ids=[f"{i}-{w}" for i, (_, _, w) in enumerate(BAD_CALLS)])
def test_a_bad_call_is_a_clear_error(call, error, words):
    with pytest.raises(error, match=words):
        call(np.zeros((2, 4), dtype=np.int64), bytearray(1))


def test_two_threads_parse_at_once_with_the_same_results():
    line = b'[1700000000000,{"value":0.30000000000000004,"step":12345}]\n'
    data = line * 20000
    keys = (b'"value"', b'"step"')
    results = []

    def work():
        out = np.zeros((3, 20000), dtype=np.int64)
        results.append((pointparse.parse_points(data, keys, out, bytearray(2)), out[1].view(np.float64)[-1]))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [(20000, len(data))] * 2 and all(r[1] == 0.30000000000000004 for r in results)


# ---- memory safety under the sanitizers ---------------------------------------------------
FUZZ = r'''
import importlib.util, json, random, sys
import numpy as np
spec = importlib.util.spec_from_file_location("mldash._pointparse", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
rng = random.Random(int(sys.argv[2]))
good = b'[1700000000000,{"value":0.30000000000000004,"step":12345678901}]\n'
alphabet = b'[]{},:"0123456789.eE+-\n \\ntrufalse\x00\xff'
keys = (b'"value"', b'"step"')
taken = 0
for _ in range(int(sys.argv[3])):
    data = bytearray(good * rng.randint(0, 3))
    for _ in range(rng.randint(0, 6)):
        i = rng.randrange(len(data) + 1)
        data[i:i + rng.randint(0, 3)] = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))
    cut = rng.randint(0, len(data))
    data = bytes(data[:cut])  # exactly the bytes: an overread lands past the end
    rows = rng.randint(0, 4)
    out = np.empty((3, rows), dtype=np.int64)
    n, used = module.parse_points(data, keys, out, bytearray(2))
    assert 0 <= n <= rows and 0 <= used <= len(data)
    taken += n
print(json.dumps({"taken": taken}))
'''


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    return sanitized_builds(SOURCE, "_pointparse", tmp_path_factory.mktemp("sanitized"))


def test_the_sanitized_parser_survives_mangled_lines(sanitized):
    builds, env = sanitized
    for version, python, built in builds:
        proc = subprocess.run([python, "-c", FUZZ, str(built), "1", "20000"], env=env, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0 and "No module named 'numpy'" in proc.stderr:
            continue  # another Python here without numpy
        assert proc.returncode == 0 and not sanitizer_report(proc.stderr), (
            f"Python {version}, exit {proc.returncode}:\n{proc.stderr[-6000:]}"
        )
        assert json.loads(proc.stdout.splitlines()[-1])["taken"] > 1000  # good lines went through too


def test_the_fuzz_runs_here_unsanitized_too():
    proc = subprocess.run([sys.executable, "-c", FUZZ, pointparse.__file__, "2", "3000"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
