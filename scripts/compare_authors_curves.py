"""How far a `check_paper_cells.py source` check's models sit from the seed's authors' black-box curves: for each
model judged and each source, the mean absolute and the mean signed difference (points) between its FGSM and R+FGSM
accuracy and the authors' curve of its defense under one of their sources (``--figure``; the curves in
`runs/paper-mnist/authors-blackbox-curves.json`) over the eps where both are known; then, per source, the mean
absolute difference over every point of the run's own models but FGSM adversarial training (whose two curves in the
authors' notebook are two different models).

    python scripts/compare_authors_curves.py runs/paper-mnist/checks/source-seed0-first1000.json
    python scripts/compare_authors_curves.py --figure cnn/relu runs/paper-mnist/checks/source-modelstandard.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CURVES = Path(__file__).resolve().parent.parent / "runs" / "paper-mnist" / "authors-blackbox-curves.json"
ATTACKS = ("fgsm", "rfgsm")


def differences(check: dict, curves: dict, eps_grid: list[float]) -> dict[tuple[str, str, str], list[float]]:
    """{(model, source, attack): [ours - theirs at each eps of the authors' grid where both are known]}; a model
    judged by a check counts as the defense its name begins with (``label_smoothing-first1000``)."""
    found: dict[tuple[str, str, str], list[float]] = {}
    for cell, result in check["cells"].items():
        attack, eps = cell.split()
        if attack not in ATTACKS or float(eps) not in eps_grid:
            continue
        column = eps_grid.index(float(eps))
        for model, accuracy in result["accuracy"].items():
            theirs = curves[attack].get(model.split("-")[0], [None] * len(eps_grid))[column]
            for source, ours in accuracy.items():
                if theirs is not None and ours is not None:
                    found.setdefault((model, source, attack), []).append(ours - theirs)
    return found


def summary(values: list[float]) -> str:
    """Mean absolute (mean signed; points) difference."""
    return f"{sum(abs(v) for v in values) / len(values):.1f} ({sum(values) / len(values):+.1f}; {len(values)} eps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checks", nargs="+", type=Path)
    parser.add_argument("--curves", type=Path, default=CURVES)
    parser.add_argument("--figure", default="resnet/relu", help="the authors' source: resnet/relu or cnn/relu")
    args = parser.parse_args()
    authors = json.loads(args.curves.read_text())
    if args.figure not in authors["sources"]:
        raise SystemExit(f"--figure must be one of {sorted(authors['sources'])}, got {args.figure!r}")
    curves = authors["sources"][args.figure]
    print("| check | model | source | FGSM mean abs (signed) | R+FGSM mean abs (signed) |")
    print("|---|---|---|---|---|")
    for path in args.checks:
        found = differences(json.loads(path.read_text()), curves, authors["eps"])
        pairs = list(dict.fromkeys((model, source) for model, source, _ in found))
        for model, source in pairs:
            text = [summary(found[model, source, a]) if (model, source, a) in found else "-" for a in ATTACKS]
            print(f"| {path.stem} | {model} | {source} | {text[0]} | {text[1]} |")
        for source in dict.fromkeys(source for _, source in pairs):
            pooled = [
                [v for (m, s, a), vs in found.items() if s == source and a == attack for v in vs if own(m)]
                for attack in ATTACKS
            ]
            text = [summary(values) if values else "-" for values in pooled]
            print(f"| {path.stem} | the run's models but FGSM adv. training | {source} | {text[0]} | {text[1]} |")


def own(model: str) -> bool:
    """A model of the run itself (not of an earlier check), FGSM adversarial training left out."""
    return "-" not in model and model != "fgsm_adversarial"


if __name__ == "__main__":
    main()
