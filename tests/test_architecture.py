"""The layering of docs/architecture.md holds: import contracts, no cycles, a true module map."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "metrics", "collectors")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True)


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], check=False, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_only_the_api_imports_fastapi():
    graph = _graph()
    importers = graph.find_modules_that_directly_import("fastapi")
    assert importers, "the API imports FastAPI"
    outside = sorted(m for m in importers if not m.startswith("service.api"))
    assert outside == []


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    ours = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in ours:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child.split(".")[0] not in PACKAGES:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(
                        child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_there_is_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("service.a", "service.b", "service.c"):
        graph.add_module(name)
    graph.add_import(importer="service.a", imported="service.b")
    graph.add_import(importer="service.b", imported="service.a")
    graph.add_import(importer="service.b", imported="service.c")
    assert _cycles(graph) == [["service.a", "service.b"]]


def test_every_module_the_architecture_page_names_exists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:service|metrics|collectors)/[\w/]+\.(?:py|js))`", text))
    assert len(named) >= 30
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert missing == []
    dotted = set(re.findall(r"\b(service(?:\.[a-z_]+)+)\b", text))
    for module in dotted:
        path = ROOT / module.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module


def test_the_architecture_page_lists_every_service_layer_package():
    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(p.name for p in (ROOT / "service").iterdir()
                      if (p / "__init__.py").is_file() and p.name not in ("web",))
    for name in packages:
        assert f"service.{name}" in text, name
