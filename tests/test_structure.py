"""The code's shape: no import cycles where the design forbids them, one place for MLCICD_*."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from tests_support import ROOT

LIB = ROOT / "mlcicd_dagster"


def _module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(*, top_level_only: bool) -> dict[str, set[str]]:
    """module -> the mlcicd_dagster modules it imports (at import time, or anywhere)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in LIB.rglob("*.py")}
    for path in LIB.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        found: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.If) and top_level_only:
                continue  # `if TYPE_CHECKING:` blocks import nothing at run time
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` needs the submodule (the package's __init__
                # runs first in any case); `from module import name` needs the module
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in modules] or [node.module]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """A cycle among ``nodes`` (edges restricted to them), or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, set()) & nodes):
            if color.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if not color.get(m):
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return None

    for n in sorted(nodes):
        if not color.get(n):
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles_in_pipeline_or_serving():
    graph = _imports(top_level_only=True)
    for package in ("mlcicd_dagster.pipeline", "mlcicd_dagster.serving"):
        nodes = {m for m in graph if m == package or m.startswith(package + ".")}
        assert _cycle(graph, nodes) is None, _cycle(graph, nodes)


def test_models_and_serving_do_not_import_each_other_both_ways():
    graph = _imports(top_level_only=False)

    def uses(a: str, b: str) -> set[str]:
        return {
            f"{m} -> {t}"
            for m, targets in graph.items()
            if m.startswith(a)
            for t in targets
            if t.startswith(b)
        }

    # serving loads models; models never import serving (the gates that run the serving
    # code start its worker by module name: a process boundary, not an import)
    assert uses("mlcicd_dagster.serving", "mlcicd_dagster.models")  # the test can see edges
    assert uses("mlcicd_dagster.models", "mlcicd_dagster.serving") == set()


def test_every_mlcicd_variable_is_declared_and_read_through_settings():
    from mlcicd_dagster.settings import VARIABLES

    used: set[str] = set()
    direct: list[str] = []
    for path in LIB.rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r"\"(MLCICD_[A-Z0-9_]*[A-Z0-9])\"", text))
        if path.name != "settings.py":
            reads = r"os\.environ(?:\.get\(|\[)\s*\"(MLCICD_\w+)\"(?!\]\s*=[^=])"
            for m in re.finditer(reads, text):
                direct.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert sorted(used - set(VARIABLES)) == []
    assert direct == []


def test_importing_the_package_is_light():
    code = (
        "import sys, mlcicd_dagster; "
        "print(','.join(m for m in ('dagster','torch','mlflow','sklearn','pandas') "
        "if m in sys.modules)); print(sorted(mlcicd_dagster.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, api = out.stdout.splitlines()
    assert loaded == ""
    assert "MLPipeline" in api and "MlcicdError" in api and "load_location" in api
