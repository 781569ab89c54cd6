"""The import structure, checked over the tree with ``ast`` (nothing is imported):

* no import cycle among the project's modules, counting imports inside functions too (a lazy
  import hides a cycle from Python, not from the reader: the lab -> demo -> labtools -> lab one
  was such);
* no module under ``agent/`` imports ``controller`` (the agent shares code with the controller
  through ``metalxdp``, e.g. the Service adapter);
* the library (``agent``, ``controller``, ``metalxdp``) and the benchmarks import no test file;
* the lab does not import the controller's webhook (it starts the controller as a process).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "controller", "metalxdp")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(p)] = p
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules ``path`` (module ``name``) imports anywhere in its body: for ``from X import
    Y`` the module X.Y when there is one, else X."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1] if node.level > 1 else here
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out.update(subs or {target})
    return out


def import_graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        graph[name] = {m for m in imports_of(path, name, known) if m in known and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_cycle_finder_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert cycles(g) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve(tmp_path):
    known = {"pkg", "pkg.sub", "pkg.sub.x", "pkg.y"}
    f = tmp_path / "x.py"
    f.write_text("from . import y as _\nfrom .. import y\nfrom ..y import thing\nimport os\n"
                 "def later():\n    from pkg.sub import x\n")
    assert imports_of(f, "pkg.sub.x", known) >= {"pkg.sub", "pkg.y", "os"}


@pytest.fixture(scope="module")
def graph():
    g = import_graph()
    # not vacuous: the walk sees the whole tree
    assert len(g) > 60 and sum(map(len, g.values())) > 120, (len(g), sum(map(len, g.values())))
    return g


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_agent_does_not_import_controller(graph):
    bad = {m: sorted(t for t in ts if t == "controller" or t.startswith("controller."))
           for m, ts in graph.items() if m == "agent" or m.startswith("agent.")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_lab_does_not_import_the_webhook(graph):
    assert {m for m, ts in graph.items() if m.startswith("metalxdp.lab") and "controller.webhook" in ts} == set()


def test_library_and_benchmarks_import_no_test_file():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + sorted((ROOT / "bench").glob("*.py"))
    assert len(files) > 80
    bad = {}
    for p in files:
        mods = imports_of(p, module_name(p), set())
        hits = sorted(m for m in mods if m == "tests" or m.startswith("tests."))
        if hits:
            bad[str(p.relative_to(ROOT))] = hits
    assert bad == {}
