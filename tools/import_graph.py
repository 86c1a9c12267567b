"""The import graph of the harness's packages, read from the source (ast), and the layering it must keep.

    python tools/import_graph.py            # every edge, then cycles and layer violations (exit 1 if any)
    python tools/import_graph.py --dot      # Graphviz text of the graph, one cluster per package

An edge A -> B is any import of B in A's file: at module level, inside a function, or under `if TYPE_CHECKING:`
(a type named there is still a dependency), plus an import by name: a "pkg.mod:attr" string (the registries'
targets), or "pkg.mod" given to `importlib.import_module` or held as a dict's value (lazy loader tables).
`from pkg import name` points at pkg.name when that is a module, else at pkg. Parent packages' `__init__`
files are not edges (Python runs them, but they hold no code that imports back here).

tests/test_layering.py checks `problems()`: no cycle between files, and no edge that runs from a lower layer
to a higher one (`LAYERS`).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "variants", "metrics", "reports")
_TARGET = re.compile(r"^([A-Za-z_][\w.]*):\w+$")  # "pkg.mod:attr"
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")  # "pkg.mod"

# Lowest first: a module may import its own layer and the ones below, never one above. A module takes the layer
# of the longest prefix listed here. The intended order (README, "Layers"): the CLI drives sweeps; a sweep
# schedules trials through the launcher, the interleaved rounds or Ray; the runner runs one trial, which
# resolves its config through the variant families and is judged by the metrics; the pipeline runs the models.
# Reports read results files and use harness's low modules (results, stages, config, tracking), never the
# layers that run trials; and no process that runs a trial imports a report module (TRIAL_ENTRIES).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness.registry", "harness.folder_lock", "harness.interrupts", "harness.env_info"),
    ("harness.stages", "harness.results", "harness.config"),
    ("harness.models",),
    ("harness.pipeline",),
    ("metrics", "harness.trackers"),
    ("variants",),
    ("harness.fidelity", "harness.trial", "harness.preflight", "harness.noise", "harness.turns", "harness.partial_repeats"),
    ("harness.tracking",),
    ("reports",),
    ("harness.runner",),
    ("harness.launcher", "harness.interleave", "harness.ray_executor"),
    ("harness.sweep",),
    ("harness.cli",),
)
# Imported by none of our modules in a process that runs a trial (`python -m harness.launcher`, or a Ray task
# of harness.ray_executor, and all they import): plots and reports are the sweep's. (mediapipe, which trials
# use, imports matplotlib itself.)
TRIAL_ENTRIES = ("harness.launcher", "harness.ray_executor")
SWEEP_ONLY = ("matplotlib",)
SWEEP_ONLY_MODULES = ("reports",)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the packages (a package by its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported_names(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """Every dotted name the module imports or names, resolved against its package."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _TARGET.match(node.value):
            yield _TARGET.match(node.value).group(1)
        elif isinstance(node, ast.Dict):
            yield from _module_names(node.values)
        elif isinstance(node, ast.Call) and _called(node) == "import_module":
            yield from _module_names(node.args[:1])


def _module_names(nodes: list[ast.expr | None]) -> Iterator[str]:
    for node in nodes:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE.match(node.value):
            yield node.value


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def external_imports(path: Path) -> set[str]:
    """Top-level names of every package the file imports (standard library and third party alike)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the modules of the tree it imports}."""
    files = modules(root)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            if imported in files:
                targets.add(imported)
        # `from pkg import mod` yields pkg and pkg.mod: keep the most specific, drop the package it came through
        edges[name] = {t for t in targets - {name} if not any(o.startswith(t + ".") for o in targets)}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every set of two or more modules that import one another, directly or not (each sorted)."""
    reach = {module: reachable(edges, module) for module in edges}
    found, seen = [], set()
    for module in sorted(edges):
        if module not in seen:
            component = sorted(other for other in reach[module] if module in reach[other])
            seen.update(component)
            if len(component) > 1:
                found.append(component)
    return found


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names `module` or a package above it."""
    if (
        module in PACKAGES
    ):  # a package's own __init__ (docstring only, or lazy loaders): it sits with its layer
        return 0 if module == "harness" else layer_of(module + ".")
    best, best_length = -1, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = level, len(prefix)
    if best < 0:
        raise KeyError(f"{module} is in no layer of tools/import_graph.py's LAYERS: add it where it belongs")
    return best


def upward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) for every import of a higher layer; package __init__ files sit in their layer."""
    return sorted(
        (source, target)
        for source, targets in edges.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """`start` and every module it imports, directly or not."""
    seen, todo = {start}, [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def sweep_only_imports(edges: dict[str, set[str]], files: dict[str, Path]) -> list[tuple[str, str]]:
    """(module, what) for every module a trial process imports that is, or imports, something only the sweep's
    process may (SWEEP_ONLY packages, SWEEP_ONLY_MODULES of ours)."""
    in_trials = set().union(*(reachable(edges, entry) for entry in TRIAL_ENTRIES if entry in edges))
    ours = [(m, m) for m in in_trials if any(m == p or m.startswith(p + ".") for p in SWEEP_ONLY_MODULES)]
    theirs = [(m, p) for m in in_trials for p in sorted(external_imports(files[m]) & set(SWEEP_ONLY))]
    return sorted(ours + theirs)


def problems(root: Path = ROOT) -> list[str]:
    """Every cycle, upward import and sweep-only import in a trial process, in words (empty when clean)."""
    files = modules(root)
    edges = graph(root)
    found = [f"import cycle: {' <-> '.join(component)}" for component in cycles(edges)]
    found += [
        f"upward import: {source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, target in upward_edges(edges)
    ]
    found += [
        f"trial processes import {what}: {module} (through {' or '.join(TRIAL_ENTRIES)})"
        for module, what in sweep_only_imports(edges, files)
    ]
    return found


def dot(edges: dict[str, set[str]]) -> str:
    """Graphviz text: one cluster per layer, an edge per import."""
    lines = ["digraph imports {", "  rankdir=TB; node [shape=box, fontsize=10];"]
    for level in range(len(LAYERS) - 1, -1, -1):
        members = sorted(m for m in edges if layer_of(m) == level)
        lines.append(f'  subgraph cluster_{level} {{ label="layer {level}"; rank=same;')
        lines += [f'    "{m}";' for m in members]
        lines.append("  }")
    lines += [f'  "{s}" -> "{t}";' for s in sorted(edges) for t in sorted(edges[s])]
    lines.append("}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    edges = graph()
    if "--dot" in argv:
        print(dot(edges))
        return 0
    for source in sorted(edges):
        print(f"{source} (layer {layer_of(source)}) -> {', '.join(sorted(edges[source])) or '-'}")
    found = problems()
    print("\n".join(found) if found else "no cycles, no upward imports")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
