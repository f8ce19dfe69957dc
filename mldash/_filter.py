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

This module is the parser (the grammar, its callbacks, the errors with their caret)
and where every name of the language is imported from: the AST is in
``mldash._filter_ast``, what the tokens mean in ``mldash._filter_tokens``, the
evaluator in ``mldash._filter_eval``.

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

import functools
import re
import threading
from typing import Any, Iterable

from ._filter_ast import (
    AGGS,
    COMPARE_OPS,
    RUN_KEYS,
    SCOPES,
    STATUSES,
    TIME_KEYS,
    And,
    Compare,
    Contains,
    Duration,
    In,
    Key,
    Match,
    Node,
    Not,
    Or,
    Time,
    Value,
    keys_of,
    keys_used,
    walk,
)
from ._filter_eval import MISSING, compare, matches
from ._filter_tokens import (
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    _At,
    _check_value,
    _depth,
    _Error,
    _key,
    _literal,
)

__all__ = [
    "AGGS", "COMPARE_OPS", "MAX_CHARS", "MAX_DEPTH", "MAX_NUMBER_CHARS", "MISSING", "RUN_KEYS", "SCOPES",
    "STATUSES", "TIME_KEYS", "And", "Compare", "Contains", "Duration", "FilterError", "In", "Key", "Match",
    "Node", "Not", "Or", "Time", "Value", "compare", "keys_of", "keys_used", "matches", "parse", "walk",
]

MAX_CHARS = 100_000
_KEYWORDS = frozenset(("and", "or", "not", "in", "contains"))


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
