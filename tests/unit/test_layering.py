"""The layers hold: roles never import each other, the shared packages never import a role at module level,
and no two modules import each other (directly or round a loop) when they load."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("producer", "dispatcher", "retry_scheduler", "recorder", "api")
SHARED = ("hookfleet", "schemas", "delivery")
"""What every role may use. `hookfleet.cli` and the demo start roles, importing each only inside the function
that runs it, so loading the runtime never loads a role."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = list(ast.walk(tree))
    if module_level_only:  # what loading the module imports, and what its type hints import (`TYPE_CHECKING`)
        nodes = [*tree.body]
        nodes += [
            n
            for block in tree.body
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for n in block.body
        ]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _sources(packages: tuple[str, ...]) -> list[Path]:
    return [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]


def test_no_role_imports_another() -> None:
    crossings = []
    for path in _sources(ROLES):
        own = _module_name(path).split(".")[0]
        for name in _imports(path, module_level_only=False):
            top = name.split(".")[0]
            if top in ROLES and top != own:
                crossings.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not crossings, crossings


def test_shared_packages_load_no_role() -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(SHARED)
        for name in _imports(path, module_level_only=True)
        if name.split(".")[0] in ROLES
    ]
    assert not crossings, crossings


def test_no_import_cycle_among_the_projects_modules() -> None:
    paths = _sources((*SHARED, *ROLES))
    modules = {_module_name(p): p for p in paths}
    graph = {
        name: {target for target in _imports(path, module_level_only=True) if target in modules and target != name}
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, cycles


def test_every_package_is_installed() -> None:
    """The image installs the packages pyproject.toml lists, not the folders: a package missing there is
    missing in production only (the editable install of the tests finds it anyway)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {
        _module_name(init)
        for top in (*SHARED, *ROLES, "devstack", "demo")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert packages <= listed, sorted(packages - listed)
