"""``BadFilter``: the 400 a filter the server cannot run answers (``_filter_sql``)."""

from __future__ import annotations

from ._errors import StoreError


class BadFilter(StoreError, ValueError):
    """A filter the server cannot run (400; a ValueError, as a local parse's): one that
    does not parse (the message shows it with a caret), or a pattern PostgreSQL's
    regular expressions cannot say. ``extra``: position, line and column when known."""

    code = "bad_filter"

    def __init__(self, message: str, position: int | None = None, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.extra = {k: v for k, v in (("position", position), ("line", line), ("column", column)) if v is not None}
