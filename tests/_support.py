"""Helpers shared by the tests: the (backend, device) cases and the dtypes each op is tested with, the ops that a
compiled call's graphs hold, a function's calls recorded, the MNIST and CIFAR-10 files, the scripts under scripts/ as
modules."""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch._ops import OpOverload

from nemesis_fast import triton as nf_triton
from nemesis_fast._dispatch import OpBackends

HAS_CUDA = torch.cuda.is_available()


def backend_device_cases() -> list:
    """pytest params (backend, device) for every backend on every device, marked cuda / triton."""
    cases = []
    for device in ("cpu", "cuda"):
        for backend in ("native", "triton", "torch"):
            marks = []
            if device == "cuda":
                marks.append(pytest.mark.cuda)
            if backend == "triton":
                marks.append(pytest.mark.triton)
            cases.append(pytest.param(backend, device, marks=marks, id=f"{backend}-{device}"))
    return cases


def reference_comparison_cases() -> list:
    """backend_device_cases() less torch on the CPU, for tests whose expected value is the reference's answer on the
    CPU, which that case would compare with itself (torch on CUDA stays: the reference on another device)."""
    return [case for case in backend_device_cases() if case.values != ("torch", "cpu")]


def fast_backend_cases(*, reference: bool = True) -> list:
    """pytest params (backend, device) without Triton's CPU interpreter (too slow for large shapes, and not
    traceable by torch.compile): native and (with `reference`) torch on the CPU, native and Triton on CUDA."""
    cases = [pytest.param("native", "cpu")]
    if reference:
        cases.append(pytest.param("torch", "cpu"))
    cases.append(pytest.param("native", "cuda", marks=pytest.mark.cuda))
    cases.append(pytest.param("triton", "cuda", marks=[pytest.mark.cuda, pytest.mark.triton]))
    return cases


def require_backend(table: OpBackends, backend: str, device: str) -> None:
    """Skips a case only for what the machine lacks (a GPU, triton itself); fails for anything else."""
    reason = table.unavailable_reason(backend, device)
    if reason is None:
        return
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    if backend == "triton" and not nf_triton.AVAILABLE:
        pytest.skip(reason)
    if backend == "triton" and device == "cpu" and not nf_triton.INTERPRET:
        pytest.skip("Triton runs CPU tensors only under TRITON_INTERPRET=1 (set when no GPU is visible)")
    pytest.fail(f"backend {backend!r} unavailable on {device}: {reason}")


def compile_recording_graphs(fn, backend: str = "inductor", *, dynamic: bool | None = None) -> tuple:
    """(compiled, graphs): fn under torch.compile(fullgraph=True, dynamic=dynamic) with `backend` (a torch.compile
    backend), and the list into which each compilation puts the FX graph that Dynamo traced (read with
    :func:`assert_graphs_call`)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    recorder = CompileCounterWithBackend(backend)
    return torch.compile(fn, fullgraph=True, dynamic=dynamic, backend=recorder), recorder.graphs


def assert_graphs_call(graphs: list, backend: str, op: str) -> None:
    """Each traced graph calls the kernel of `backend` (the op `op`, or `op`_triton) and no other nemesis_fast op;
    for "torch" (the reference, plain torch operations) none: a compiled call that quietly fell back to the
    reference fails here."""
    suffix = "_triton" if backend == "triton" else ""
    wanted = set() if backend == "torch" else {f"nemesis_fast::{op}{suffix}"}
    called = [
        {
            n.target.name()
            for n in g.graph.nodes
            if isinstance(n.target, OpOverload) and n.target.namespace == "nemesis_fast"
        }
        for g in graphs
    ]
    assert graphs and called == [wanted] * len(graphs), (backend, called)


def record_calls(monkeypatch: pytest.MonkeyPatch, module: str, name: str) -> list[tuple]:
    """The function `name` of `module` (a module's dotted name) wrapped, for the test, into one that records the
    positional arguments of each call: the list it records them in."""
    target = importlib.import_module(module)
    original = getattr(target, name)
    calls: list[tuple] = []

    def recorded(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, recorded)
    return calls


def full_mnist_root() -> Path | None:
    """The folder of the full MNIST IDX files: $NEMESIS_FAST_MNIST, else ../shared/data/mnist beside the
    repository; None where neither holds them."""
    root = Path(os.environ.get("NEMESIS_FAST_MNIST") or Path(__file__).resolve().parents[2] / "shared/data/mnist")
    found = (root / "train-images-idx3-ubyte.gz").is_file() or (root / "train-images-idx3-ubyte").is_file()
    return root if found else None


def mnist_root() -> Path:
    """The full MNIST IDX files (see `full_mnist_root`); skips the test when they are missing."""
    root = full_mnist_root()
    if root is None:
        pytest.skip("full MNIST not found in $NEMESIS_FAST_MNIST or ../shared/data/mnist")
    return root


# CIFAR-10 in its Python-pickle format, written by the tests (no copy of CIFAR-10 exists on these machines).


def cifar_batch(n: int, seed: int, *, bytes_keys: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        "batch_label": f"batch {seed}",
        "labels": rng.integers(0, 10, n).tolist(),
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }
    return {k.encode(): v for k, v in batch.items()} if bytes_keys else batch


def write_cifar(folder: Path, n: int = 7, *, meta: bool = True, protocol: int = 2, **replace: object) -> Path:
    """A CIFAR-10 batches folder with `n` images per batch; `replace` maps file names to other objects."""
    folder.mkdir(parents=True, exist_ok=True)
    content: dict[str, object] = {name: cifar_batch(n, i) for i, name in enumerate([*TRAIN_BATCHES, "test_batch"])}
    if meta:
        content["batches.meta"] = {"num_cases_per_batch": n, "label_names": list("abcdefghij"), "num_vis": 3072}
    content.update(replace)
    for name, obj in content.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return folder


TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (with scripts/ importable, as when the script runs)."""
    folder = Path(__file__).resolve().parents[1] / "scripts"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def damage_tensor_bytes(path: Path, tensor: torch.Tensor) -> None:
    """Overwrites, in the torch file at `path`, the first bytes of `tensor`'s data (found by content) with their
    complement: the file stays a readable archive, with other numbers in it."""
    raw = bytearray(path.read_bytes())
    data = tensor.detach().contiguous().cpu().numpy().tobytes()
    at = raw.find(data)
    assert at >= 0 and len(data) >= 4, "the tensor's bytes are not in the file"
    raw[at : at + 4] = bytes(255 - b for b in raw[at : at + 4])
    path.write_bytes(bytes(raw))


def script_sandbox(tmp_path: Path, script: Path, place: str, python3: str) -> tuple[Path, Path, Path]:
    """A copy of the shell `script` at `tmp_path`/repo/`place`, with `python3` (a shell script's text) as the
    python3 of `tmp_path`/bin, a fresh call log and a `tmp_path`/tmp folder: (repo, bin folder, log path)."""
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    (repo / place).parent.mkdir(parents=True, exist_ok=True)
    (repo / place).write_text(script.read_text())
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(python3)
    (bin_dir / "python3").chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return repo, bin_dir, log
