"""The package layers only point down, checked on the source with `ast`.

Layers, bottom up: ``srcore`` (errors, shared layers) <- ``supernet`` (model code) and
``android_bench`` (devices) <- ``srsearch`` (latency, search, training, export, CLI). Every import
counts, including those inside functions: an import cycle that works only because one side
imports late is still a cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("srcore", "supernet", "android_bench", "srsearch")
# What each top-level package may import from the others.
ALLOWED = {
    "srcore": set(),
    "supernet": {"srcore"},
    "android_bench": {"srcore"},
    "srsearch": {"srcore", "supernet", "android_bench"},
}
# Inside srsearch, bottom up: the subpackages (and root modules) in the order of the pipeline.
# Each may import only those before it, so the folders read as the pipeline.
SRSEARCH_LAYERS = ("common", "data", "evaluation", "models", "deploy", "latency", "train",
                   "search", "comparison", "pipeline", "apply", "commands", "cli")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name that is imported (or that the name is taken from)
    name: str | None  # the attribute imported from ``target`` (``from target import name``)
    line: int


def modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every library module."""
    found = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return found


def imports_of(module: str, source: str, is_pkg: bool, known: set[str]) -> list[Import]:
    """Every import statement in ``source`` (module level and inside functions)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:  # `from pkg import submodule`
                    out.append(Import(module, sub, None, node.lineno))
                else:
                    out.append(Import(module, base, a.name, node.lineno))
    return out


def all_imports(root: Path = ROOT) -> list[Import]:
    mods = modules(root)
    known = set(mods)
    out = []
    for name, (f, is_pkg) in mods.items():
        out += imports_of(name, f.read_text(), is_pkg, known)
    return [i for i in out if i.target.split(".")[0] in PACKAGES]


def package_of(module: str, is_pkg: bool = False) -> str:
    return module if is_pkg else module.rpartition(".")[0]


def layer_violations(imports: list[Import]) -> list[str]:
    bad = []
    for i in imports:
        src, dst = i.importer.split(".")[0], i.target.split(".")[0]
        if src != dst and dst not in ALLOWED[src]:
            bad.append(f"{i.importer}:{i.line} imports {i.target} ({src} may not import {dst})")
    return bad


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "srsearch" and len(parts) > 1 else None


def subpackage_violations(imports: list[Import]) -> list[str]:
    """An srsearch subpackage importing one above it in ``SRSEARCH_LAYERS``."""
    rank = {name: k for k, name in enumerate(SRSEARCH_LAYERS)}
    bad = []
    for i in imports:
        src, dst = _subpackage(i.importer), _subpackage(i.target)
        if src is None or dst is None or src == dst:
            continue
        where = f"{i.importer}:{i.line} imports {i.target}"
        if src not in rank or dst not in rank:
            missing = src if src not in rank else dst
            bad.append(f"{where} (add srsearch.{missing} to SRSEARCH_LAYERS)")
        elif rank[dst] > rank[src]:
            bad.append(f"{where} (srsearch.{src} may not import srsearch.{dst}, which is above it)")
    return bad


def command_violations(imports: list[Import]) -> list[str]:
    """Only the CLI (``srsearch.cli`` and ``srsearch.commands``) may import the commands."""
    return [
        f"{i.importer}:{i.line} imports {i.target} (library code may not import the CLI)"
        for i in imports
        if i.target.startswith("srsearch.commands")
        and not (i.importer == "srsearch.cli" or i.importer.startswith("srsearch.commands"))
    ]


def _private_owner(target: str, name: str | None) -> str | None:
    """The package whose private module or name this import reaches, or None."""
    parts = target.split(".")
    for k, part in enumerate(parts):
        if part.startswith("_") and part != "__init__":
            return ".".join(parts[:k])
    if name is not None and name.startswith("_") and not name.startswith("__"):
        return target.rpartition(".")[0] if "." in target else target
    return None


def private_import_violations(imports: list[Import], mods: dict[str, tuple[Path, bool]]
                              ) -> list[str]:
    """A private module (or name) of package P may be imported only from inside P."""
    bad = []
    for i in imports:
        owner = _private_owner(i.target, i.name)
        if owner is None:
            continue
        importer_pkg = package_of(i.importer, mods.get(i.importer, (None, False))[1])
        if not (importer_pkg == owner or importer_pkg.startswith(owner + ".")):
            what = f"{i.target}.{i.name}" if i.name else i.target
            bad.append(f"{i.importer}:{i.line} uses private {what} from outside {owner}")
    return bad


def private_attribute_violations(root: Path = ROOT) -> list[str]:
    """``obj._name`` where ``_name`` is a private function or method that only another
    package defines (``self._x`` and ``cls._x`` are the object's own business)."""
    mods = modules(root)
    defined: dict[str, set[str]] = {}  # private def name -> packages defining it
    trees = {}
    for name, (f, is_pkg) in mods.items():
        trees[name] = ast.parse(f.read_text())
        pkg = package_of(name, is_pkg)
        for node in ast.walk(trees[name]):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name.startswith("_") and not node.name.startswith("__"):
                    defined.setdefault(node.name, set()).add(pkg)
    bad = []
    for name, tree in trees.items():
        pkg = package_of(name, mods[name][1])
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or node.attr not in defined:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if pkg not in defined[node.attr]:
                owners = ", ".join(sorted(defined[node.attr]))
                bad.append(f"{name}:{node.lineno} uses private .{node.attr} of {owners}")
    return bad


def import_cycles(imports: list[Import], mods: dict[str, tuple[Path, bool]]) -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for i in imports:
        if i.target in graph and i.target != i.importer:
            graph[i.importer].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:  # Tarjan's algorithm
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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_packages_import_only_lower_layers():
    assert layer_violations(all_imports()) == []


def test_srsearch_subpackages_import_only_lower_ones():
    assert subpackage_violations(all_imports()) == []


def test_library_does_not_import_the_cli():
    assert command_violations(all_imports()) == []


def test_private_modules_and_names_stay_in_their_package():
    imports = all_imports()
    assert private_import_violations(imports, modules()) == []
    assert private_attribute_violations() == []


def test_no_import_cycles():
    assert import_cycles(all_imports(), modules()) == []


# The checks themselves, on small made-up trees: each loop issue 15 listed is caught.


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize("files, check, expect", [
    # supernet/training.py reaching up into srsearch.training
    ({"supernet/training.py": "def f():\n    from srsearch.training import fit\n"},
     "layers", "supernet.training:2 imports srsearch.training"),
    # android_bench/device.py depending on srsearch.errors
    ({"android_bench/device.py": "from srsearch.errors import UserError\n"},
     "layers", "android_bench.device:1 imports srsearch.errors"),
    # the library reaching into the CLI
    ({"srsearch/pipeline.py": "def f():\n    from srsearch.commands.supernet import make_space\n"},
     "commands", "srsearch.pipeline:2 imports srsearch.commands.supernet"),
    # a model file reader reaching up into the exporter
    ({"srsearch/models/modelio.py": "def f():\n    from srsearch.deploy.tflite_model import M\n"},
     "subpackages", "srsearch.models.modelio:2 imports srsearch.deploy.tflite_model"),
    # a private module used from another package
    ({"srsearch/latency/_runner.py": "X = 1\n",
      "srsearch/search/run.py": "def f():\n    from srsearch.latency._runner import X\n"},
     "private", "srsearch.search.run:2 uses private srsearch.latency._runner"),
    # a private method used from another package
    ({"supernet/space.py": "class S:\n    def _inners(self):\n        return 1\n",
      "srsearch/search/stage2.py": "def f(space):\n    return space._inners()\n"},
     "attributes", "srsearch.search.stage2:2 uses private ._inners of supernet"),
])
def test_checks_catch_the_listed_violations(tmp_path, files, check, expect):
    root = _tree(tmp_path, files)
    imports = all_imports(root)
    found = {
        "layers": lambda: layer_violations(imports),
        "commands": lambda: command_violations(imports),
        "subpackages": lambda: subpackage_violations(imports),
        "private": lambda: private_import_violations(imports, modules(root)),
        "attributes": lambda: private_attribute_violations(root),
    }[check]()
    assert len(found) == 1 and found[0].startswith(expect)


def test_cycle_check_catches_late_imports(tmp_path):
    # srsearch/tflite.py and srsearch/_depth_to_space.py importing each other, one inside a
    # function, and a loop like supernet.training -> srsearch.training -> srsearch.models ->
    # supernet.subnet -> supernet.training
    root = _tree(tmp_path, {
        "srsearch/tflite.py": "def f():\n    from srsearch import _depth_to_space\n",
        "srsearch/_depth_to_space.py": "from srsearch.tflite import convert\n",
        "supernet/subnet.py": "import supernet.training\n",
        "supernet/training.py": "def f():\n    from srsearch.training import fit\n",
        "srsearch/training.py": "def f():\n    from srsearch.models import build_model\n",
        "srsearch/models/__init__.py": "from supernet.subnet import SubNet\n",
    })
    cycles = import_cycles(all_imports(root), modules(root))
    assert sorted(cycles) == [
        ["srsearch._depth_to_space", "srsearch.tflite"],
        ["srsearch.models", "srsearch.training", "supernet.subnet", "supernet.training"],
    ]
