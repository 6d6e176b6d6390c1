"""The rooms' import rules hold: no circles, and the SDK stands without the servers.

A circle between modules is dodged today with an import inside a function
and bites tomorrow; so every import counts, in functions and under
``TYPE_CHECKING`` too. ``pip install chaser`` gives the SDK and the CLI
without the servers' dependencies, so nothing they import may reach the
servers' code or libraries; only ``chaser up`` imports the servers, inside
its command.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
OUR_PACKAGES = ("agent", "scheduler", "serving", "chaser", "vmimages")
SERVER_PACKAGES = {"agent", "scheduler", "serving", "vmimages"}
# What `chaser[server]` adds; the SDK must run without any of it.
SERVER_LIBRARIES = {
    "alembic",
    "hypercorn",
    "jwt",
    "lxc",
    "psycopg",
    "pydantic_settings",
    "pyroute2",
    "quart",
    "quart_trio",
    "sqlalchemy",
    "werkzeug",
}
# The one command that runs the servers, and so may import them in its body.
LAZY_SERVER_IMPORTS = {
    ("chaser/cli.py", "cmd_up"),
    ("chaser/cli.py", "_ensure_default_image"),
    ("chaser/cli.py", "_image_alias"),
}


def _sdk_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "chaser").rglob("*.py")
    )


def test_the_sdk_and_cli_import_nothing_of_the_servers() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {_sdk_modules()!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    loaded = {name.partition(".")[0] for name in json.loads(out.stdout)}
    assert loaded & SERVER_PACKAGES == set()
    assert loaded & SERVER_LIBRARIES == set()


def _imported_packages(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.partition(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.partition(".")[0]}
    return set()


def _imports_by_function(node: ast.AST, where: str = "<module>") -> list[tuple[str, ast.stmt]]:
    """Each import statement with the name of the function it sits in."""
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            found += _imports_by_function(child, child.name)
        elif isinstance(child, ast.Import | ast.ImportFrom):
            found.append((where, child))
        else:
            found += _imports_by_function(child, where)
    return found


def test_only_chaser_up_imports_the_servers() -> None:
    """Read, not run: a server import hidden in a rarely run function counts too."""
    found = []
    for path in sorted((ROOT / "chaser").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for where, node in _imports_by_function(ast.parse(path.read_text())):
            reached = _imported_packages(node) & (SERVER_PACKAGES | SERVER_LIBRARIES)
            if reached and (name, where) not in LAZY_SERVER_IMPORTS:
                found.append(f"{name}:{node.lineno} ({where}) imports {sorted(reached)}")
    assert found == []


def _module_graph() -> dict[str, set[str]]:
    """Each of our modules, and ours it imports (a package's ``__init__`` counts as the package)."""
    paths = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in OUR_PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    graph = {}
    for name, path in paths.items():
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                named |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        # Importing a.b.c imports a and a.b first; a module's own packages are
        # already being imported when it runs, so they are not an arrow.
        own = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
        prefixes = {".".join(full.split(".")[:n]) for full in named for n in range(1, full.count(".") + 2)}
        graph[name] = {other for other in prefixes - own - {name} if other in paths}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                circles.append(sorted([module, *group]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = _module_graph()
    assert graph["agent.main"] and graph["scheduler.main"]  # the graph sees imports at all
    assert _circles(graph) == []


def test_a_circle_is_found() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
