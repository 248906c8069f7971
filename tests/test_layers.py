"""The package's imports point only down its layers, and no module imports itself round a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import gliostream

PACKAGE = Path(gliostream.__file__).resolve().parent

# Lowest first: shared definitions, the store, ingest (and the synthetic data it reads), training,
# scoring and prediction (which load the trainer's models), the command line.
LAYERS = ("base", "store", "pipeline", "trainer", "scoring", "cli")
LAYER_OF_TOP = {"store": "store", "pipeline": "pipeline", "synth": "pipeline", "trainer": "trainer",
                "scoring": "scoring", "cli": "cli", "__main__": "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return LAYERS.index(LAYER_OF_TOP.get(top, "base"))


def imports(path: Path) -> set[str]:
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_of(source: str, name: str, is_package: bool = False) -> set[str]:
    """The brats modules a module's source imports, anywhere in it (function-level imports included)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gliostream")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "gliostream":
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import ddp` names a module; `from .x import f` names x
                candidate = f"{target}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() else target)
    return {m for m in found if m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_imports_point_down_the_layers():
    upward = [f"{m} ({LAYERS[layer(m)]}) imports {d} ({LAYERS[layer(d)]})"
              for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(edges.get(module, ())):
            if dep.endswith(".__init__") or dep == "gliostream":
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_the_checker_reads_every_form_of_import():
    source = ("from ..trainer.model import ResUNet\nfrom . import layout\nimport gliostream.labels\n"
              "def f():\n    from ..cli import common\n")
    found = imports_of(source, "gliostream.store.probe")
    assert found == {"gliostream.trainer.model", "gliostream.store.layout", "gliostream.labels", "gliostream.cli.common"}
    assert layer("gliostream.trainer.model") > layer("gliostream.store.probe") > layer("gliostream.labels")
    assert len(graph()) > 50 and "gliostream.store.layout" in graph()["gliostream.store.writer"]
