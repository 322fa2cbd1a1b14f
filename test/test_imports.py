"""The package's import graph, from the source (ast), function-level imports included.

DESIGN §2: no import cycles, and nothing outside pmt_perception/ros/ imports pmt_perception.ros
(or rclpy) - except pmt_perception/demo.py, which runs the ROS graph. A function-level import
counts like a top-level one: hiding a cycle inside a function does not remove it.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "pmt_perception"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
ROS_ALLOWED = {f"{PACKAGE}.demo"}        # runs the ROS graph (imports ros/ inside functions)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported_names(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, absolute, anywhere in the file (functions included).
    ``from X import Y`` yields X and X.Y (Y may be a submodule)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (a package import also runs its __init__)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(name, path):
            parts = imported.split(".")
            if parts[0] != PACKAGE:
                continue
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            for end in range(2, len(parts) + 1):
                candidate = ".".join(parts[:end])
                if candidate in known and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. A package's __init__ importing its own
    submodules is not a cycle by itself (Python runs __init__ first): edges from a submodule to
    its own parent package are left out, as Python never re-enters a package being imported."""
    def edges(module):
        return {t for t in graph[module] if not module.startswith(t + ".")}

    state: dict[str, int] = {}   # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges(module)):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    # The parser itself: a function-level relative import is an edge like a top-level one.
    source = "import os\n\ndef f():\n    from ..x import y\n    from . import z\n"
    path = tmp_path / "mod.py"
    path.write_text(source)
    assert imported_names("pmt_perception.data.mod", path) >= {
        "pmt_perception.x", "pmt_perception.x.y", "pmt_perception.data",
        "pmt_perception.data.z", "os"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = package_graph()
    assert len(graph) > 50 and f"{PACKAGE}.evaluate" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_ros_and_the_demo_import_ros():
    offenders = []
    for name, path in modules().items():
        if name == f"{PACKAGE}.ros" or name.startswith(f"{PACKAGE}.ros.") or name in ROS_ALLOWED:
            continue
        for imported in imported_names(name, path):
            top = imported.split(".")
            if imported == f"{PACKAGE}.ros" or imported.startswith(f"{PACKAGE}.ros.") \
                    or top[0] in ("rclpy", "rcl_interfaces") or top[0].endswith("_msgs"):
                offenders.append(f"{path.relative_to(ROOT.parent)}: {imported}")
    assert not offenders, "ROS imported outside pmt_perception/ros/:\n" + "\n".join(
        sorted(set(offenders)))
