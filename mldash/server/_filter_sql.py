"""The filter language (``mldash._filter``) as SQL over the server's experiments table.

>>> node = _filter.parse("params.lr < 1e-3 and status = COMPLETED")  # doctest: +SKIP
>>> stmt = select(experiments.c.id).where(compile_filter(node, "postgresql"))  # doctest: +SKIP

``compile_filter`` turns the parser's AST into one SQLAlchemy Core boolean
expression, for SQLite (JSON1 functions) or PostgreSQL (JSONB operators), with the
semantics of ``_filter.matches`` exactly (its module docstring lists them):

* Each comparison is a ``CASE`` on the value's JSON type that is false unless the
  kinds agree, wrapped in ``COALESCE(..., FALSE)``: never NULL, so ``NOT`` flips it.
* A value is compared as the server reads it back (what ``GET /experiments/{id}``
  answers and a client gets): a codec tag (``{"$float": "NaN"}``, ``{"$int": "..."}``)
  is that number; on PostgreSQL a JSONB number is an integer when it has no
  fractional digits and fits 64 bits (as orjson reads it back), else a float.
  Numbers compare exactly as Python's do: integers as exact decimals (``numeric``,
  or digit strings on SQLite beyond 64 bits), floats against integers through the
  nearest float and the sign of the difference, computed here.
* Keys are bound parameters (``params -> :key``; a SQLite path ``$."key"`` built as
  a parameter, or ``json_each ... WHERE key = :key`` for a key a path cannot
  spell); no value of the filter is ever part of the SQL text.
* SQLite compares the rare integers past 64 bits through a registered function
  (``mldash_int_cmp``: Python's exact ``int`` comparison), only on those rows.
* ``~`` (glob) and ``=~`` (regex): SQLite calls Python's own ``fnmatch``/``re``
  through functions registered on each connection (``register_sqlite``);
  PostgreSQL gets the pattern translated to its ``~`` (ARE) syntax from Python's
  own parse of it (``pg_regex``): every character class becomes the exact set of
  code points Python matches, anchors and ``.`` their Python meaning. What ARE
  cannot say (backreferences, conditionals, atomic groups, possessive repeats)
  is a ``BadFilter``.
* ``metrics.<name>.last|min|max`` read ``series.headline`` (kept at ingest by
  ``_headline``), the run's times and duration ``meta`` (experiment.json's fields),
  ``prefix``, ``project`` and ``status`` the row's columns.
"""


from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import and_, case, cast, false, func, literal, not_, or_, select, true, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Boolean, Float, Integer, Text

from .. import _filter
from ._filter_errors import BadFilter
from ._filter_json import _OP, _Choice, _Float, _never_null, _PgJson, _sqlite_member, _Tags, _Text, _Value, _balanced
from ._filter_patterns import pg_regex, register_sqlite
from .schema import experiments, series

__all__ = ["BadFilter", "compile_filter", "parse", "pg_regex", "register_sqlite"]

_ORDERING = ("<", "<=", ">", ">=")


def parse(text: str | None) -> _filter.Node | None:
    """``_filter.parse``, its errors as a 400 (``BadFilter``) that keeps the caret."""
    try:
        return _filter.parse(text)
    except _filter.FilterError as error:
        raise BadFilter(str(error), error.position, error.line, error.column) from None
    except (TypeError, ValueError) as error:
        raise BadFilter(str(error)) from None


def compile_filter(node: _filter.Node | None, dialect: str, now: float | None = None):
    """The SQL boolean expression over ``experiments`` that holds exactly for the runs
    ``_filter.matches(node, ...)`` accepts. ``dialect``: "sqlite" or "postgresql";
    ``now``: the time a running run's duration counts up to (default: now)."""
    if node is None:
        return true()
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"no filter compiler for {dialect!r}")
    compiler = _Compiler(dialect, time.time() if now is None else now)
    return compiler.node(node)



# ---- the compiler ---------------------------------------------------------------------
class _Compiler:
    def __init__(self, dialect: str, now: float) -> None:
        self.pg = dialect == "postgresql"
        self.now = now

    # -- what each key reads
    def member(self, doc, key: str) -> _Value:
        if self.pg:
            return _PgJson(type_coerce(doc, JSONB).op("->", return_type=JSONB)(literal(key, Text)))
        return _sqlite_member(doc, key)

    def value(self, key: _filter.Key) -> _Value:
        c = experiments.c
        if key.scope in ("params", "summary"):
            return self.member(c.params if key.scope == "params" else c.summary, key.name)
        name = key.name  # (a metrics key: metric_leaf reads its series row)
        if name in ("prefix", "project", "status"):
            return _Text(c[name])
        if name == "tags":
            return _Tags(self.member(c.meta, "tags"))
        if name == "name":
            own = self.member(c.meta, "name")
            return _Choice(own.string_pred(lambda t: t != literal("")), own, _Text(self._last_part(c.prefix)))
        if name in ("folder", "description"):
            return self.member(c.meta, name)
        if name == "created":
            own = self.member(c.meta, "created_at")
            return _Choice(own.absent(), _Float(c.created_at, self.pg), own)
        if name == "started":
            return self.member(c.meta, "started_at")
        if name == "ended":
            return self.member(c.meta, "finished_at")
        if name == "duration":
            return self._duration()
        raise BadFilter(f"the server cannot filter on {key.text!r}")

    def _last_part(self, prefix):
        if self.pg:
            return func.regexp_replace(prefix, literal("^.*/"), literal(""))
        return func.substr(prefix, func.length(func.rtrim(prefix, func.replace(prefix, literal("/"), literal("")))) + 1)

    def _number(self, key: str):
        """A meta field as a float when it is a JSON number, else NULL."""
        meta = experiments.c.meta
        if self.pg:
            j = type_coerce(meta, JSONB).op("->", return_type=JSONB)(literal(key, Text))
            return case((func.jsonb_typeof(j) == "number", cast(j, Float(53))), else_=None)
        path = literal(f"$.{key}")
        return case((func.json_type(meta, path).in_(("integer", "real")), cast(func.json_extract(meta, path), Float)), else_=None)

    def _duration(self) -> _Value:
        """experiment.json's duration; a run still RUNNING counts up from
        (resumed_at or started_at) to now, as the local reader does."""
        resumed, started = self._number("resumed_at"), self._number("started_at")
        since = case((and_(resumed.is_not(None), resumed != 0), resumed), else_=started)
        stored = func.coalesce(self._number("duration"), literal(0.0, Float(53)))
        elapsed = literal(self.now, Float(53)) - since
        zero = literal(0.0, Float(53))
        counted = stored + (func.greatest(zero, elapsed) if self.pg else func.max(zero, elapsed))
        running = and_(experiments.c.status == "RUNNING", since.is_not(None))
        return _Choice(running, _Float(counted, self.pg), self.member(experiments.c.meta, "duration"))

    # -- the tree
    def node(self, node):
        cls = node.__class__
        if cls is _filter.And:
            return _balanced(and_, [self.node(n) for n in node.operands])
        if cls is _filter.Or:
            return _balanced(or_, [self.node(n) for n in _alternatives(node.operands)])
        if cls is _filter.Not:
            return not_(self.node(node.operand))
        return _never_null(self.leaf(node))

    def leaf(self, node):
        if node.key.scope == "metrics":
            return self.metric_leaf(node)
        return self.test(node, self.value(node.key))

    def metric_leaf(self, node):
        """A test of a series' headline value: the series row (one at most, by its
        unique name) is read once, as ``EXISTS (... AND test(headline))``; a run
        without the series gets what the Python evaluator gives a missing key."""
        row = series.alias("s")
        mine = and_(row.c.experiment_id == experiments.c.id, row.c.name == literal(node.key.name, Text))
        test = self.test(node, self.member(row.c.headline, node.key.agg))
        found = select(literal(1)).select_from(row).where(mine, _never_null(test)).correlate(experiments).exists()
        if not _filter.matches(node, lambda _key: _filter.MISSING):
            return found
        absent = not_(select(literal(1)).select_from(row).where(mine).correlate(experiments).exists())
        return or_(found, absent)

    def test(self, node, value: _Value):
        tags = node.key == _filter.Key("run", "tags")
        cls = node.__class__
        if cls is _filter.Compare:
            if tags and node.op in ("=", "!="):
                has = value.list_any(lambda item: _never_null(self.compare(item, "=", node.value)))
                return has if node.op == "=" else not_(has)
            return self.compare(value, node.op, node.value)
        if cls is _filter.In:
            return value.list_any(lambda item: self.any_of(item, node.values)) if tags else self.any_of(value, node.values)
        if cls is _filter.Contains:
            member = value.list_any(lambda item: _never_null(self.compare(item, "=", node.value)))
            needle = _plain(node.value)
            if not isinstance(needle, str):
                return member
            return or_(member, value.string_pred(lambda text: self.substring(text, needle)))
        if cls is _filter.Match:
            match = lambda text: self.match(text, node.pattern, node.regex)  # noqa: E731
            if tags:
                return value.list_any(lambda item: _never_null(item.string_pred(match)))
            return value.string_pred(match)
        raise BadFilter(f"not a filter node: {node!r}")

    def any_of(self, value: _Value, values: tuple):
        """``value = v`` for some v: the strings as one bound list (PostgreSQL: an array;
        SQLite: a JSON array), the numbers too on PostgreSQL, the rest each on its own."""
        values = list({(v.__class__ is bool, v): v for v in map(_plain, values)}.values())  # True is not 1 here
        texts = sorted(v for v in values if isinstance(v, str))
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        tests = [_never_null(self.compare(value, "=", v)) for v in values if v is None or isinstance(v, bool)]
        if len(numbers) > 4:
            tests.append(_never_null(value.number_in(numbers)))
        else:
            tests += [_never_null(value.number_cmp("=", v)) for v in numbers]
        if texts:
            tests.append(_never_null(value.string_pred(lambda text: self.text_in(text, texts))))
        return _balanced(or_, tests) if tests else false()

    def text_in(self, text, texts: list):
        if self.pg:
            return text == func.any(literal(texts, ARRAY(Text)))
        items = func.json_each(literal(orjson.dumps(texts).decode(), Text)).table_valued("value").alias("listed")
        return text.in_(select(items.c.value).select_from(items))

    def compare(self, value: _Value, op: str, expected: Any):
        if expected is None:
            return value.absent() if op == "=" else not_(value.absent()) if op == "!=" else false()
        expected = _plain(expected)
        if isinstance(expected, bool):
            if op not in ("=", "!="):
                return false()
            return value.bool_is(expected if op == "=" else not expected)
        if isinstance(expected, (int, float)):
            return value.number_cmp(op, expected)
        if isinstance(expected, str):
            return value.string_pred(lambda text: self.text_cmp(text, op, expected))
        return false()

    def text_cmp(self, text, op: str, expected: str):
        bound = literal(expected, Text)
        if self.pg and op in _ORDERING:  # code point order, whatever the database's collation
            return _OP[op](text.collate("C"), bound)
        return _OP[op](text, bound)

    def substring(self, text, needle: str):
        if self.pg:
            return func.strpos(text, literal(needle, Text)) > 0
        return func.instr(text, literal(needle, Text)) > 0

    def match(self, text, pattern: str, regex: bool):
        if self.pg:
            return text.collate("C").op("~", return_type=Boolean)(literal(pg_regex(pattern, glob=not regex), Text))
        name = "mldash_regexp" if regex else "mldash_glob"
        return getattr(func, name)(literal(pattern, Text), text, type_=Integer) == 1


def _alternatives(operands: tuple) -> list:
    """``k = a or k = b or k in [c]`` as ``k in [a, b, c]`` (the evaluator's own
    equivalence): one list test instead of a chain of thousands."""
    merged: dict = {}
    out: list = []
    for node in operands:
        if (node.__class__ is _filter.Compare and node.op == "=") or node.__class__ is _filter.In:
            values = (node.value,) if node.__class__ is _filter.Compare else node.values
            if node.key not in merged:
                merged[node.key] = []
                out.append(node.key)
            merged[node.key].extend(values)
        else:
            out.append(node)
    return [_filter.In(item, tuple(merged[item])) if isinstance(item, _filter.Key) else item for item in out]


def _plain(value: Any) -> Any:
    return value.seconds if isinstance(value, (_filter.Time, _filter.Duration)) else value
