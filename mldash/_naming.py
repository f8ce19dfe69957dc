"""Validation of the names that become paths on disk and on the server."""

from __future__ import annotations

import os
import time

MAX_PART = 200
MAX_NAME = 1000
# Files that live beside the folders a metric name creates.
RESERVED = {"data.jsonl", "data.idx", "data.lock"}


def check_part(part: str, what: str) -> str:
    if not isinstance(part, str):
        raise TypeError(f"{what} must be a str, not {type(part).__name__}")
    if not part or not part.strip():
        raise ValueError(f"{what} must not be empty")
    if part in (".", ".."):
        raise ValueError(f"{what} {part!r} is not allowed: it would leave its folder")
    if "\\" in part or any(ord(c) < 32 or ord(c) == 127 for c in part):
        raise ValueError(
            f"{what} {part!r} contains a backslash or a control character (NUL, newline, ...)"
        )
    if len(part) > MAX_PART:
        raise ValueError(f"{what} is {len(part)} characters long; at most {MAX_PART} are allowed")
    if part != part.strip():
        raise ValueError(f"{what} {part!r} must not start or end with white space")
    return part


def split_path(name: str, what: str) -> list[str]:
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


def metric_parts(name: str) -> list[str]:
    parts = split_path(name, "metric name")
    for part in parts:
        if part in RESERVED:
            raise ValueError(f"metric name {name!r} uses the reserved file name {part!r}")
    return parts


def default_name() -> str:
    """A unique run name that sorts by creation time, e.g. ``20261126-034612-3f9a07c2``.

    Four random bytes: runs a sweep starts in the same second must not share a
    folder (two bytes collided in about 2% of 50 names a second).
    """
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + os.urandom(4).hex()
