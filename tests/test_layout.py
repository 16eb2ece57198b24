"""The package's layout as a contract: which module may import which, no import cycles, few
modules at the top, short functions, and a README whose layout table names every module.

The checks read the source (ast), never import it: they run in well under a second, and a
module that does not import at all is still checked. They are plain functions of a package
folder and the layer contract, so the test that they can fail (on a small package made in a
temp folder) runs the very code that checks denselab.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "denselab"
README = ROOT / "README.md"

# Which module may import which, lowest layer first. A module may import from its own
# package (the entry it belongs to) and from every entry of a lower layer; entries of one
# layer (serving and sweeps; train and predict) must not import each other. An entry is a
# module or a package with its submodules; the root package ("denselab", its __init__.py)
# stands for itself alone. api is its own layer above train: it is a wrapper over train.
LAYERS: list[tuple[str, ...]] = [
    ("denselab.errors",),
    ("denselab.config",),
    ("denselab.overrides",),
    ("denselab.data",),
    ("denselab.training",),
    ("denselab.tracking",),
    ("denselab.reporting",),
    ("denselab.serving", "denselab.sweeps"),
    ("denselab.plan",),
    ("denselab.train", "denselab.predict"),
    ("denselab.api",),
    ("denselab",),
]
# Not Python modules of the package: the Hydra configs, shipped as denselab.conf.
EXEMPT = ("denselab.conf",)

MAX_TOP_MODULES = 8  # .py files beside the subpackages, __init__.py included
MAX_FUNCTION_LINES = 60
MAX_TRAIN_LINES = 45  # denselab.train.train: the path of a run, read at a glance

Edges = dict[str, dict[str, int]]  # module -> {module it imports: first line}


# -- the checker: functions of a package folder ----------------------------------------------


def module_files(root: Path) -> dict[str, Path]:
    """Every module under `root` (a package folder) by dotted name; a package is its
    __init__.py, named for the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _parse(path: Path) -> ast.Module:
    stat = path.stat()
    return _parse_version(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _parse_version(path: Path, mtime_ns: int, size: int) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.Module, module: str, is_package: bool, known) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file: at the top, inside functions and
    under ``if TYPE_CHECKING:`` alike. ``from a.b import c`` is a.b.c where that is a module,
    else a.b; relative imports are resolved against `module`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield (submodule if submodule in known else source), node.lineno


def import_graph(root: Path) -> Edges:
    """Each module's imports of modules of the package (dotted names, first line of each)."""
    files = module_files(root)
    graph: Edges = {}
    for module, path in files.items():
        tree = _parse(path)
        edges = graph.setdefault(module, {})
        for imported, line in _imports(tree, module, path.name == "__init__.py", files):
            if imported == root.name or imported.startswith(root.name + "."):
                edges.setdefault(imported, line)
    return graph


def _entry_of(module: str, layers: Sequence[tuple[str, ...]], package: str):
    """(layer index, entry) of `module`, the longest entry that holds it; None if none does."""
    best = None
    for index, layer in enumerate(layers):
        for entry in layer:
            holds = module == entry or (entry != package and module.startswith(entry + "."))
            if holds and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    return best


def upward_imports(
    root: Path, layers: Sequence[tuple[str, ...]], exempt: Sequence[str] = ()
) -> list[str]:
    """Every import the layer contract forbids, as "module -> imported (line N)": of a higher
    layer, of another entry of the same layer, or of a module the contract does not place."""
    package = root.name
    problems = []
    for module, edges in sorted(import_graph(root).items()):
        own = _entry_of(module, layers, package)
        if own is None:
            problems.append(f"{module}: in no layer of the contract")
            continue
        for imported, line in sorted(edges.items(), key=lambda edge: edge[1]):
            if any(imported == e or imported.startswith(e + ".") for e in exempt):
                continue
            theirs = _entry_of(imported, layers, package)
            if theirs is None:
                problems.append(f"{module} -> {imported} (line {line}): in no layer")
            elif theirs[0] > own[0] or (theirs[0] == own[0] and theirs[1] != own[1]):
                problems.append(f"{module} -> {imported} (line {line})")
    return problems


def _counted_edges(graph: Edges) -> dict[str, list[str]]:
    """The edges a cycle is made of: between modules of the package, not to the module
    itself, nor from a module to its own package's __init__."""
    counted = {}
    for module, edges in graph.items():
        own_package = module.rpartition(".")[0]
        counted[module] = sorted(
            imported
            for imported in edges
            if imported in graph and imported != module and imported != own_package
        )
    return counted


def _cycle_through(start: str, edges: dict[str, list[str]]) -> list[str] | None:
    """The shortest import path from `start` back to itself, or None (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported in edges[module]:
                if imported == start:
                    path = [module]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if imported not in came_from:
                    came_from[imported] = module
                    following.append(imported)
        frontier = following
    return None


def import_cycles(root: Path) -> list[str]:
    """One cycle, as "a -> b -> a", for each group of modules that import each other."""
    edges = _counted_edges(import_graph(root))
    cycles, seen = [], set()
    for module in sorted(edges):
        if module in seen:
            continue
        cycle = _cycle_through(module, edges)
        if cycle:
            cycles.append(" -> ".join(cycle))
            # The modules reachable both ways are this cycle's group: report it once.
            group = _reachable(module, edges)
            seen.update(m for m in group if module in _reachable(m, edges))
    return cycles


def _reachable(start: str, edges: dict[str, list[str]]) -> set[str]:
    found, todo = set(), [start]
    while todo:
        for imported in edges[todo.pop()]:
            if imported not in found:
                found.add(imported)
                todo.append(imported)
    return found


def top_modules(root: Path) -> list[str]:
    """The .py files directly in the package folder, beside its subpackages."""
    return sorted(path.name for path in root.glob("*.py"))


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                yield name, child
            yield from _functions(child, name + ".")
        else:
            yield from _functions(child, prefix)


def function_lengths(root: Path) -> dict[str, int]:
    """Lines of every function, "module:qualified.name" -> lines from ``def`` to its last
    line (decorators not counted)."""
    lengths = {}
    for module, path in module_files(root).items():
        tree = _parse(path)
        for name, node in _functions(tree):
            lengths[f"{module}:{name}"] = node.end_lineno - node.lineno + 1
    return lengths


def long_functions(root: Path, limit: int) -> list[str]:
    return [
        f"{name} ({lines} lines)"
        for name, lines in sorted(function_lengths(root).items())
        if lines > limit
    ]


def readme_layout_paths(text: str) -> list[str]:
    """The paths (relative to src/denselab/) that the first column of the README's layout
    table names, in backticks."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Layout of `src/denselab/`"))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    paths = []
    for row in rows[2:]:  # the header and the |---| line
        first_cell = row.strip("|").split("|")[0]
        paths += re.findall(r"`([^`]+)`", first_cell)
    return paths


# -- denselab ------------------------------------------------------------------------------


def test_no_module_imports_upwards():
    problems = upward_imports(PACKAGE, LAYERS, EXEMPT)
    assert not problems, "imports against the layer contract (LAYERS):\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(PACKAGE)
    assert not cycles, "modules that import each other:\n" + "\n".join(cycles)


def test_few_modules_beside_the_subpackages():
    top = top_modules(PACKAGE)
    assert len(top) <= MAX_TOP_MODULES, (
        f"{len(top)} modules in src/denselab/ beside its subpackages, at most "
        f"{MAX_TOP_MODULES}: {', '.join(top)}"
    )


def test_no_long_functions():
    long = long_functions(PACKAGE, MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_train_reads_at_a_glance():
    lines = function_lengths(PACKAGE).get("denselab.train:train")
    assert lines is not None, "denselab.train has no function train"
    assert lines <= MAX_TRAIN_LINES, (
        f"denselab.train.train is {lines} lines, at most {MAX_TRAIN_LINES}"
    )


def test_readme_layout_table_lists_every_module():
    named = set(readme_layout_paths(README.read_text()))
    modules = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    )
    missing = [module for module in modules if module not in named]
    assert not missing, "modules missing from the README's layout table: " + ", ".join(missing)


def test_readme_layout_table_names_only_existing_files():
    named = readme_layout_paths(README.read_text())
    assert named, "no layout table after 'Layout of `src/denselab/`' in README.md"
    absent = [path for path in named if not (PACKAGE / path).exists()]
    assert not absent, "the README's layout table names files that do not exist: " + ", ".join(
        absent
    )


# -- the checker fails where it should -------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_upward_imports_and_cycles(tmp_path):
    root = tmp_path / "pkg"
    long_body = "".join(f"    x{i} = {i}\n" for i in range(6))
    _write(
        root,
        {
            "__init__.py": "def fit():\n    from pkg.training import module\n",
            "errors.py": "class Oops(Exception):\n    def f(self):\n"
            "        import pkg.training.module\n",  # upwards, inside a method
            "config.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg import errors, stray\n",  # downwards; an unplaced module
            "stray.py": "",
            "training/__init__.py": "from pkg.training.network import Net\n",
            "training/module.py": "from .network import Net\n",
            # network -> module -> network is a cycle; network -> its package's __init__
            # (and back) is not.
            "training/network.py": "from pkg.training import module\nimport pkg.training\n"
            "\n\n@staticmethod\ndef long():\n" + long_body,
        },
    )
    layers = [("pkg.errors",), ("pkg.config",), ("pkg.training",), ("pkg",)]

    assert upward_imports(root, layers) == [
        "pkg.config -> pkg.stray (line 3): in no layer",
        "pkg.errors -> pkg.training.module (line 3)",
        "pkg.stray: in no layer of the contract",
    ]
    assert import_cycles(root) == [
        "pkg.training.module -> pkg.training.network -> pkg.training.module"
    ]
    assert long_functions(root, 6) == ["pkg.training.network:long (7 lines)"]
    assert long_functions(root, 7) == []
    assert top_modules(root) == ["__init__.py", "config.py", "errors.py", "stray.py"]


def test_the_checks_pass_a_package_that_keeps_the_contract(tmp_path):
    root = tmp_path / "pkg"
    _write(
        root,
        {
            "__init__.py": "def fit():\n    from pkg import api\n",
            "api.py": "from pkg.serving import model\nfrom pkg import errors\n",
            "errors.py": "",
            "serving/__init__.py": "from .model import Model\n",
            "serving/model.py": "from . import helpers\nfrom pkg.serving import Model\n",
            "serving/helpers.py": "from ..errors import Oops\n",
        },
    )
    layers = [("pkg.errors",), ("pkg.serving", "pkg.sweeps"), ("pkg.api",), ("pkg",)]

    assert upward_imports(root, layers) == []
    assert import_cycles(root) == []
    # Entries of one layer must not import each other.
    _write(root, {"sweeps/__init__.py": "from pkg.serving.model import Model\n"})
    assert upward_imports(root, layers) == ["pkg.sweeps -> pkg.serving.model (line 1)"]


def test_readme_layout_paths_reads_the_first_column():
    text = (
        "Layout of `src/denselab/`, one job a module:\n\n| module | holds |\n| --- | --- |\n"
        "| `train.py` | the `train()` path |\n| `data/base.py`, `data/idx.py` | datasets |\n\n"
        "| `other.py` | another table |\n"
    )
    assert readme_layout_paths(text) == ["train.py", "data/base.py", "data/idx.py"]
