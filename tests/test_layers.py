"""Imports flow downwards only: each module of ``src/speechstack`` may import modules of its
own layer or the layers below (README, Layers). The import graph is read from the source
(every ``import``, module-level or inside a function), so a new upward import fails here.

``KNOWN_UPWARD`` lists the upward imports that exist today and are still to be removed;
a test fails when one of them is gone, so the list only shrinks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "speechstack"

# lowest first; a module's layer is that of its longest listed prefix
LAYERS: list[set[str]] = [
    {"speechstack", "artifacts", "audio", "registry", "interrupt", "lock"},
    {"config", "params"},
    {
        "features",
        "acoustic",
        "speakers",
        "augment",
        "folds",
        "tasks",
        "data",
        "tta",
        "report",
        "submission",
        "distributed",
        "checkpoint",
        "leaderboard",
        "dashboard",
        "synth",
        "spot",
        "exported",
        "text",
        "transcripts",
        "beam",
    },
    {"models"},
    {"stack"},
    {"pseudo"},
    {"train", "transcribe", "pretrain"},
    {"fold_pool", "inference", "export", "tune", "solution"},
    {"bench"},
    {"cli"},
]

KNOWN_UPWARD: set[tuple[str, str]] = set()  # (importer's top name, imported's top name)


def short(module: str) -> str:
    return module.removeprefix(f"{PACKAGE}.") if module != PACKAGE else PACKAGE


def layer_of(module: str) -> int:
    name = short(module)
    for depth in range(name.count(".") + 1, 0, -1):
        prefix = ".".join(name.split(".")[:depth])
        for index, layer in enumerate(LAYERS):
            if prefix in layer:
                return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from a import b`` counts ``a.b`` when
    that is a module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def upward_imports() -> set[tuple[str, str, str, str]]:
    """(importer, imported, importer's top name, imported's top name) for every import from
    a lower layer to a higher one."""
    known = modules()
    upward = set()
    for module, path in known.items():
        for target in imports(path, set(known)):
            if layer_of(target) > layer_of(module):
                top = (short(module).split(".")[0], short(target).split(".")[0])
                upward.add((module, target, *top))
    return upward


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_imports_flow_downwards() -> None:
    new = sorted(
        f"{importer} imports {imported}"
        for importer, imported, *top in upward_imports()
        if tuple(top) not in KNOWN_UPWARD
    )
    assert new == [], "upward imports (move the code down, or the caller up):\n" + "\n".join(new)


def test_known_upward_imports_still_exist() -> None:
    """When one is fixed, take it off KNOWN_UPWARD so it cannot come back."""
    present = {(top_from, top_to) for _, _, top_from, top_to in upward_imports()}
    assert present >= KNOWN_UPWARD, f"fixed, remove from KNOWN_UPWARD: {KNOWN_UPWARD - present}"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The graph reader sees a function-level import as well as a module-level one."""
    path = tmp_path / "fake.py"
    path.write_text("def f():\n    from speechstack.train import train_fold\n")
    assert imports(path, {"speechstack.train"}) == {"speechstack.train"}
    assert layer_of("speechstack.train") > layer_of("speechstack.stack")


@pytest.mark.parametrize("verb", ["folds", "stack", "submission", "report", "leaderboard"])
def test_light_verbs_start_without_torch(verb: str) -> None:
    """``speechstack <verb> --help`` answers without importing torch (start-up in the
    README, Layers)."""
    code = (
        "import sys\n"
        f"sys.argv = ['speechstack', {verb!r}, '--help']\n"
        "from speechstack.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert "usage: speechstack" in result.stdout
