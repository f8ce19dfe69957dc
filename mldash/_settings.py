"""An Experiment's settings, each checked at construction (which does no I/O).

Where the run lives (prefix, project, folder, name, root), where it replicates
(remote, token) and how it writes (flush_interval); the values mldash takes from
the environment when an argument is not given.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ._checks import check_text
from ._naming import check_label, check_part, default_name, split_path

MIN_FLUSH_INTERVAL, MAX_FLUSH_INTERVAL = 0.001, 3600.0


def flush_interval(value: Any) -> float:
    """Seconds between the writer's timed flushes: a finite number in (0, 3600]."""
    what = "flush_interval"
    if value is None:
        text = os.environ.get("MLDASH_FLUSH_INTERVAL")
        if not text:
            return 0.5
        what = "$MLDASH_FLUSH_INTERVAL"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{what} must be a number of seconds, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not (MIN_FLUSH_INTERVAL <= value <= MAX_FLUSH_INTERVAL):  # also refuses NaN
        raise ValueError(
            f"{what} must be from {MIN_FLUSH_INTERVAL:g} to {MAX_FLUSH_INTERVAL:g} seconds, got {value!r}"
        )
    return float(value)


def _optional_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
    return value


def remote(url: Any) -> str | None:
    """The server URL (default ``$MLDASH_URL``), or None: local only."""
    url = _optional_str(url if url is not None else os.environ.get("MLDASH_URL") or None, "remote")
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"remote must be an http:// or https:// URL, got {url[:200]!r}")
    if url:
        check_text(url, "remote", nul=False)
        if any(c.isspace() for c in url):
            raise ValueError(f"remote must be a URL without white space, got {url[:200]!r}")
    return url or None


def location(prefix: str | None, project: str | None, name: str | None, folder: str | None) -> tuple[str, list[str], str]:
    """(project, folder parts, name) from a prefix and/or the parts given one by one."""
    folder_parts: list[str] = split_path(folder, "folder") if folder else []
    if prefix is not None:
        parts = split_path(prefix, "prefix")
        if len(parts) == 1:
            prefix_project, prefix_name, prefix_folder = None, parts[0], []
        else:
            prefix_project, prefix_name, prefix_folder = parts[0], parts[-1], parts[1:-1]
        for given, found, what in ((project, prefix_project, "project"), (name, prefix_name, "name")):
            if given is not None and found is not None and given != found:
                raise ValueError(f"{what}={given!r} contradicts prefix={prefix!r}")
        if folder_parts and prefix_folder and folder_parts != prefix_folder:
            raise ValueError(f"folder={folder!r} contradicts prefix={prefix!r}")
        project = prefix_project or project
        name = prefix_name
        folder_parts = prefix_folder or folder_parts
    if project is None:
        project = os.environ.get("MLDASH_PROJECT") or "default"
    name = check_part(name, "name") if name is not None else default_name()
    return check_part(project, "project"), folder_parts, name


def root(value: Any) -> str:
    """The local root, absolute (default ``$MLDASH_ROOT``, else ``.mldash``)."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike), not {type(value).__name__}")
    path = os.fspath(value or os.environ.get("MLDASH_ROOT") or ".mldash")
    if "\x00" in path:
        raise ValueError(f"root {path!r} contains a NUL character")
    return os.path.abspath(path)


def token(value: Any) -> str | None:
    """The API token (default ``$MLDASH_TOKEN``)."""
    value = _optional_str(value if value is not None else os.environ.get("MLDASH_TOKEN") or None, "token")
    if value is not None and (not value.isprintable() or not value.isascii() or " " in value):
        raise ValueError("token must be printable ASCII without spaces (as `mldash token create` prints it)")
    return value


def description(value: Any) -> str | None:
    value = _optional_str(value, "description")
    if value is not None:
        check_text(value, "description", nul=False)
    return value


def tags(value: Iterable[str] | None) -> list[str] | None:
    if isinstance(value, str):
        raise TypeError("tags must be a list of strings, not one string")
    return [check_label(t, "tag") for t in value] if value is not None else None
