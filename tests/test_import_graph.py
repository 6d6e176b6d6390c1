"""The rooms' import rules hold: the SDK stands without the servers.

``pip install chaser`` gives the SDK and the CLI without the servers'
dependencies, so nothing they import may reach the servers' code or
libraries; only ``chaser up`` imports the servers, inside its command.
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
