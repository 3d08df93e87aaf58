"""The house rules, checked on the source: no import circles, no import from a lower layer to a
higher one (docs/architecture.md), no product module importing `lamp_cli.testing`, and no function
longer than 120 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lamp_cli"

# Layers, low to high: a module may import modules of its own layer or lower ones only.
# The longest matching prefix decides a module's layer (docs/architecture.md explains each).
LAYERS: dict[str, int] = {
    "lamp_cli": 0,
    "lamp_cli.errors": 0,
    "lamp_cli.jsonio": 0,
    "lamp_cli.lora": 0,
    "lamp_cli.tensorfile": 0,
    "lamp_cli.schema": 0,
    "lamp_cli.fsutil": 0,
    "lamp_cli.progress": 0,
    "lamp_cli.settings": 0,
    "lamp_cli.requests": 0,
    "lamp_cli.devices": 1,
    "lamp_cli.video": 1,
    "lamp_cli.recipes": 1,
    "lamp_cli.models": 2,
    "lamp_cli.lowrank": 2,
    "lamp_cli.adapter": 3,
    "lamp_cli.sampling": 3,
    "lamp_cli.inversion": 3,
    "lamp_cli.registry": 4,
    "lamp_cli.first_frame": 4,
    "lamp_cli.generate": 4,
    "lamp_cli.resolve": 5,
    "lamp_cli.engine": 5,
    "lamp_cli.evaluate": 6,
    "lamp_cli.train.data": 6,
    "lamp_cli.train.resume": 6,
    "lamp_cli.train": 7,
    "lamp_cli.edit": 8,
    "lamp_cli.official": 8,
    "lamp_cli.compress": 8,
    "lamp_cli.toy": 8,
    "lamp_cli.bench": 8,
    "lamp_cli.cli": 9,
    "lamp_cli.__main__": 9,
    "lamp_cli.testing": 10,  # tests and scripts only
}
# What the rule names explicitly: these never import those.
LOWER = ("lamp_cli.models", "lamp_cli.adapter", "lamp_cli.video", "lamp_cli.settings")
HIGHER = ("lamp_cli.engine", "lamp_cli.train", "lamp_cli.registry", "lamp_cli.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer(name: str) -> int:
    best = max((p for p in LAYERS if _within(name, p)), key=len)
    return LAYERS[best]


def import_graph() -> dict[str, set[str]]:
    """lamp module -> the lamp modules it imports, at the top or inside functions."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                found = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
                targets.update(found or ([module] if module in modules else []))
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in modules)
        # a submodule importing its own package (or a sibling through it) is not an edge up
        graph[name] = {t for t in targets if t != name and not _within(name, t)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_no_import_circles_and_no_import_upward() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "lamp_cli.engine" in graph["lamp_cli.cli.gen_cmd"] | graph["lamp_cli.bench.gen"]
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"
    upward = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs if layer(b) > layer(a))
    assert upward == [], "imports from a lower layer to a higher one:\n" + "\n".join(upward)
    named = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs
                   if any(_within(a, lo) for lo in LOWER) and any(_within(b, hi) for hi in HIGHER))
    assert named == []
    testing = sorted(a for a, bs in graph.items() if "lamp_cli.testing" in bs)
    assert testing == [], f"product modules import lamp_cli.testing: {testing}"


def test_the_checker_sees_circles_and_upward_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("lamp_cli.models.base") < layer("lamp_cli.engine") < layer("lamp_cli.train.loop") < layer("lamp_cli.cli.app")


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:] or body  # the docstring does not count
    return body[-1].end_lineno - body[0].lineno + 1


def test_no_function_longer_than_120_lines() -> None:
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 120:
                long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name} ({_body_lines(node)} lines)")
    assert long == []
