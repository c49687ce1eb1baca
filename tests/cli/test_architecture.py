"""The shape of devbox_cli, checked mechanically (STYLE.md habits 11, 13-15; issue 8):

- no module reaches into another module's private names (`from x import _y`, `x._y`,
  `self._y` that this module does not define: the mixin pattern);
- the import graph of devbox_cli has no cycle (every import counts: module level, inside a
  function, and under TYPE_CHECKING);
- no class inherits from another devbox_cli class, except in the error trees;
- the layers import downwards only: store/ and engine/ know nothing of the services or the CLI,
  the services nothing of the CLI, and the CLI reaches the store only through the Client;
- each outside dependency is imported in its one home: docker in engine/docker_backend.py
  (and docker_errors.py, its error mapping),
  rich in render.py, typer in the CLI, PyNaCl in store/sealing.py, aiohttp nowhere;
- no module is over 400 lines.

The private-name, cycle and size rules hold for proxy/ too.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
ROOT = "devbox_cli"
MAX_LINES = 400
# The proxy is held to the same rules; its reaches into aiohttp's private attributes are
# the ones proxy/compat.py declares and checks at start-up, and no others.
PACKAGES = (ROOT, "proxy")


def module_name(path: Path) -> str:
    parts = path.relative_to(TOP).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules(root: str = ROOT) -> dict[str, tuple[Path, ast.Module]]:
    return {
        module_name(path): (path, ast.parse(path.read_text(), str(path)))
        for path in sorted((TOP / root).rglob("*.py"))
    }


def declared_internals(root: str) -> set[str]:
    if root != "proxy":
        return set()
    from proxy import compat

    return {*compat.HANDLER_ATTRS, *compat.SERVER_ATTRS}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    path, _ = modules(importer.split(".")[0])[importer]
    base = importer.split(".")
    base = base if path.name == "__init__.py" else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports(name: str) -> set[str]:
    """The modules of its own package `name` imports. `from pkg import mod` names the module."""
    root = name.split(".")[0]
    known = modules(root)
    out: set[str] = set()
    for node in ast.walk(known[name][1]):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == root}
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            if source.split(".")[0] != root:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)
    return out - {name}


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def walk_runtime(tree: ast.AST):  # type: ignore[no-untyped-def]
    """ast.walk, minus `if TYPE_CHECKING:` blocks: a stub there defines nothing."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node) if not is_type_checking(c)]


def defined_names(tree: ast.Module) -> set[str]:
    """Every name this module defines: functions, classes, assignments, attributes."""
    names: set[str] = set()
    for node in walk_runtime(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
    return names


def private_reaches(name: str) -> list[str]:
    root = name.split(".")[0]
    path, tree = modules(root)[name]
    own = defined_names(tree) | declared_internals(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and resolve(name, node).split(".")[0] == root:
            found += [
                f"{path.name}:{node.lineno}: from {resolve(name, node)} import {a.name}"
                for a in node.names
                if is_private(a.name)
            ]
        elif isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in own:
            found.append(f"{path.name}:{node.lineno}: .{node.attr} is not defined here")
    return found


@pytest.mark.parametrize("root", PACKAGES)
def test_no_module_reaches_into_another_modules_private_names(root):
    found = [hit for name in modules(root) for hit in private_reaches(name)]
    assert found == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph(root: str) -> dict[str, set[str]]:
    # The package root is the lazy public face (`devbox_cli.Client`), above every module:
    # what it imports is not a dependency of the modules that import `__version__` from it.
    return {name: set() if name == root else imports(name) for name in modules(root)}


@pytest.mark.parametrize("root", PACKAGES)
def test_the_import_graph_has_no_cycle(root):
    assert find_cycle(import_graph(root)) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def error_classes() -> set[str]:
    """Classes of the error trees: DevboxError's and the sealing module's."""
    names = {"Exception"}
    changed = True
    while changed:
        changed = False
        for _, tree in modules().values():
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name not in names
                    and any(isinstance(b, ast.Name) and b.id in names for b in node.bases)
                ):
                    names.add(node.name)
                    changed = True
    return names


def test_no_class_inherits_from_another_devbox_class():
    ours = {
        node.name
        for _, tree in modules().values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    errors = error_classes()
    stacked = [
        f"{path.name}: {node.name}({base.id})"
        for path, tree in modules().values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name not in errors
        for base in node.bases
        if isinstance(base, ast.Name) and base.id in ours
    ]
    assert stacked == []


# Which layer may import which: each layer only from the ones below it. The package root
# itself (`from devbox_cli import __version__`) is allowed by its exact name only: as a
# prefix it would admit every module.
LAYERS = {
    "devbox_cli.store": {"devbox_cli.errors", "devbox_cli.home", "devbox_cli.store"},
    "devbox_cli.engine": {
        ROOT,
        "devbox_cli.errors",
        "devbox_cli.home",
        "devbox_cli.names",
        "devbox_cli.engine",
    },
    "devbox_cli.services": {
        "devbox_cli.errors",
        "devbox_cli.home",
        "devbox_cli.names",
        "devbox_cli.store",
        "devbox_cli.engine",
        "devbox_cli.services",
    },
    # The CLI reaches the store only through the Client.
    "devbox_cli.cli": {
        ROOT,
        "devbox_cli.errors",
        "devbox_cli.home",
        "devbox_cli.names",
        "devbox_cli.render",
        "devbox_cli.client",
        "devbox_cli.engine",
        "devbox_cli.services",
        "devbox_cli.cli",
    },
}


def admits(allowed: str, target: str) -> bool:
    return target == allowed or (allowed != ROOT and target.startswith(allowed + "."))


def layer_of(module: str) -> str | None:
    return next((layer for layer in LAYERS if admits(layer, module)), None)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if (layer := layer_of(name)) is not None
        for target in targets
        if not any(admits(a, target) for a in LAYERS[layer])
    )


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_downwards_only(layer):
    graph = {name: imports(name) for name in modules() if layer_of(name) == layer}
    assert graph, f"no module in {layer}"
    assert layer_violations(graph) == []


@pytest.mark.parametrize(
    ("importer", "target"),
    [
        ("devbox_cli.engine.views", "devbox_cli.services.healing"),
        ("devbox_cli.engine.views", "devbox_cli.cli.common"),
        ("devbox_cli.engine.views", "devbox_cli.client"),
        ("devbox_cli.engine.views", "devbox_cli.store"),
        ("devbox_cli.services.copy", "devbox_cli.cli.copy"),
        ("devbox_cli.services.copy", "devbox_cli.client"),
        ("devbox_cli.store.files", "devbox_cli.engine.wire"),
        ("devbox_cli.cli.copy", "devbox_cli.store"),
    ],
)
def test_the_layer_rule_refuses_an_upward_import(importer, target):
    assert layer_violations({importer: {target}}) == [f"{importer} imports {target}"]


def test_the_layer_rule_admits_the_package_root_by_its_exact_name():
    assert layer_violations({"devbox_cli.engine.images": {ROOT}}) == []
    assert layer_violations({"devbox_cli.engine.images": {"devbox_cli.services"}}) != []
    # devbox_cli.client is no module of devbox_cli.cli, whatever its name starts with
    assert layer_of("devbox_cli.client") is None and layer_of("devbox_cli.cli") == "devbox_cli.cli"


# Each outside dependency has one home (STYLE.md habit 2): who may import it.
OUTSIDE_HOMES = {
    "docker": {"devbox_cli.engine.docker_backend", "devbox_cli.engine.docker_errors"},
    "rich": {"devbox_cli.render"},
    "typer": {"devbox_cli.__main__", "devbox_cli.cli"},
    "nacl": {"devbox_cli.store.sealing"},
    "aiohttp": set(),  # the proxy's, never the CLI's
}


def outside_imports(tree: ast.AST) -> set[str]:
    """The top-level names of the outside packages a module imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def misplaced_outside_imports(trees: dict[str, ast.AST]) -> list[str]:
    def at_home(name: str, homes: set[str]) -> bool:
        return any(name == h or name.startswith(h + ".") for h in homes)

    return sorted(
        f"{name} imports {package}"
        for name, tree in trees.items()
        for package in outside_imports(tree) & OUTSIDE_HOMES.keys()
        if not at_home(name, OUTSIDE_HOMES[package])
    )


def test_each_outside_dependency_is_imported_only_in_its_home():
    trees = {name: tree for name, (_, tree) in modules().items()}
    assert misplaced_outside_imports(trees) == []
    used = {p for tree in trees.values() for p in outside_imports(tree)}
    assert {"docker", "rich", "typer", "nacl"} <= used  # the rule is about real imports


@pytest.mark.parametrize(
    ("module", "code", "package"),
    [
        ("devbox_cli.cli.copy", "def f():\n    import docker.errors\n", "docker"),
        ("devbox_cli.services.copy", "from docker import APIClient\n", "docker"),
        ("devbox_cli.engine.views", "import docker\n", "docker"),
        ("devbox_cli.services.doctor", "from rich.table import Table\n", "rich"),
        ("devbox_cli.services.copy", "import typer\n", "typer"),
        ("devbox_cli.engine.wire", "import aiohttp\n", "aiohttp"),
    ],
)
def test_the_outside_dependency_rule_refuses_an_import_elsewhere(module, code, package):
    assert misplaced_outside_imports({module: ast.parse(code)}) == [f"{module} imports {package}"]


@pytest.mark.parametrize("root", PACKAGES)
def test_no_module_is_over_400_lines(root):
    sizes = {name: len(path.read_text().splitlines()) for name, (path, _) in modules(root).items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
