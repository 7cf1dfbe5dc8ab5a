"""scripts/read_plot_curves.py against plots of known curves, drawn as the seed's authors drew theirs
(matplotlib's default style, markers, axes 0-1 x 0-100, a legend) and stored in a notebook."""

import base64
import io
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _support import load_script  # noqa: E402

read_plot_curves = load_script("read_plot_curves")

XS = [i / 10 for i in range(11)]
CURVES = {  # far enough apart at every x that no line hides another
    "a": [98.0, 94.0, 68.0, 31.0, 12.0, 6.0, 4.0, 3.0, 3.0, 3.0, 3.0],
    "b": [60.0, 58.0, 52.0, 47.0, 45.0, 44.0, 43.5, 43.0, 42.0, 41.0, 40.0],
    "c": [80.0, 78.5, 95.0, 88.0, 76.0, 25.0, 21.0, 20.0, 19.0, 18.0, 17.0],
}


def _png(curves: dict[str, list[float]], size=(6.0, 4.0), dpi: int = 72, markers: str = "o^s") -> bytes:
    figure = plt.figure(figsize=size, dpi=dpi)
    for (label, ys), marker in zip(curves.items(), markers):
        plt.plot(XS, ys, label=label, marker=marker)
    plt.xlim([0, 1])
    plt.ylim([0, 100])
    plt.legend(loc="upper right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def _notebook(tmp_path: Path, pngs: list[bytes]) -> Path:
    cells = [
        {
            "cell_type": "code",
            "source": [f"print('figure {i}')\n", "plt.plot()"],
            "outputs": [{"output_type": "display_data", "data": {"image/png": base64.b64encode(png).decode()}}],
        }
        for i, png in enumerate(pngs)
    ]
    path = tmp_path / "figures.ipynb"
    path.write_text(json.dumps({"cells": cells + [{"cell_type": "markdown", "source": ["text"]}]}))
    return path


@pytest.mark.parametrize("size, dpi", [((6.0, 4.0), 72), ((8.0, 5.0), 100)])
def test_reads_the_curves_of_a_known_plot_within_one_point(tmp_path, size, dpi):
    plots = read_plot_curves.notebook_plots(_notebook(tmp_path, [_png(CURVES, size, dpi)]))
    assert [(index, first) for index, first, _ in plots] == [(0, "print('figure 0')")]
    read = read_plot_curves.read_curves(plots[0][2], XS, list(CURVES))
    for label, truth in CURVES.items():
        got = read[label]
        assert all(v is not None for v in got[:-2]), (label, got)  # the legend may hide the last points
        seen = [(g, t) for g, t in zip(got, truth) if g is not None]
        assert max(abs(g - t) for g, t in seen) < 1.0, (label, got, truth)


def test_a_hidden_point_is_none_not_a_guess(tmp_path):
    same = {"a": CURVES["a"], "b": CURVES["a"]}  # b drawn exactly over a: a is hidden everywhere
    plots = read_plot_curves.notebook_plots(_notebook(tmp_path, [_png(same, markers="oo")]))
    read = read_plot_curves.read_curves(plots[0][2], XS, ["a", "b"])
    assert read["a"] == [None] * len(XS)
    assert max(abs(g - t) for g, t in zip(read["b"][:-2], CURVES["a"][:-2])) < 1.0


def test_other_limits_and_too_many_labels(tmp_path):
    plots = read_plot_curves.notebook_plots(_notebook(tmp_path, [_png(CURVES)]))
    image = plots[0][2]
    halved = read_plot_curves.read_curves(image, XS, list(CURVES), ylim=(0.0, 50.0))
    full = read_plot_curves.read_curves(image, XS, list(CURVES))
    assert np.allclose(np.array(halved["a"][:9]) * 2, full["a"][:9])
    with pytest.raises(ValueError, match="labels: 9 lines, but only 8 colours"):
        read_plot_curves.read_curves(image, XS, [str(i) for i in range(9)])


def test_the_command_prints_one_table_per_plot(tmp_path, capsys):
    path = _notebook(tmp_path, [_png(CURVES), _png(CURVES)])
    read_plot_curves.main([str(path), "--labels", "a", "b", "c"])
    out = capsys.readouterr().out
    assert out.count("| x | a | b | c |") == 2 and "cell 1: print('figure 1')" in out
    assert "| 0.3 | 31.0 | 47.0 | 88.0 |" in out or "| 0.3 | 3" in out


def test_a_file_that_is_not_a_notebook_is_refused_by_name(tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"data": []}))
    with pytest.raises(ValueError, match="notebook: .*plain.json is not a Jupyter notebook"):
        read_plot_curves.notebook_plots(path)
