"""The layout that DESIGN.md sets: imports inside the package point down its layers, never up, and each op has one
file with the same stem in every layer (schema, CPU and CUDA kernels, Triton kernel, reference, backend table,
public function, tests and benchmarks)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import nemesis_fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nemesis_fast"
OPS = ("bounded_relu", "gaussian_augment", "jsma_saliency_search")
BENCH_SUITE = {"jsma_saliency_search": "jsma"}  # one suite for the pair search and the attack built on it

# Each top-level module or subpackage of nemesis_fast by its layer, lowest first: a module imports modules of its
# own layer or of lower ones only. A new module must be placed here.
LAYERS: list[set[str]] = [
    {"_checks", "_version", "_io", "_modes", "_amp", "_progress", "_extension"},
    {"reference", "data", "parallel"},
    {"triton"},
    {"_dispatch", "_info", "_backends"},
    {"ops"},
    {"nn"},
    {"models", "attacks", "certify"},
    {"defenses", "compat"},
    {"checkpoints", "resume", "_training_checks", "_epochs", "_validation_rows", "training"},
    {"paper_models", "bench"},
    {"evaluation"},
    {
        "_cli_certify_records",
        "_cli_certify",
        "_cli_evaluate",
        "_cli_train_options",
        "_cli_train",
        "cli",
        "__init__",
        "__main__",
    },
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """The top-level part of nemesis_fast a dotted module name belongs to (``__init__`` for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> tuple[list[str], bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return (parts[:-1] if is_package else parts), is_package


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def package_imports(path: Path, source: str | None = None) -> set[str]:
    """The nemesis_fast modules the module at `path` (with `source`, default the file's text) imports, at any depth
    of its code (lazy imports inside functions too)."""
    parts, is_package = _module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from .. import ops` imports a submodule, `from . import train` a function
                submodule = f"{module}.{alias.name}"
                found.add(submodule if _is_module(submodule) else module)
    return {m for m in found if m == "nemesis_fast" or m.startswith("nemesis_fast.")}


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_part_of_the_package_has_a_layer():
    units = {_unit(".".join(_module_name(p)[0])) for p in _sources()}
    assert units - set(RANK) == set(), "place the new module in LAYERS"


def test_imports_point_down_the_layers():
    upward = []
    for path in _sources():
        importer = _unit(".".join(_module_name(path)[0]))
        for module in package_imports(path):
            imported = _unit(module)
            if imported in RANK and RANK[imported] > RANK[importer]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []


def test_the_import_reader_sees_relative_lazy_and_submodule_imports():
    probe = PACKAGE / "attacks" / "jsma.py"
    found = package_imports(probe)
    assert {"nemesis_fast.ops", "nemesis_fast._checks", "nemesis_fast._dispatch"} <= found
    assert "nemesis_fast" not in found  # `from .. import ops` is the submodule, not the package
    lazy = "import torch\n\ndef f():\n    from ..evaluation import runner\n    from .. import train\n"
    found = package_imports(PACKAGE / "attacks" / "pgd.py", lazy)
    assert found == {"nemesis_fast.evaluation.runner", "nemesis_fast"}
    assert RANK[_unit("nemesis_fast.evaluation.runner")] > RANK[_unit("nemesis_fast.attacks.jsma")]


@pytest.mark.parametrize("op", OPS)
def test_each_op_has_one_file_of_its_stem_in_every_layer(op):
    files = [
        f"csrc/{op}.h",
        f"csrc/{op}.cpp",
        f"csrc/cpu/{op}.cpp",
        f"csrc/cuda/{op}.cu",
        f"nemesis_fast/reference/{op}.py",
        f"nemesis_fast/triton/{op}.py",
        f"nemesis_fast/_backends/{op}.py",
        f"nemesis_fast/bench/{BENCH_SUITE.get(op, op)}.py",
        f"benchmarks/test_{BENCH_SUITE.get(op, op)}.py",
        f"tests/test_{op}.py",
    ]
    assert [f for f in files if not (ROOT / f).is_file()] == []
    # and each holds that op: its schema, its CPU and CUDA kernels, its Triton op, its public function
    assert re.search(rf'm\.def\(\s*"{op}\(', _text(f"csrc/{op}.cpp"))
    for kernels, key in ((f"csrc/cpu/{op}.cpp", "CPU"), (f"csrc/cuda/{op}.cu", "CUDA")):
        assert f"TORCH_LIBRARY_IMPL(nemesis_fast, {key}, m)" in _text(kernels)
        assert f'm.impl("{op}"' in _text(kernels)
    assert f'@triton_op("nemesis_fast::{op}_triton"' in _text(f"nemesis_fast/triton/{op}.py")
    assert callable(getattr(nemesis_fast.ops, op)) and callable(getattr(nemesis_fast.reference, op))


def _text(relative: str) -> str:
    return (ROOT / relative).read_text()
