"""plots: the sweep's line per defense in eps order, a log eps axis only beyond a decade (eps 0 then left out),
linear with eps 0 kept otherwise, and the paper's value as the dashed line."""

import pytest

from nemesis_fast.evaluation import load_config, plots
from nemesis_fast.evaluation.paper import paper_value
from nemesis_fast.evaluation.report import Cell, Results


def _figure(monkeypatch, eps_accuracy):
    cells = [Cell("standard", "fgsm", "blackbox", e, a, 1000, 0.0, 0.0, 0.0, 0.0) for e, a in eps_accuracy]
    config = load_config(overrides={"defenses": ["standard"], "blackbox_eps": [e for e, _ in eps_accuracy]})
    results = Results(config=config.to_dict(), version="t", device="cpu", world_size=1, cells=cells)
    saved = []
    monkeypatch.setattr(plots, "_save_figure", lambda fig, path: saved.append(fig))
    monkeypatch.setattr(plots, "authors_curve", lambda *args: {})  # the run's line and the paper's only
    assert plots.plot_sweep(results, "unused.png")
    (ax,) = saved[0].axes[:1]
    return ax


def test_a_sweep_within_a_decade_is_linear_with_eps_zero(monkeypatch):
    ax = _figure(monkeypatch, [(0.3, 30.0), (0.0, 99.0), (0.05, 95.0), (0.1, 90.0)])  # 0.3 / 0.05 = 6
    assert ax.get_xscale() == "linear"
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 0.05, 0.1, 0.3] and list(line.get_ydata()) == [99.0, 95.0, 90.0, 30.0]
    dashed = [l for l in ax.get_lines() if l.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(paper_value("mnist", "standard", "fgsm"))


def test_a_sweep_beyond_a_decade_is_on_a_log_axis_without_eps_zero(monkeypatch):
    ax = _figure(monkeypatch, [(0.0, 99.0), (0.3, 30.0), (0.02, 97.0)])  # 0.3 / 0.02 = 15
    assert ax.get_xscale() == "log"
    assert list(ax.get_lines()[0].get_xdata()) == [0.02, 0.3]
