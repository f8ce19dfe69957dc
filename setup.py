"""Build hook: ship ``mldash_transformers.pth`` at the top of site-packages.

All metadata lives in pyproject.toml; this file only adds one start-up file to the
wheel and to editable installs (see mldash/_hf_hook.py for what the file does).

- Wheel (``pip install .``, ``python -m build``): everything in ``build_lib`` ends up
  in site-packages, so the file is written there next to the ``mldash`` package.
- Editable (``pip install -e .``): setuptools' build_py copies nothing in editable mode
  and the editable wheel is assembled from the ``install_lib`` folder it prepares, so the
  file is written there instead.
"""

import os
import runpy

from setuptools import setup
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))
# Read, not imported: the build environment need not have mldash's dependencies.
_HOOK = runpy.run_path(os.path.join(_HERE, "mldash", "_hf_hook.py"))


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            folder = self.get_finalized_command("install").install_lib
        else:
            folder = self.build_lib
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, _HOOK["PTH_NAME"])
        with open(path, "w", encoding="utf-8") as f:
            f.write(_HOOK["pth_contents"]())
        self._pth_output = path

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        path = getattr(self, "_pth_output", None)
        if path is not None and not getattr(self, "editable_mode", False):
            outputs.append(path)
        return outputs


setup(cmdclass={"build_py": build_py_with_pth})
