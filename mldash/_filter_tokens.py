"""What the filter's tokens mean (``mldash._filter``'s grammar callbacks): literals
(numbers, strings and their escapes, dates, durations), keys, and the checks a value
gets before a filter runs. A refusal is an ``_Error`` at its place in the text, which
the parser turns into a ``FilterError``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from typing import Any

from ._filter_ast import _ORDERING, AGGS, RUN_KEYS, SCOPES, STATUSES, TIME_KEYS, Duration, Key, Time

MAX_DEPTH = 100
MAX_NUMBER_CHARS = 400


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
