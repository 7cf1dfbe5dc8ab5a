"""The evaluation's figures: accuracy against eps (white-box, and the black-box eps sweep beside the paper's
values), the distribution of the minimal perturbation per defense, and a grid of clean and adversarial images."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .._io import write_atomic
from .config import ATTACK_LABELS, DEFENSE_LABELS, MASKED, defense_label
from .paper import authors_curve, paper_value
from .report import Results


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy_panels(
    results: Results,
    path: Path,
    attacks: list[str],
    cells_of,
    title: str,
    paper_lines: bool = False,
    authors: str | None = None,
) -> bool:
    """One panel per attack of accuracy against eps, one line per defense (`cells_of(attack)`: the cells;
    `title`: a format string taking the attack's name);
    a log eps axis when the eps span more than a decade (0 left out there); with `paper_lines`, the paper's
    value of each defense as a dashed line of its colour; with `authors` ("blackbox" or "whitebox"), the authors'
    own curve of each defense (MNIST, :func:`.paper.authors_curve`) dotted in its colour, and said in the title of
    the panels that have one."""
    if not attacks:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(attacks), figsize=(6 * len(attacks), 4.4), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        notes: dict[str, None] = {}  # what the panel's dashed and dotted lines are, in the order first drawn
        eps = sorted({c.eps for c in cells_of(attack) if c.eps > 0})
        log = len(eps) > 1 and eps[-1] / eps[0] > 10
        for defense in results.config["defenses"]:
            cells = sorted(
                (c for c in cells_of(attack) if c.defense == defense and (c.eps > 0 or not log)), key=lambda c: c.eps
            )
            if not cells:
                continue
            (line,) = ax.plot([c.eps for c in cells], [c.accuracy for c in cells], marker="o", ms=3)
            line.set_label(DEFENSE_LABELS[defense])
            paper = paper_value(results.paper_dataset, defense, attack) if paper_lines else None
            if paper is not None:
                ax.axhline(paper, color=line.get_color(), linestyle="--", linewidth=0.8)
                notes["dashed: the paper"] = None
            theirs = authors_curve(results.paper_dataset, authors, attack, defense) if authors else {}
            if theirs:
                ax.plot(list(theirs), list(theirs.values()), color=line.get_color(), linestyle=":", marker="x", ms=4)
                notes["dotted: the authors" + (", own gradient" if authors == "whitebox" else "")] = None
        if log:
            ax.set_xscale("log")
        ax.set_title(title.format(ATTACK_LABELS[attack]) + (f" ({'; '.join(notes)})" if notes else ""))
        ax.set_xlabel("eps (L-inf, pixel scale [0, 1]" + (", log axis)" if log else ")"))
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def plot_whitebox(results: Results, path: Path) -> bool:
    """White-box accuracy against eps, one panel per white-box attack, one line per defense (the paper's figure)."""
    attacks = [a for a in results.config["whitebox_attacks"] if results.whitebox(a)]
    title = "White-box {} on " + results.config["dataset"]
    return _accuracy_panels(results, path, attacks, results.whitebox, title, authors="whitebox")


def plot_sweep(results: Results, path: Path) -> bool:
    """Black-box accuracy against eps for FGSM and R+FGSM, one line per defense, the paper's value of each
    defense as a dashed line of its colour (MNIST): where a line crosses its dashed line, the paper's column is met;
    the authors' own curve dotted in the same colour."""
    attacks = [a for a in ("fgsm", "rfgsm") if results.config["blackbox_eps"] and results.blackbox_sweep(a)]
    title = "Black-box {}"
    return _accuracy_panels(results, path, attacks, results.blackbox_sweep, title, paper_lines=True, authors="blackbox")


def plot_examples(
    clean: torch.Tensor,
    adversarial: dict[str, torch.Tensor],
    labels: torch.Tensor,
    predictions: dict[str, torch.Tensor],
    path: Path,
    title: str,
) -> None:
    """A grid: one column per image; the clean row, then one row per attack, each titled with the prediction."""
    plt = _pyplot()

    rows = [("clean", clean)] + list(adversarial.items())
    n = clean.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.45 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            image = images[i].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
            if image.shape[2] == 1:
                ax.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image)
            predicted = int(predictions[name][i])
            ax.set_title(f"{predicted}", fontsize=8, color="green" if predicted == int(labels[i]) else "red")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(ATTACK_LABELS.get(name, name), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def _save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def plot_perturbations(results: Results, path: Path) -> bool:
    """Per attack, a box plot per defense of the minimal white-box perturbation that fooled it (L2 or L0), with
    the share of images fooled under each box."""
    attacks = [a for a in ("deepfool", "cw", "jsma") if any(p.attack == a for p in results.perturbations)]
    if not attacks:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 4.6), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        stats = [
            p
            for masked in (False, True)
            for d in results.config["defenses"]
            for p in results.perturbations
            if (p.defense, p.attack, p.setting == MASKED) == (d, attack, masked)
        ]
        ax.boxplot([p.values or [float("nan")] for p in stats], showfliers=False)
        ax.set_xticks(range(1, len(stats) + 1))
        labels = [defense_label(p.defense, p.setting).replace(" (", "\n(") for p in stats]
        ax.set_xticklabels(
            [f"{label}\n{p.success:.0f}% fooled" for label, p in zip(labels, stats)],
            fontsize=7,
            rotation=45,
            ha="right",
            rotation_mode="anchor",
        )
        ax.set_title(f"White-box {ATTACK_LABELS[attack]}: smallest perturbation that fools")
        ax.set_ylabel("L0 (features changed)" if attack == "jsma" else "L2 (pixel scale [0, 1])")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True
