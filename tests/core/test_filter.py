"""The filter language (mldash/_filter.py): what parses to what, how a filter
decides for a run, and the errors a bad filter gets. docs/analysis.md is the
grammar in prose; the server's SQL and the dashboard share this parser."""

from __future__ import annotations

import math
import re

import pytest

from mldash._filter import (
    MAX_CHARS,
    MAX_DEPTH,
    MISSING,
    And,
    Compare,
    Contains,
    Duration,
    FilterError,
    In,
    Key,
    Match,
    Not,
    Or,
    Time,
    keys_of,
    keys_used,
    matches,
    parse,
    walk,
)

LR = Key("params", "lr")


def lookup_in(values: dict):
    """A run as the evaluator sees it: filter keys (as text) to values."""
    return lambda key: values.get(key.text, MISSING)


def passes(text: str, **values) -> bool:
    return matches(parse(text), lookup_in({k.replace("__", "."): v for k, v in values.items()}))


def run(**values):
    return lookup_in(values)


# ---- what parses to what ---------------------------------------------------------------
def test_the_issues_example_is_an_and_of_three_comparisons():
    node = parse("params.lr < 1e-3 and status = COMPLETED and metrics.val/loss.min < 0.2")
    assert node == And((
        Compare(LR, "<", 0.001),
        Compare(Key("run", "status"), "=", "COMPLETED"),
        Compare(Key("metrics", "val/loss", "min"), "<", 0.2),
    ))


def test_and_binds_tighter_than_or_and_not_tighter_than_and():
    a, b, c = (Compare(Key("params", k), "=", 1) for k in "abc")
    assert parse("params.a = 1 or params.b = 1 and params.c = 1") == Or((a, And((b, c))))
    assert parse("not params.a = 1 and params.b = 1") == And((Not(a), b))
    assert parse("(params.a = 1 or params.b = 1) and params.c = 1") == And((Or((a, b)), c))


def test_chains_of_and_flatten_into_one_node():
    node = parse("params.a = 1 and (params.b = 1 and params.c = 1)")
    assert isinstance(node, And) and len(node.operands) == 3


def test_keywords_are_case_insensitive():
    assert parse("params.lr < 1 AND NOT params.x In [TRUE, Null]") == parse("params.lr < 1 and not params.x in [true, null]")


def test_no_filter_is_none_and_passes_every_run():
    assert parse(None) is None and parse("") is None and parse("  \n ") is None
    assert matches(None, run()) is True


def test_metric_names_keep_slashes_and_dots_and_end_in_an_aggregate():
    assert parse("metrics.sys/gpu/0.util.max > 90").key == Key("metrics", "sys/gpu/0.util", "max")
    assert parse("metrics.val/loss.last < 1").key == Key("metrics", "val/loss", "last")


def test_keys_with_spaces_or_operators_are_quoted():
    assert parse('params."learning rate" = 1').key == Key("params", "learning rate")
    assert parse("summary.'a=b' = 1").key == Key("summary", "a=b")
    assert parse('metrics."val loss".min < 1').key == Key("metrics", "val loss", "min")


def test_a_keys_text_parses_back_to_the_same_key():
    for key in (LR, Key("params", "a b"), Key("params", 'q"uote'), Key("metrics", "val loss", "max"),
                Key("metrics", "train/loss", "last"), Key("summary", "x=y"), Key("run", "status")):
        assert parse(f"{key.text} = 1").key == key


@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("-2", -2), ("+3.5", 3.5), (".5", 0.5), ("10", 10), (str(2**70), 2**70),
    ('"a \\"b\\" \\n"', 'a "b" \n'), ("'single'", "single"), ('"\\d+"', "\\d+"), ('"\\u00e9"', "é"),
    ("true", True), ("False", False), ("null", None), ("adam", "adam"), ("android", "android"),
    ("remote-b", "remote-b"), ("vision/run-1.5", "vision/run-1.5"), ("and-more", "and-more"),
])
def test_literals(text, value):
    got = parse(f"params.x = {text}").value
    assert got == value and type(got) is type(value)


def test_numbers_that_look_like_ints_stay_ints():
    assert type(parse("params.x = 3").value) is int
    assert type(parse("params.x = 3.0").value) is float


def test_dates_are_epoch_seconds_utc_unless_a_zone_is_given():
    assert parse("started > 2026-01-01").value == Time(1767225600.0, "2026-01-01")
    assert parse("started > 2026-01-01T01:00:00+01:00").value.seconds == 1767225600.0
    assert parse("started > 2026-01-01T00:00Z").value.seconds == 1767225600.0
    assert parse('ended < "2026-01-02"').value == Time(1767312000.0, "2026-01-02")  # quoted, on a time key


def test_durations_are_seconds():
    assert parse("duration > 10m").value == Duration(600.0, "10m")
    assert parse("duration > 1h30m").value.seconds == 5400
    assert parse("duration < 500ms").value.seconds == 0.5
    assert parse("duration < 2d").value.seconds == 172800


def test_status_is_checked_and_written_in_capitals():
    assert parse("status = completed").value == "COMPLETED"
    assert parse("status in [failed, 'cancelled']").values == ("FAILED", "CANCELLED")


def test_in_not_in_contains_and_membership_the_other_way_round():
    assert parse("params.x in [1, 'a']") == In(Key("params", "x"), (1, "a"))
    assert parse("params.x not in [1]") == Not(In(Key("params", "x"), (1,)))
    assert parse('tags contains "x"') == parse('"x" in tags') == Contains(Key("run", "tags"), "x")
    assert parse("params.x in []") == In(Key("params", "x"), ())


def test_glob_is_tilde_and_regex_is_equals_tilde():
    assert parse('name ~ "resnet*"') == Match(Key("run", "name"), "resnet*", regex=False)
    assert parse('name =~ "^res"') == Match(Key("run", "name"), "^res", regex=True)


def test_double_equals_is_equals():
    assert parse("params.x == 1") == parse("params.x = 1")


def test_keys_used_lists_what_a_filter_reads():
    node = parse("params.lr < 1 and (status = FAILED or not metrics.loss.min > 2)")
    assert keys_used(node) == {LR, Key("run", "status"), Key("metrics", "loss", "min")}


def test_walk_visits_a_long_chain_without_recursion():
    node = parse(" or ".join(f"params.x = {i}" for i in range(5000)))
    assert sum(1 for _ in walk(node)) == 5001


def test_keys_of_lists_the_keys_a_run_offers_as_a_filter_spells_them():
    keys = keys_of(params=["lr", "a b"], summary=["acc"], metrics=["val/loss"])
    assert keys[:5] == ["prefix", "project", "folder", "name", "status"]
    assert keys[-6:] == ['params."a b"', "params.lr", "summary.acc",
                         "metrics.val/loss.last", "metrics.val/loss.min", "metrics.val/loss.max"]
    for key in keys:
        parse(f"{key} = 1" if key != "status" else "status = RUNNING")  # each is valid filter text


# ---- how a filter decides ----------------------------------------------------------------
def test_numbers_compare_across_int_and_float():
    assert passes("params.lr < 1e-3", params__lr=0.0001)
    assert not passes("params.lr < 1e-3", params__lr=0.01)
    assert passes("params.bs = 32.0", params__bs=32)


def test_a_missing_key_makes_every_comparison_false():
    for text in ("params.x = 1", "params.x != 1", "params.x < 1", "params.x in [1]", 'params.x ~ "*"',
                 'params.x =~ ""', 'params.x contains "a"', "metrics.loss.min < 1"):
        assert not passes(text), text
    assert passes("not params.x = 1")  # not flips it exactly: two-valued


def test_null_equals_a_missing_key_and_a_null_value():
    assert passes("params.x = null") and passes("params.x = null", params__x=None)
    assert not passes("params.x = null", params__x=0)
    assert passes("params.x != null", params__x=0) and not passes("params.x != null")
    assert not passes("params.x != 1", params__x=None)


def test_values_of_different_kinds_never_compare():
    assert not passes("params.x = 1", params__x="1")
    assert not passes("params.x != 1", params__x="1")
    assert not passes("params.x < 5", params__x="1")
    assert not passes("params.x = 1", params__x=True)  # a bool is not a number
    assert not passes("params.x = true", params__x=1)
    assert not passes('params.x > "a"', params__x=5)


def test_strings_order_by_code_point_and_bools_do_not_order():
    assert passes('params.opt < "b"', params__opt="adam")
    assert not passes("params.x > 0", params__x=True)


def test_nan_compares_false_except_not_equal():
    assert not passes("metrics.loss.last < 1", metrics__loss__last=math.nan)
    assert not passes("metrics.loss.last >= 1", metrics__loss__last=math.nan)


def test_tags_are_a_set_of_strings():
    tags = ["baseline", "resnet"]
    assert passes('tags = "baseline"', tags=tags) and passes('"resnet" in tags', tags=tags)
    assert passes('tags contains "resnet"', tags=tags)
    assert passes('tags != "other"', tags=tags) and not passes('tags != "resnet"', tags=tags)
    assert passes('tags in ["x", "resnet"]', tags=tags) and not passes('tags in ["x"]', tags=tags)
    assert passes('tags ~ "base*"', tags=tags) and passes('tags =~ "net$"', tags=tags)
    assert not passes('tags = "x"', tags=[])


def test_glob_matches_the_whole_value_and_regex_searches_it():
    assert passes('name ~ "resnet*"', name="resnet-50") and not passes('name ~ "resnet"', name="resnet-50")
    assert passes('name ~ "res?et-[0-9]*"', name="resnet-50")
    assert not passes('name ~ "RESNET*"', name="resnet-50")  # case-sensitive
    assert passes('name =~ "net-5"', name="resnet-50") and not passes('name =~ "^net"', name="resnet-50")
    assert not passes('params.x ~ "1*"', params__x=10)  # only strings match


def test_contains_is_a_substring_test_on_text_and_membership_on_lists():
    assert passes('name contains "net"', name="resnet")
    assert passes("params.layers contains 64", params__layers=[32, 64])
    assert not passes("params.layers contains 16", params__layers=[32, 64])


def test_in_is_any_of_the_listed_values():
    assert passes("params.opt in [adam, sgd]", params__opt="sgd")
    assert not passes("params.opt in [adam, sgd]", params__opt="lion")
    assert passes("params.opt not in [adam, sgd]", params__opt="lion")
    assert passes("params.opt not in [adam]")  # not (missing in ...) is true


def test_times_and_durations_compare_as_seconds():
    assert passes("started > 2026-01-01", started=1767225601.0)
    assert not passes("started > 2026-01-01", started=1767225599.0)
    assert passes("duration > 10m and duration < 1h", duration=601.0)


def test_or_and_not_combine():
    assert passes("params.a = 1 or params.b = 1", params__b=1)
    assert not passes("params.a = 1 and params.b = 1", params__b=1)
    assert passes("not (params.a = 1 or params.b = 2)", params__b=1)


# ---- errors --------------------------------------------------------------------------------
def caret_column(error: FilterError) -> int:
    """The column (from 1) the message's caret points at, read from the message itself."""
    shown, caret = str(error).splitlines()[-2:]
    return caret.index("^") - 1  # both lines are indented by two spaces


@pytest.mark.parametrize("text, column, expected", [
    ("params.lr <", 12, "expected a value"),
    ("params.lr < and status = RUNNING", 13, "expected a value (a number, a quoted string, true, false, null, a date such as 2026-01-31 or a duration such as 10m), got 'and' (quote it"),
    ("params.lr < 1 and", 18, "expected a key"),
    ("params.lr 3", 11, "expected an operator"),
    ("params.x = 1 params.y = 2", 14, "expected 'and', 'or' or the end of the filter, got 'params.y'"),
    ("(params.lr < 1", 15, "expected ')'"),
    ("params.x in 3", 13, "expected a list"),
    ("params.x in [1,", 16, "or ']'"),
    ("a = 1", 1, "unknown key 'a'"),
    ("params = 1", 1, "expected params.<key>"),
    ("metrics.val/loss < 0.2", 1, "ends in .last, .min or .max, such as metrics.val/loss.last"),
    ('params."x".min = 1', 11, "only metrics keys take .min"),
    ("status = DONE", 10, "status is one of RUNNING, COMPLETED, FAILED, CANCELLED"),
    ('name ~ 5', 8, "takes a quoted pattern"),
    ('name =~ "("', 9, "not a valid regular expression"),
    ('params.x = "abc', 12, "an unclosed quote"),
    ("params.x ! 3", 10, "'!=' is not equal"),
    ("params.x > null", 12, "null can only be compared with = or !="),
    ("params.x < true", 12, "true and false can only be compared"),
    ('tags > "a"', 8, "tags can be tested with"),
    ("started > 2026-13-01", 11, "not a date or time"),
    ('started > "yesterday"', 11, "not a date or time"),
    ('duration > "long"', 12, "expected a duration such as 10m"),
])
def test_a_bad_filter_shows_a_caret_under_the_place_and_says_what_was_expected(text, column, expected):
    with pytest.raises(ValueError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, FilterError)
    assert expected in str(error)
    assert error.column == column and caret_column(error) == column
    assert str(error).splitlines()[-2] == "  " + text  # the filter, as written
    assert f"column {column}" in str(error).splitlines()[0]


def test_an_error_on_a_later_line_names_the_line():
    with pytest.raises(FilterError) as caught:
        parse("params.x = 1\n  and params.y =")
    assert caught.value.line == 2 and caught.value.column == 17
    assert "line 2, column 17" in str(caught.value)
    assert str(caught.value).splitlines()[-2] == "    and params.y ="


def test_a_long_filter_shows_the_part_around_the_error():
    text = " and ".join(f"params.x{i} = {i}" for i in range(100)) + " and params.y <"
    with pytest.raises(FilterError) as caught:
        parse(text)
    shown, caret = str(caught.value).splitlines()[-2:]
    assert len(shown) < 100 and shown.startswith("  ...")
    assert shown[caret.index("^"):].strip() == ""  # the caret is past the end of "params.y <"
    assert shown.rstrip().endswith("params.y <")


# Hostile input, kept as data: (filter, exception, fragment of its message).
BAD_FILTERS = [
    ("x" * 1_000_000, ValueError, f"at most {MAX_CHARS:,} are allowed"),
    ("(" * 5000 + "params.x = 1" + ")" * 5000, ValueError, f"nests more than {MAX_DEPTH} levels deep"),
    ("not " * 5000 + "params.x = 1", ValueError, f"nests more than {MAX_DEPTH} levels deep"),
    ("params.x = 1 and " + "(" * 5000, ValueError, "expected a key"),
    ("params.x = 1\x00", ValueError, "NUL character"),
    ('params.x = "a\x00b"', ValueError, "NUL character"),
    ('params.x = "\\u0000"', ValueError, "a NUL or a lone surrogate"),
    ('params.x = "\ud800"', ValueError, "not valid Unicode (a lone surrogate, U+D800)"),
    ('params."\udfff" = 1', ValueError, "not valid Unicode"),
    ('params.x = "\\ud800"', ValueError, "a NUL or a lone surrogate"),
    ("params.x = 1\x07", ValueError, "control character (U+0007)"),
    ("params.x = " + "9" * 99_000, ValueError, "at most 400 are allowed"),
    ("params.x = " + "9" * 5000, ValueError, "at most 400 are allowed"),
    ("params.x = 1e999", ValueError, "out of range"),
    ("params.x = -1e999", ValueError, "out of range"),
    ('name =~ "' + "(" * 300 + '"', ValueError, "not a valid regular expression"),
    ("\u202eparams.x = 1", ValueError, "unexpected character"),
    ("metrics.../../etc/passwd.last > 0", ValueError, "leave its folder"),
    ('metrics."/abs".min > 0', ValueError, "must be relative"),
    ("metrics.a//b.max > 0", ValueError, "must not be empty"),
    ("params.x = 1 ;drop table runs", ValueError, "unexpected character ';'"),
    (b"params.x = 1", TypeError, "must be a str, not bytes"),
    (42, TypeError, "must be a str, not int"),
]


@pytest.mark.parametrize("text, error, fragment", BAD_FILTERS, ids=lambda v: repr(v)[:40] if isinstance(v, (str, bytes)) else None)
def test_hostile_filters_get_clear_errors(text, error, fragment):
    with pytest.raises(error) as caught:
        parse(text)
    message = str(caught.value)
    assert fragment in message
    assert len(message) < 2000  # a huge filter is not echoed whole
    message.encode("utf-8")  # printable: no lone surrogate in the message itself


def test_a_deep_but_allowed_filter_parses():
    text = "(" * 50 + "params.x = 1" + ")" * 50
    assert parse(text) == Compare(Key("params", "x"), "=", 1)


def test_a_long_list_parses():
    node = parse("prefix in [" + ", ".join(f'"p/run-{i}"' for i in range(5000)) + "]")
    assert len(node.values) == 5000


def test_a_filter_error_is_a_value_error_with_its_position():
    with pytest.raises(ValueError, match=re.escape("column 13")):
        parse("params.lr < and")
