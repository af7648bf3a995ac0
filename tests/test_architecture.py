"""Issue 12: the package's import graph has no cycles between subpackages (or through the top-level
modules), and no module grows past about 300 lines without saying why at its top."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "smoothgen_exp"
MAX_LINES = 300


def unit(module: str) -> str | None:
    """The node of the graph a module belongs to: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    if parts[0] != "smoothgen_exp" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() else parts[1] + ".py"


def import_graph() -> dict[str, set[str]]:
    """Edges between units for every import in the package, module-level and inside functions alike."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        src = rel.parts[0] if len(rel.parts) > 1 else rel.name
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                dst = unit(name)
                if dst and dst != src:
                    graph.setdefault(src, set()).add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    assert "models" in graph and "certifiers" in graph            # the graph is not empty
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_planted_cycle():
    graph = {k: set(v) for k, v in import_graph().items()}
    graph.setdefault("backbones", set()).add("oracles")          # backbones -> oracles -> backbones
    assert ["backbones", "oracles"] in cycles(graph)


def test_long_modules_say_why():
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and "Over 300 lines:" not in text[:3000]:
            long.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
    assert long == []
