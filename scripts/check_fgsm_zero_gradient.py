"""Does white-box FGSM stall on a model because its loss gradient is exactly zero? For each named model of the
`paper` run (default: all seven), on the first N test images: the images where the gradient of the run's FGSM
loss (cross-entropy on the run's labels) is exactly zero in float32, through the gradient the run's white-box row
takes (BPDA where the defense has it) and, for those defenses, through the model's own gradient; FGSM leaves such
an image unchanged at every eps. Then the run's white-box FGSM at `--eps` on the images with and without a zero
gradient: the accuracy each group keeps.

    python scripts/check_fgsm_zero_gradient.py [--run runs/paper-mnist] [--data-dir ../shared/data/mnist]
        [--images 10000] [--eps 0.5] [--models gda,standard]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from paper_cells import paper_evaluation

from nemesis_fast.evaluation.checks import zero_gradient_images
from nemesis_fast.evaluation.config import DEFENSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/paper-mnist"))
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--models", default=",".join(DEFENSES))
    args = parser.parse_args()
    torch.set_num_threads(2)
    evaluation = paper_evaluation(args.run, args.data_dir)
    attacks = evaluation.attacks
    x, y = attacks.test_chunk((0, args.images))
    for name in args.models.split(","):
        model = evaluation.models.get(name)
        row, own = attacks.target(name, True), attacks.target(name, False)  # what the run's attacks differentiate
        ways = [("BPDA", row), ("own gradient", own)] if own is not row else [("own gradient", row)]
        line = [name]
        for way, attacked in ways:
            fgsm = attacks.make("fgsm", attacked, seed=0, eps=args.eps)
            chunks = [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, len(y), 1000)]
            zero = torch.cat([zero_gradient_images(fgsm, xc, yc) for xc, yc in chunks])
            correct = torch.cat([attacks.predict(model, fgsm.run(xc, yc).x_adv) == yc for xc, yc in chunks])
            kept = [f"{100 * correct[g].float().mean().item():.1f}%" if g.any() else "-" for g in (zero, ~zero)]
            line.append(
                f"{way}: zero gradient on {int(zero.sum())} of {len(y)} images; FGSM eps {args.eps:g} keeps"
                f" {kept[0]} of those and {kept[1]} of the others"
            )
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
