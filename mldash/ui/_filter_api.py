"""The dashboard API's experiments routes: the runs listed (all of them, those a
filter matches, or the search box's plain text), the filter keys they offer and each
run's value for each key (``api/experiments``, ``api/keys``, ``api/values``).

``_FilterRoutes`` is mixed into ``mldash.ui.app._Api``, which gives it ``source`` and
``_filters`` (whether the source evaluates filters itself).
"""

from __future__ import annotations

import inspect
import re

from .. import _filter
from .source import row_lookup

# experiment.json fields the experiments table does not show (they are most of its bytes).
_LIST_OMITS = frozenset(("packages", "platform", "executable", "cwd", "argv", "python", "env", "git", "path"))

# What makes the search box's text a filter even when it does not parse (so the page
# shows the error): an operator, a bracket or quote, or a params./summary./metrics. key.
# Other text that does not parse (``resnet``, ``lr-0.01``, ``bert crash``) is a name search.
_FILTERISH = re.compile(r"""[=<>!~()\[\]"']|(^|[\s(])(params|summary|metrics)\.""", re.IGNORECASE)
MAX_VALUE_KEYS = 64
MAX_VALUE_RUNS = 500


def _takes_filter(method) -> bool:
    """Whether a source's ``list_experiments`` has the ``filter`` argument (sources
    written before filters existed do not: the app filters their rows itself)."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "filter" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _text_match(row: dict, words: str) -> bool:
    """The search box's plain text: a substring of the prefix, description or a tag."""
    hay = " ".join(str(part) for part in [row.get("prefix"), row.get("description"), *(row.get("tags") or [])] if part)
    return words in hay.lower()


def _value_key(text: str) -> _filter.Key:
    """One filter key as the filter language spells it (``params.lr``, ``metrics.loss.min``)."""
    try:
        node = _filter.parse(f"{text} = null") if isinstance(text, str) and text.strip() else None
    except _filter.FilterError as error:
        raise ValueError(f"not a filter key: {text!r}: {error.reason}") from None
    if not isinstance(node, _filter.Compare):
        raise ValueError(f"not a filter key: {text!r} (params.<key>, summary.<key>, metrics.<name>.last|min|max, or a run key)")
    return node.key


class _FilterRoutes:
    """The handlers of ``api/experiments``, ``api/keys`` and ``api/values`` (in ``_Api``)."""

    def experiments(self, params) -> dict:
        rows, mode = self._search(params)
        # The table needs none of the environment details; the experiment view has them.
        return {"experiments": [{k: v for k, v in row.items() if k not in _LIST_OMITS} for row in rows], "mode": mode}

    def keys(self, params) -> dict:
        """The keys a filter may use over the runs listed (the search box's completion)."""
        rows, _ = self._search(params)
        names: dict[str, set] = {"params": set(), "summary": set(), "metrics": set()}
        for row in rows:
            for scope in names:
                document = row.get(scope)
                if isinstance(document, dict):
                    names[scope].update(k for k in document if isinstance(k, str))
        return {"keys": _filter.keys_of(names["params"], names["summary"], names["metrics"]), "runs": len(rows)}

    def values(self, params) -> dict:
        """Each run's value for each key (null where it has none), for the scatter and the
        parallel coordinates: the same values a filter reads, min and max included."""
        keys = params.getlist("key")
        refs = params.getlist("run")
        if not keys or not refs:
            raise ValueError("key and run are needed (each may be repeated)")
        if len(keys) > MAX_VALUE_KEYS or len(refs) > MAX_VALUE_RUNS:
            raise ValueError(f"at most {MAX_VALUE_KEYS} keys and {MAX_VALUE_RUNS} runs a request")
        parsed = [_value_key(k) for k in keys]
        lookup_of = getattr(self.source, "lookup", None) or row_lookup
        runs, missing = [], []
        for ref in dict.fromkeys(refs):
            try:
                address = self.source.resolve(ref) if getattr(self.source, "resolve", None) else ref
                row = self.source.get_experiment(address)
                lookup = lookup_of(row)
                values = [lookup(key) for key in parsed]
            except KeyError:
                missing.append(ref)
                continue
            values = [None if v is _filter.MISSING else v for v in values]
            runs.append({"ref": ref, "prefix": row.get("prefix"), "name": row.get("name"), "status": row.get("status"), "values": values})
        return {"keys": keys, "runs": runs, "missing": missing}

    def _search(self, params) -> tuple[list[dict], str]:
        """The rows for ``filter`` (the filter language; a bad one is a FilterError) or
        ``q`` (the search box: a filter when it parses or looks like one, else plain
        text matched against prefix, description and tags); the mode used."""
        project = params.get("project") or None
        strict, box = params.get("filter"), params.get("q")
        if strict is not None and box is not None:
            raise ValueError("give filter or q, not both")
        text = strict if strict is not None else box
        if text is None or not text.strip():
            return self.source.list_experiments(project), "all"
        try:
            node = _filter.parse(text)
        except _filter.FilterError:
            if strict is not None or _FILTERISH.search(text):
                raise
            words = text.strip().lower()
            return [row for row in self.source.list_experiments(project) if _text_match(row, words)], "text"
        if self._filters:
            return self.source.list_experiments(project, filter=text), "filter"
        lookup_of = getattr(self.source, "lookup", None) or row_lookup
        rows = []
        for row in self.source.list_experiments(project):
            try:
                if _filter.matches(node, lookup_of(row)):
                    rows.append(row)
            except KeyError:
                continue  # gone since it was listed
        return rows, "filter"
