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

import decimal
import fnmatch
import functools
import re
import time
from typing import Any, Callable

import orjson
from sqlalchemy import and_, case, cast, false, func, literal, literal_column, not_, or_, select, true, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Boolean, Float, Integer, Numeric, Text

from .. import _filter
from ._errors import StoreError
from .schema import experiments, series

try:  # Python 3.11+
    import re._constants as _sre
    import re._parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1  # orjson reads integers in [INT64_MIN, UINT64_MAX] as int, others as float
_ORDERING = ("<", "<=", ">", ">=")


class BadFilter(StoreError, ValueError):
    """A filter the server cannot run (400; a ValueError, as a local parse's): one that
    does not parse (the message shows it with a caret), or a pattern PostgreSQL's
    regular expressions cannot say. ``extra``: position, line and column when known."""

    code = "bad_filter"

    def __init__(self, message: str, position: int | None = None, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.extra = {k: v for k, v in (("position", position), ("line", line), ("column", column)) if v is not None}


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


# ---- numbers, the same on both dialects ---------------------------------------------
def _holds(op: str, sign: int) -> bool:
    """Whether ``a op b`` holds when ``a - b`` has this sign (-1, 0, 1)."""
    return {"=": sign == 0, "!=": sign != 0, "<": sign < 0, "<=": sign <= 0, ">": sign > 0, ">=": sign >= 0}[op]


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def _static(value: bool):
    return true() if value else false()


def _special(name: str, op: str) -> bool:
    """A codec-tagged float (NaN, Infinity, -Infinity) against any finite number."""
    if name == "NaN":
        return op == "!="
    return _holds(op, 1 if name == "Infinity" else -1)


def _float_cmp(expr, op: str, x: Any):
    """``F op x`` for a float expression F (never NaN/inf: the codec tags those) and a
    Python number x, exactly as Python compares a float with x."""
    if isinstance(x, float):
        return _OP[op](expr, literal(x, Float(53)))
    try:
        f = float(x)
    except OverflowError:  # beyond every float: a finite F is below it
        return _static(_holds(op, -1 if x > 0 else 1))
    if f == x:
        return _OP[op](expr, literal(f, Float(53)))
    # F != f: F compares with x as with f (x lies in f's rounding interval);
    # F == f: as f does with x, known here.
    bound = literal(f, Float(53))
    return case((expr == bound, _static(_holds(op, _sign(f, x)))), else_=_OP[op](expr, bound))


def _exact(x: Any) -> decimal.Decimal:
    return decimal.Decimal(x)  # exact for ints and floats alike


def _numeric_array(xs: list):
    return literal(sorted({_exact(x) for x in xs}), ARRAY(Numeric))


def _float_array(xs: list):
    """The floats that equal some x of ``xs`` exactly (an int only when a float holds it)."""
    floats = set()
    for x in xs:
        try:
            f = float(x)
        except OverflowError:
            continue
        if f == x:
            floats.add(f)
    return literal(sorted(floats), ARRAY(Float(53)))


def _sign_holds(sign_expr, op: str):
    return {
        "=": sign_expr == 0, "!=": sign_expr != 0, "<": sign_expr < 0, "<=": sign_expr <= 0,
        ">": sign_expr > 0, ">=": sign_expr >= 0,
    }[op]


_OP: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_SPECIALS = ("NaN", "Infinity", "-Infinity")


# ---- values: what a key reads, by dialect -------------------------------------------
class _Value:
    """What a key reads for one row, as SQL. Each method returns a boolean
    expression that is false for a value of another kind."""

    def absent(self):  # missing, or JSON null
        raise NotImplementedError

    def number_cmp(self, op: str, x: Any):
        return false()

    def number_in(self, xs: list):
        """``value = x`` for some number x of ``xs`` (a list of many)."""
        return _balanced(or_, [_never_null(self.number_cmp("=", x)) for x in xs])

    def string_pred(self, fn: Callable[[Any], Any]):
        return false()

    def bool_is(self, value: bool):
        return false()

    def list_any(self, fn: Callable[["_Value"], Any]):
        return false()


class _Choice(_Value):
    """``a`` where ``cond`` holds, else ``b``."""

    def __init__(self, cond, a: _Value, b: _Value) -> None:
        self.cond, self.a, self.b = cond, a, b

    def _pick(self, name: str, *args):
        return case((self.cond, getattr(self.a, name)(*args)), else_=getattr(self.b, name)(*args))

    def absent(self):
        return self._pick("absent")

    def number_cmp(self, op, x):
        return self._pick("number_cmp", op, x)

    def number_in(self, xs):
        return self._pick("number_in", xs)

    def string_pred(self, fn):
        return self._pick("string_pred", fn)

    def bool_is(self, value):
        return self._pick("bool_is", value)

    def list_any(self, fn):
        return self._pick("list_any", fn)


class _Text(_Value):
    """A text column (prefix, project, status): a string, or absent when NULL."""

    def __init__(self, expr) -> None:
        self.expr = expr

    def absent(self):
        return self.expr.is_(None)

    def string_pred(self, fn):
        return case((self.expr.is_not(None), fn(self.expr)), else_=false())


class _Float(_Value):
    """A float computed in SQL (a running run's duration, the row's created_at)."""

    def __init__(self, expr, pg: bool) -> None:
        self.expr, self.pg = expr, pg

    def absent(self):
        return self.expr.is_(None)

    def number_cmp(self, op, x):
        return case((self.expr.is_not(None), _float_cmp(self.expr, op, x)), else_=false())

    def number_in(self, xs):
        if not self.pg:
            return super().number_in(xs)
        return case((self.expr.is_not(None), self.expr == func.any(_float_array(xs))), else_=false())


class _Tags(_Value):
    """``tags``: always a list (none stored reads as no tags)."""

    def __init__(self, inner: _Value) -> None:
        self.inner = inner

    def absent(self):
        return false()

    def list_any(self, fn):
        return self.inner.list_any(fn)


# -- PostgreSQL: one JSONB expression ------------------------------------------------------
def _jsonb(text: str):
    return literal_column(f"'{text}'::jsonb", JSONB)  # constants of this module only, never user text


_PG_TAGS = {name: _jsonb(orjson.dumps({"$float": name}).decode()) for name in _SPECIALS}


class _PgJson(_Value):
    def __init__(self, j) -> None:
        self.j = type_coerce(j, JSONB)
        self.kind = func.jsonb_typeof(self.j)

    def absent(self):
        return or_(self.j.is_(None), self.kind == "null")

    def _text(self):
        return self.j.op("#>>", return_type=Text)(literal_column("'{}'::text[]"))

    def string_pred(self, fn):
        return case((self.kind == "string", fn(self._text())), else_=false())

    def bool_is(self, value):
        return case((self.kind == "boolean", self.j == _jsonb("true" if value else "false")), else_=false())

    def number_cmp(self, op, x):
        number = cast(self.j, Numeric)
        exact = _OP[op](number, literal(_exact(x), Numeric))
        as_float = _float_cmp(cast(self.j, Float(53)), op, x)
        integer = and_(func.scale(number) == 0, number >= literal(INT64_MIN, Numeric), number <= literal(UINT64_MAX, Numeric))
        plain = case((integer, exact), else_=as_float)
        int_text = self.j.op("->>", return_type=Text)(literal("$int"))
        is_int_tag = and_(
            int_text.op("~")(literal("^-?[0-9]+$")),
            self.j.op("-", return_type=JSONB)(literal("$int")) == _jsonb("{}"),
        )
        tagged = case(
            *((self.j == _PG_TAGS[name], _static(_special(name, op))) for name in _SPECIALS),
            (is_int_tag, _OP[op](cast(int_text, Numeric), literal(_exact(x), Numeric))),
            else_=false(),
        )
        return case((self.kind == "number", plain), (self.kind == "object", tagged), else_=false())

    def number_in(self, xs):
        """Membership in one pass: integers against exact decimals, floats against the
        floats among ``xs`` (an int is one only when a float holds it exactly)."""
        number = cast(self.j, Numeric)
        exact = _numeric_array(xs)
        integer = and_(func.scale(number) == 0, number >= literal(INT64_MIN, Numeric), number <= literal(UINT64_MAX, Numeric))
        plain = case((integer, number == func.any(exact)), else_=cast(self.j, Float(53)) == func.any(_float_array(xs)))
        int_text = self.j.op("->>", return_type=Text)(literal("$int"))
        is_int_tag = and_(
            int_text.op("~")(literal("^-?[0-9]+$")),
            self.j.op("-", return_type=JSONB)(literal("$int")) == _jsonb("{}"),
        )
        tagged = case((is_int_tag, cast(int_text, Numeric) == func.any(exact)), else_=false())  # NaN and inf equal no literal
        return case((self.kind == "number", plain), (self.kind == "object", tagged), else_=false())

    def list_any(self, fn):
        array = case((self.kind == "array", self.j), else_=_jsonb("[]"))  # never a scalar, whatever runs first
        items = func.jsonb_array_elements(array).table_valued("value").alias("item")
        found = select(literal(1)).select_from(items).where(_never_null(fn(_PgJson(items.c.value)))).correlate_except(items).exists()
        return case((self.kind == "array", found), else_=false())


# -- SQLite: json_type, json_extract and the raw JSON text of one value --------------------
_SQLITE_TAGS = {name: orjson.dumps({"$float": name}).decode() for name in _SPECIALS}
_INT_TAG_HEAD, _INT_TAG_TAIL = '{"$int":"', '"}'


class _SqliteJson(_Value):
    """``kind`` the JSON type (json_type's words), ``atom`` the SQL value
    (json_extract's: JSON text for arrays and objects) and ``raw()`` the value's JSON
    text (for integers past 64 bits, which json_extract rounds to a float)."""

    def __init__(self, kind, atom, raw: Callable[[], Any]) -> None:
        self.kind, self.atom, self.raw = kind, atom, raw

    def absent(self):
        return or_(self.kind.is_(None), self.kind == "null")

    def string_pred(self, fn):
        return case((self.kind == "text", fn(self.atom)), else_=false())

    def bool_is(self, value):
        return self.kind == ("true" if value else "false")

    def number_cmp(self, op, x):
        atom = self.atom
        if isinstance(x, float):
            native = _OP[op](atom, literal(x, Float(53)))  # SQLite compares int with real exactly
            real = native
        elif INT64_MIN <= x <= INT64_MAX:
            native = real = _OP[op](atom, literal(x, Integer))
        else:
            native = _static(_holds(op, -1 if x > 0 else 1))  # a 64-bit integer against a bigger one
            real = _float_cmp(atom, op, x)
        # Integers past 64 bits (json_extract rounds them to floats; the codec tags
        # bigger ones) are compared in Python, exactly: rare, and only those rows.
        if isinstance(x, float) or INT64_MIN <= x <= INT64_MAX:
            bound = literal(x, Float(53) if isinstance(x, float) else Integer)
        else:
            bound = literal(str(x), Text)

        def big(digits):
            return func.coalesce(_sign_holds(func.mldash_int_cmp(digits, bound, type_=Integer), op), false())

        integer = case((func.typeof(atom) == "integer", native), else_=big(self.raw()))
        head, tail = len(_INT_TAG_HEAD), len(_INT_TAG_TAIL)
        digits = func.substr(atom, head + 1, func.length(atom) - head - tail)
        tagged = case(
            *((atom == literal(_SQLITE_TAGS[name]), _static(_special(name, op))) for name in _SPECIALS),
            (atom.op("GLOB")(literal(_INT_TAG_HEAD + "*" + _INT_TAG_TAIL)), big(digits)),
            else_=false(),
        )
        return case((self.kind == "integer", integer), (self.kind == "real", real), (self.kind == "object", tagged), else_=false())

    def number_in(self, xs):
        """Membership in one ``IN`` list (SQLite compares an integer with a real exactly);
        integers past 64 bits, rare, through ``mldash_int_in`` (Python's exact ``==``)."""
        atom = self.atom
        listed = []
        for x in xs:
            if isinstance(x, float) or INT64_MIN <= x <= INT64_MAX:
                listed.append(literal(x, Float(53) if isinstance(x, float) else Integer))
            else:
                try:
                    f = float(x)
                except OverflowError:
                    continue
                if f == x:  # a real equals it only as this float
                    listed.append(literal(f, Float(53)))
        native = atom.in_(listed) if listed else false()
        every = literal(orjson.dumps([x if isinstance(x, float) else str(x) for x in xs]).decode(), Text)

        def big(digits):
            return func.coalesce(func.mldash_int_in(digits, every, type_=Integer) == 1, false())

        head, tail = len(_INT_TAG_HEAD), len(_INT_TAG_TAIL)
        digits = func.substr(atom, head + 1, func.length(atom) - head - tail)
        integer = case((func.typeof(atom) == "integer", native), else_=big(self.raw()))
        tagged = case((atom.op("GLOB")(literal(_INT_TAG_HEAD + "*" + _INT_TAG_TAIL)), big(digits)), else_=false())
        return case((self.kind == "integer", integer), (self.kind == "real", native), (self.kind == "object", tagged), else_=false())

    def list_any(self, fn):
        array = case((self.kind == "array", self.atom), else_=literal("[]"))  # never malformed, whatever runs first
        items = func.json_each(array).table_valued("type", "value", "fullkey").alias("item")
        item = _SqliteJson(items.c.type, items.c.value, lambda: array.op("->")(items.c.fullkey))
        found = select(literal(1)).select_from(items).where(_never_null(fn(item))).correlate_except(items).exists()
        return case((self.kind == "array", found), else_=false())


_PATH_UNSAFE = re.compile(r'["\\\x00-\x1f]')  # what JSON escapes in a key: no SQLite path spells it


def _sqlite_member(doc, key: str) -> _SqliteJson:
    """A document's top-level member ``key`` (SQLite)."""
    if _PATH_UNSAFE.search(key) is None:
        path = literal('$."' + key + '"')
        return _SqliteJson(func.json_type(doc, path), func.json_extract(doc, path), lambda: doc.op("->")(path))
    members = func.json_each(doc).table_valued("key", "type", "value").alias("member")
    pick = lambda column: select(column).select_from(members).where(members.c.key == literal(key)).limit(1).scalar_subquery()  # noqa: E731
    return _SqliteJson(pick(members.c.type), pick(members.c.value), lambda: func.mldash_json_member(doc, literal(key)))


# ---- the compiler ---------------------------------------------------------------------
def _never_null(expr):
    return func.coalesce(expr, false())


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


def _balanced(join, items: list, width: int = 32):
    """``join(*items)`` as a tree ``width`` wide: SQLite refuses an expression more than
    1,000 levels deep, and a flat chain of ANDs or ORs nests one level per term."""
    while len(items) > width:  # (in COALESCE: SQLAlchemy flattens an OR of ORs back into one chain)
        items = [_never_null(join(*items[i : i + width])) for i in range(0, len(items), width)]
    return join(*items) if len(items) > 1 else items[0]


def _plain(value: Any) -> Any:
    return value.seconds if isinstance(value, (_filter.Time, _filter.Duration)) else value


# ---- SQLite: Python's own matching, registered on each connection ---------------------
@functools.lru_cache(maxsize=1024)
def _match_node(pattern: str, regex: bool) -> _filter.Match:
    return _filter.Match(_filter.Key("params", "x"), pattern, regex)


def _sqlite_matcher(regex: bool):
    def matches(pattern, value):
        if not isinstance(pattern, str) or not isinstance(value, str):
            return 0
        return int(_filter.matches(_match_node(pattern, regex), lambda _key: value))

    return matches


_INTEGER = re.compile(r"-?[0-9]+")


def _int_cmp(digits, x):
    """The sign of (integer ``digits`` - ``x``), exactly; x an int, a float or an
    integer's digits (past 64 bits). NULL when ``digits`` is no integer."""
    if not isinstance(digits, str) or _INTEGER.fullmatch(digits) is None:
        return None
    if isinstance(x, str):
        x = int(x)
    elif not isinstance(x, (int, float)):
        return None
    n = int(digits)
    return (n > x) - (n < x)


def _int_in(digits, listed):
    """Whether integer ``digits`` equals some number of the JSON list ``listed`` (ints as
    digit strings, floats as numbers), exactly. NULL when ``digits`` is no integer."""
    if not isinstance(digits, str) or _INTEGER.fullmatch(digits) is None or not isinstance(listed, str):
        return None
    n = int(digits)
    return int(any(n == (int(x) if isinstance(x, str) else x) for x in orjson.loads(listed)))


def _json_member(doc, key):
    """The raw JSON text of ``doc[key]`` (SQLite, for a key no JSON path can spell)."""
    if doc is None or not isinstance(key, str):
        return None
    try:
        value = orjson.loads(doc)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(value, dict) or key not in value:
        return None
    return orjson.dumps(value[key]).decode()


def register_sqlite(dbapi_connection) -> None:
    """The functions the compiled SQL calls on SQLite; called on every new connection."""
    dbapi_connection.create_function("mldash_glob", 2, _sqlite_matcher(False), deterministic=True)
    dbapi_connection.create_function("mldash_regexp", 2, _sqlite_matcher(True), deterministic=True)
    dbapi_connection.create_function("mldash_json_member", 2, _json_member, deterministic=True)
    dbapi_connection.create_function("mldash_int_cmp", 2, _int_cmp, deterministic=True)
    dbapi_connection.create_function("mldash_int_in", 2, _int_in, deterministic=True)


# ---- PostgreSQL: Python's regular expressions in ARE syntax ---------------------------
_MAX_CODE = 0x10FFFF
_DUP_MAX = 255  # PostgreSQL's largest repetition count
_FLAG_I, _FLAG_M, _FLAG_S, _FLAG_A = re.IGNORECASE, re.MULTILINE, re.DOTALL, re.ASCII
_CATEGORY_TEXT = {
    "CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W",
}


_B_MATCHES_EMPTY = re.search(r"\B", "") is not None


class _Unsupported(Exception):
    pass


def pg_regex(pattern: str, glob: bool = False) -> str:
    """``pattern`` (a Python regular expression searched anywhere, or with ``glob`` an
    fnmatch pattern matched against the whole value) as a PostgreSQL ARE that
    matches exactly the same strings. BadFilter for what ARE cannot say."""
    try:
        return _pg_regex(pattern, glob)
    except _Unsupported as error:
        what = "glob" if glob else "regular expression"
        raise BadFilter(f"the {what} {pattern[:200]!r} cannot run on the server's PostgreSQL: {error}") from None
    except (re.error, RecursionError) as error:
        raise BadFilter(f"not a valid regular expression: {pattern[:200]!r}: {error}") from None


@functools.lru_cache(maxsize=256)
def _pg_regex(pattern: str, glob: bool) -> str:
    text = fnmatch.translate(pattern) if glob else pattern
    tree = _sre_parse.parse(text, re.DOTALL if glob else 0)
    body = _Emitter(glob).seq(tree, tree.state.flags)
    return ("^" if glob else "") + body  # a glob matches from the start (re.match)


class _Emitter:
    def __init__(self, glob: bool) -> None:
        self.glob = glob

    def seq(self, items, flags: int) -> str:
        items = list(items)
        out = []
        i = 0
        while i < len(items):
            op, av = items[i]
            name = str(op)
            # Python 3.10's fnmatch emulates an atomic group: (?=(?P<g>.*?x))(?P=g)
            if self.glob and name == "ASSERT" and i + 1 < len(items) and str(items[i + 1][0]) == "GROUPREF":
                direction, sub = av
                sub = list(sub)
                if direction == 1 and len(sub) == 1 and str(sub[0][0]) == "SUBPATTERN" and sub[0][1][0] == items[i + 1][1]:
                    out.append("(?:" + self.seq(sub[0][1][3], flags) + ")")
                    i += 2
                    continue
            out.append(self.item(name, av, flags))
            i += 1
        return "".join(out)

    def item(self, name: str, av, flags: int) -> str:
        if name == "LITERAL":
            if flags & _FLAG_I:
                return _char_class(("LITERAL", av), flags)
            return _escape(av)
        if name in ("NOT_LITERAL", "IN"):
            return _char_class((name, _freeze(av)), flags)
        if name == "ANY":
            return "." if flags & _FLAG_S else r"[^\u000a]"
        if name == "BRANCH":
            return "(?:" + "|".join(self.seq(alt, flags) for alt in av[1]) + ")"
        if name == "SUBPATTERN":
            _group, add, delete, sub = av
            return "(?:" + self.seq(sub, (flags | add) & ~delete) + ")"
        if name in ("MAX_REPEAT", "MIN_REPEAT"):  # greed cannot change whether a match exists
            low, high, sub = av
            return _repeat("(?:" + self.seq(sub, flags) + ")", low, None if high == _sre.MAXREPEAT else high)
        if name == "ATOMIC_GROUP" and self.glob:  # fnmatch's: (?>.*?x) matches what (?:.*?x) does there
            return "(?:" + self.seq(av, flags) + ")"
        if name == "AT":
            return _anchor(str(av), flags)
        if name in ("ASSERT", "ASSERT_NOT"):
            direction, sub = av
            head = {("ASSERT", 1): "(?=", ("ASSERT", -1): "(?<=", ("ASSERT_NOT", 1): "(?!", ("ASSERT_NOT", -1): "(?<!"}
            return head[(name, direction)] + self.seq(sub, flags) + ")"
        words = {
            "GROUPREF": "backreferences", "GROUPREF_EXISTS": "conditional groups", "ATOMIC_GROUP": "atomic groups",
            "POSSESSIVE_REPEAT": "possessive repeats",
        }
        raise _Unsupported(f"{words.get(name, name)} have no PostgreSQL equivalent")


def _freeze(av):
    if isinstance(av, list):
        return tuple((str(op), _freeze_arg(arg)) for op, arg in av)
    return av


def _freeze_arg(arg):
    if isinstance(arg, (list, tuple)):
        return tuple(arg)
    return str(arg) if arg is not None and not isinstance(arg, int) else arg


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _repeat(inner: str, low: int, high: int | None) -> str:
    """``inner{low,high}`` (high None: unbounded) within PostgreSQL's count limit."""
    if high is None:
        if low == 0:
            return inner + "*"
        if low == 1:
            return inner + "+"
        return _exactly(inner, low) + inner + "*"
    if high <= _DUP_MAX:
        return inner + ("{%d}" % low if low == high else "{%d,%d}" % (low, high))
    return _exactly(inner, low) + _up_to(inner, high - low)


def _exactly(inner: str, n: int) -> str:
    if n <= _DUP_MAX:
        return inner + "{%d}" % n if n else ""
    q, r = divmod(n, _DUP_MAX)
    return _exactly("(?:" + inner + "{%d})" % _DUP_MAX, q) + _exactly(inner, r)


def _up_to(inner: str, n: int) -> str:
    if n <= _DUP_MAX:
        return inner + "{0,%d}" % n if n else ""
    q, r = divmod(n, _DUP_MAX)
    return _up_to("(?:" + inner + "{0,%d})" % _DUP_MAX, q) + _up_to(inner, r)


def _anchor(code: str, flags: int) -> str:
    multiline = flags & _FLAG_M
    if code == "AT_BEGINNING":
        return r"(?:^|(?<=\u000a))" if multiline else "^"
    if code == "AT_BEGINNING_STRING":
        return "^"
    if code == "AT_END":
        return r"(?=\u000a|$)" if multiline else r"(?=\u000a?$)"
    if code == "AT_END_STRING":
        return "$"
    if code in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
        word = _ranges_text(_code_points(r"[\w]", flags & _FLAG_A))
        if code == "AT_BOUNDARY":
            return f"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))"
        # Python before 3.14: \B never matches in an empty string
        nonempty = "" if _B_MATCHES_EMPTY else "(?:(?<=.)|(?=.))"
        return f"{nonempty}(?:(?<={word})(?={word})|(?<!{word})(?!{word}))"
    raise _Unsupported(f"the anchor {code}")


def _char_class(item, flags: int) -> str:
    """One character's worth of pattern as the exact PostgreSQL bracket expression."""
    return _ranges_text(_code_points(_class_source(item), flags & (_FLAG_I | _FLAG_A)))


def _class_source(item) -> str:
    """Python regex text for one single-character item of the parse tree."""
    name, av = item
    if name == "LITERAL":
        return "[" + _py_escape(av) + "]"
    if name == "NOT_LITERAL":
        return "[^" + _py_escape(av) + "]"
    parts, negate = [], False
    for op, arg in av:
        if op == "NEGATE":
            negate = True
        elif op == "LITERAL":
            parts.append(_py_escape(arg))
        elif op == "RANGE":
            parts.append(_py_escape(arg[0]) + "-" + _py_escape(arg[1]))
        elif op == "CATEGORY":
            parts.append(_CATEGORY_TEXT[str(arg)])
        else:
            raise _Unsupported(f"the set member {op}")
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _py_escape(code: int) -> str:
    return f"\\U{code:08x}"


_ALL: str | None = None


def _all_chars() -> str:
    """Every code point but the surrogates, in order (index i is code point i below
    U+D800, i + 0x800 above)."""
    global _ALL
    if _ALL is None:
        _ALL = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, _MAX_CODE + 1)))
    return _ALL


@functools.lru_cache(maxsize=512)
def _code_points(source: str, flags: int) -> tuple:
    """The code points Python's ``re`` matches with this one-character pattern, as
    (first, last) ranges: found by running it over every code point."""
    compiled = re.compile("(?:" + source + ")+", flags)
    ranges = []
    for m in compiled.finditer(_all_chars()):
        start, end = m.span()
        first, last = _cp(start), _cp(end - 1)
        if first < 0xD800 <= last:  # the run crosses the surrogates' gap in the string
            ranges.append((first, 0xD7FF))
            first = 0xE000
        ranges.append((first, last))
    return tuple(ranges)


def _cp(index: int) -> int:
    return index if index < 0xD800 else index + 0x800


def _ranges_text(ranges: tuple) -> str:
    """A bracket expression for these ranges (or their complement, when shorter).
    NUL never occurs in stored text, so it is left out of both."""
    ranges = tuple((max(lo, 1), hi) for lo, hi in ranges if hi >= 1)
    if not ranges:
        return "(?!)"
    complement, prev = [], 1
    for lo, hi in ranges:
        if lo > prev:
            complement.append((prev, lo - 1))
        prev = hi + 1
    if prev <= _MAX_CODE:
        complement.append((prev, _MAX_CODE))
    complement = [(lo, hi) for lo, hi in complement if not (lo >= 0xD800 and hi <= 0xDFFF)]
    if not complement:
        return "."  # every character (ARE's . matches newlines too)

    def body(rs):
        return "".join(_escape(lo) if lo == hi else _escape(lo) + "-" + _escape(hi) for lo, hi in rs)

    if len(complement) < len(ranges):
        return "[^" + body(complement) + "]"
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _escape(ranges[0][0])
    return "[" + body(ranges) + "]"
