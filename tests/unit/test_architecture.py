"""The seams of the code (README, "Layout of the code"), checked on the parsed import graph.

Imports are read with ``ast`` from every module of ``operator/hpo`` and
``trainer-image/hpo_trainer`` (module-level, inside functions and under
``TYPE_CHECKING`` alike), so a rule cannot be dodged by moving an import
into a function. Each rule is a function over the graph that returns the
offending imports; it is run on the real code and on a small broken tree,
which shows it fails and names the import when the rule is broken.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.study import REPO

ROOTS = {"hpo": REPO / "operator" / "hpo", "hpo_trainer": REPO / "trainer-image" / "hpo_trainer"}

#: Modules that decide (the engine decides, runners execute), with everything of ``hpo``
#: they import: none may reach a cluster client or TensorFlow.
PURE = ("hpo.engine", "hpo.study", "hpo.data.encoding", "hpo.data.scaling")
CLUSTER_OR_TF = ("kopf", "kubernetes", "tensorflow", "keras")
TF = ("tensorflow", "keras")

#: Imported by the operator's side in a fresh interpreter: none may load TensorFlow,
#: kopf, kubernetes or the trainer package.
OPERATOR_MODULES = [
    "hpo.study.spec",
    "hpo.study.space",
    "hpo.engine",
    "hpo.engine.search.gaussian",
    "hpo.store.keys",
    "hpo.study.layout",
    "hpo.records.ledger",
    "hpo.records.report",
    "hpo.records.recorder",
    "hpo.store",
    "hpo.store.s3",
    "hpo.data.dataset",
    "hpo.data.checks",
    "hpo.data.encoding",
    "hpo.local.runner",
    "hpo.session",
    "hpo.cli",
    "hpo.kube.pods",
    "hpo.kube.crd",
    "hpo.results",
    "hpo.results.keras_model",
]


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is, and whether it runs at import time."""

    module: str  # the importing module, e.g. hpo.store.open
    target: str  # the imported module, e.g. hpo.study.spec
    line: int
    top_level: bool  # runs when the module is imported (not in a function, not type-only)

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def module_files(roots: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under each package root."""
    out = {}
    for package, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, known: Iterable[str]) -> list[Import]:
    """Every import in ``path``; ``from a import b`` counts as ``a.b`` when that is a module."""
    known = set(known)
    is_package = path.name == "__init__.py"
    out: list[Import] = []

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(module, alias.name, node.lineno, top_level))
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append(Import(module, full if full in known else base, node.lineno, top_level))
        for child in ast.iter_child_nodes(node):
            inner = top_level
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = False
            if isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body:
                inner = False
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return out


def import_graph(roots: dict[str, Path]) -> list[Import]:
    files = module_files(roots)
    return [imp for name, path in files.items() for imp in imports_of(name, path, files)]


def _within(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


# --------------------------------------------------------------------------- the rules


#: The one import of ``hpo_trainer`` that ``hpo`` may make: the results API loads a saved
#: Keras model through the trainer's own code, lazily (inside a function), so importing
#: ``hpo`` never loads the trainer or TensorFlow. (importing module, imported module)
TRAINER_SEAM = ("hpo.results.keras_model", "hpo_trainer.model")


def hpo_importing_the_trainer(
    graph: list[Import], seam: tuple[str, str] | None = TRAINER_SEAM
) -> list[Import]:
    """``hpo`` never imports ``hpo_trainer`` (the trainer depends on hpo, not the reverse),
    except ``seam``, and that one only inside a function."""
    return [
        i
        for i in graph
        if _within(i.module, ["hpo"])
        and _within(i.target, ["hpo_trainer"])
        and ((i.module, i.target) != seam or i.top_level)
    ]


#: What the trainer may use of ``hpo``: the contract, the layout, the store and dataset
#: reading (not the recorder, ledger, report or engine, which the operator side owns).
TRAINER_USES = (
    "hpo.study.contract",
    "hpo.store.keys",
    "hpo.study.layout",
    "hpo.store",
    "hpo.data.dataset",
    "hpo.data.scaling",
    "hpo.data.encoding",
)


def trainer_beyond_its_seam(graph: list[Import]) -> list[Import]:
    """Imports of ``hpo`` by ``hpo_trainer`` outside ``TRAINER_USES``."""
    return [
        i
        for i in graph
        if _within(i.module, ["hpo_trainer"])
        and _within(i.target, ["hpo"])
        and not _within(i.target, TRAINER_USES)
    ]


def tensorflow_outside_the_trainer(graph: list[Import]) -> list[Import]:
    """Only ``hpo_trainer`` imports TensorFlow or Keras."""
    return [i for i in graph if not _within(i.module, ["hpo_trainer"]) and _within(i.target, TF)]


def impure_deciders(graph: list[Import], pure: Iterable[str] = PURE) -> list[str]:
    """Imports of kopf, kubernetes, TensorFlow or Keras reachable from a deciding module
    through the ``hpo`` modules it imports (each with the path that leads there)."""
    by_module: dict[str, list[Import]] = {}
    for i in graph:
        by_module.setdefault(i.module, []).append(i)
    problems = []
    for start in sorted({i.module for i in graph if _within(i.module, pure)}):
        seen, todo = {start}, [(start, [start])]
        while todo:
            name, path = todo.pop()
            for i in by_module.get(name, []):
                if _within(i.target, [*CLUSTER_OR_TF, "hpo.kube", "hpo.local", "hpo_trainer"]):
                    problems.append(f"{' -> '.join(path)}: {i}")
                elif i.target in by_module and i.target not in seen:
                    seen.add(i.target)
                    todo.append((i.target, [*path, i.target]))
    return problems


#: The package layers, top to bottom (README, "Layout of the code"). A module may import
#: its own package and any layer below its own; never a layer above, and never a sibling
#: of its own layer (``kube`` and ``local`` are two runners; ``session`` and ``results``
#: one study written and one read back).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("hpo.cli",),
    ("hpo.dashboard",),
    ("hpo.kube", "hpo.local"),
    ("hpo.session", "hpo.results"),
    ("hpo.records",),
    ("hpo.engine",),
    ("hpo.data",),
    ("hpo.study",),
    ("hpo.store",),
)
#: Leaves any layer may import: the package itself and the fault tests' crash points.
ANYWHERE = ("hpo", "hpo.crashpoints")


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> tuple[int, str] | None:
    """(layer index from the top, the package of that layer holding ``module``)."""
    for index, packages in enumerate(layers):
        for package in packages:
            if _within(module, [package]):
                return index, package
    return None


def layer_breaches(
    graph: list[Import], modules: Iterable[str], layers: tuple[tuple[str, ...], ...] = LAYERS
) -> list[str]:
    """Every module of ``hpo`` outside the layers, and every import that points up a layer
    or sideways to a sibling, each named with its line."""
    problems = [
        f"{name} belongs to no layer (add it to one in LAYERS)"
        for name in sorted(modules)
        if _within(name, ["hpo"]) and name not in ANYWHERE and layer_of(name, layers) is None
    ]
    for i in graph:
        if not (_within(i.module, ["hpo"]) and _within(i.target, ["hpo"])):
            continue
        if i.target in ANYWHERE:
            continue
        here, there = layer_of(i.module, layers), layer_of(i.target, layers)
        if here is None or there is None or here[1] == there[1]:
            continue
        if there[0] < here[0]:
            problems.append(f"{i}: {here[1]} may not import {there[1]}, a layer above it")
        elif there[0] == here[0]:
            problems.append(f"{i}: {here[1]} may not import {there[1]}, a sibling of its layer")
    return problems


def unit_of(module: str, packages: set[str]) -> str:
    """The node of the package-level graph: a subpackage of hpo (hpo.store), or a module."""
    parts = module.split(".")
    for n in range(2, len(parts) + 1):
        if ".".join(parts[:n]) in packages:
            return ".".join(parts[:n])
    return module


def package_cycles(graph: list[Import], packages: set[str]) -> list[list[Import]]:
    """Import cycles between hpo's modules and subpackages (imports inside one subpackage
    do not count), each as the imports that close it."""
    edges: dict[str, dict[str, Import]] = {}
    for i in graph:
        if not (_within(i.module, ["hpo"]) and _within(i.target, ["hpo"])):
            continue
        a, b = unit_of(i.module, packages), unit_of(i.target, packages)
        if a != b and b != "hpo":
            edges.setdefault(a, {}).setdefault(b, i)
    cycles: list[list[Import]] = []
    found: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in edges.get(node, {}):
            if nxt == path[0]:
                members = frozenset(path)
                if members not in found:
                    found.add(members)
                    ring = [*path, nxt]
                    cycles.append([edges[x][y] for x, y in itertools.pairwise(ring)])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its least node
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, [start])
    return cycles


def subpackages(roots: dict[str, Path]) -> set[str]:
    return {name for name, path in module_files(roots).items() if path.name == "__init__.py"}


def _lines(items: Iterable[object]) -> str:
    return "\n".join(f"  {item}" for item in items)


# --------------------------------------------------------------------------- on the real code

GRAPH = import_graph(ROOTS)


def test_the_graph_is_read() -> None:
    """A sanity check on the parser itself: known imports of each kind are found."""
    found = {(i.module, i.target, i.top_level) for i in GRAPH}
    assert ("hpo.study.storage", "hpo.study.spec", True) in found
    assert ("hpo.store.open", "hpo.store.s3", False) in found  # inside a function
    assert ("hpo_trainer.train", "hpo.study.layout", True) in found
    assert ("hpo.kube.runner", "hpo.crashpoints", True) in found  # from hpo import crashpoints
    assert any(i.target == "tensorflow" for i in GRAPH if i.module == "hpo_trainer.model")


def test_hpo_never_imports_the_trainer() -> None:
    bad = hpo_importing_the_trainer(GRAPH)
    assert not bad, "hpo must not import hpo_trainer:\n" + _lines(bad)


def test_the_one_seam_to_the_trainer_is_lazy_and_used() -> None:
    """The results API's model loading is the only import of hpo_trainer by hpo: it is
    there (so the allowance is not stale) and it runs only when a model is loaded."""
    seam = [i for i in GRAPH if (i.module, i.target) == TRAINER_SEAM]
    assert seam and not [i for i in seam if i.top_level], seam
    everything = [
        i for i in GRAPH if _within(i.module, ["hpo"]) and _within(i.target, ["hpo_trainer"])
    ]
    assert {(i.module, i.target) for i in everything} == {TRAINER_SEAM}


def test_only_the_local_runner_names_the_trainer() -> None:
    """The one way hpo reaches the trainer: local workers load it by name (as the
    operator names the trainer image's command); no other module spells it."""
    named = []
    for name, path in module_files({"hpo": ROOTS["hpo"]}).items():
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and text.startswith("hpo_trainer"):
                named.append((name, text))
    assert sorted(named) == [
        ("hpo.kube.pods", "hpo_trainer"),
        ("hpo.local.runner", "hpo_trainer.train"),
    ]


def test_the_trainer_uses_only_contract_layout_store_and_dataset() -> None:
    bad = trainer_beyond_its_seam(GRAPH)
    assert not bad, "hpo_trainer reaches past its seam:\n" + _lines(bad)


def test_only_the_trainer_imports_tensorflow() -> None:
    bad = tensorflow_outside_the_trainer(GRAPH)
    assert not bad, "TensorFlow/Keras outside hpo_trainer:\n" + _lines(bad)


def test_deciding_modules_import_no_cluster_client_and_no_tensorflow() -> None:
    bad = impure_deciders(GRAPH)
    assert not bad, "the engine and the search must stay pure:\n" + _lines(bad)


def test_the_packages_keep_their_layers() -> None:
    bad = layer_breaches(GRAPH, module_files(ROOTS))
    assert not bad, "imports against the layers:\n" + _lines(bad)


def test_every_layer_is_a_package_of_the_tree() -> None:
    """A layer named in LAYERS that the tree lacks would make the rule silently looser."""
    packages = subpackages(ROOTS)
    assert {p for layer in LAYERS for p in layer} <= packages | set(module_files(ROOTS))


#: Sizes a reader can hold in mind: a module over this many lines is doing two jobs, a
#: function over this many is several steps that want names.
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def oversized(roots: dict[str, Path]) -> list[str]:
    """Every module and function of ``roots`` over the limits, with its size."""
    out = []
    for name, path in module_files(roots).items():
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            out.append(f"{name}: {n} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(
                        f"{name}.{node.name} (line {node.lineno}): {n} lines "
                        f"(at most {MAX_FUNCTION_LINES})"
                    )
    return out


def test_no_module_or_function_is_oversized() -> None:
    bad = oversized(ROOTS)
    assert not bad, "split these by job:\n" + _lines(bad)


def test_an_oversized_function_is_named(tmp_path: Path) -> None:
    package = tmp_path / "hpo"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (package / "big.py").write_text(f"def fine():\n    pass\n\n\ndef long():\n{body}")
    assert oversized({"hpo": package}) == [
        f"hpo.big.long (line 5): {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})"
    ]
    (package / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized({"hpo": package}) == [
        f"hpo.big: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"
    ]


def test_no_import_cycles_between_hpo_packages() -> None:
    cycles = package_cycles(GRAPH, subpackages(ROOTS))
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(str(i) for i in cycle) for cycle in cycles
    )


def test_operator_side_loads_no_tensorflow_kopf_kubernetes_or_trainer() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {OPERATOR_MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'keras', 'kopf', 'kubernetes', 'hpo_trainer'})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_operator_image_ships_no_trainer() -> None:
    """The operator image copies ``operator/`` alone; pyproject then finds only ``hpo``."""
    copies = [
        line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
    ]
    assert copies and not [c for c in copies if "trainer-image" in c], copies
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" in setuptools and "find" in setuptools["packages"], setuptools
    assert setuptools["packages"]["find"]["where"] == ["operator", "trainer-image"]


# --------------------------------------------------------------------------- the rules can fail


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, Path]:
    """A tiny tree breaking every rule once, each import in a different way."""
    hpo, trainer = tmp_path / "hpo", tmp_path / "hpo_trainer"
    files = {
        hpo / "__init__.py": "",
        hpo / "engine.py": "from hpo import helper\n",
        hpo / "helper.py": "def f():\n    import kubernetes\n",
        hpo / "spec.py": "from hpo.store import Store\n",
        hpo / "prep.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from hpo_trainer.data import x\n",
        hpo / "plots.py": "import keras.layers\n",
        # The seam's own pair, but at import time: still a violation.
        hpo / "results" / "__init__.py": "",
        hpo / "results" / "keras_model.py": "from hpo_trainer.model import load_model\n",
        hpo / "store" / "__init__.py": "from .base import Store\n",
        hpo / "store" / "base.py": "from ..spec import Spec\n",
        hpo / "kube" / "__init__.py": "",
        hpo / "kube" / "runner.py": "def f():\n    from hpo.local import runner\n",
        hpo / "local" / "__init__.py": "",
        hpo / "records" / "__init__.py": "",
        hpo / "records" / "recorder.py": "from hpo.kube.runner import KubeRunner\n",
        trainer / "__init__.py": "",
        trainer / "model.py": "import tensorflow\nfrom hpo import spec\n",
        trainer
        / "train.py": "from hpo.study.layout import StudyPaths\nfrom hpo.records.recorder import x\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"hpo": hpo, "hpo_trainer": trainer}


def test_each_rule_names_the_import_that_breaks_it(broken: dict[str, Path]) -> None:
    graph = import_graph(broken)
    assert [str(i) for i in hpo_importing_the_trainer(graph)] == [
        "hpo.prep (line 3) imports hpo_trainer.data",
        "hpo.results.keras_model (line 1) imports hpo_trainer.model",
    ]
    assert [str(i) for i in tensorflow_outside_the_trainer(graph)] == [
        "hpo.plots (line 1) imports keras.layers"
    ]
    assert [str(i) for i in trainer_beyond_its_seam(graph)] == [
        "hpo_trainer.model (line 2) imports hpo.spec",
        "hpo_trainer.train (line 2) imports hpo.records.recorder",
    ]
    assert impure_deciders(graph, ["hpo.engine"]) == [
        "hpo.engine -> hpo.helper: hpo.helper (line 2) imports kubernetes"
    ]
    assert layer_breaches(graph, module_files(broken)) == [
        "hpo.helper belongs to no layer (add it to one in LAYERS)",
        "hpo.plots belongs to no layer (add it to one in LAYERS)",
        "hpo.prep belongs to no layer (add it to one in LAYERS)",
        "hpo.spec belongs to no layer (add it to one in LAYERS)",
        "hpo.kube.runner (line 2) imports hpo.local: "
        "hpo.kube may not import hpo.local, a sibling of its layer",
        "hpo.records.recorder (line 1) imports hpo.kube.runner: "
        "hpo.records may not import hpo.kube, a layer above it",
    ]
    cycles = package_cycles(graph, subpackages(broken))
    assert [[str(i) for i in cycle] for cycle in cycles] == [
        [
            "hpo.spec (line 1) imports hpo.store",
            "hpo.store.base (line 1) imports hpo.spec",
        ]
    ]


def test_ruff_check_and_format_are_clean() -> None:
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", str(REPO)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([*ruff, "format", "--check", str(REPO)], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout
