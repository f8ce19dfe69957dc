"""The one checker of names: what may become a path on disk, a key on the server, a label.

Every entry point uses these: the Experiment (prefix, project, folder, name,
namespace, tags), metrics (series and field names), the server (the same
names arriving over HTTP) and the dashboard. A name that passes can never
leave its folder: no part is empty, "." or "..", none holds "/" or "\\", a
control character (NUL, newline, ...) or text that is not valid Unicode, and
none starts with "." (names with a leading dot are mldash's own files, such as
lock files, and sync skips them).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ._codec import TAGS

MAX_PART = 200
MAX_NAME = 1000
# Files that live beside the folders a metric name creates.
RESERVED = {"data.jsonl", "data.idx", "data.lock"}
DEFAULT_NAMESPACE = "default"
# The keys of the codec's tags: a user's own {"$float": ...} would read back as a float,
# and {"$image": ...} as an image.
TAG_KEYS = frozenset(TAGS)
MAX_PART_BYTES = 255  # a file name, on every common file system
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
# C0 and C1 control characters, and the bidirectional overrides that make a name read
# differently from what it is ("Trojan Source").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def check_unicode(text: str, what: str) -> None:
    """A lone surrogate (from bad decoding) cannot be stored as JSON or UTF-8: refuse it."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"{what} is not valid Unicode ({error.reason} at position {error.start}): {text[:80]!r}"
            ) from None


def check_label(label: Any, what: str) -> str:
    """A name that is not a path (a tag, a metric field name): text without control
    characters, at most MAX_PART characters."""
    if not isinstance(label, str):
        raise TypeError(f"{what} must be a str, not {type(label).__name__}")
    if not label or not label.strip():
        raise ValueError(f"{what} must not be empty")
    if len(label) > MAX_PART:
        raise ValueError(f"{what} is {len(label)} characters long; at most {MAX_PART} are allowed")
    if _CONTROL.search(label):
        raise ValueError(f"{what} {label!r} contains a control character (NUL, newline, ...)")
    check_unicode(label, what)
    return label


def check_part(part: Any, what: str) -> str:
    """One folder's name: a label that also cannot leave its folder or hide."""
    check_label(part, what)
    if part in (".", ".."):
        raise ValueError(f"{what} {part!r} is not allowed: it would leave its folder")
    if "/" in part or "\\" in part:
        raise ValueError(f"{what} {part!r} must not contain '/' or '\\' (it is one folder's name)")
    if part.startswith("."):
        raise ValueError(f"{what} {part!r} must not start with '.' (such names are mldash's own files)")
    if len(part.encode("utf-8")) > MAX_PART_BYTES:
        raise ValueError(f"{what} {part[:40]!r}... is more than {MAX_PART_BYTES} bytes in UTF-8 (a file name's limit)")
    if part != part.strip():
        raise ValueError(f"{what} {part!r} must not start or end with white space")
    return part


def split_path(name: Any, what: str) -> list[str]:
    """Split a "/"-separated name into checked parts.

    >>> split_path("train/loss", "metric name")
    ['train', 'loss']
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"{what} is {len(name)} characters long; at most {MAX_NAME} are allowed")
    if name.startswith("/") or os.path.isabs(name):
        raise ValueError(f"{what} {name!r} must be relative, not an absolute path")
    parts = name.split("/")
    for part in parts:
        check_part(part, what)
    return parts


def metric_parts(name: Any) -> list[str]:
    parts = split_path(name, "metric name")
    for part in parts:
        if part in RESERVED:
            raise ValueError(f"metric name {name!r} uses the reserved file name {part!r}")
    return parts


def safe_metric_name(name: str) -> str:
    """A valid metric name for any text (the frameworks allow any key): each
    "/"-part made a valid folder name, the same way every time.

    >>> safe_metric_name("val/.hidden"), safe_metric_name("a//b"), safe_metric_name("x\\ny")
    ('val/_.hidden', 'a/_/b', 'x_y')
    """
    parts, size = [], 0
    for part in str(name).split("/"):
        part = _CONTROL.sub("_", part.replace("\\", "_"))
        part = part.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> "?"
        part = part[: MAX_PART - 1].strip()
        if not part or part.startswith(".") or part in RESERVED:
            part = f"_{part}"
        size += len(part) + 1
        if size > MAX_NAME + 1:
            break
        parts.append(part)
    return "/".join(parts) or "_"


def check_field_name(name: Any) -> str:
    """A metric point's field name (``value`` in ``append(value=1)``)."""
    check_label(name, "metric field name")
    check_not_tag(name, "metric field name")
    return name


def check_not_tag(key: str, what: str) -> None:
    if key in TAG_KEYS:
        raise ValueError(
            f"{what} {key!r} is reserved: mldash stores NaN, big ints and media (images, histograms) "
            f"as {{{key!r}: ...}}"
        )


def check_namespace(namespace: Any) -> str:
    """A server namespace: 1-100 letters, digits, '.', '_' or '-', not starting with '.' or '-'."""
    if namespace is None:
        return DEFAULT_NAMESPACE
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            "namespace must be 1-100 letters, digits, '.', '_' or '-', starting with a letter, "
            f"digit or '_', got {namespace[:120]!r}"
        )
    return namespace


def default_name() -> str:
    """A unique run name that sorts by creation time, e.g. ``20261126-034612-3f9a07c2``.

    Four random bytes: runs a sweep starts in the same second must not share a
    folder (two bytes collided in about 2% of 50 names a second).
    """
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + os.urandom(4).hex()
