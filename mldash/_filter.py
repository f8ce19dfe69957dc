"""The filter language: one parser for ``mldash.runs``, ``mldash ls --filter``, the
server's list endpoint and the dashboard's search box.

>>> node = parse("params.lr < 1e-3 and status = COMPLETED and metrics.val/loss.min < 0.2")
>>> node.operands[0]
Compare(key=Key(scope='params', name='lr', agg=None), op='<', value=0.001)

``parse`` turns text into an AST of frozen dataclasses (``And``, ``Or``, ``Not``,
``Compare``, ``In``, ``Contains``, ``Match``; leaves hold a ``Key`` and literals),
plain data that a SQL compiler can walk; ``matches`` evaluates one against a run
through a ``lookup(key)`` function. The grammar is on docs/analysis.md. lark does
the parsing, imported on the first ``parse`` (``import mldash`` stays light).

The semantics every evaluator must share (the server's SQL too):

* Every comparison is two-valued, true or false, never unknown, so ``not`` flips
  it exactly (in SQL: wrap each comparison in ``COALESCE(..., FALSE)``).
* A key the run lacks, or whose value is null, makes every comparison false
  (``!=``, ``in``, ``~``, ``contains`` too), except ``= null``, which is true
  for it, and ``!= null``, which is false. ``not (k = 1)`` is true there.
* Values of different kinds never compare: a string against a number, a bool
  against a number, is false whatever the operator, ``!=`` included. Kinds:
  number (int or float; ``Time`` and ``Duration`` literals are numbers of
  seconds, the run's times are epoch seconds), string, bool, list.
* ``<``, ``<=``, ``>``, ``>=`` order numbers, and strings by code point; on bools
  and lists they are false. NaN compares as Python's floats do.
* ``tags`` is a set of strings: ``tags = "x"``, ``tags contains "x"`` and
  ``"x" in tags`` test membership, ``tags != "x"`` its absence, ``tags in [...]``
  an overlap, ``~`` and ``=~`` whether some tag matches.
* ``contains`` on a list is membership, on a string a substring test.
* ``~`` is a glob over the whole value (``*``, ``?``, ``[abc]``; case-sensitive),
  ``=~`` a regular expression searched anywhere in it (Python's ``re``; anchor
  with ``^`` and ``$``). Both are false on anything but a string.
* ``x in [a, b]`` is ``x = a or x = b``; ``x not in [...]`` is ``not (x in [...])``.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import functools
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Union

# ---- the AST ------------------------------------------------------------------------
RUN_KEYS = (
    "prefix", "project", "folder", "name", "status", "tags", "description",
    "created", "started", "ended", "duration",
)
TIME_KEYS = frozenset(("created", "started", "ended"))
SCOPES = ("params", "summary", "metrics")
AGGS = ("last", "min", "max")
COMPARE_OPS = ("=", "!=", "<", "<=", ">", ">=")
STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")  # as _runfolder spells them

MAX_CHARS = 100_000
MAX_DEPTH = 100
MAX_NUMBER_CHARS = 400
_BARE_KEY = re.compile(r"""[^\s()\[\],=<>!~"']+""")


@dataclass(frozen=True)
class Key:
    """What a comparison reads: ``scope`` is "run" (an attribute of the run, one of
    RUN_KEYS), "params", "summary" or "metrics"; ``name`` the attribute, the
    parameter or summary key (flattened with "."), or the metric's name;
    ``agg`` "last", "min" or "max" for metrics (of the series' headline field)."""

    scope: str
    name: str
    agg: str | None = None

    @property
    def text(self) -> str:
        """The key as a filter spells it: ``params.lr``, ``metrics.val/loss.min``,
        ``params."learning rate"``."""
        if self.scope == "run":
            return self.name
        bare = _BARE_KEY.fullmatch(self.name) is not None
        name = self.name if bare else '"' + self.name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{self.scope}.{name}" + (f".{self.agg}" if self.agg else "")


@dataclass(frozen=True)
class Time:
    """A date or time literal (``2026-01-31``, ``2026-01-31T12:00Z``): epoch seconds;
    a time without a zone is UTC."""

    seconds: float
    text: str


@dataclass(frozen=True)
class Duration:
    """A duration literal (``90s``, ``10m``, ``1h30m``, ``2d``): seconds."""

    seconds: float
    text: str


Value = Union[None, bool, int, float, str, Time, Duration]


@dataclass(frozen=True)
class Compare:
    key: Key
    op: str  # one of COMPARE_OPS
    value: Value


@dataclass(frozen=True)
class In:
    key: Key
    values: tuple  # of Value


@dataclass(frozen=True)
class Contains:
    key: Key
    value: Value


@dataclass(frozen=True)
class Match:
    key: Key
    pattern: str
    regex: bool  # False: a glob (``~``), True: a regular expression (``=~``)


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class And:
    operands: tuple  # of Node, two or more


@dataclass(frozen=True)
class Or:
    operands: tuple  # of Node, two or more


Node = Union[Compare, In, Contains, Match, Not, And, Or]


def walk(node: Node | None) -> Iterator[Node]:
    """Every node of the tree, parents before children (no recursion)."""
    todo = [node] if node is not None else []
    while todo:
        item = todo.pop()
        yield item
        if isinstance(item, (And, Or)):
            todo.extend(reversed(item.operands))
        elif isinstance(item, Not):
            todo.append(item.operand)


def keys_used(node: Node | None) -> set[Key]:
    """The keys a filter reads (a reader loads only those parts of a run)."""
    return {item.key for item in walk(node) if hasattr(item, "key")}


def keys_of(params: Iterable[str] = (), summary: Iterable[str] = (), metrics: Iterable[str] = ()) -> list[str]:
    """The keys a run offers a filter, spelled as a filter writes them (for completion):
    the run's attributes, then ``params.*``, ``summary.*`` and ``metrics.<name>.last|min|max``.

    >>> keys_of(params=["lr"], metrics=["val/loss"])[-4:]
    ['params.lr', 'metrics.val/loss.last', 'metrics.val/loss.min', 'metrics.val/loss.max']
    """
    out = list(RUN_KEYS)
    out += [Key("params", k).text for k in sorted(params)]
    out += [Key("summary", k).text for k in sorted(summary)]
    out += [Key("metrics", m, agg).text for m in sorted(metrics) for agg in AGGS]
    return out


# ---- errors -------------------------------------------------------------------------
class FilterError(ValueError):
    """A filter that does not parse: the message shows it with a caret under the
    place. ``position`` is the offset in the text, ``line`` and ``column`` count from 1."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.filter = text
        self.position = max(0, min(position, len(text)))
        self.line = text.count("\n", 0, self.position) + 1
        line_start = text.rfind("\n", 0, self.position) + 1
        self.column = self.position - line_start + 1
        self.reason = reason
        where = f"column {self.column}" if self.line == 1 and "\n" not in text else f"line {self.line}, column {self.column}"
        super().__init__(f"invalid filter at {where}: {reason}\n{_caret(text, self.position)}")


def _printable(text: str) -> str:
    """One character for one: what cannot be shown (controls, surrogates) becomes U+FFFD."""
    return "".join(
        " " if c == "\t" else c if c.isprintable() and not "\ud800" <= c <= "\udfff" else "\ufffd" for c in text
    )


def _caret(text: str, position: int, width: int = 76) -> str:
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    line = text[line_start : len(text) if line_end < 0 else line_end]
    col = position - line_start
    left = 0
    if len(line) > width:
        left = max(0, min(col - width // 2, len(line) - width))
    shown = line[left : left + width]
    prefix = "..." if left > 0 else ""
    suffix = "..." if left + width < len(line) else ""
    return f"  {prefix}{_printable(shown)}{suffix}\n  {' ' * (len(prefix) + col - left)}^"


_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a filter must be a str, not {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise ValueError(f"the filter is {len(text):,} characters long; at most {MAX_CHARS:,} are allowed")
    bad = _BAD_CHAR.search(text)
    if bad:
        c = bad.group()
        if c == "\x00":
            reason = "a NUL character is not allowed"
        elif "\ud800" <= c <= "\udfff":
            reason = f"not valid Unicode (a lone surrogate, U+{ord(c):04X})"
        else:
            reason = f"a control character (U+{ord(c):04X}) is not allowed"
        raise FilterError(text, bad.start(), reason)
    return text


# ---- the grammar --------------------------------------------------------------------
_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: NOT not_expr -> negate
         | atom
?atom: LPAR or_expr _RPAR -> paren
     | comparison
?comparison: key OP value -> compare
           | key MATCHOP value -> match
           | key _IN list -> isin
           | key NOT _IN list -> notin
           | key _CONTAINS value -> contains
           | literal _IN key -> contains_rev
key: PATH | QPATH | WORD
?value: literal | WORD -> word
literal: NUMBER | STRING | DURATION | DATE | TRUE | FALSE | NULL
list: _LSQB [value (_COMMA value)* _COMMA?] _RSQB

_AND: "and"i
_OR: "or"i
NOT: "not"i
_IN: "in"i
_CONTAINS: "contains"i
TRUE: "true"i
FALSE: "false"i
NULL: "null"i
OP: /==|!=|<=|>=|=(?!~)|<|>/
MATCHOP: /=~|~/
LPAR: "("
_RPAR: ")"
_LSQB: "["
_RSQB: "]"
_COMMA: ","
PATH.2: /(params|summary|metrics)\.[^\s()\[\],=<>!~"']+/
QPATH.2: /(params|summary|metrics)\.("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')(\.[A-Za-z]+)?/
WORD: /(?!(?i:and|or|not|in|contains)(?![A-Za-z0-9_.\/-]))[A-Za-z_][A-Za-z0-9_.\/-]*/
DATE.4: /\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?(?![A-Za-z0-9_.:])/
DURATION.3: /(\d+(\.\d+)?(ms|s|m|h|d|w))+(?![A-Za-z0-9_.])/
NUMBER: /[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/
STRING: /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/s
%ignore /[ \t\r\n]+/
"""

# What each terminal means, to say what was expected.
_EXPECTED = [
    ({"PATH", "QPATH"}, "a key (params.<key>, summary.<key>, metrics.<name>.last|min|max, status, tags, name, ...)"),
    ({"OP", "MATCHOP", "_IN", "_CONTAINS"}, "an operator (=, !=, <, <=, >, >=, ~, =~, in, not in, contains)"),
    ({"NUMBER", "STRING", "DURATION", "DATE"}, "a value (a number, a quoted string, true, false, null, a date such as 2026-01-31 or a duration such as 10m)"),
    ({"_LSQB"}, "a list such as [1, 2]"),
    ({"_COMMA"}, "','"),
    ({"_RSQB"}, "']'"),
    ({"_AND"}, "'and'"),
    ({"_OR"}, "'or'"),
    ({"_RPAR"}, "')'"),
    ({"$END"}, "the end of the filter"),
]


def _expected(names: Iterable[str]) -> str:
    names = set(names)
    phrases = [phrase for terminals, phrase in _EXPECTED if terminals & names]
    if {"PATH", "QPATH"} & names:  # where a key may come, so may '(' and 'not'
        phrases += [p for t, p in (("LPAR", "'('"), ("NOT", "'not'")) if t in names]
    if not phrases:
        return "something else"
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _acceptable(error) -> set:
    """The terminals that could really come next (LALR's own set is wider)."""
    try:
        return error.interactive_parser.accepts() or error.expected
    except Exception:  # lark's simulation is a nicety: fall back to its table
        return error.expected


def _shown(token) -> str:
    if token.type == "$END":
        return "the end of the filter"
    value = str(token)
    return repr(value if len(value) <= 40 else value[:40] + "...")


class _Error(Exception):
    """Raised inside the grammar's callbacks; becomes a FilterError."""

    def __init__(self, position: int, reason: str) -> None:
        self.position, self.reason = position, reason


@dataclass(frozen=True)
class _At:
    """A parsed piece with where it starts (the callbacks' own currency)."""

    item: Any
    pos: int
    depth: int = 0


def _unquote(text: str, pos: int) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    simple = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 >= len(body):
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", body[i + 2 : i + 6]):
            ch = chr(int(body[i + 2 : i + 6], 16))
            if "\ud800" <= ch <= "\udfff" or ch == "\x00":
                raise _Error(pos + 1 + i, f"\\u{body[i + 2 : i + 6]} is not allowed in a string (a NUL or a lone surrogate)")
            out.append(ch)
            i += 6
        else:  # kept as written, so regular expressions read naturally: "\d+"
            out.append(c)
            i += 1
    return "".join(out)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _literal(token) -> Any:
    kind, text, pos = token.type, str(token), token.start_pos
    if kind == "NUMBER":
        if len(text) > MAX_NUMBER_CHARS:
            raise _Error(pos, f"a number of {len(text):,} characters; at most {MAX_NUMBER_CHARS} are allowed")
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        value = float(text)
        if math.isinf(value):
            raise _Error(pos, f"the number {text[:40]} is out of range (beyond a float's)")
        return value
    if kind == "STRING":
        return _unquote(text, pos)
    if kind == "DURATION":
        seconds = sum(float(n) * _UNITS[u] for n, _f, u in re.findall(r"(\d+(\.\d+)?)(ms|s|m|h|d|w)", text))
        return Duration(seconds, text)
    if kind == "DATE":
        return _time(text, pos)
    return {"TRUE": True, "FALSE": False, "NULL": None}[kind]


def _time(text: str, pos: int) -> Time:
    iso = text[:-1] + "+00:00" if text.endswith("Z") else text
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError as error:
        raise _Error(pos, f"{text!r} is not a date or time: {error}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return Time(moment.timestamp(), text)


def _key(token) -> Key:
    text, pos = str(token), token.start_pos
    if token.type == "WORD":
        name = text.lower()
        if name in RUN_KEYS:
            return Key("run", name)
        if name in SCOPES:
            raise _Error(pos, f"expected {name}.<key> (such as {name}.{'val/loss.min' if name == 'metrics' else 'lr'}), got {text!r}")
        raise _Error(pos, f"unknown key {text!r}: expected params.<key>, summary.<key>, "
                          f"metrics.<name>.last|min|max or one of {', '.join(RUN_KEYS)}")
    scope, rest = text.split(".", 1)
    agg = None
    if token.type == "QPATH":
        quote = rest[0]
        end = _closing_quote(rest)
        name = _unquote(rest[: end + 1], pos + len(scope) + 1)
        if quote != '"' and quote != "'":
            raise _Error(pos, "a quoted key")  # cannot happen: the terminal starts with a quote
        tail = rest[end + 1 :]
        if tail:
            agg = tail[1:]
    else:
        name = rest
        if scope == "metrics":
            name, _, agg = rest.rpartition(".")
    if scope == "metrics":
        if not name or agg not in AGGS:
            shown = Key("metrics", name or rest, "last").text
            raise _Error(pos, f"a metrics key ends in .last, .min or .max, such as {shown}; got {text!r}")
        from ._naming import metric_parts

        try:
            metric_parts(name)  # a name no series can have (say "../x") is refused, never read
        except ValueError as error:
            raise _Error(pos, str(error)) from None
    elif agg is not None:
        raise _Error(pos + len(text) - len(agg) - 1, f"only metrics keys take .{agg}; quote the whole key instead")
    if not name:
        raise _Error(pos, f"expected a key after {scope}.")
    return Key(scope, name, agg)


def _closing_quote(rest: str) -> int:
    quote, i = rest[0], 1
    while i < len(rest):
        if rest[i] == "\\":
            i += 2
            continue
        if rest[i] == quote:
            return i
        i += 1
    return len(rest) - 1


_ORDERING = ("<", "<=", ">", ">=")
_KEYWORDS = frozenset(("and", "or", "not", "in", "contains"))


def _check_value(key: Key, op: str, value: Any, pos: int) -> Any:
    """The checks a filter gets before it runs: a status that exists, a date for a
    time, no ordering on tags, bools or null."""
    if key.scope == "run" and key.name == "status" and isinstance(value, str) and op in ("=", "!=", "in"):
        upper = value.upper()
        if upper not in STATUSES:
            raise _Error(pos, f"status is one of {', '.join(STATUSES)}; got {value!r}")
        return upper
    if key.scope == "run" and key.name in TIME_KEYS and isinstance(value, str):
        return _time(value, pos)
    if key.scope == "run" and key.name == "duration" and isinstance(value, str):
        raise _Error(pos, "expected a duration such as 10m, 1h30m or 90s, or a number of seconds")
    if op in _ORDERING:
        if value is None:
            raise _Error(pos, "null can only be compared with = or !=")
        if isinstance(value, bool):
            raise _Error(pos, "true and false can only be compared with = or !=")
        if key == Key("run", "tags"):
            raise _Error(pos, "tags can be tested with =, !=, in, contains, ~ and =~, not ordered")
    return value


def _depth(at: _At, extra: int, pos: int) -> int:
    depth = at.depth + extra
    if depth > MAX_DEPTH:
        raise _Error(pos, f"the filter nests more than {MAX_DEPTH} levels deep (parentheses, not, and, or)")
    return depth


class _Callbacks:
    """The grammar's callbacks, run by lark as it reduces (bottom-up, no recursion)."""

    def key(self, children):
        token = children[0]
        return _At(_key(token), token.start_pos)

    def literal(self, children):
        token = children[0]
        return _At(_literal(token), token.start_pos)

    def word(self, children):  # a bare word on the right: a string (status = COMPLETED)
        token = children[0]
        return _At(str(token), token.start_pos)

    def list(self, children):
        return [c for c in children if c is not None]

    def compare(self, children):
        key, op, value = children
        op = "=" if op == "==" else str(op)
        return _At(Compare(key.item, op, _check_value(key.item, op, value.item, value.pos)), key.pos, 1)

    def match(self, children):
        key, op, value = children
        if not isinstance(value.item, str):
            raise _Error(value.pos, f"{op} takes a quoted pattern, such as {key.item.text} {op} \"resnet*\"")
        regex = str(op) == "=~"
        if regex:
            try:
                re.compile(value.item)
            except re.error as error:
                raise _Error(value.pos, f"not a valid regular expression: {error}") from None
        return _At(Match(key.item, value.item, regex), key.pos, 1)

    def isin(self, children):
        key, values = children
        checked = tuple(_check_value(key.item, "in", v.item, v.pos) for v in values)
        return _At(In(key.item, checked), key.pos, 1)

    def notin(self, children):
        key, not_token, values = children
        inner = self.isin([key, values])
        return _At(Not(inner.item), key.pos, 2)

    def contains(self, children):
        key, value = children
        return _At(Contains(key.item, value.item), key.pos, 1)

    def contains_rev(self, children):
        value, key = children
        return _At(Contains(key.item, value.item), value.pos, 1)

    def negate(self, children):
        token, operand = children
        return _At(Not(operand.item), token.start_pos, _depth(operand, 1, token.start_pos))

    def paren(self, children):
        token, inner = children
        return _At(inner.item, token.start_pos, _depth(inner, 1, token.start_pos))

    def _flat(self, cls, children):
        operands = []
        for child in children:
            if isinstance(child.item, cls):  # (a and b) and c: one level
                operands.extend(child.item.operands)
            else:
                operands.append(child.item)
        depth = max(c.depth for c in children)
        return _At(cls(tuple(operands)), children[0].pos, _depth(_At(None, 0, depth), 1, children[0].pos))

    def and_expr(self, children):
        return self._flat(And, children)

    def or_expr(self, children):
        return self._flat(Or, children)


_parser = None
_parser_lock = threading.Lock()


def _get_parser():
    global _parser
    if _parser is None:
        from lark import Lark  # on demand: `import mldash` does not load lark

        callbacks = _Callbacks()
        _parser = Lark(
            _GRAMMAR, parser="lalr", lexer="contextual", transformer=_LarkCallbacks(callbacks), maybe_placeholders=True
        )
    return _parser


class _LarkCallbacks:
    """lark looks callbacks up by rule name with getattr."""

    def __init__(self, callbacks: _Callbacks) -> None:
        self._callbacks = callbacks

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._callbacks, name)


def parse(text: str | None) -> Node | None:
    """The AST of a filter; None for no filter (None, "" or only white space).

    A filter that does not parse is a ``FilterError`` (a ValueError) whose message
    shows the filter with a caret under the place and says what was expected.
    """
    if text is None:
        return None
    _check_text(text)
    if not text.strip():
        return None
    return _parse(text)


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> Node:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    parser = _get_parser()
    try:
        with _parser_lock:
            result = parser.parse(text)
    except _Error as error:
        raise FilterError(text, error.position, error.reason) from None
    except UnexpectedToken as error:
        token = error.token
        pos = len(text) if token.type == "$END" else token.start_pos
        expected = _acceptable(error)
        hint = " (quote it to mean the text)" if "STRING" in expected and str(token).lower() in _KEYWORDS else ""
        raise FilterError(text, pos, f"expected {_expected(expected)}, got {_shown(token)}{hint}") from None
    except UnexpectedCharacters as error:
        pos = error.pos_in_stream
        char = text[pos]
        what = "an unclosed quote" if char in "\"'" else f"unexpected character {char!r}"
        if char == "!":
            what += " ('!=' is not equal; for 'not', write not)"
        allowed = error.allowed or set()
        reason = what if char in "\"'" else f"{what}: expected {_expected(allowed)}"
        raise FilterError(text, pos, reason) from None
    except UnexpectedEOF as error:
        raise FilterError(text, len(text), f"expected {_expected(error.expected)}, got the end of the filter") from None
    return result.item


# ---- evaluation ---------------------------------------------------------------------
class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()  # what a lookup returns for a key the run does not have
_TAGS = Key("run", "tags")


def _kind(value: Any) -> str | None:
    cls = value.__class__
    if cls is bool:
        return "bool"
    if cls is int or cls is float or isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    if cls is str or isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    return None


def _plain(value: Any) -> Any:
    return value.seconds if isinstance(value, (Time, Duration)) else value


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compare(actual: Any, op: str, expected: Value) -> bool:
    """One comparison under the rules at the top of this module."""
    if expected is None:
        absent = actual is MISSING or actual is None
        return absent if op == "=" else (not absent) if op == "!=" else False
    if actual is MISSING or actual is None:
        return False
    expected = _plain(expected)
    kind = _kind(actual)
    if kind is None or kind != _kind(expected):
        return False
    if op in _ORDERING and kind not in ("number", "string"):
        return False
    return _OPS[op](actual, expected)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str, regex: bool) -> re.Pattern:
    return re.compile(pattern if regex else fnmatch.translate(pattern), re.DOTALL if not regex else 0)


def _matches_text(value: Any, node: Match) -> bool:
    if not isinstance(value, str):
        return False
    compiled = _compiled(node.pattern, node.regex)
    return (compiled.search(value) if node.regex else compiled.match(value)) is not None


def matches(node: Node | None, lookup: Callable[[Key], Any]) -> bool:
    """Whether a run passes the filter; ``lookup(key)`` returns the run's value for a
    key, or ``MISSING``. None (no filter) passes everything."""
    if node is None:
        return True
    return _eval(node, lookup)


def _eval(node: Node, lookup: Callable[[Key], Any]) -> bool:
    cls = node.__class__
    if cls is And:
        return all(_eval(n, lookup) for n in node.operands)
    if cls is Or:
        return any(_eval(n, lookup) for n in node.operands)
    if cls is Not:
        return not _eval(node.operand, lookup)
    actual = lookup(node.key)
    is_tags = node.key == _TAGS and isinstance(actual, (list, tuple))
    if cls is Compare:
        if is_tags and node.op in ("=", "!="):
            has = any(compare(tag, "=", node.value) for tag in actual)
            return has if node.op == "=" else not has
        return compare(actual, node.op, node.value)
    if cls is In:
        if is_tags:
            return any(compare(tag, "=", v) for tag in actual for v in node.values)
        return any(compare(actual, "=", v) for v in node.values)
    if cls is Contains:
        if isinstance(actual, (list, tuple)):
            return any(compare(item, "=", node.value) for item in actual)
        value = _plain(node.value)
        return isinstance(actual, str) and isinstance(value, str) and value in actual
    if cls is Match:
        if is_tags:
            return any(_matches_text(tag, node) for tag in actual)
        return _matches_text(actual, node)
    raise TypeError(f"not a filter node: {node!r}")
