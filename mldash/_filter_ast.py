"""The filter language's AST (``mldash._filter`` parses text into it): frozen
dataclasses, plain data that an evaluator (``mldash._filter_eval``) or a SQL compiler
can walk, and the keys a filter reads or a run offers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Union

RUN_KEYS = (
    "prefix", "project", "folder", "name", "status", "tags", "description",
    "created", "started", "ended", "duration",
)
TIME_KEYS = frozenset(("created", "started", "ended"))
SCOPES = ("params", "summary", "metrics")
AGGS = ("last", "min", "max")
COMPARE_OPS = ("=", "!=", "<", "<=", ">", ">=")
STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")  # as _runfolder spells them
_ORDERING = ("<", "<=", ">", ">=")

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
