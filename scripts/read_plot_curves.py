"""Read the curves of line plots saved as PNG outputs in a Jupyter notebook (the seed's authors kept their
black-box and white-box accuracy figures only as such plots: notebooks/experiment2.ipynb of 17 July 2017 in the
history of the Adversarial Robustness Toolbox, c7a44acc8).

Each line is found by its colour (matplotlib's default cycle, in the order the lines were drawn), at each x
of the grid, among the pixels of that colour within 2 pixel columns of x, as the mean of the rows its marker
fills (those with at least 60% of the widest row's pixels, not the slanting line's); the axes' frame is
the longest dark row and column pair; the legend's box (its light grey frame) is left out. A value is printed
as "-" where another line or the legend hides that one, or where that colour shows at two places. Read
against a plot of known values (tests/test_read_plot_curves.py), the error is under 1 point on a 0-100 axis.

    git -C art show c7a44acc8:notebooks/experiment2.ipynb > experiment2.ipynb
    python scripts/read_plot_curves.py experiment2.ipynb --labels CNN LS FS "G ReLU" "G BReLU" "FGSM AT" VAT
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
COLOUR_TOLERANCE = 0.12  # summed absolute RGB difference (0-3) that still counts as the line's colour
DARK = 1.0  # summed RGB below which a pixel belongs to the axes' frame
MAX_GAP = 3  # rows: pixels of the line's colour further apart than this are two things, and the value unknown


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def frame(image: np.ndarray) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pixel indices of the axes' frame: the two columns and two rows with the most
    dark pixels, each pair at least a third of the image apart."""
    dark = image.sum(-1) < DARK
    cols, rows = dark.sum(0), dark.sum(1)

    def pair(counts: np.ndarray) -> tuple[int, int]:
        first = int(counts.argmax())
        far = np.abs(np.arange(len(counts)) - first) >= len(counts) // 3
        second = int(np.where(far, counts, -1).argmax())
        return min(first, second), max(first, second)

    left, right = pair(cols)
    top, bottom = pair(rows)
    return left, right, top, bottom


def legend_box(image: np.ndarray, frame_box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """(left, right, top, bottom) of the legend: the light grey frame matplotlib draws around it (edge colour
    0.8), found as the rows and columns inside the axes with long runs of grey; None when there is none."""
    left, right, top, bottom = frame_box
    inner = image[top + 2 : bottom - 1, left + 2 : right - 1]
    level = inner.mean(-1)
    grey = (np.abs(inner - level[..., None]).sum(-1) < 0.03) & (level > 0.7) & (level < 0.9)
    rows = np.nonzero(grey.sum(1) > 0.08 * grey.shape[1])[0]
    cols = np.nonzero(grey.sum(0) > 0.08 * grey.shape[0])[0]
    if len(rows) < 2 or len(cols) < 2:
        return None
    return left + 2 + cols.min(), left + 2 + cols.max(), top + 2 + rows.min(), top + 2 + rows.max()


def read_curves(
    image: np.ndarray,
    xs: Sequence[float],
    labels: Sequence[str],
    *,
    xlim: tuple[float, float] = (0.0, 1.0),
    ylim: tuple[float, float] = (0.0, 100.0),
    colours: Sequence[str] = DEFAULT_COLOURS,
) -> dict[str, list[float | None]]:
    """Per label, the curve's value at each x of `xs` (None where no pixel of its colour is there).

    image: (height, width, 3 or 4) floats in [0, 1]; xlim, ylim: the axes' limits in data units.
    """
    if len(labels) > len(colours):
        raise ValueError(f"labels: {len(labels)} lines, but only {len(colours)} colours")
    rgb = image[..., :3]
    left, right, top, bottom = frame(rgb)
    legend = legend_box(rgb, (left, right, top, bottom))
    curves: dict[str, list[float | None]] = {}
    for label, colour in zip(labels, colours):
        near = np.abs(rgb - _rgb(colour)).sum(-1) < COLOUR_TOLERANCE
        if legend is not None:  # the legend's samples of each line are not the line
            near[legend[2] : legend[3] + 1, legend[0] : legend[1] + 1] = False
        values: list[float | None] = []
        for x in xs:
            col = round(left + (x - xlim[0]) / (xlim[1] - xlim[0]) * (right - left))
            window = near[top - 4 : bottom + 5, max(col - 2, 0) : col + 3]
            counts = window.sum(1)
            hit_rows = np.nonzero(counts)[0]
            if len(hit_rows) == 0 or np.diff(hit_rows).max(initial=0) > MAX_GAP:
                values.append(None)  # hidden, or pixels of that colour at two places (the legend's sample)
                continue
            # the marker: the rows where the colour fills (nearly) the window's width, not the line's slant
            marker_rows = np.nonzero(counts >= 0.6 * counts.max())[0] + top - 4
            fraction = (bottom - marker_rows.mean()) / (bottom - top)
            values.append(float(ylim[0] + fraction * (ylim[1] - ylim[0])))
        curves[label] = values
    return curves


def notebook_plots(path: str | Path) -> list[tuple[int, str, np.ndarray]]:
    """(cell index, the cell's first source line, image) for every PNG output of the notebook at `path`."""
    import matplotlib.image as mpimg

    notebook = json.loads(Path(path).read_text())
    if not isinstance(notebook, dict) or "cells" not in notebook:
        raise ValueError(f"notebook: {path} is not a Jupyter notebook (no 'cells')")
    cells = notebook["cells"]
    plots = []
    for index, cell in enumerate(cells):
        source = "".join(cell.get("source", [])).strip().splitlines()
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                image = mpimg.imread(io.BytesIO(base64.b64decode(png)), format="png")
                plots.append((index, source[0] if source else "", image))
    return plots


def markdown_table(curves: dict[str, list[float | None]], xs: Sequence[float]) -> str:
    lines = ["| x | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    for i, x in enumerate(xs):
        cells = ["-" if c[i] is None else f"{c[i]:.1f}" for c in curves.values()]
        lines.append(f"| {x:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="a .ipynb file")
    parser.add_argument("--labels", nargs="+", required=True, help="the lines, in the order they were drawn")
    parser.add_argument("--xs", nargs="+", type=float, default=[i / 10 for i in range(11)], help="x of each value")
    parser.add_argument("--xlim", nargs=2, type=float, default=(0.0, 1.0))
    parser.add_argument("--ylim", nargs=2, type=float, default=(0.0, 100.0))
    args = parser.parse_args(argv)
    for index, first_line, image in notebook_plots(args.notebook):
        curves = read_curves(image, args.xs, args.labels, xlim=tuple(args.xlim), ylim=tuple(args.ylim))
        print(f"cell {index}: {first_line}\n\n{markdown_table(curves, args.xs)}\n")


if __name__ == "__main__":
    main()
