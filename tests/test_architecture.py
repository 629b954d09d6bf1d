"""The package layout's rules (docs/architecture.md), checked on the source and at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bone_age"
COMMANDS = {"run", "index", "predict", "export", "explain", "report", "evaluate"}

# The layers, top to bottom (docs/architecture.md): a package imports only packages of the layers
# below its own, never one beside it or above it. Command entries sit above them all (no
# package imports one: tested below) and bench/ measures everything (it may import anything).
LAYERS = [
    ("training",),
    ("evaluation",),
    ("inference", "phantom"),  # the phantom's source implements data's; realism reads DICOM
    ("data", "models", "losses"),
    ("utils",),
]
UNLAYERED = {"bench"}

# What a package must not import beyond the layer order: third-party roots, and what it must
# not know although the order would allow it.
ALSO_FORBIDDEN = {
    "inference": {"pytorch_lightning", "lightning", "wandb", "hydra"},  # predicting stays light
    "evaluation": {"bone_age.phantom"},  # metrics know no simulator (training adds its yardsticks)
    "phantom": {"bone_age.models", "bone_age.losses"},  # the simulator knows no network or loss
    "models": {"pydicom", "hydra", "omegaconf"},
    "losses": {"pydicom", "hydra", "omegaconf"},
}


def _forbidden() -> dict[str, set[str]]:
    """Package -> the modules (bone_age packages, third-party roots) it must never import."""
    forbidden = {}
    for depth, layer in enumerate(LAYERS):
        not_below = {f"bone_age.{p}" for upper in LAYERS[:depth + 1] for p in upper}
        for package in layer:
            forbidden[package] = (not_below - {f"bone_age.{package}"}) | \
                ALSO_FORBIDDEN.get(package, set())
    return forbidden


FORBIDDEN = _forbidden()
MAX_FILE_LINES = 500
MAX_TRAIN_FUNCTION_LINES = 50
SHARED_NAMES = {"__init__.py", "__main__.py"}  # every package has them


def _module_name(path: Path) -> str:
    """``bone_age/data/dicom.py`` -> ``bone_age.data.dicom``; a package's ``__init__.py`` is the
    package."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (module level and inside functions), and
    every ``module.name`` it imports from one; relative imports made absolute."""
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module
            if node.level:  # relative: from .x import y (the package), from ..x import y (above)
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            if module:
                found.add(module)
                found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def _hits(imported: set[str], banned: set[str]) -> set[str]:
    return {name for name in imported for b in banned if name == b or name.startswith(b + ".")}


def test_top_level_holds_only_command_entries():
    modules = {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    assert modules == COMMANDS


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    layered = [p for layer in LAYERS for p in layer]
    assert len(layered) == len(set(layered))
    assert packages == set(layered) | UNLAYERED


def test_data_never_imports_the_phantom():
    # The one arrow that pointed up (the phantom's cohort source lived in data/): a phantom
    # source is the phantom's (bone_age.phantom.source), data/ only defines what a source is.
    assert "bone_age.phantom" in FORBIDDEN["data"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package):
    broken = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        hits = _hits(_imports(path), FORBIDDEN[package])
        if hits:
            broken[str(path.relative_to(ROOT))] = sorted(hits)
    assert not broken


def _import_graph() -> dict[str, set[str]]:
    """Module -> the bone_age modules it imports (``from pkg import name`` counts as importing
    module ``pkg.name`` where that is a module, else ``pkg``)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:  # pkg.name (not a module) -> pkg
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each group of modules that import each other, round or not."""
    cycles, seen = [], set()
    for start in sorted(graph):
        if start in seen:
            continue
        # Breadth first from start: the first way back to it is a shortest cycle through it.
        parents, frontier = {start: None}, [start]
        back = None
        while frontier and back is None:
            following = []
            for node in frontier:
                for target in sorted(graph[node]):
                    if target == start:
                        back = node
                        break
                    if target not in parents:
                        parents[target] = node
                        following.append(target)
                if back is not None:
                    break
            frontier = following
        if back is None:
            continue
        cycle = [back]
        while cycle[-1] != start:
            cycle.append(parents[cycle[-1]])
        cycle = [*reversed(cycle), start]
        seen |= set(cycle)
        cycles.append(cycle)
    return cycles


def test_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = [" -> ".join(cycle) for cycle in _cycles(_import_graph())]
    assert not cycles, "modules that import each other:\n" + "\n".join(cycles)


def test_no_file_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted(ROOT.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"over {MAX_FILE_LINES} lines: " + ", ".join(f"{p} ({n})"
                                                                for p, n in long.items())


def test_no_function_in_train_over_50_lines():
    tree = ast.parse((ROOT / "training" / "train.py").read_text(encoding="utf-8"))
    long = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_TRAIN_FUNCTION_LINES}
    assert not long, f"training/train.py, over {MAX_TRAIN_FUNCTION_LINES} lines: " + \
        ", ".join(f"{name} ({n})" for name, n in long.items())


def _runs(entry: Path) -> set[Path]:
    """The module of the same name a command entry runs (``bone_age/predict.py`` imports its
    ``main`` from ``bone_age/inference/predict.py``)."""
    files = {ROOT.parent.joinpath(*name.split(".")).with_suffix(".py")
             for name in _imports(entry) if name.endswith(f".{entry.stem}")}
    return {f for f in files if f.is_file()}


def test_no_two_modules_share_a_name():
    by_name: dict[str, list[Path]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if path.name not in SHARED_NAMES:
            by_name.setdefault(path.name, []).append(path)
    shared = {}
    for name, paths in by_name.items():
        entry = ROOT / name
        if len(paths) > 1 and not (entry in paths and set(paths) == {entry} | _runs(entry)):
            # Only a command entry and the one module it runs may share a name.
            shared[name] = [str(p.relative_to(ROOT)) for p in paths]
    assert not shared, "modules sharing a name:\n" + "\n".join(
        f"{name}: {', '.join(paths)}" for name, paths in shared.items())


def test_no_package_imports_a_command_entry():
    entries = {f"bone_age.{name}" for name in COMMANDS}
    broken = {str(p.relative_to(ROOT)): sorted(_imports(p) & entries)
              for p in ROOT.rglob("*.py") if p.parent != ROOT and _imports(p) & entries}
    assert not broken


def test_command_entries_are_thin():
    for name in COMMANDS - {"run", "index"}:
        text = (ROOT / f"{name}.py").read_text()
        assert len(text.splitlines()) <= 10, name


def _loaded(code: str) -> set[str]:
    code += "; import sys; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=300, cwd=ROOT.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_predicting_imports_no_training_code():
    # The libraries a predictor needs (timm itself imports wandb where it is installed).
    libraries = _loaded("import numpy, torch, timm, pydicom, tqdm")
    predictor = _loaded("import bone_age.inference.predictor, bone_age.inference.predict, "
                        "bone_age.inference.export")
    added = {m for m in predictor - libraries if not m.startswith("bone_age")}
    roots = {m.split(".")[0] for m in added}
    assert not roots & {"pytorch_lightning", "lightning", "lightning_fabric", "wandb",
                        "matplotlib", "hydra", "omegaconf", "torchmetrics", "tensorboard"}
    assert not {m for m in predictor if m.startswith(("bone_age.training", "bone_age.evaluation"))}


def test_predicting_works_without_training_packages(cohort, tmp_path):
    from bone_age.bench.inference import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.ckpt", "test_resnet", (32, 16))
    out = tmp_path / "p.csv"
    # Hidden as if not installed (a sys.modules entry of None makes their import fail).
    code = ("import sys; sys.modules.update(dict.fromkeys(['wandb', 'matplotlib', "
            "'pytorch_lightning', 'lightning_fabric', 'hydra', 'omegaconf'])); "
            "from bone_age.inference.predict import main; "
            f"assert main([{str(ckpt)!r}, {str(cohort)!r}, '--out', {str(out)!r}]) == 0")
    _loaded(code)
    assert out.read_text().startswith("subject_id,")


def test_installed_command_scripts_start():
    import tomllib

    scripts = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert {name.removeprefix("bone-age-") for name in scripts} >= COMMANDS
    bindir = Path(sys.executable).parent
    if not (bindir / "bone-age-run").exists():
        pytest.skip("scripts not installed in this environment (pip install -e . installs them)")
    for name in scripts:
        done = subprocess.run([str(bindir / name), "--help"], capture_output=True, text=True,
                              timeout=120, cwd=ROOT.parent.parent)
        # Started outside the project: the configs are found wherever the command runs.
        assert done.returncode == 0 and done.stdout.strip(), (name, done.stderr[-500:])
