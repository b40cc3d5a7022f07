"""The import structure: no import cycle in the library, the evaluation suite and the two entry
points; the library (falco/) never imports the evaluation suite, and train.py does not load it
when imported; every third-party module the code imports is a declared dependency, pinned in
requirements/lock.txt.

The graph is read from the source with `ast` (nothing is imported): every import statement
counts, at module level or inside a function or an `if TYPE_CHECKING:` block, relative imports
resolved. Importing `a.b.c` also runs the __init__ of `a` and `a.b`: edges go to those packages
too, except to the packages that enclose the importing module (Python has begun those before it).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

GRAPH_ROOTS = ("falco", "evaluation", "train.py", "evaluate.py")  # the cycle check's modules
DEPENDENCY_ROOTS = ("falco", "evaluation", "benchmarks", "train.py", "evaluate.py")  # the dependency check's


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    at_import_time: bool  # module level (also class bodies), outside `if TYPE_CHECKING:`
    line: int


def module_files(root: Path, entries: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for packages (folders) and single-file modules under root."""
    out = {}
    for entry in entries:
        path = root / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        for f in files:
            parts = f.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_statements(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module with whether it runs when the module is imported."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, now: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, now))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            now = False
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, now)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, now)

    visit(tree, True)
    return found


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute dotted names a statement imports (`from p import x`: p.x, which is p's
    attribute x when no module p.x exists)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        if node.level - 1 > len(package):
            raise ValueError(f"{module}: relative import beyond the top-level package")
        anchor = package[:len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{a.name}" if a.name != "*" else base for a in node.names]


def import_graph(root: Path, entries: tuple[str, ...]) -> tuple[set[str], list[Edge]]:
    """(modules, edges between them) of the code under root."""
    files = module_files(root, entries)
    edges = []
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        enclosing = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1 + is_package)}
        for node, now in import_statements(ast.parse(path.read_text(), str(path))):
            for dotted in imported_names(node, name, is_package):
                parts = dotted.split(".")
                # the longest prefix that is one of our modules: p.x may be p's attribute x
                hit = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in files),
                           None)
                if hit is None:
                    continue  # third-party or standard library
                chain = [".".join(hit.split(".")[:k]) for k in range(1, hit.count(".") + 2)]
                for target in chain:
                    if target != name and target not in enclosing and target in files:
                        edges.append(Edge(name, target, now, node.lineno))
    return set(files), edges


def cycles(modules: set[str], edges: list[Edge]) -> list[list[str]]:
    """One cycle (a list of modules, first == last) per strongly connected component that has one."""
    succ: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        succ[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            components.append(comp)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(modules) + 100))
    try:
        for m in sorted(modules):
            if m not in index:
                connect(m)
    finally:
        sys.setrecursionlimit(limit)
    out = []
    for comp in components:
        if len(comp) == 1 and not (succ[next(iter(comp))] & comp):
            continue
        start = min(comp)  # shortest way back to start inside the component (breadth first)
        paths = {w: [start, w] for w in sorted(succ[start] & comp)}
        frontier = list(paths)
        while start not in paths:
            nxt = []
            for v in frontier:
                for w in sorted(succ[v] & comp):
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
            frontier = nxt
        out.append(paths[start])
    return out


def _describe(cycle: list[str], edges: list[Edge]) -> str:
    """a:LINE -> b:LINE -> a, each with the line of its import of the next."""
    line = {(e.source, e.target): e.line for e in edges}
    steps = [f"{a}:{line[(a, b)]}" for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join([*steps, cycle[-1]])


# ---- the checker itself, on a constructed package ----

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_checker_finds_cycles_through_relative_lazy_and_package_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "def f():\n    from . import a  # lazy: counted\n",
        "pkg/sub/__init__.py": "from ..c import g\n",  # importing pkg.sub.x runs this
        "pkg/sub/x.py": "from . import y\n",  # its own package: no edge back
        "pkg/sub/y.py": "",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.x import y\n",
        "main.py": "import pkg.a\nfrom pkg import c\n",
    })
    modules, edges = import_graph(tmp_path, ("pkg", "main.py"))
    assert modules == {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.x", "pkg.sub.y", "main"}
    pairs = {(e.source, e.target): e.at_import_time for e in edges}
    assert pairs[("pkg.a", "pkg.b")] and not pairs[("pkg.b", "pkg.a")]
    assert pairs[("pkg.sub", "pkg.c")] and pairs[("pkg.sub.x", "pkg.sub.y")]
    assert ("pkg.sub.x", "pkg.sub") not in pairs and ("pkg.a", "pkg") not in pairs
    assert pairs[("pkg.c", "pkg.sub")] is False and pairs[("pkg.c", "pkg.sub.x")] is False  # TYPE_CHECKING
    assert pairs[("main", "pkg")] and pairs[("main", "pkg.a")] and pairs[("main", "pkg.c")]
    found = sorted(cycles(modules, edges))
    assert found == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.c", "pkg.sub", "pkg.c"]], found
    _write(tmp_path, {"pkg/b.py": "", "pkg/c.py": ""})
    assert cycles(*import_graph(tmp_path, ("pkg", "main.py"))) == []


# ---- the project ----

@pytest.fixture(scope="module")
def graph() -> tuple[set[str], list[Edge]]:
    return import_graph(ROOT, GRAPH_ROOTS)


def test_the_graph_sees_the_projects_imports(graph):
    modules, edges = graph
    pairs = {(e.source, e.target) for e in edges}
    assert {"train", "evaluate", "falco", "falco.rundir", "evaluation.run_eval", "falco.keyed.config"} <= modules
    assert {("train", "falco.job"), ("falco.job", "falco.summary"), ("falco.summary", "falco.heldout"),
            ("evaluation.run_eval", "falco.rundir"), ("evaluate", "evaluation.run_eval"),
            ("falco.backbones.stylegan2_frozen", "falco.backbones.stylegan2_synthesis")} <= pairs


def test_no_import_cycle(graph):
    modules, edges = graph
    found = cycles(modules, edges)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, edges) for c in found)


def test_the_library_never_imports_the_evaluation_suite(graph):
    """What a job runs (the held-out judges, re-identification, the detector, the run reader) is
    in falco/; evaluation/ builds on it, never the other way round, not even lazily."""
    _, edges = graph
    up = [f"{e.source}:{e.line} -> {e.target}" for e in edges
          if e.source.split(".")[0] == "falco" and e.target.split(".")[0] == "evaluation"]
    assert not up, up


def test_train_does_not_import_the_evaluation_suite_at_import_time(graph):
    _, edges = graph
    succ: dict[str, set[str]] = {}
    for e in edges:
        if e.at_import_time:
            succ.setdefault(e.source, set()).add(e.target)
    seen, todo = {"train"}, ["train"]
    while todo:
        for w in succ.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    assert "falco.job" in seen
    assert not {m for m in seen if m.split(".")[0] == "evaluation"}, sorted(seen)
    # And when really imported (what the static graph may miss: imports by name, plugins).
    code = ("import sys, train; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'evaluation'); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


# ---- third-party dependencies ----

def _local_names(root: Path) -> set[str]:
    """Top-level names that are this repository's own code (folders of .py files, root scripts)."""
    names = {p.stem for p in root.glob("*.py")}
    names |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.rglob("*.py"))}
    return names


def third_party_imports(root: Path, entries: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level module name -> files importing it, for every absolute import of a module that is
    neither in the standard library nor this repository's."""
    local, out = _local_names(root), {}
    for path in module_files(root, entries).values():
        for node, _ in import_statements(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            tops = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for top in (t.split(".")[0] for t in tops):
                if top and top != "__future__" and top not in sys.stdlib_module_names and top not in local:
                    out.setdefault(top, set()).add(str(path.relative_to(root)))
    return out


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_imported_third_party_package_is_a_declared_dependency():
    declared = {canonicalize_name(Requirement(r).name) for r in _project()["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    imports = third_party_imports(ROOT, DEPENDENCY_ROOTS)
    assert {"torch", "numpy", "hydra", "PIL", "scipy"} <= set(imports)  # the scan sees imports
    problems = []
    for top, where in sorted(imports.items()):
        dists = {canonicalize_name(d) for d in providers.get(top, [])}
        if not dists:
            problems.append(f"{top}: no installed distribution provides it (imported by {sorted(where)})")
        elif not dists & declared:
            problems.append(f"{top}: from {sorted(dists)}, not in pyproject.toml dependencies "
                            f"(imported by {sorted(where)[:3]})")
    assert not problems, "\n".join(problems)


def test_every_dependency_is_pinned_in_the_lock_within_its_range():
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line.strip())
        if m:
            pins[canonicalize_name(m[1])] = m[2]
    problems = []
    for spec in _project()["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name}: not in requirements/lock.txt")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}: lock pins {pins[name]}, outside {req.specifier}")
    assert not problems, "\n".join(problems)
