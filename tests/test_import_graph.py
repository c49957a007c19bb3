"""The modules of harness/ and implementations/ form no import cycle, counting imports inside
functions and under ``if TYPE_CHECKING`` (every ``import`` statement anywhere in a module), and
the stages of the pipeline import only earlier stages:

contract -> metrics -> implementations -> grid -> store -> measure
    -> report | verdicts | accuracy -> scale -> commands
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "implementations")

# (module or package prefix, stage): the longest matching prefix gives a module's stage
STAGES: tuple[tuple[str, int], ...] = (
    ("harness.errors", 0),
    ("harness.contract", 1),
    ("harness.api", 1),
    ("harness.console", 1),
    ("harness", 1),                 # the package itself: re-exports the contract's names
    ("harness.metrics", 2),
    ("implementations", 3),
    ("harness.grid", 4),
    ("harness.store", 5),
    ("harness.measure", 6),
    ("harness.report", 7),
    ("harness.verdicts", 7),
    ("harness.accuracy", 7),
    ("harness.scale", 8),
    ("harness.commands", 9),
    ("harness.cli", 9),
    ("harness.__main__", 9),
)
# stages whose packages are peers: they may not import one another
PEERS = ("harness.report", "harness.verdicts", "harness.accuracy")
TOP_LEVEL_LIMIT = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from harness.contract import frameworks` imports a module; `from harness
                # import X` a name of the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for target in targets:
                while target and target not in files:   # a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def stage_of(module: str) -> tuple[str, int]:
    best = max((prefix for prefix, _ in STAGES
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return best, dict(STAGES)[best]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for name, targets in sorted(graph.items()):
        prefix, stage = stage_of(name)
        for target in sorted(targets):
            target_prefix, target_stage = stage_of(target)
            if target_stage > stage or (target_stage == stage and target_prefix != prefix
                                        and target_prefix in PEERS):
                out.append(f"{name} (stage {stage}) imports {target} (stage {target_stage})")
    return out


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "harness.metrics.peaks" in graph["harness.measure.worker"]   # in a function
    assert "harness.store.resume" in graph["harness.scale.executors"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_stages_import_only_earlier_stages():
    assert stage_violations(import_graph()) == []


def test_every_module_has_a_stage():
    for name in import_graph():
        assert stage_of(name)[0] != "harness" or name == "harness", \
            f"{name} sits at harness/'s top level without a stage in STAGES"


def test_harness_top_level_stays_small():
    top = sorted(p.name for p in (ROOT / "harness").glob("*.py"))
    assert len(top) <= TOP_LEVEL_LIMIT, top


def test_a_violation_is_found():
    graph = {"harness.contract.records": {"harness.measure.runner"}, "harness.measure.runner": set()}
    assert stage_violations(graph) == [
        "harness.contract.records (stage 1) imports harness.measure.runner (stage 6)"]
    peers = {"harness.report.data": {"harness.verdicts.compare"}, "harness.verdicts.compare": set()}
    assert len(stage_violations(peers)) == 1


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
