"""No import cycles among micrometry's modules (read statically from the source, nothing is imported).

The same rules as the project's checker (shared/tools/import_cycles.py), copied here so that the test
needs nothing outside the repository: every ``import``/``from ... import`` anywhere in a module (lazy
imports inside functions count too) is an edge to the deepest micrometry module it names; edges to a
package's ``__init__`` are not counted (importing ``pkg.sub`` runs ``pkg/__init__`` first by design).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import micrometry

PACKAGE_ROOT = Path(micrometry.__file__).parent

# Cycles tolerated while a refactor is in flight; empty now, and nothing may be added.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none: keep it so


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package folder ``root``."""
    modules = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path, packages: bool = False) -> dict[str, set[str]]:
    """Module -> the package's (non-``__init__``; with ``packages``, all) modules it imports."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against this module's package
                    parent = base[: len(base) - node.level + 1]
                    module = ".".join(parent + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `from a.b import name`: the module a.b
                    target = target.rpartition(".")[0]
                if target and target != name and (packages or modules[target].name != "__init__.py"):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_micrometry_has_no_import_cycles():
    graph = import_graph(PACKAGE_ROOT)
    assert len(graph) > 50 and "micrometry.train.loop" in graph  # the walk did find the package
    new = [" <-> ".join(sorted(c)) for c in cycles(graph) if c not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(new)


def test_train_package_layering():
    """The task protocol imports nothing of the loop; the distributed helpers do not import the loop."""
    graph = import_graph(PACKAGE_ROOT)
    assert not {m for m in graph["micrometry.train.task"] if m.startswith("micrometry.")}
    assert "micrometry.train.loop" not in graph["micrometry.train.distributed"]
    assert "micrometry.train.loop" not in graph["micrometry.train.run"]


def test_checker_finds_a_cycle_and_follows_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import a\n")  # package __init__ edges are not cycles
    (pkg / "a.py").write_text("from pkg.sub.b import thing\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def thing():\n    from .. import c\n")  # lazy and relative
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("import os\nfrom pkg import c\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.sub.b", "pkg.c"})]


# GUI toolkits: only the napari plug-in's widget may import them.
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")


def imported_names(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_only_the_napari_widget_imports_a_gui_toolkit():
    """The core never imports Qt or napari; nothing in micrometry imports the napari plug-in."""
    offenders, users = [], []
    for name, path in module_files(PACKAGE_ROOT).items():
        imported = imported_names(path)
        gui = {m for m in imported if m.split(".")[0] in GUI_MODULES}
        if gui and name != "micrometry.napari_plugin.widget":
            offenders.append(f"{name}: {', '.join(sorted(gui))}")
        if not name.startswith("micrometry.napari_plugin") and any(
            m.startswith("micrometry.napari_plugin") for m in imported
        ):
            users.append(name)
    assert not offenders, "GUI imports outside the napari widget: " + "; ".join(offenders)
    assert not users, "modules importing the napari plug-in: " + ", ".join(users)


def test_importing_micrometry_and_its_cli_loads_no_gui_toolkit():
    """At run time too: the package, the API, every CLI command and the plug-in's reader, writers and
    samples load neither Qt nor napari."""
    import subprocess

    code = (
        "import sys\n"
        "import micrometry, micrometry.api, micrometry.cli\n"
        "import micrometry.napari_plugin.reader, micrometry.napari_plugin.writer, micrometry.napari_plugin.samples\n"
        "micrometry.cli.run(['--help'])\n"
        f"gui = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})\n"
        "print('GUI:', gui)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "GUI: []" in out.stdout, out.stdout[-500:]


# -- the layer contract (docs/architecture.md, "What each folder owns") -----------------------------

JOBS = ("depth", "particles")


def layer(module: str) -> str:
    """The layer of a module: ``base`` (layers 1-3), ``synth``, a job, ``presentation`` or ``commands``.

    A job's ``cli`` module declares commands: it belongs to the command layer that wires
    everything together, like the top-level ``cli``, ``demo``, ``api`` and the napari plug-in.
    """
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if parts[-1] == "cli" or top in ("cli", "demo", "api", "__main__", "napari_plugin"):
        return "commands"
    if top in (*JOBS, "synth"):
        return top
    if top in ("report", "web"):
        return "presentation"
    return "base"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Edges that break the contract: the jobs never import each other; synth imports no job;
    report and web are imported by nobody below them; the base layers import none of these."""
    allowed = {
        "base": {"base"},
        "synth": {"base", "synth"},
        **{job: {"base", "synth", job} for job in JOBS},
        "presentation": {"base", "synth", *JOBS, "presentation"},
        "commands": {"base", "synth", *JOBS, "presentation", "commands"},
    }
    return [
        f"{a} ({layer(a)}) -> {b} ({layer(b)})"
        for a, targets in sorted(graph.items())
        if a != "micrometry"  # the package root only re-exports the API lazily
        for b in sorted(targets)
        if layer(b) not in allowed[layer(a)]
    ]


def test_layer_contract_holds():
    graph = import_graph(PACKAGE_ROOT, packages=True)
    assert (
        "micrometry.synth.sem_dataset" in graph
        and "micrometry.holes" in graph["micrometry.synth.sem_dataset"]
    )
    assert layer_violations(graph) == []


def test_layer_contract_catches_each_kind_of_violation():
    graph = {
        "micrometry.depth.measure": {"micrometry.particles.psd", "micrometry.holes"},  # job -> other job
        "micrometry.synth.sem_dataset": {"micrometry.depth.measure"},  # synth -> job
        "micrometry.particles.compare_run": {"micrometry.report.particles"},  # job -> presentation
        "micrometry.io.image": {"micrometry.web.app"},  # base -> presentation
        "micrometry.particles.cli": {
            "micrometry.report.particles",
            "micrometry.depth.methods",
        },  # commands: fine
        "micrometry.report.depth": {"micrometry.depth.measure"},  # presentation over a job: fine
    }
    assert layer_violations(graph) == [
        "micrometry.depth.measure (depth) -> micrometry.particles.psd (particles)",
        "micrometry.io.image (base) -> micrometry.web.app (presentation)",
        "micrometry.particles.compare_run (particles) -> micrometry.report.particles (presentation)",
        "micrometry.synth.sem_dataset (synth) -> micrometry.depth.measure (depth)",
    ]
