"""The package's static import graph: no cycle, no module importing another module's `_private`
name, and layers that only import downwards (`LAYERS`; README's "Code layout").

The graph is read with `ast` from the source files, so every import counts: module-level,
lazy (inside functions), under `if TYPE_CHECKING:`, absolute or relative (`from . import x`
resolved to the module `x`). An import of a module that does not exist fails too.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "dali_pixmix"

# Lowest layer first. A module may import modules of its own layer or of a layer listed before
# it, never one listed after it. Every child (sub-package or module) of a listed package must be
# placed; a package's own __init__ sits on top of its children.
LAYERS: Dict[str, List[set]] = {
    "dali_pixmix": [
        {"classes", "seeds", "precision", "distributed", "oserrors", "provenance", "checkpoint",
         "cli_help", "cuda_stack", "progress"},
        {"metrics"},
        {"augment"},
        {"config"},      # validates method names against augment.methods
        {"data"},        # finding, checking, decoding pictures; file lists; demo dataset
        {"mixing"},      # the bank (decodes through data/), fractals, FVis
        {"pipelines"},   # DALI graphs, per-batch method stages, loaders
        {"wide_resnet"},  # the CIFAR architecture, written here
        {"models"},
        {"evaluation"},  # the runner that training's validation goes through
        {"training"},
        {"check"},
    ],
    "dali_pixmix.augment": [
        {"_constants", "_rows", "_host_pool", "_cpu_split", "distributions", "methods",
         "pil_oracle", "op_log"},
        {"ops"},
        {"pixmix"},
        {"augmix", "cutout", "label_mixing"},
    ],
    # PixMix read top-down: api -> grouped | dense (-> its kernels and plan arrays) -> plan.
    "dali_pixmix.augment.pixmix": [
        {"plan", "output"},
        {"_dense_plan"},
        {"_dense_ops", "_cuda_graphs"},
        {"grouped", "dense"},
        {"api"},
    ],
}


@dataclass(frozen=True)
class Import:
    importer: str  # module doing the import
    target: str    # module imported (a package means its __init__)
    name: str      # the name taken from `target` ("" for `import target`)
    where: str     # file:line

    def __str__(self) -> str:
        taken = f" ({self.name})" if self.name else ""
        return f"{self.importer} -> {self.target}{taken} at {self.where}"


def module_files(root: Path, package: str) -> Dict[str, Path]:
    """{dotted module name: file} of every module of `package` under `root`."""
    mods = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports_of(module: str, path: Path, root: Path, mods: Dict[str, Path],
                package: str) -> List[Import]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, "", where) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(module, sub, "", where) if sub in mods
                             else Import(module, base, alias.name, where))
    ours = [i for i in found if i.target == package or i.target.startswith(package + ".")]
    unknown = [str(i) for i in ours if i.target not in mods]
    assert not unknown, f"imports of modules that do not exist: {unknown}"
    return [i for i in ours if i.target != module]


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> List[Import]:
    """Every import of one module of `package` by another, at any depth of the file."""
    mods = module_files(root, package)
    return [i for m, path in mods.items() for i in _imports_of(m, path, root, mods, package)]


def cycles(imports: Sequence[Import]) -> List[List[Import]]:
    """One closed chain of imports per strongly connected group of modules."""
    graph: Dict[str, Dict[str, Import]] = {}
    for i in imports:
        graph.setdefault(i.importer, {}).setdefault(i.target, i)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_chain(graph, group) for group in groups]


def _chain(graph, group: set) -> List[Import]:
    """A path of imports inside `group` from its first module back to itself."""
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph.get(path[-1], {})):
            if w == start:
                full = path + [start]
                return [graph[a][b] for a, b in zip(full, full[1:])]
            if w in group and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"no cycle through {start}")


def private_imports(imports: Sequence[Import]) -> List[Import]:
    """Imports of a `_name` (not a module, not a dunder) defined in another module."""
    return [i for i in imports if i.name.startswith("_") and not i.name.startswith("__")]


def _unit(module: str, package: str):
    """The child of `package` that `module` belongs to (None: outside, or `package` itself)."""
    if not module.startswith(package + "."):
        return None
    return module[len(package) + 1:].split(".")[0]


def layer_problems(imports: Sequence[Import], mods: Sequence[str],
                   layers: Dict[str, List[set]]) -> List[str]:
    """Children missing from (or stale in) a package's layers, and imports of a higher layer."""
    problems = []
    for package, order in layers.items():
        children = {_unit(m, package) for m in mods} - {None}
        placed = set().union(*order)
        problems += [f"{package}.{c} is in no layer of LAYERS[{package!r}]: place it"
                     for c in sorted(children - placed)]
        problems += [f"LAYERS[{package!r}] names {c}, which does not exist"
                     for c in sorted(placed - children)]
        rank = {c: n for n, layer in enumerate(order) for c in layer}
        for i in imports:
            here, there = _unit(i.importer, package), _unit(i.target, package)
            if here in rank and there in rank and rank[there] > rank[here]:
                problems.append(f"{i}: {package}.{here} (layer {rank[here]}) imports "
                                f"{package}.{there} (layer {rank[there]}), a layer above it")
    return problems


# ----------------------------------------------------------------------------------- the package

def test_the_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(
        "  " + "\n    ".join(str(i) for i in chain) for chain in found)


def test_no_module_imports_another_modules_private_name():
    found = private_imports(import_graph())
    assert not found, ("imports of another module's _private names (make the name public or "
                       "move it):\n  " + "\n  ".join(map(str, found)))


def test_every_module_imports_only_its_own_layer_or_below():
    problems = layer_problems(import_graph(), list(module_files(ROOT, PACKAGE)), LAYERS)
    assert not problems, "layering:\n  " + "\n  ".join(problems)


# ----------------------------------------------------------------------------------- the checker

def _write(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_lazy_relative_and_type_checking_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "def f():\n    from .. import high\n",           # lazy, relative
        "pkg/low/b.py": "from .a import _hidden\n",                       # private name
        "pkg/high.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from pkg.low import a\n"),
    })
    imports = import_graph(tmp_path, "pkg")
    assert {(i.importer, i.target, i.name) for i in imports} == {
        ("pkg.low.a", "pkg.high", ""), ("pkg.low.b", "pkg.low.a", "_hidden"),
        ("pkg.high", "pkg.low.a", "")}
    [chain] = cycles(imports)
    assert [(i.importer, i.target) for i in chain] == [("pkg.high", "pkg.low.a"),
                                                       ("pkg.low.a", "pkg.high")]
    assert "pkg/low/a.py:2" in str(chain[1])
    assert [str(i) for i in private_imports(imports)] == [
        "pkg.low.b -> pkg.low.a (_hidden) at pkg/low/b.py:1"]
    mods = list(module_files(tmp_path, "pkg"))
    problems = layer_problems(imports, mods, {"pkg": [{"low"}, {"high"}]})
    assert problems == ["pkg.low.a -> pkg.high at pkg/low/a.py:2: pkg.low (layer 0) imports "
                        "pkg.high (layer 1), a layer above it"]
    assert layer_problems(imports, mods, {"pkg": [{"low"}, {"gone"}]}) == [
        "pkg.high is in no layer of LAYERS['pkg']: place it",
        "LAYERS['pkg'] names gone, which does not exist"]


def test_the_checker_refuses_an_import_of_a_missing_module(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    import pkg.nothere\n"})
    with pytest.raises(AssertionError, match=r"pkg.a -> pkg.nothere at pkg/a.py:2"):
        import_graph(tmp_path, "pkg")
