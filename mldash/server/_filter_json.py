"""What a filter key reads, as SQL, per dialect: a JSON value's kind and value
(PostgreSQL JSONB, SQLite JSON1) and the exact number comparisons both share; used
by ``_filter_sql``'s compiler."""

from __future__ import annotations

import decimal
import re
from typing import Any, Callable

import orjson
from sqlalchemy import and_, case, cast, false, func, literal, literal_column, or_, select, true, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Float, Integer, Numeric, Text

from .._filter_eval import OPS as _OP

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1  # orjson reads integers in [INT64_MIN, UINT64_MAX] as int, others as float


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


def _never_null(expr):
    return func.coalesce(expr, false())


def _balanced(join, items: list, width: int = 32):
    """``join(*items)`` as a tree ``width`` wide: SQLite refuses an expression more than
    1,000 levels deep, and a flat chain of ANDs or ORs nests one level per term."""
    while len(items) > width:  # (in COALESCE: SQLAlchemy flattens an OR of ORs back into one chain)
        items = [_never_null(join(*items[i : i + width])) for i in range(0, len(items), width)]
    return join(*items) if len(items) > 1 else items[0]
