"""The code's structure: the layering contract, no import cycles, no private names across modules.

The layers are declared in pyproject.toml (``[tool.importlinter]``) and checked by import-linter;
cycles between modules by the import graph it builds (grimp); private names by reading every
module of the project, its tests, the research code and the benchmark scripts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fcm", "fcm_core", "extractor", "planner", "ort_custom_ops")


def test_the_layering_contract_holds(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph(*PACKAGES)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in imports[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []


def _python_files():
    for folder in PACKAGES + ("tests", "research", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_private_name_is_used_outside_its_module():
    own = set(PACKAGES) | {"tests", "research"}
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        here = _module_name(path)
        imported_modules: set[str] = set()  # local names bound to project modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] in own:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != here:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}")
                    imported_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.module or ''}.{alias.name}")
                    imported_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in own:
                        imported_modules.add(alias.asname or alias.name.split(".")[0])
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in imported_modules):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert found == []


def test_the_cli_module_is_small_and_each_subcommand_has_its_own():
    assert len((ROOT / "fcm" / "cli.py").read_text().splitlines()) < 250
    from fcm.cli import COMMANDS, build_parser

    names = {module.__name__.rsplit(".", 1)[1] for module in COMMANDS}
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert names == set(subcommands)
