"""Make ``TrainingArguments(report_to="mldash")`` work in scripts that never import mldash.

transformers has no plugin mechanism for ``report_to``: ``Trainer.__init__`` looks each
name up in ``transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK`` and
raises ValueError for an unknown one. Importing transformers takes seconds, so mldash
must not import it at start-up just to add one entry to that dict. Instead:

1. The wheel (and an editable install) puts two small files at the top of
   site-packages: ``mldash_transformers.pth``, whose one line imports
   ``_mldash_transformers_hook`` at every interpreter start, and that module (its source
   is ``STARTUP_SOURCE`` below; pip byte-compiles it, so start-up only unmarshals it).
   The module only puts a finder first on ``sys.meta_path``. It imports nothing else and
   does nothing else where transformers is absent.
2. The finder ignores every import except ``transformers.integrations.integration_utils``.
   For that one it calls :func:`find_spec` here, which lets the normal finders locate the
   module and wraps its loader so that, right after the module has run,
   :func:`mldash.integrations.transformers.register` adds ``"mldash"``.
3. Importing ``mldash.integrations.transformers`` also registers (or installs the same
   finder), so the callback works without the ``.pth`` too (``python -S``, a source tree).

A module rather than code in the ``.pth`` line: a ``.pth`` line is compiled at every
start, which costs about twice as many instructions as importing a byte-compiled module
(benchmarks/bench_transformers.py measures both).

This module is also read by ``setup.py`` (with ``runpy``, not imported as part of the
package), so it must only import the standard library at its top.
"""

from __future__ import annotations

TARGET = "transformers.integrations.integration_utils"
PTH_NAME = "mldash_transformers.pth"
STARTUP_MODULE = "_mldash_transformers_hook"
FINDER_NAME = "MLDashTransformersFinder"

# The start-up module. It runs in every Python process of the environment: it must stay
# tiny, never fail, and import nothing.
STARTUP_SOURCE = f'''\
"""Installed by mldash: makes report_to="mldash" known to Hugging Face transformers.

Imported at start-up by {PTH_NAME}; it only puts a finder on sys.meta_path.
When {TARGET} is imported,
mldash/_hf_hook.py registers the callback. Generated from there; do not edit.
"""

import sys


class {FINDER_NAME}:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "{TARGET}":
            return None
        try:
            from mldash._hf_hook import find_spec
        except Exception:  # a broken mldash must never break transformers
            return None
        return find_spec(name, path, target)


if not any(getattr(f, "__name__", None) == "{FINDER_NAME}" for f in sys.meta_path):
    sys.meta_path.insert(0, {FINDER_NAME})
'''


def pth_contents() -> str:
    """The text of the ``.pth`` start-up file: a comment, then one ``import`` line."""
    return (
        "# mldash: makes TrainingArguments(report_to=\"mldash\") work without `import mldash`.\n"
        f"import {STARTUP_MODULE}\n"
    )


def install_finder() -> None:
    """Put the finder on ``sys.meta_path`` (what the start-up module does), once."""
    exec(compile(STARTUP_SOURCE, f"<{STARTUP_MODULE}>", "exec"), {"__name__": STARTUP_MODULE})


def _is_finder(obj: object) -> bool:
    return getattr(obj, "__name__", None) == FINDER_NAME


def find_spec(name: str, path=None, target=None):
    """The real spec of ``TARGET``, with a loader that registers mldash once it has run."""
    from mldash._import_hooks import wrapped_spec

    return wrapped_spec(name, path, target, after=register_with, skip=_is_finder)


def register_with(module) -> None:
    """Add "mldash" to a loaded ``integration_utils`` module; never break transformers."""
    try:
        from mldash.integrations.transformers import register

        register(module)
    except Exception as error:  # a broken mldash must not stop a training script
        import warnings

        warnings.warn(f"mldash could not register report_to='mldash' with transformers: {error!r}")
