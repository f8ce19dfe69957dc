"""Build hooks: compile mldash's C speed-up, and ship its start-up hook for Hugging Face.

``mldash/_speedups.c`` is optional: where it cannot be compiled, pip installs
mldash anyway and ``Metric.append`` runs its pure-Python twin (mldash/_queue.py).

All metadata lives in pyproject.toml; this file only adds two generated files, the
``mldash_transformers.pth`` line and the tiny module it imports, to the wheel and to
editable installs (mldash/_hf_hook.py says what they do and holds their text).

- Wheel (``pip install .``, ``python -m build``): everything in ``build_lib`` ends up
  in site-packages, so the files are written there next to the ``mldash`` package.
- Editable (``pip install -e .``): setuptools' build_py copies nothing in editable mode
  and the editable wheel is assembled from the ``install_lib`` folder it prepares, so the
  files are written there instead.
"""

import os
import runpy

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))
# Read, not imported: the build environment need not have mldash's dependencies.
_HOOK = runpy.run_path(os.path.join(_HERE, "mldash", "_hf_hook.py"))


def startup_files():
    """{file name: text} of the start-up hook."""
    return {
        _HOOK["PTH_NAME"]: _HOOK["pth_contents"](),
        _HOOK["STARTUP_MODULE"] + ".py": _HOOK["STARTUP_SOURCE"],
    }


class build_py_with_startup_hook(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            folder = self.get_finalized_command("install").install_lib
        else:
            folder = self.build_lib
        os.makedirs(folder, exist_ok=True)
        self._startup_outputs = []
        for name, text in startup_files().items():
            path = os.path.join(folder, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            self._startup_outputs.append(path)

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += getattr(self, "_startup_outputs", [])
        return outputs


setup(
    cmdclass={"build_py": build_py_with_startup_hook},
    ext_modules=[
        Extension("mldash._speedups", ["mldash/_speedups.c"], optional=True),
        Extension("mldash._pointparse", ["mldash/_pointparse.c"], optional=True),
    ],
)
