"""The package layout: imports run one way, and the release's architecture file is the source.

Each folder of pyproject's ``package-dir`` is a layer; lowest first (docs/architecture.md):
physics <- the shared root modules <- simulation <- evaluation <- model <- training <- the
command line (``srunet/cli.py``, ``srunet/commands.py``, ``srunet/__main__.py``). A module may import its own folder and
the folders below it. Every import counts, including those inside functions, so a cycle cannot
hide in a lazy import.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDER_ORDER = ["srunet/physics", "srunet", "srunet/simulation", "evaluation", "model", "training"]
COMMAND_LINE = {"srunet.cli", "srunet.commands", "srunet.__main__"}  # above every folder
STDLIB = set(sys.stdlib_module_names)


def _folders() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in _folders().items():
        for path in sorted((ROOT / folder).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _layer(module: str) -> int:
    if module in COMMAND_LINE:
        return len(FOLDER_ORDER)
    folder = _modules()[module].parent.relative_to(ROOT).as_posix()
    return FOLDER_ORDER.index(folder)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from srunet import contract` imports the module srunet.physics.contract
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_layout_maps_every_folder():
    modules = _modules()
    for expected in ("srunet.cli", "srunet.physics.contract", "srunet.geometry", "srunet.files",
                     "srunet.tiff", "srunet.model.unet", "srunet.model.export",
                     "srunet.training.train", "srunet.evaluation.report"):
        assert expected in modules, expected


def test_no_upward_imports():
    upward = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
              for name, targets in _graph().items() for target in targets
              if _layer(target) > _layer(name)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_architecture_file_imports_only_torch_and_stdlib():
    """Zoo consumers load model/unet.py on its own: nothing of srunet, numpy, etc."""
    for name in _imports(ROOT / "model" / "unet.py"):
        top = name.split(".")[0]
        assert top == "torch" or top in STDLIB or name == "__future__", name


def test_release_architecture_equals_source():
    """The release's unet.py is the architecture file it claims to be, byte for byte."""
    release = ROOT / "model" / "release" / "unet.py"
    assert release.is_file(), f"the committed release lacks its architecture file {release}"
    assert release.read_bytes() == (ROOT / "model" / "unet.py").read_bytes(), (
        "model/release/unet.py differs from model/unet.py: re-export the release "
        "(`srunet package --release --overwrite`) with the weights trained for this architecture")
