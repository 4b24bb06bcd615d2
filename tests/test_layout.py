"""The import rules of the layout: the μP core knows no framework, models know no μP, data no tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def imports(package: str) -> dict[str, set[str]]:
    """Every module of ``src/<package>`` and the top-level names it imports (at any depth of the file)."""
    out = {}
    for path in sorted((SRC / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(SRC))] = names
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("mup", ("hydra", "omegaconf", "lightning", "src.tasks", "src.training", "src.assemble", "src.models")),
    ("models", ("hydra", "omegaconf", "lightning", "src.mup")),
    ("data", ("src.tasks", "src.jobs", "src.mup")),
    ("estimators", ("hydra", "omegaconf", "lightning", "src.tasks")),
])
def test_layers_do_not_import_upwards(package, forbidden):
    bad = {module: sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))
           for module, names in imports(package).items()}
    assert {m: b for m, b in bad.items() if b} == {}


def test_tasks_know_nothing_of_mup():
    assert not any(n.startswith("src.mup") for names in imports("tasks").values() for n in names)


def test_no_module_over_400_lines_and_no_function_over_60():
    long = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 400:
            long.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert long == []


def test_every_citation_in_src_resolves_to_a_file_in_the_repository():
    import re

    root = SRC.parent
    cited = {m for path in SRC.rglob("*.py") for m in re.findall(r"\b((?:docs|experiments|conf|src)/[\w./-]+\.(?:md|py|yaml))",
                                                                path.read_text())}
    assert cited and sorted(c for c in cited if not (root / c).exists()) == []
    assert not any("reference/" in path.read_text() for path in SRC.rglob("*.py"))
