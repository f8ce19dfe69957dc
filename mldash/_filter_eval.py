"""The filter language's evaluator: whether a run passes a parsed filter
(``mldash._filter.parse``), under the semantics ``mldash._filter``'s docstring sets out
(which the server's SQL shares).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from typing import Any, Callable

from ._filter_ast import _ORDERING, And, Compare, Contains, Duration, In, Key, Match, Node, Not, Or, Time, Value


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


# Also the server's SQL compiler's (SQLAlchemy columns overload the same operators).
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compare(actual: Any, op: str, expected: Value) -> bool:
    """One comparison under the rules in ``mldash._filter``'s docstring."""
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
    return OPS[op](actual, expected)


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
