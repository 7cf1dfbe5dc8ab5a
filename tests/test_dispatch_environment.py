"""NEMESIS_FAST_BACKEND: "auto" (documented in _dispatch.default_backend) means the automatic choice, and an error
about a backend the variable names names the variable, not the backend= argument."""

from __future__ import annotations

import pytest
import torch

import nemesis_fast as nf
from nemesis_fast._backends.bounded_relu import BACKENDS
from nemesis_fast._dispatch import ENV_VAR, default_backend


def test_auto_is_the_automatic_choice(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    automatic = BACKENDS.select(torch.device("cpu"), None)
    for value in ("auto", " auto ", ""):
        monkeypatch.setenv(ENV_VAR, value)
        assert default_backend() is None
        assert BACKENDS.select(torch.device("cpu"), None) is automatic


def test_a_backend_the_variable_names_that_cannot_run_is_blamed_on_the_variable(monkeypatch):
    if BACKENDS.unavailable_reason("triton", "cpu") is None:
        pytest.skip("Triton runs on CPU tensors here")
    monkeypatch.setenv(ENV_VAR, "triton")
    with pytest.raises(ValueError, match=r"^NEMESIS_FAST_BACKEND='triton' cannot run"):
        BACKENDS.select(torch.device("cpu"), None)
    with pytest.raises(ValueError, match=r"^backend='triton' cannot run"):
        BACKENDS.select(torch.device("cpu"), "triton")


def test_an_interpreter_that_cannot_run_is_an_unavailable_backend(monkeypatch):
    """Triton before 3.7 with numpy 2.4 (the GPU machine's torch 2.11 stack, as pip resolves it): its interpreter
    fails inside every kernel, so the backend is unavailable on the CPU with that reason: backend="triton" is refused
    up front, naming it, and backend_info() gives it (the tests' lists of backends ask the same unavailable_reason)."""
    import nemesis_fast.triton as nf_triton

    if not (nf_triton.AVAILABLE and nf_triton.INTERPRET):
        pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1 with triton installed)")
    problem = "Triton 3.6.0's interpreter fails on numpy 2.5.5 (needs triton >= 3.7)"
    monkeypatch.setattr(nf_triton, "INTERPRETER_PROBLEM", problem)
    assert BACKENDS.unavailable_reason("triton", "cpu") == problem
    with pytest.raises(ValueError, match=r"^backend='triton' cannot run .*needs triton >= 3\.7"):
        nf.bounded_relu(torch.randn(4), 1.0, backend="triton")
    assert nf.backend_info()["triton"]["unavailable"]["cpu"] == problem


def _interpreter_problem_with(monkeypatch, versions: dict[str, str]) -> str | None:
    import importlib.metadata

    import nemesis_fast.triton as nf_triton

    def version(name: str) -> str:
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    return nf_triton._interpreter_problem()


@pytest.mark.parametrize(
    "triton,numpy,problem",
    [
        ("3.6.0", "2.4.0", "Triton 3.6.0's interpreter fails on numpy 2.4.0 (needs triton >= 3.7)"),
        ("2.1.0", "2.5.1", "Triton 2.1.0's interpreter fails on numpy 2.5.1 (needs triton >= 3.7)"),
        ("3.6.0", "2.3.5", None),
        ("3.7.0", "2.4.0", None),
        ("3.10.1", "3.0.0", None),  # by number, not by text
        ("2.9.0", "1.26.4", None),
        ("3.6.0", None, None),  # not installed: no reason to refuse
        ("3.x", "2.4.0", None),  # a version that is not numbers: no reason to refuse
    ],
)
def test_the_interpreter_problem_is_triton_before_3_7_with_numpy_2_4(triton, numpy, problem, monkeypatch):
    versions = {name: v for name, v in (("triton", triton), ("numpy", numpy)) if v is not None}
    assert _interpreter_problem_with(monkeypatch, versions) == problem


def test_the_interpreter_problem_is_found_at_import_under_the_interpreter(monkeypatch):
    """INTERPRETER_PROBLEM is what unavailable_reason("cpu") gives: found when the module is imported with
    TRITON_INTERPRET=1 (here the module is imported again with such versions, then once more as it was)."""
    import importlib
    import importlib.metadata

    import nemesis_fast.triton as nf_triton

    if not nf_triton.AVAILABLE:
        pytest.skip("triton is not installed")
    versions = {"triton": "3.6.0", "numpy": "2.4.0"}
    try:
        with monkeypatch.context() as patch:
            patch.setenv("TRITON_INTERPRET", "1")
            patch.setattr(importlib.metadata, "version", versions.__getitem__)
            importlib.reload(nf_triton)
            problem = "Triton 3.6.0's interpreter fails on numpy 2.4.0 (needs triton >= 3.7)"
            assert (nf_triton.INTERPRETER_PROBLEM, nf_triton.unavailable_reason("cpu")) == (problem, problem)
    finally:
        importlib.reload(nf_triton)  # the installed versions and this run's TRITON_INTERPRET again
