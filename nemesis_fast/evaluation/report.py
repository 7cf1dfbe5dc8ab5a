"""What an evaluation produces: the results record, its tables (terminal, markdown, CSV, JSON) and pictures
(accuracy against eps for each defense, and a grid of clean and adversarial images with predictions)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import write_atomic
from .config import ATTACK_LABELS, DEFENSE_LABELS


@dataclass
class Cell:
    """The accuracy of one defense under one attack, with the perturbation sizes and the time it took."""

    defense: str
    attack: str
    setting: str  # "blackbox", "whitebox" or "whitebox-gradient-masking"
    eps: float | None
    accuracy: float  # percent of the attacked test images still classified correctly
    samples: int
    mean_l2: float
    mean_linf: float
    mean_l0: float
    seconds: float

    @property
    def label(self) -> str:
        return ATTACK_LABELS[self.attack] + (
            f" eps={self.eps:g}" if self.eps is not None and self.setting != "blackbox" else ""
        )


@dataclass
class Results:
    config: dict[str, Any]
    version: str
    device: str
    world_size: int
    clean_accuracy: dict[str, float] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def blackbox(self) -> list[Cell]:
        return [c for c in self.cells if c.setting == "blackbox"]

    def whitebox(self, attack: str, setting: str = "whitebox") -> list[Cell]:
        return [c for c in self.cells if c.setting == setting and c.attack == attack]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cells": [asdict(c) for c in self.cells]}


def blackbox_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses; columns: clean accuracy and one per black-box attack (accuracy in percent)."""
    attacks = results.config["blackbox_attacks"]
    header = ["defense", "clean", *(ATTACK_LABELS[a] for a in attacks)]
    rows = []
    for defense in results.config["defenses"]:
        cells = {c.attack: c for c in results.blackbox() if c.defense == defense}
        row = [DEFENSE_LABELS[defense], _pct(results.clean_accuracy.get(defense))]
        row += [_pct(cells[a].accuracy) if a in cells else "" for a in attacks]
        rows.append(row)
    return header, rows


def whitebox_table(results: Results, attack: str) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses (then gradient-masking rows where present); columns: eps; accuracy in percent."""
    eps_values = results.config["whitebox_eps"]
    header = ["defense", *(f"eps {e:.3g}" for e in eps_values)]
    rows = []
    for setting, suffix in (("whitebox", ""), ("whitebox-gradient-masking", " (gradient masking)")):
        for defense in results.config["defenses"]:
            cells = {c.eps: c for c in results.whitebox(attack, setting) if c.defense == defense}
            if cells:
                rows.append(
                    [
                        DEFENSE_LABELS[defense] + suffix,
                        *(_pct(cells[e].accuracy) if e in cells else "" for e in eps_values),
                    ]
                )
    return header, rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary(results: Results) -> str:
    """The tables as a person reads them in the terminal."""
    parts = [
        f"nemesis_fast {results.version} on {results.device} ({results.world_size} process(es)), "
        f"dataset {results.config['dataset']}, {results.cells[0].samples if results.cells else 0} test images"
    ]
    if results.blackbox():
        parts += [
            "",
            "Black-box accuracy (%) of each defense, attacks crafted on a ResNet source:",
            render_text(*blackbox_table(results)),
        ]
    for attack in results.config["whitebox_attacks"]:
        header, rows = whitebox_table(results, attack)
        if rows:
            parts += ["", f"White-box {ATTACK_LABELS[attack]} accuracy (%) against eps:", render_text(header, rows)]
    if results.seconds:
        parts += ["", "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in results.seconds.items())]
    return "\n".join(parts)


def markdown(results: Results) -> str:
    parts = [
        f"# Robustness evaluation ({results.config['dataset']})",
        "",
        f"nemesis_fast {results.version}, {results.device}.",
        "",
    ]
    if results.blackbox():
        parts += ["## Black-box accuracy (%)", "", render_markdown(*blackbox_table(results)), ""]
    for attack in results.config["whitebox_attacks"]:
        header, rows = whitebox_table(results, attack)
        if rows:
            parts += [f"## White-box {ATTACK_LABELS[attack]} accuracy (%)", "", render_markdown(header, rows), ""]
    parts += ["## Mean perturbation size", "", render_markdown(*norms_table(results)), ""]
    return "\n".join(parts)


def norms_table(results: Results) -> tuple[list[str], list[list[str]]]:
    header = ["defense", "attack", "setting", "eps", "accuracy", "mean L2", "mean Linf", "mean L0", "seconds"]
    rows = [
        [
            DEFENSE_LABELS[c.defense],
            ATTACK_LABELS[c.attack],
            c.setting,
            "" if c.eps is None else f"{c.eps:g}",
            _pct(c.accuracy),
            f"{c.mean_l2:.3f}",
            f"{c.mean_linf:.3f}",
            f"{c.mean_l0:.1f}",
            f"{c.seconds:.1f}",
        ]
        for c in results.cells
    ]
    return header, rows


def to_csv(results: Results) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = [
        "defense",
        "attack",
        "setting",
        "eps",
        "accuracy",
        "samples",
        "mean_l2",
        "mean_linf",
        "mean_l0",
        "seconds",
    ]
    writer.writerow(fields)
    for cell in results.cells:
        writer.writerow([getattr(cell, f) if getattr(cell, f) is not None else "" for f in fields])
    return buffer.getvalue()


def plot_whitebox(results: Results, path: Path) -> bool:
    """Accuracy against eps, one panel per white-box attack, one line per defense (the paper's figure)."""
    attacks = [a for a in results.config["whitebox_attacks"] if results.whitebox(a)]
    if not attacks:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 4.2), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for defense in results.config["defenses"]:
            cells = sorted((c for c in results.whitebox(attack) if c.defense == defense), key=lambda c: c.eps)
            if cells:
                ax.plot([c.eps for c in cells], [c.accuracy for c in cells], marker="o", label=DEFENSE_LABELS[defense])
        ax.set_title(f"White-box {ATTACK_LABELS[attack]} ({results.config['dataset']})")
        ax.set_xlabel("eps (L-inf, pixel scale [0, 1])")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def plot_examples(
    clean: torch.Tensor,
    adversarial: dict[str, torch.Tensor],
    labels: torch.Tensor,
    predictions: dict[str, torch.Tensor],
    path: Path,
    title: str,
) -> None:
    """A grid: one column per image; the clean row, then one row per attack, each titled with the prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_outputs(results: Results, out_dir: Path) -> dict[str, Path]:
    """results.json, results.csv, results.md and whitebox.png under `out_dir`, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
    }
    write_atomic(paths["json"], json.dumps(results.to_dict(), indent=2).encode())
    write_atomic(paths["csv"], to_csv(results).encode())
    write_atomic(paths["markdown"], markdown(results).encode())
    if plot_whitebox(results, out_dir / "whitebox.png"):
        paths["plot"] = out_dir / "whitebox.png"
    return paths
