"""The `paper` preset on a GPU against the CPU run: the black-box table of the `paper_gpu_check` preset (every model
trained on the lent GPU as the preset trains it, the table on the first test images) beside the CPU `paper` run's
cells for the same images (from that run's cached verdicts: nothing is computed here but clean accuracies), with
each cell's difference and the binomial standard error of a difference between two models judged on n images.

    bash benchmarks/gpu_check.sh paper        # on the GPU machine: $OUT/paper-results.tgz
    mkdir -p runs/paper-gpu-check && tar xzf paper-results.tgz -C runs/paper-gpu-check
    bash scripts/run_cache.sh unpack          # the CPU run's cache, from git
    python scripts/compare_gpu_run.py runs/paper-gpu-check --data-dir ../shared/data/mnist

Writes <gpu run>/compare.md and compare.json. A cell is "within sampling error" when it differs by at most two
standard errors; two models trained alike on two machines also differ by their training's spread, which the
CPU checks measured at 1-5 points for one cell (BENCHMARKS.md, item 3 of the checks), so a larger difference
says where to look, not that something is wrong.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from paper_cells import COLUMNS, cached_accuracy, margins, paper_evaluation  # beside this script

from nemesis_fast.evaluation.config import defense_label

# Not compared: what the trimmed preset changes, and where and how a run ran.
TRIMMED = {"test_samples", "blackbox_eps", "whitebox_attacks", "perturbation_attacks", "certify"}
PLACES = {"device", "threads", "data_dir", "out_dir", "cache_dir"}


def standard_error(a: float, b: float, n: int) -> float:
    """The standard error (points) of the difference of two accuracies (%) measured on n images each."""
    p, q = a / 100, b / 100
    return 100 * math.sqrt((p * (1 - p) + q * (1 - q)) / n)


def compare_cell(cpu: float, gpu: float, n: int) -> dict[str, Any]:
    """One cell: both accuracies (%), their difference (GPU minus CPU), its standard error, and the verdict."""
    error = standard_error(cpu, gpu, n)
    difference = gpu - cpu
    return {
        "cpu": cpu,
        "gpu": gpu,
        "difference": difference,
        "standard_error": error,
        "images": n,
        "within_sampling_error": abs(difference) <= 2 * error + 1e-9,
    }


def check_same_experiment(gpu_config: dict[str, Any], cpu_config: dict[str, Any]) -> None:
    """Refuses a GPU run whose settings differ from the CPU run's beyond the trimming (test images, sweeps)."""
    for key in sorted(set(gpu_config) | set(cpu_config)):
        if key in TRIMMED or key in PLACES:
            continue
        gpu, cpu = gpu_config.get(key), cpu_config.get(key)
        if key == "attack":
            gpu, cpu = ({k: v for k, v in c.items() if k != "cw_test_samples"} for c in (gpu, cpu))
        if gpu != cpu:
            raise SystemExit(f"the GPU run's {key!r} differs from the CPU run's: {gpu!r} against {cpu!r}")


def gpu_cells(results: dict[str, Any]) -> dict[tuple[str, str], tuple[float, int]]:
    """(defense, attack) -> (accuracy %, images) of the GPU run's black-box table cells."""
    eps_of = {attack: eps for attack, eps in COLUMNS}
    cells = {}
    for cell in results["cells"]:
        if cell["setting"] == "blackbox" and cell["attack"] in eps_of and cell["eps"] == eps_of[cell["attack"]]:
            cells[cell["defense"], cell["attack"]] = (cell["accuracy"], cell["samples"])
    return cells


def markdown(rows: dict[str, dict[str, dict[str, Any]]], device: str) -> str:
    columns = ["clean", *(attack for attack, _ in COLUMNS)]
    names = {"clean": "clean", **{attack: f"{attack} {eps}" if eps else attack for attack, eps in COLUMNS}}
    images = next(iter(rows.values()))
    lines = [
        f"GPU ({device}) / CPU run, accuracy (%), difference (GPU - CPU) and its standard error; "
        "'!' beyond two standard errors.",
        "",
        "| model | " + " | ".join(f"{names[c]} ({images[c]['images']} images)" for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for defense, cells in rows.items():
        parts = []
        for column in columns:
            c = cells[column]
            flag = "" if c["within_sampling_error"] else " !"
            parts.append(f"{c['gpu']:.2f} / {c['cpu']:.2f} ({c['difference']:+.2f} +- {c['standard_error']:.2f}{flag})")
        lines.append(f"| {defense_label(defense)} | " + " | ".join(parts) + " |")
    within = sum(c["within_sampling_error"] for cells in rows.values() for c in cells.values())
    total = sum(len(cells) for cells in rows.values())
    lines += ["", f"{within} of {total} cells within two standard errors."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gpu_run", type=Path, help="the GPU run's output folder (with results.json)")
    parser.add_argument("--run", type=Path, default=Path("runs/paper-mnist"), help="the CPU paper run's folder")
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    results = json.loads((args.gpu_run / "results.json").read_text())
    if results.get("pending"):
        raise SystemExit(f"the GPU run is unfinished ({results['pending']} units pending)")
    evaluation = paper_evaluation(args.run, args.data_dir)
    check_same_experiment(results["config"], evaluation.config.to_dict())
    found = gpu_cells(results)
    n = results["config"]["test_samples"] or len(evaluation.data.test_labels)
    x, y = evaluation.attacks.test_chunk((0, n))
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for defense in evaluation.config.defenses:
        model = evaluation.models.cached(defense)  # never trains: hours on the CPU
        if model is None:
            raise SystemExit(f"the CPU run's cache lacks the model {defense!r}: finish that run first ({args.run})")
        clean = margins(model, x, y)["clean_accuracy"]
        rows[defense] = {"clean": compare_cell(clean, results["clean_accuracy"][defense], n)}
    for attack, eps in COLUMNS:
        images = {found[d, attack][1] for d in evaluation.config.defenses}
        if len(images) != 1:
            raise SystemExit(f"the GPU run's {attack} cells were judged on different numbers of images: {images}")
        (limit,) = images
        cpu = cached_accuracy(evaluation, attack, eps, limit)
        for defense in evaluation.config.defenses:
            rows[defense][attack] = compare_cell(cpu[defense], found[defense, attack][0], limit)
    text = markdown(rows, results["device"])
    (args.gpu_run / "compare.md").write_text(text)
    (args.gpu_run / "compare.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
