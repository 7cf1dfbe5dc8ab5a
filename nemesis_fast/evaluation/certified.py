"""The evaluation's certified section: every defense smoothed with Gaussian noise (randomized smoothing, Cohen et
al. 2019) and certified on the first test images; certified accuracy at L2 radii, a table and a figure.

Each chunk of test images is certified once per defense and cached under a key of the defense's weights, the
smoothing settings (sigma, n0, n, alpha), the chunk's bounds and images and the run's seed, and of nothing else:
the keys of the models and of the attacks do not see the certify settings. The noise of test image i is keyed by
i itself, so the numbers do not depend on the chunking, on certify.batch_size or on how many processes share the
work; every defense sees the same noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..certify import Smooth, certified_accuracy, largest_certifiable_radius
from ..defenses import paper_settings
from .cache import ResultCache, settings_key
from .config import DEFENSE_LABELS, EvalConfig
from .train import Models

Chunk = tuple[int, int]
NUM_CLASSES = 10  # MNIST and CIFAR-10


@dataclass
class CertifiedAccuracy:
    """The certified accuracy of one smoothed defense over the certified test images."""

    defense: str
    sigma: float
    n0: int
    n: int
    alpha: float
    samples: int  # test images certified
    radii: list[float]  # L2 radii of the table, pixel scale [0, 1]
    accuracy: list[float]  # percent of the images certified correct at each radius
    abstained: float  # percent of the images where the smoothed classifier abstains
    mean_radius: float  # mean certified radius over the images certified correct (nan: none)
    largest_radius: float  # sigma * Phi^-1(alpha ** (1 / n)): no radius beyond it can be certified with n, alpha
    seconds: float
    labels: list[int] = field(default_factory=list)  # per image, for the figure and certified.csv
    prediction: list[int] = field(default_factory=list)  # -1: abstained
    radius: list[float] = field(default_factory=list)


def smoothing_sigma(config: EvalConfig) -> float:
    """certify.sigma, or where unset the GDA models' training sigma (defense.gda_sigma, else the recipe's)."""
    if config.certify.sigma is not None:
        return config.certify.sigma
    if config.defense.gda_sigma is not None:
        return config.defense.gda_sigma
    return paper_settings("gda", config.dataset).sigma


def certified_defenses(config: EvalConfig) -> list[str]:
    """The defenses to certify, in the run's order (certify.defenses; None: all of the run's)."""
    wanted = config.certify.defenses
    return [d for d in config.defenses if wanted is None or d in wanted]


class Certification:
    """Certifies the defenses of `models` chunk by chunk (cached: "certify")."""

    def __init__(self, config: EvalConfig, data: Any, models: Models, cache: ResultCache) -> None:
        self.config, self.data, self.models, self.cache = config, data, models, cache
        self.device = models.device

    def settings(self) -> dict[str, Any]:
        c = self.config.certify
        return {"sigma": smoothing_sigma(self.config), "n0": c.n0, "n": c.n, "alpha": c.alpha}

    def seed(self) -> int:
        """The noise's seed: the run's seed's, the same for every chunk (each image has its own noise by its
        index) and every defense."""
        return int(settings_key("seed", {"seed": self.config.seed, "phase": "certify"}), 16) % (2**62)

    def key(self, defense: str, chunk: Chunk) -> dict[str, Any]:
        return {
            "defense": self.models.key(defense),
            "defense_name": defense,
            **self.models.squeeze_key(defense),
            "certify": self.settings(),
            "chunk": list(chunk),
            "test_images": self.data.test_digest(*chunk),
            "seed": self.config.seed,
        }

    def run(self, defense: str, chunk: Chunk) -> dict[str, Any]:
        """Per image of `chunk`: the smoothed defense's certified class (-1: abstained) and radius."""
        key = self.key(defense, chunk)
        entry = self.cache.load("certify", key)
        if entry is None:
            s = self.settings()
            start, stop = chunk
            x = self.data.test_images[start:stop]  # uint8: the noise op reads it as x / 255
            smooth = Smooth(self.models.get(defense), s["sigma"], NUM_CLASSES)
            started = time.perf_counter()
            result = smooth.certify(
                x, s["n0"], s["n"], s["alpha"], self.config.certify.batch_size, seed=self.seed(), offset=start
            )
            entry = {
                "prediction": result.prediction,
                "radius": result.radius,
                "p_lower": result.p_lower,
                "seconds": time.perf_counter() - started,
            }
            self.cache.save("certify", key, entry)
        return entry


def certified_stats(
    defense: str, settings: dict[str, Any], radii: list[float], labels: torch.Tensor, parts: list[dict[str, Any]]
) -> CertifiedAccuracy:
    """The row of one defense from its chunks' entries (in chunk order)."""
    prediction = torch.cat([p["prediction"] for p in parts])
    radius = torch.cat([p["radius"] for p in parts]).double()
    labels = labels[: len(prediction)]
    correct = prediction == labels
    sigma, n, alpha = settings["sigma"], settings["n"], settings["alpha"]
    return CertifiedAccuracy(
        defense=defense,
        sigma=sigma,
        n0=settings["n0"],
        n=n,
        alpha=alpha,
        samples=len(prediction),
        radii=[float(r) for r in radii],
        accuracy=[100 * a for a in certified_accuracy(prediction, radius, labels, radii)],
        abstained=100 * (prediction < 0).double().mean().item() if len(prediction) else math.nan,
        mean_radius=radius[correct].mean().item() if correct.any() else math.nan,
        largest_radius=largest_certifiable_radius(n, alpha, sigma),
        seconds=sum(float(p["seconds"]) for p in parts),
        labels=labels.tolist(),
        prediction=prediction.tolist(),
        radius=radius.tolist(),
    )


def certified_title(rows: list[CertifiedAccuracy]) -> str:
    r = rows[0]
    return (
        f"Certified accuracy (%) within L2 radius r, randomized smoothing (sigma {r.sigma:g}, n0 {r.n0}, n {r.n}, "
        f"alpha {r.alpha:g}; the first {r.samples} test images; no radius above {r.largest_radius:.3f} can be "
        "certified with this n and alpha)"
    )


def certified_table(rows: list[CertifiedAccuracy]) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses; columns: certified accuracy at each radius, abstentions, mean radius of the correct."""
    header = ["defense", *(f"r={r:g}" for r in rows[0].radii), "abstained %", "mean radius"]
    body = [
        [
            DEFENSE_LABELS[r.defense],
            *(f"{a:.2f}" for a in r.accuracy),
            f"{r.abstained:.2f}",
            "" if math.isnan(r.mean_radius) else f"{r.mean_radius:.3f}",
        ]
        for r in rows
    ]
    return header, body


def certified_csv(rows: list[CertifiedAccuracy]) -> str:
    """One line per (defense, image): defense, index, label, prediction (-1: abstained), radius, correct."""
    lines = ["defense,index,label,prediction,radius,correct"]
    for r in rows:
        for i, (label, predicted, radius) in enumerate(zip(r.labels, r.prediction, r.radius)):
            lines.append(f"{r.defense},{i},{label},{predicted},{radius:.6f},{int(label == predicted)}")
    return "\n".join(lines) + "\n"


def plot_certified(rows: list[CertifiedAccuracy], path: Path) -> bool:
    """Certified accuracy against the L2 radius, one line per defense, the table's radii marked; a dotted line at
    the largest radius that n and alpha can certify."""
    if not rows:
        return False
    from .plots import _pyplot, _save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    top = max(max(rows[0].radii), rows[0].largest_radius) * 1.08
    grid = torch.linspace(0, top, 241).tolist()
    for r in rows:
        labels, prediction, radius = (torch.tensor(v) for v in (r.labels, r.prediction, r.radius))
        curve = [100 * a for a in certified_accuracy(prediction, radius.double(), labels, grid)]
        (line,) = ax.plot(grid, curve, label=DEFENSE_LABELS[r.defense], linewidth=1.2)
        ax.plot(r.radii, r.accuracy, "o", ms=3, color=line.get_color())
    ax.axvline(rows[0].largest_radius, color="grey", linestyle=":", linewidth=0.9)
    ax.set_xlabel(f"L2 radius (pixel scale [0, 1]); dotted: the largest certifiable with n={rows[0].n}")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Randomized smoothing, sigma {rows[0].sigma:g}, {rows[0].samples} test images", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True
