"""What mldash accepts as data: one set of checks for the local API and the server.

The rule they keep: what the local API accepts, replication and the server
accept too. So the Experiment runs these on the caller's thread (a bad value
fails at the call that caused it) and the server runs the same functions on
what arrives over HTTP (names come from ``_naming``).

- Text is valid Unicode (no lone surrogates: JSON cannot hold them) and at most
  ``MAX_TEXT`` characters in one value. Documents (parameters, summary, the
  experiment's description and other experiment.json fields) also hold no NUL:
  PostgreSQL's JSONB cannot store one. Metric strings and log text may.
- Structures nest at most ``MAX_DEPTH`` deep.
- Integers of any size are stored exactly (``_codec`` tags those past 64 bits).
"""

from __future__ import annotations

import math
from typing import Any

from ._codec import is_tag
from ._naming import MAX_NAME, check_label, check_not_tag, check_unicode
from ._runfolder import LEVELS, STATUSES

MAX_TEXT = 1_000_000  # characters in one string value, and in one metric point in all
MAX_DEPTH = 64
MAX_RECORD = 8 * 1024 * 1024  # one log or checkpoint record, encoded
# Levels the local API leaves free for what is stored around a value: a codec tag
# ({"$float": "NaN"}) below it, and for log metadata the record around it.
TAG_DEPTH, RECORD_DEPTH = 1, 2
# A parameters or summary document, encoded: far below the server's 32 MiB request limit.
MAX_DOCUMENT = 16 * 1024 * 1024
LEVEL_SET = frozenset(LEVELS)


def check_text(text: Any, what: str, *, nul: bool = True) -> str:
    """A string value: valid Unicode, at most MAX_TEXT characters; no NUL unless ``nul``."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ValueError(f"{what} is {len(text):,} characters long; at most {MAX_TEXT:,} are allowed")
    check_unicode(text, what)
    if not nul and "\x00" in text:
        raise ValueError(f"{what} contains a NUL character, which cannot be stored: {text[:80]!r}")
    return text


def check_level(level: Any) -> str:
    if level not in LEVEL_SET:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    return level


def check_status(status: Any, what: str = "status") -> str:
    if status not in STATUSES:
        raise ValueError(f"{what} must be one of {', '.join(STATUSES)}, not {status!r}")
    return status


def check_json(
    value: Any, what: str, *, nul: bool = True, strict: bool = True, depth: int = 0, tagged: bool = False
) -> Any:
    """A JSON value (dict with str keys, list, str, number, bool, None), checked all through.

    Non-finite floats and ints of any size are fine (the codec keeps them).
    ``strict=False`` lets other objects through (the caller converts them) and
    checks only the text and the nesting. ``depth``: the levels above ``value``
    in what is stored (a log record around its metadata, a codec tag below).
    ``tagged``: ``value`` is JSON as stored (the server's side), where the codec's
    tags are values; a user's own dict never has their keys.
    """
    if value is None or value.__class__ in (bool, int, float):
        return value
    if isinstance(value, str):
        return check_text(value, what, nul=nul)
    if depth >= MAX_DEPTH:
        raise ValueError(f"{what} nests more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        if tagged and is_tag(value):
            return value
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{what}: keys must be str, not {type(key).__name__} ({key!r})")
            check_text(key, f"{what}: key", nul=nul)
            check_not_tag(key, f"{what}: key")
            check_json(item, f"{what}.{key[:40]}", nul=nul, strict=strict, depth=depth + 1, tagged=tagged)
        return value
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{what}[{i}]", nul=nul, strict=strict, depth=depth + 1, tagged=tagged)
        return value
    if isinstance(value, (bool, int, float)) or not strict:  # numpy and other subclasses
        return value
    raise TypeError(f"{what} holds a {type(value).__name__}, which is not a JSON value")


def check_key(key: Any, what: str) -> str:
    """A document key (a flattened parameter name such as ``model.lr``)."""
    if not isinstance(key, str):
        raise TypeError(f"{what} names must be str, not {type(key).__name__} ({key!r})")
    if not key:
        raise ValueError(f"{what} names must not be empty")
    if len(key) > MAX_NAME:
        raise ValueError(f"{what} name is {len(key)} characters long; at most {MAX_NAME} are allowed")
    check_not_tag(key, f"{what} name")
    return check_text(key, f"{what} name", nul=False)


def check_document(document: Any, what: str, tagged: bool = False) -> dict:
    """A flat parameters or summary document: checked keys, JSON values without NUL
    (``tagged``: as stored, see ``check_json``)."""
    if not isinstance(document, dict):
        raise TypeError(f"a {what} document must be a JSON object, not {type(document).__name__}")
    for key, value in document.items():
        check_key(key, what)
        check_json(value, f"{what} {key[:80]!r}", nul=False, depth=TAG_DEPTH, tagged=tagged)
    return document


def _optional(kind):
    return lambda v: v is None or kind(v)


def _is_text(v: Any) -> bool:
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    return v.__class__ in (int, float) and (v.__class__ is int or math.isfinite(v))


def _is_count(v: Any) -> bool:
    return v.__class__ is int and v >= 0


def _is_texts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_labels(v: Any) -> bool:
    if not isinstance(v, list):
        return False
    for x in v:
        try:
            check_label(x, "tag")
        except (TypeError, ValueError):
            return False
    return True


def _is_object(v: Any) -> bool:
    return isinstance(v, dict)


def _is_status(v: Any) -> bool:
    return v in STATUSES


# experiment.json's fields that readers rely on, and the shape each must have.
# Other fields may hold any JSON value (without NUL).
META_FIELDS = {
    "id": _optional(_is_text),
    "project": _optional(_is_text),
    "folder": _optional(_is_text),
    "name": _optional(_is_text),
    "prefix": _optional(_is_text),
    "namespace": _optional(_is_text),
    "status": _optional(_is_status),
    "status_reason": _optional(_is_text),
    "description": _optional(_is_text),
    "tags": _optional(_is_labels),
    "created_at": _optional(_is_number),
    "started_at": _optional(_is_number),
    "resumed_at": _optional(_is_number),
    "finished_at": _optional(_is_number),
    "updated_at": _optional(_is_number),
    "duration": _optional(_is_number),
    "sessions": _optional(_is_count),
    "pid": _optional(_is_count),
    "host": _optional(_is_text),
    "argv": _optional(_is_texts),
    "cwd": _optional(_is_text),
    "python": _optional(_is_text),
    "executable": _optional(_is_text),
    "platform": _optional(_is_text),
    "remote": _optional(_is_text),
    "packages": _optional(_is_object),
    "git": _optional(_is_object),
    "best_checkpoint": _optional(_is_object),
}
_META_SHAPES = {
    "tags": "a list of tags (short strings without control characters)",
    "argv": "a list of strings",
    "status": "one of " + ", ".join(STATUSES),
    "sessions": "an integer >= 0",
    "pid": "an integer >= 0",
    "packages": "an object",
    "git": "an object",
    "best_checkpoint": "an object",
}


def check_meta(meta: Any) -> dict:
    """experiment.json fields, as the Experiment writes them and the server stores them.

    A field readers rely on must have its shape (``tags`` a list of tags, ``argv``
    a list of strings, times numbers, ...): one writer's odd value must not break
    the listing or the run's page for everyone.
    """
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a JSON object, not {type(meta).__name__}")
    for key, value in meta.items():
        check_key(key, "meta")
        shape = META_FIELDS.get(key)
        if shape is not None and not shape(value):
            expected = _META_SHAPES.get(key) or (
                "a number" if key.endswith("_at") or key == "duration" else "a string"
            )
            raise ValueError(f"meta.{key} must be {expected} or null, got {str(value)[:80]!r}")
        check_json(value, f"meta.{key}", nul=False, tagged=True)  # as stored: NaN and big ints tagged
    return meta
