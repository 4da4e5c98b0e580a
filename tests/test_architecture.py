"""The package's shape, read from its source (ast): layers that import only downward, no import
cycle, no module reading another module's underscore names, and a type-clean package."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rocmstreams"

#: Bottom to top. A module may import modules of lower layers, and modules of its own layer
#: only inside its own subpackage (backends.cuda -> backends.runtime).
LAYERS = [
    ["errors"],
    ["backends"],
    ["core"],
    ["pinned"],
    ["streamcore"],
    ["event", "graph", "staging", "trace"],
    ["stream"],
    ["memory"],
    ["integrations"],
    ["__init__"],
    ["kernels"],
    ["__main__"],
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found["rocmstreams." + ".".join(parts)] = path
    return found


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import of a rocmstreams
    module, at module level or inside functions, ``if TYPE_CHECKING:`` blocks aside."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = _package_of(name, path)
    found = []
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "rocmstreams":
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rocmstreams":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for sub in submodules:
                found.append((sub, [], node.lineno))
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest or not submodules:
                found.append((target, rest, node.lineno))
    return found


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")[1:] or ["__init__"]
    for rank, names in enumerate(LAYERS):
        if parts[0] in names:
            return rank, parts[0]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name, path) if target != name}
            for name, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    for name in MODULES:
        _layer(name)


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for name, path in MODULES.items():
        rank, group = _layer(name)
        for target, _, line in _imports(name, path):
            target_rank, target_group = _layer(target)
            if target_rank > rank or (target_rank == rank and target_group != group):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports that reach up or sideways:\n" + "\n".join(wrong)


def test_nothing_under_backends_imports_a_module_above_the_backends():
    wrong = [f"{MODULES[name].relative_to(ROOT)} imports {target}"
             for name, targets in _graph().items() if name.startswith("rocmstreams.backends")
             for target in targets
             if not (target.startswith("rocmstreams.backends") or target == "rocmstreams.errors")]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # a package's __init__ importing its own submodules is not a cycle through the package
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".")
                                         for a, b in zip(c, c[1:]))]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_no_module_imports_another_modules_underscore_names():
    wrong = [f"{path.relative_to(ROOT)}:{line} takes {n} from {target}"
             for name, path in MODULES.items() for target, names, line in _imports(name, path)
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert not wrong, "\n".join(wrong)


def _own_underscore_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, classes, assigned attributes, slots."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            own.add(node.value)  # __slots__ entries, setattr names
        elif isinstance(node, ast.keyword) and node.arg:
            own.add(node.arg)
    return own


#: Underscore attributes of other libraries that rocmstreams reads, each for a stated reason.
FOREIGN = {
    "_codelibrary": "numba's compiled kernel: the launchable function of a dispatcher overload",
    "_can_compile": "numba's dispatcher: whether an explicit signature fixes its overloads",
    "_launch_config_sensitive": "numba's dispatcher: kernels that depend on their grid",
    "_cond": "the cpu backend's worker, read by the backend that owns it",
    "_get_kernel_context": "numba's simulator: the fake cuda module of the kernel it runs, for "
                           "a kernel's closure cells (the simulator swaps it in for globals)",
}


def test_no_module_reads_another_modules_underscore_attributes():
    wrong = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = _own_underscore_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                attr = node.attr
                if attr.startswith("_") and not attr.startswith("__") and attr not in own \
                        and attr not in FOREIGN:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .{attr}")
    assert not wrong, "underscore attributes defined in another module:\n" + "\n".join(wrong)


@pytest.mark.skipif(not (PACKAGE / "kernels").is_symlink(),
                    reason="not the source tree (the kernels were copied into the package)")
def test_the_kernels_ship_as_rocmstreams_kernels_and_type_checkers_find_the_package(tmp_path):
    """After the README's editable install, ``rocmstreams`` and ``rocmstreams.kernels`` resolve
    to the source tree as plain files (no import hook), so mypy and IDEs see them."""
    probe = ("import importlib.util as u; "
             "print(u.find_spec('rocmstreams').origin); "
             "print(u.find_spec('rocmstreams.kernels').submodule_search_locations[0])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert Path(out[0]).resolve() == (PACKAGE / "__init__.py").resolve()
    assert Path(out[1]).resolve() == (ROOT / "kernels").resolve()


@pytest.mark.skipif(shutil.which("mypy") is None and not any(
    (Path(p) / "mypy").exists() for p in sys.path), reason="mypy is not installed")
def test_mypy_finds_the_package_and_reports_no_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                           str(ROOT / "pyproject.toml"), "-p", "rocmstreams"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout
