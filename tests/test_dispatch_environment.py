"""NEMESIS_FAST_BACKEND: "auto" (documented in _dispatch.default_backend) means the automatic choice, and an error
about a backend the variable names names the variable, not the backend= argument."""

from __future__ import annotations

import pytest
import torch

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
