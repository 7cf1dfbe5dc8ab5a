"""What an evaluation produces: the results record, its tables (terminal, markdown, CSV, JSON) and pictures
(accuracy against eps for each defense, and a grid of clean and adversarial images with predictions)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import write_atomic
from .certified import CertifiedAccuracy, certified_csv, plot_certified
from .config import ATTACK_LABELS, OUTPUT_FILES
from .tables import blackbox_table, norms_table, sections

QUARTILES = (0.25, 0.5, 0.75)


@dataclass
class Cell:
    """The accuracy of one defense under one attack, with the perturbation sizes and the time it took."""

    defense: str
    attack: str
    setting: str  # "blackbox", "whitebox" (BPDA or the own gradient, whichever fools, where both apply) or MASKED
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
class Perturbation:
    """The white-box minimal perturbation of one attack against one defense, over the test images the defense
    classifies correctly: quartiles of its norm (L2 for DeepFool and C&W, L0 in features for JSMA), counting
    an image the attack could not fool as infinitely far."""

    defense: str
    attack: str
    norm: str  # "l2" or "l0"
    samples: int  # correctly classified test images attacked
    success: float  # percent of them fooled
    q25: float
    median: float
    q75: float
    seconds: float
    values: list[float] = field(default_factory=list)  # the norm of every fooled image, for the figure
    setting: str = "whitebox"  # or "whitebox-gradient-masking": through the defense's own gradient


def perturbation_stats(
    defense: str,
    attack: str,
    norm: torch.Tensor,
    fooled: torch.Tensor,
    clean_correct: torch.Tensor,
    seconds: float,
    setting: str = "whitebox",
) -> Perturbation:
    """Quartiles of `norm` over the images with `clean_correct`, the ones not `fooled` taken as infinite."""
    kind = "l0" if attack == "jsma" else "l2"
    norm, fooled = norm[clean_correct].double(), fooled[clean_correct]
    distances = torch.where(fooled, norm, torch.full_like(norm, math.inf))
    if distances.numel():
        q25, median, q75 = (distances.sort().values[int(q * (len(distances) - 1) + 0.5)].item() for q in QUARTILES)
    else:
        q25 = median = q75 = math.nan
    success = 100 * fooled.float().mean().item() if fooled.numel() else math.nan
    values = norm[fooled].tolist()
    return Perturbation(defense, attack, kind, len(norm), success, q25, median, q75, seconds, values, setting)


@dataclass
class Results:
    config: dict[str, Any]
    version: str
    device: str
    world_size: int  # processes
    threads: int = 0  # torch's CPU threads per process (process 0's)
    clean_accuracy: dict[str, float] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    perturbations: list[Perturbation] = field(default_factory=list)
    certified: list[CertifiedAccuracy] = field(default_factory=list)  # randomized smoothing, per defense
    # Per defense, percent of (test image, other class) pairs with softmax probability 0 (checks.softmax_underflow),
    # where JSMA follows the softmax's gradient.
    softmax_underflow: dict[str, float] = field(default_factory=dict)
    # Per defense, percent of test images whose white-box FGSM loss gradient is exactly 0 (checks.fgsm_zero_gradient),
    # where white-box FGSM runs.
    fgsm_zero_gradient: dict[str, float] = field(default_factory=dict)
    # Units of work not computed yet: > 0 only in a report of an unfinished run (evaluate(cached_only=True)),
    # which leaves out every cell, row and model that is not complete.
    pending: int = 0
    # Digests of the training and test sets (Dataset.fingerprint): an out_dir holding results of other data is refused.
    data: dict[str, str] = field(default_factory=dict)
    # False where the run's test images are not MNIST's (other data in its format, synthetic data): the tables and
    # plots then set neither the paper's values nor the authors' curves beside its cells.
    paper_data: bool = True

    @property
    def paper_dataset(self) -> str:
        """The data set whose published numbers apply to this run's cells ("mnist"), or "" where none do."""
        return self.config["dataset"] if self.paper_data else ""

    def blackbox(self) -> list[Cell]:
        """The cells of the black-box table: each attack at its configured budget."""
        a = self.config["attack"]
        budget = {"fgsm": a["fgsm_eps"], "rfgsm": a["rfgsm_eps"]}
        return [
            c for c in self.cells if c.setting == "blackbox" and (c.attack not in budget or c.eps == budget[c.attack])
        ]

    def blackbox_sweep(self, attack: str) -> list[Cell]:
        """The black-box cells of `attack` (FGSM or R+FGSM) at every eps of the run."""
        return [c for c in self.cells if c.setting == "blackbox" and c.attack == attack]

    def whitebox(self, attack: str, setting: str = "whitebox") -> list[Cell]:
        """The cells of `attack` in `setting` ("whitebox", or MASKED: through the defense's own gradient)."""
        return [c for c in self.cells if c.setting == setting and c.attack == attack]

    def to_dict(self) -> dict[str, Any]:
        """The results as plain nested dicts and lists (results.json)."""
        return asdict(self)


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _processes(results: Results) -> str:
    return f"{results.world_size} process(es) x {results.threads} thread(s)"


def _pending(results: Results) -> str:
    return (
        f"Partial report of an unfinished run: {results.pending} units of work are not computed yet; the cells, "
        "rows and clean accuracies they would complete are left out (device and processes: this report's)."
    )


def summary(results: Results) -> str:
    """The tables as a person reads them in the terminal."""
    samples = results.cells[0].samples if results.cells else 0
    certified = f", {results.certified[0].samples} certified" if results.certified else ""
    parts = [
        f"nemesis_fast {results.version} on {results.device} ({_processes(results)}), "
        f"dataset {results.config['dataset']}, {samples} test images attacked{certified}"
    ]
    if results.pending:
        parts.append(_pending(results))
    if results.blackbox():
        parts += [
            "",
            "Black-box accuracy (%) of each defense, attacks crafted on the black-box source:",
            render_text(*blackbox_table(results)),
        ]
    for title, header, rows in sections(results):
        parts += ["", title + ":", render_text(header, rows)]
    if results.seconds:
        parts += ["", "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in results.seconds.items())]
    return "\n".join(parts)


def markdown(results: Results) -> str:
    parts = [
        f"# Robustness evaluation ({results.config['dataset']})",
        "",
        f"nemesis_fast {results.version}, {results.device}, {_processes(results)}.",
        "",
    ]
    if results.pending:
        parts += [f"**{_pending(results)}**", ""]
    if results.blackbox():
        parts += ["## Black-box accuracy (%)", "", render_markdown(*blackbox_table(results)), ""]
    for title, header, rows in sections(results):
        parts += [f"## {title}", "", render_markdown(header, rows), ""]
    parts += ["## Mean perturbation size", "", render_markdown(*norms_table(results)), ""]
    return "\n".join(parts)


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


def write_outputs(results: Results, out_dir: Path) -> dict[str, Path]:
    """results.json, results.csv, results.md and the figures (whitebox.png, and where the run has them
    blackbox_eps.png, perturbation.png, and certified.png with certified.csv) under `out_dir`, each written
    atomically."""
    from .plots import plot_perturbations, plot_sweep, plot_whitebox

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: out_dir / name for key, name in OUTPUT_FILES.items()}
    paths = {key: files[key] for key in ("json", "csv", "markdown")}
    write_atomic(paths["json"], json.dumps(results.to_dict(), indent=2).encode())
    write_atomic(paths["csv"], to_csv(results).encode())
    write_atomic(paths["markdown"], markdown(results).encode())
    for name, plot in (("whitebox", plot_whitebox), ("blackbox_eps", plot_sweep), ("perturbation", plot_perturbations)):
        if plot(results, files[name]):
            paths[name] = files[name]
    if plot_certified(results.certified, files["certified"]):
        paths["certified"], paths["certified_csv"] = files["certified"], files["certified_csv"]
        write_atomic(paths["certified_csv"], certified_csv(results.certified).encode())
    return paths
