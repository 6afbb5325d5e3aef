"""The import graph of the project's packages: no cycles, dependencies point one way.

``addon`` -> ``laser_blender`` -> ``core``: core never imports laser_blender or addon,
laser_blender never imports addon, and nothing the Blender extension ships reaches
torch, cv2 or any other engine-only library, even through an import inside a function.
Every ``import`` statement counts, at module level or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from laser_blender.commands.build_extension import blender_files

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "laser_blender", "addon")
ENGINE_ONLY = ("torch", "cv2", "scipy", "trimesh", "tqdm", "safetensors", "huggingface_hub")
ALLOWED = {"core": {"core"}, "laser_blender": {"laser_blender", "core"}, "addon": {"addon", "laser_blender", "core"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (its own parent packages left out: Python
    has them initialised before the module runs, whatever it imports)."""
    files = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    edges = {}
    for name, path in files.items():
        edges[name] = {m for m in imports_of(path) if m in files and m != name and not name.startswith(m + ".")}
    return edges


def external_imports(path: Path) -> set[str]:
    return {m.split(".")[0] for m in imports_of(path) if m.split(".")[0] not in PACKAGES}


def test_dependencies_point_one_way(graph):
    wrong = [(a, b) for a, targets in graph.items() for b in targets
             if b.split(".")[0] not in ALLOWED[a.split(".")[0]]]
    assert wrong == [], f"imports against addon -> laser_blender -> core: {wrong}"


def test_no_import_cycles(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_what_blender_ships_never_reaches_the_engine(graph):
    shipped = {module_name(REPO / rel) for rel in blender_files()}
    addon = {name for name in graph if name.split(".")[0] == "addon"}
    reached, todo = set(), list(shipped | addon)
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert reached - addon <= shipped, f"the add-on imports modules the extension does not ship: " \
                                       f"{sorted(reached - addon - shipped)}"
    for name in sorted(reached):
        path = REPO / (name.replace(".", "/") + ".py")
        path = path if path.exists() else REPO / name.replace(".", "/") / "__init__.py"
        assert not external_imports(path) & set(ENGINE_ONLY), f"{name} imports {external_imports(path) & set(ENGINE_ONLY)}"
