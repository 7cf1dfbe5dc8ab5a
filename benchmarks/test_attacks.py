"""pytest-benchmark CPU cases of the attacks (`pytest benchmarks --benchmark-enable`); the side-by-side table
with torchattacks and ART comes from `nemesis-fast bench attacks`."""

from __future__ import annotations

import pytest

from nemesis_fast.bench import attacks as bench
from nemesis_fast.bench.attack_providers import PROVIDERS, bare_provider, nemesis_provider

SPECS = {spec.name: spec for spec in bench.specs("cifar")}


CASES = [(name, "nemesis_fast") for name in ("FGSM", "R+FGSM", "PGD", "DeepFool")]
CASES += [(name, "bare fwd+bwd") for name in ("FGSM", "PGD")]


@pytest.mark.parametrize("name,provider", CASES)
def test_attack_cpu(benchmark, cifar_batch, name, provider):
    model, x, y = cifar_batch
    spec = SPECS[name]
    fn = nemesis_provider(spec, model) if provider == "nemesis_fast" else bare_provider(spec, model)
    assert not isinstance(fn, str), fn
    benchmark.group = f"attack {name}"
    out = benchmark(fn, x, y)
    assert out.shape == x.shape


@pytest.mark.slow
def test_side_by_side_report_is_complete(monkeypatch):
    monkeypatch.delenv("NEMESIS_FAST_MNIST", raising=False)  # which would add its MNIST rows
    report = bench.run("cpu", numel=2, attacks=("FGSM", "DeepFool"))
    rows = {(row.case.split(" ")[0], row.provider): row for row in report.rows}
    assert set(rows) == {(a, p) for a in ("FGSM", "DeepFool") for p in PROVIDERS}
    ours = rows["FGSM", "nemesis_fast"]
    assert ours.ms > 0 and ours.extra["images"] == 2 and 0 <= ours.extra["success"] <= 1
    assert ours.extra["median_linf"] == pytest.approx(8 / 255, abs=1e-6)
    assert rows["DeepFool", "bare fwd+bwd"].ms is None and rows["DeepFool", "bare fwd+bwd"].note
    assert rows["FGSM", "bare fwd+bwd"].speedup == pytest.approx(1.0)
    assert "nemesis_fast" in report.table()
