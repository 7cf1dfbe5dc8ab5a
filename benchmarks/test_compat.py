"""pytest-benchmark CPU cases of the drop-in classes (`pytest benchmarks --benchmark-enable`); the side-by-side table
against torchattacks and ART through their own APIs comes from `nemesis-fast bench compat`."""

from __future__ import annotations

import pytest

from nemesis_fast.bench import compat as bench
from nemesis_fast.bench.harness import Report

pytest.importorskip("torchattacks")
pytest.importorskip("art")


@pytest.mark.parametrize("name", ["torchattacks DeepFool", "torchattacks JSMA", "ART DeepFool"])
def test_compat_cpu(benchmark, cifar_batch, name):
    model, x, y = cifar_batch
    pairs = {pair.name: pair for pair in [*bench.torchattacks_pairs(model, False), *bench.art_pairs(model, x, False)]}
    attack = pairs[name].ours()
    benchmark.group = f"compat {name}"
    out = benchmark(attack, x, y)
    assert out.shape == x.shape


def test_torchattacks_jsma_memory_grows_as_n_squared():
    """The formula behind the 3x224x224 row: torchattacks' bytes per feature pair do not depend on n."""
    small, large = (bench.torchattacks_jsma_peak_bytes(n) / n**2 for n in (256, 1024))
    assert 8 < large < 64 and small == pytest.approx(large, rel=0.2)


@pytest.mark.slow
def test_side_by_side_report_is_complete(cifar_batch):
    model, x, y = cifar_batch
    report = Report("compat", "cpu")
    for pair in bench.torchattacks_pairs(model, False)[:2]:  # FGSM and PGD
        bench.measure_pair(report, pair, x, y)
    rows = {(row.case, row.provider): row for row in report.rows}
    ours = rows["torchattacks FGSM", "nemesis_fast.compat"]
    assert ours.ms > 0 and ours.extra["max_diff"] == 0 and ours.speedup > 0
    assert rows["torchattacks PGD", "nemesis_fast.compat"].extra["max_diff"] == 0
    assert "nemesis_fast.compat" in report.table()


def test_the_smoothing_case_times_both_sides_through_arts_call(cifar_batch):
    model, x, _ = cifar_batch
    report = Report("compat", "cpu")
    bench.smoothing_case(report, model, x[:1], 20)
    peer, ours = report.rows
    assert (peer.provider, ours.provider) == ("peer", "nemesis_fast.compat")
    assert peer.ms > 0 and ours.ms > 0 and ours.speedup == pytest.approx(peer.ms / ours.ms)
    assert "n 20" in ours.case and ours.item_name == "image"
