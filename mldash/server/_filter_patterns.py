"""The filter's ``~`` (glob) and ``=~`` (regex) matching: SQLite's registered Python
functions (``register_sqlite``) and Python patterns translated to PostgreSQL's ARE
syntax (``pg_regex``); used by ``_filter_sql``."""

from __future__ import annotations

import fnmatch
import functools
import re

import orjson

from .. import _filter
from ._filter_errors import BadFilter

try:  # Python 3.11+
    import re._constants as _sre
    import re._parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]


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
