"""The packages import one way: the layer map of docs/design.md, read from the code's own imports.

Every import statement counts, those inside functions too, so a late import cannot hide a
dependency that runs upwards or closes a loop.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "defenses", "attackers")


def layer_map() -> list[tuple[str, list[str]]]:
    """(layer, module prefixes) from the map in docs/design.md, lowest layer first."""
    text = (REPO / "docs" / "design.md").read_text()
    block = re.search(r"<!-- layers -->\n```text\n(.*?)```", text, re.S)
    assert block, "docs/design.md has no layer map (a ```text block after <!-- layers -->)"
    rows = []
    for line in block.group(1).splitlines()[1:]:   # the first line is the heading
        name, _, modules = line.partition(":")
        if modules.strip():
            rows.append((name.strip(), modules.split()))
    return rows[::-1]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of this repository that `path` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from bench.results import records` imports a module; `from bench.params import x`, a name.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    best = None
    for rank, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: imports_of(p, set(found)) - {m} for m, p in found.items()}


def test_every_module_has_a_layer():
    layers = layer_map()
    unplaced = [m for m in modules() if layer_of(m, layers) is None]
    assert not unplaced, f"modules in no layer of docs/design.md's map: {unplaced}"


def test_no_import_reaches_a_higher_layer():
    layers = layer_map()
    upward = []
    for module, targets in graph().items():
        own = layer_of(module, layers)
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} ({layers[own][0]}) imports {target} ({layers[theirs][0]})")
    assert not upward, "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `edges` (module -> modules it imports), as a path back to its start, or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Layers, late imports and loops of a made-up tree are found by the functions the checks use."""
    layers = [("low", ["pkg.low"]), ("high", ["pkg.high"])]
    assert layer_of("pkg.high.view", layers) == 1 and layer_of("pkg.low", layers) == 0
    assert layer_of("other", layers) is None
    (tmp_path / "a.py").write_text("def f():\n    from pkg.high import view\n")
    assert imports_of(tmp_path / "a.py", {"pkg.high", "pkg.high.view"}) == {"pkg.high.view"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("folder", PACKAGES)
def test_no_module_is_longer_than_a_person_can_hold(folder):
    long = {str(p.relative_to(REPO)): n for p in (REPO / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"
