"""The project's modules import down the layers of CONTRIBUTING.md (core <- sandbox <- actors <- stages
<- pipeline and CLI), with no cycles, counting imports inside functions too (a local import hides an
upward dependency or a cycle; it does not remove it)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    found = {}
    for package in ("ledex_rl", "actors", "sandbox"):
        for file in (ROOT / package).rglob("*.py"):
            name = ".".join(file.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = file
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()

    def resolve(name: str) -> str:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, file in known.items():
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = targets - {"", name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, as the modules along it, or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    return next((found for node in sorted(graph) if node not in state and (found := visit(node))), [])


def test_there_is_no_import_cycle():
    assert cycle(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


LAYERS = ("core", "sandbox", "actors", "stages", "pipeline and CLI")
ABOVE_CORE = {  # modules of ledex_rl/ that sit above core, by layer; every other ledex_rl module is core
    "sandbox": ("ledex_rl.expected_outputs", "ledex_rl.problem_set"),
    "actors": ("ledex_rl.teachers", "ledex_rl.judge"),  # they drive the rollout engines
    "stages": ("ledex_rl.stages", "ledex_rl.evaluation", "ledex_rl.debugger"),
    "pipeline and CLI": ("ledex_rl.pipeline", "ledex_rl.cli", "ledex_rl.train", "ledex_rl.__main__"),
}


def layer(module: str) -> int:
    top = module.partition(".")[0]
    if top in ("sandbox", "actors"):
        return LAYERS.index(top)
    named = (name for name, members in ABOVE_CORE.items() if any(module == m or module.startswith(m + ".") for m in members))
    return LAYERS.index(next(named, "core"))


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{source} -> {target}" for source in sorted(graph) for target in sorted(graph[source]) if layer(target) > layer(source)]


def test_imports_point_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_an_upward_import_is_found():
    graph = {"ledex_rl.config": {"sandbox"}, "sandbox": {"ledex_rl.config"}, "actors.group": {"ledex_rl.config"}}
    assert upward_imports(graph) == ["ledex_rl.config -> sandbox"]
