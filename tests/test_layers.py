"""Import layering (documentation/architecture.md): a package may import only packages of lower layers.

Imports inside functions count too: a lazy import hides a cycle from Python, not from the design.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("diffoseg_auto", "planners", "dataset_conversion")

# lowest first; units in one layer are independent of each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("diffoseg_auto.errors",),
    ("diffoseg_auto.paths",),
    ("diffoseg_auto.configuration",),
    ("diffoseg_auto.utilities", "diffoseg_auto.runtime"),
    ("diffoseg_auto.results_layout",),
    ("diffoseg_auto.io",),
    # torch-level: plain arguments in, never plans (plans/network_arguments.py translates plans into their arguments)
    ("diffoseg_auto.diffusion", "diffoseg_auto.network"),
    ("diffoseg_auto.plans",),
    ("diffoseg_auto.dataset",),
    ("diffoseg_auto.preprocessing",),
    ("diffoseg_auto.evaluation",),
    ("diffoseg_auto.inference",),
    ("diffoseg_auto.training",),
    ("planners", "dataset_conversion"),
    ("diffoseg_auto.cli",),
)
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit_of(module: str) -> str:
    """'diffoseg_auto.training.trainer' -> 'diffoseg_auto.training'; 'planners.fingerprint' -> 'planners'."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "diffoseg_auto" and len(parts) > 1 else parts[0]


def imported_modules(source: str) -> list[str]:
    """Absolute project imports anywhere in the file (module level and inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [m for m in found if m.split(".")[0] in PROJECT_PACKAGES]


def layer_violations(root: Path) -> list[str]:
    """'file: unit (layer i) imports unit (layer j)' for every import of an equal or higher layer,
    and 'file: unit has no layer' for a package missing from LAYERS."""
    problems = []
    for pkg in PROJECT_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root)
            module = ".".join(rel.with_suffix("").parts)
            src_unit = unit_of(module)
            if rel.parts == ("diffoseg_auto", "__init__.py"):  # the package's own (empty) __init__
                continue
            if src_unit not in LAYER_OF:
                problems.append(f"{rel}: {src_unit} has no layer in LAYERS")
                continue
            for imported in imported_modules(f.read_text()):
                dst_unit = unit_of(imported)
                if dst_unit == src_unit:
                    continue
                if LAYER_OF.get(dst_unit, len(LAYERS)) >= LAYER_OF[src_unit]:
                    problems.append(f"{rel}: {src_unit} (layer {LAYER_OF[src_unit]}) imports {imported} "
                                    f"(layer {LAYER_OF.get(dst_unit, '?')})")
    return problems


def test_no_lower_layer_imports_a_higher_one():
    assert layer_violations(ROOT) == []


def test_networks_and_diffusion_do_not_import_plans():
    """Networks and diffusion take torch-level arguments; one module (plans/network_arguments.py) reads plans for them
    (also implied by LAYERS, stated here so that a reordering cannot undo it)."""
    readers = [f"{f.relative_to(ROOT)}: {m}" for pkg in ("network", "diffusion")
               for f in sorted((ROOT / "diffoseg_auto" / pkg).rglob("*.py"))
               for m in imported_modules(f.read_text()) if unit_of(m) == "diffoseg_auto.plans"]
    assert readers == []
    assert LAYER_OF["diffoseg_auto.network"] < LAYER_OF["diffoseg_auto.plans"] > LAYER_OF["diffoseg_auto.diffusion"]


def test_every_layer_exists():
    for unit in LAYER_OF:
        path = ROOT / Path(*unit.split("."))
        assert path.is_dir() or path.with_suffix(".py").is_file(), unit


@pytest.mark.parametrize("fake_file, body, offending", [
    # the old cycle: inference reading checkpoints from training
    ("diffoseg_auto/inference/fake_loader.py", "from diffoseg_auto.training.trainer import DiffOSegTrainer\n",
     "diffoseg_auto.training.trainer"),
    # the other old cycle, hidden in a function: utilities reaching up into dataset
    ("diffoseg_auto/utilities/fake_helper.py", "def f():\n    import diffoseg_auto.dataset.raw_dataset\n",
     "diffoseg_auto.dataset.raw_dataset"),
    # siblings of one layer stay independent
    ("diffoseg_auto/network/fake_net.py", "from diffoseg_auto.diffusion import schedules\n", "diffoseg_auto.diffusion"),
])
def test_a_reintroduced_cycle_is_caught(tmp_path: Path, fake_file: str, body: str, offending: str):
    fake = tmp_path / fake_file
    fake.parent.mkdir(parents=True)
    fake.write_text(body)
    problems = layer_violations(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(fake_file) and offending in problems[0]


def test_an_unplaced_package_is_reported(tmp_path: Path):
    (tmp_path / "diffoseg_auto" / "newpkg").mkdir(parents=True)
    (tmp_path / "diffoseg_auto" / "newpkg" / "x.py").write_text("import os\n")
    assert layer_violations(tmp_path) == ["diffoseg_auto/newpkg/x.py: diffoseg_auto.newpkg has no layer in LAYERS"]


def test_no_test_module_imports_another():
    """Shared test code lives in conftest.py (fixtures) and the support/ package, never in a test_*.py."""
    test_modules = {f.stem for f in (ROOT / "tests").glob("test_*.py")}
    offenders = []
    for f in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{f.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in test_modules]
    assert offenders == []


def test_results_folder_names_are_spelled_in_one_module():
    """diffoseg_auto/results_layout.py owns the results-folder layout; nobody else spells its names."""
    names = ("fold_{", '"fold_*"', "checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth", "stage{",
             '"validation" /', '}__{plans}__{')
    found = {str(f.relative_to(ROOT)) for pkg in PROJECT_PACKAGES for f in (ROOT / pkg).rglob("*.py")
             if any(n in f.read_text() for n in names)}
    assert found == {"diffoseg_auto/results_layout.py"}


def module_file(root: Path, module: str) -> Path | None:
    """The file that ``module`` names under ``root`` (a module or a package's __init__), or None."""
    base = root / Path(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def file_imports(root: Path, f: Path) -> set[Path]:
    """Project files that ``f`` imports anywhere (inside functions too): ``import a.b``, ``from a.b import c``
    (c a submodule counts as c, else as a.b itself); relative imports are resolved against ``f``'s package."""
    package = list(f.relative_to(root).parent.parts)
    found: set[Path] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join((package[:len(package) - node.level + 1] if node.level else []) + [node.module or ""]).strip(".")
            targets = [f"{base}.{a.name}" if module_file(root, f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        found |= {t for m in targets if m.split(".")[0] in PROJECT_PACKAGES and (t := module_file(root, m))}
    return found - {f}


def file_import_cycles(root: Path) -> list[str]:
    """One cycle per group of files that import each other in a circle (a strongly connected component),
    as 'a.py -> b.py -> a.py': the shortest circle from the group's first file in sorted order."""
    files = sorted(f for pkg in PROJECT_PACKAGES for f in (root / pkg).rglob("*.py"))
    edges = {f: sorted(file_imports(root, f)) for f in files}

    def reachable(f: Path) -> set[Path]:
        seen, todo = set(), list(edges[f])
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo += edges.get(g, [])
        return seen

    reach = {f: reachable(f) for f in files}
    cycles, grouped = [], set()
    for f in files:
        if f in grouped or f not in reach[f]:
            continue
        group = {g for g in reach[f] if f in reach[g]}
        grouped |= group
        came_from: dict[Path, Path] = {}  # breadth first inside the group: the shortest circle back to f
        frontier = [f]
        while f not in came_from:
            step = []
            for g in frontier:
                for h in edges[g]:
                    if h in group and h not in came_from:
                        came_from[h] = g
                        step.append(h)
            frontier = step
        loop = [f]
        while (g := came_from[loop[-1]]) != f:
            loop.append(g)
        cycles.append(" -> ".join(str(p.relative_to(root)) for p in [f, *reversed(loop[1:]), f]))
    return cycles


def test_no_file_level_import_cycle():
    """Inside a layer's folder the files import each other one way too (an error class two modules need lives
    in a third module both import)."""
    assert file_import_cycles(ROOT) == []


@pytest.mark.parametrize("files, expected", [
    # the circle through a lazy import inside a function
    ({"diffoseg_auto/io/a.py": "from diffoseg_auto.io.b import ReadError\n",
      "diffoseg_auto/io/b.py": "class ReadError(Exception): ...\ndef f():\n    from diffoseg_auto.io import a\n"},
     ["diffoseg_auto/io/a.py -> diffoseg_auto/io/b.py -> diffoseg_auto/io/a.py"]),
    # three files, one of them imported as a package attribute and one relatively
    ({"diffoseg_auto/inference/__init__.py": "",
      "diffoseg_auto/inference/x.py": "import diffoseg_auto.inference.y\n",
      "diffoseg_auto/inference/y.py": "from .z import g\n",
      "diffoseg_auto/inference/z.py": "from diffoseg_auto.inference import x\n"},
     ["diffoseg_auto/inference/x.py -> diffoseg_auto/inference/y.py -> diffoseg_auto/inference/z.py -> "
      "diffoseg_auto/inference/x.py"]),
    # one-way imports and a package's __init__ naming its own modules are no circle
    ({"diffoseg_auto/network/__init__.py": "from diffoseg_auto.network.u import U\n",
      "diffoseg_auto/network/u.py": "from diffoseg_auto.network.v import V\nclass U: ...\n",
      "diffoseg_auto/network/v.py": "class V: ...\n"}, []),
])
def test_a_file_level_cycle_is_caught(tmp_path: Path, files: dict[str, str], expected: list[str]):
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    assert file_import_cycles(tmp_path) == expected


def private_imports(root: Path) -> list[str]:
    """'file: module._name' for every import of another project module's private name."""
    found = []
    for pkg in PROJECT_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT_PACKAGES:
                    found += [f"{f.relative_to(root)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names(tmp_path: Path):
    assert private_imports(ROOT) == []
    fake = tmp_path / "diffoseg_auto" / "inference" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from diffoseg_auto.inference.predict_entrypoint import _case_seed, main\n")
    assert private_imports(tmp_path) == ["diffoseg_auto/inference/x.py: diffoseg_auto.inference.predict_entrypoint._case_seed"]


MAX_PARAMETERS = 8


def wide_functions(root: Path) -> list[str]:
    """'file:Class.function (n)' for every public function or method (``__init__`` included) of diffoseg_auto/ and
    planners/ with more than MAX_PARAMETERS parameters (self / cls not counted): group the rest into a dataclass."""
    found = []

    def visit(node: ast.AST, rel: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, rel, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    not child.name.startswith("_") or child.name == "__init__"):
                a = child.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                names = names[1:] if names[:1] in (["self"], ["cls"]) else names
                if len(names) > MAX_PARAMETERS:
                    found.append(f"{rel}:{prefix}{child.name} ({len(names)})")

    for pkg in ("diffoseg_auto", "planners"):
        for f in sorted((root / pkg).rglob("*.py")):
            visit(ast.parse(f.read_text()), str(f.relative_to(root)), "")
    return found


def test_no_public_function_takes_more_than_eight_parameters():
    assert wide_functions(ROOT) == []


def test_a_wide_function_is_caught(tmp_path: Path):
    fake = tmp_path / "planners" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("class A:\n    def __init__(self, a, b, c, d, e, f, g, h, i): ...\n"
                    "def ok(a, b, c, d, e, f, g, *, h): ...\ndef _private(a, b, c, d, e, f, g, h, i): ...\n")
    (tmp_path / "diffoseg_auto").mkdir()
    assert wide_functions(tmp_path) == ["planners/x.py:A.__init__ (9)"]
