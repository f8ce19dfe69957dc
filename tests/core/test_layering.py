"""The layering of the package, read from its source: who may import whom.

Every import counts, also one inside a function or under TYPE_CHECKING: each is a
dependency a reader has to follow.
- Nothing below the command line and the integrations imports ``experiment.py``
  (the write side): readers take the run folder from ``_runfolder``.
- The core (``mldash/*.py``, ``mldash/remote``) imports no framework, not the
  server stack and no integration; the dashboard may use Starlette, the server
  all of it.
- No import circle between mldash's modules. An import inside a function is an
  on-demand load (a plugin, an optional part) and is not followed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"mldash": REPO / "mldash", "mldash.integrations": REPO / "integrations"}
FRAMEWORKS = {"torch", "tensorflow", "keras", "jax", "lightning", "pytorch_lightning", "transformers", "accelerate"}
SERVER_STACK = {"fastapi", "starlette", "sqlalchemy", "uvicorn", "psycopg", "boto3", "botocore"}
# What may import the Experiment: the public package, the command lines, the integrations.
MAY_IMPORT_EXPERIMENT = {"mldash", "mldash.cli", "mldash.ui.cli", "mldash.server.cli", "mldash.remote.cli"}
# The start-up hook exists to register the transformers integration once transformers loads.
MAY_IMPORT_AN_INTEGRATION = {"mldash._hf_hook": {"mldash.integrations.transformers"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path, lazy: bool = True) -> set[str]:
    """Absolute names of every module ``name`` imports (mldash's resolved to modules);
    without ``lazy``, not those imported inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in _nodes(tree, lazy):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            for alias in node.names:  # "from . import _codec" imports a module
                if f"{module}.{alias.name}" in MODULES:
                    out.add(f"{module}.{alias.name}")
    return {_owner(m) for m in out}


def _owner(module: str) -> str:
    if module.startswith("mldash.integrations") or module in MODULES:
        return module
    while module.startswith("mldash.") and module not in MODULES:
        module = module.rsplit(".", 1)[0]
    return module


def _nodes(tree: ast.AST, lazy: bool):
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if lazy or not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                todo.append(child)


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}
EAGER = {name: _imports(name, path, lazy=False) for name, path in MODULES.items()}


def _is_core(name: str) -> bool:
    parts = name.split(".")
    return name == "mldash" or (len(parts) >= 2 and parts[0] == "mldash" and (len(parts) == 2 or parts[1] == "remote")
                                and parts[1] != "integrations")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("mldash.integrations")))
def test_below_the_cli_nothing_imports_the_experiment(name):
    if name in MAY_IMPORT_EXPERIMENT or name == "mldash.experiment":
        return
    assert "mldash.experiment" not in GRAPH[name], f"{name} imports mldash.experiment"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _is_core(n)))
def test_the_core_imports_no_framework_and_no_server_stack(name):
    top = {m.split(".")[0] for m in GRAPH[name]}
    assert not top & FRAMEWORKS, f"{name} imports {sorted(top & FRAMEWORKS)}"
    assert not top & SERVER_STACK, f"{name} imports {sorted(top & SERVER_STACK)}"
    integrations = {m for m in GRAPH[name] if m.startswith("mldash.integrations")}
    assert integrations <= MAY_IMPORT_AN_INTEGRATION.get(name, set()), f"{name} imports {sorted(integrations)}"


def test_the_dashboard_imports_neither_the_server_nor_a_framework():
    for name in (n for n in MODULES if n.startswith("mldash.ui")):
        top = {m.split(".")[0] for m in GRAPH[name]}
        assert not top & FRAMEWORKS, name
        assert not any(m.startswith("mldash.server") for m in GRAPH[name]), name


def test_there_is_no_import_circle():
    internal = {n: {m for m in deps if m in MODULES and m != n} for n, deps in EAGER.items()}
    # A package's __init__ importing its own submodules is how it exports them.
    for name in internal:
        if MODULES[name].name == "__init__.py":
            internal[name] = {m for m in internal[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(internal[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(internal):
        if name not in state:
            visit(name)
