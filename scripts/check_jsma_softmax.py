"""Is a model's resistance to JSMA on the softmax real, or its softmax underflowing? For each named model of the
`paper` run (default: GDA + ReLU, the CNN, GDA + BReLU), on the first N test images: the share of (image, other
class) pairs whose float32 softmax probability is 0, the images where the gradient of JSMA's target probability is
exactly 0, and JSMA with the run's settings and targets through the softmax's Jacobian (the run's) and through the
logits' Jacobian, each with the share of correctly classified images it fools and the median pixels it changes.

    python scripts/check_jsma_softmax.py [--run runs/paper-mnist] [--data-dir ../shared/data/mnist] [--images 500]
        [--models gda,standard,gda_brelu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from paper_cells import paper_evaluation

from nemesis_fast.attacks import JSMA
from nemesis_fast.evaluation.checks import softmax_underflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/paper-mnist"))
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--models", default="gda,standard,gda_brelu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluation = paper_evaluation(args.run, args.data_dir)
    attacks, settings = evaluation.attacks, evaluation.config.attack
    if not 1 <= args.images <= evaluation.config.batch_size:
        # the run draws JSMA's targets per chunk of batch_size images: the first chunk's are the run's targets
        raise SystemExit(f"--images must be in [1, {evaluation.config.batch_size}] (the run's first chunk)")
    chunk = (0, evaluation.config.batch_size)
    x, y = (v[: args.images] for v in attacks.test_chunk(chunk))
    for name in args.models.split(","):
        model = evaluation.models.get(name)
        attacked = attacks.target(name, True)  # the model the run's white-box JSMA attacks (BPDA where it has one)
        clean = attacks.predict(model, x) == y
        underflow = softmax_underflow(model, x, y, x.device)
        line = [f"{name}: {underflow:.1f}% of pairs at probability 0"]
        for use_logits in (False, True):
            seed = attacks.seed("jsma", chunk)
            jsma = JSMA(attacked, settings.jsma_theta, settings.jsma_gamma, use_logits=use_logits, seed=seed)
            result = jsma.run(x, y)
            if not use_logits:
                start = x.clone().requires_grad_(True)
                probability = attacked(start).softmax(1).gather(1, result.target[:, None]).sum()
                (grad,) = torch.autograd.grad(probability, start)
                zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
                line.append(f"zero target gradient on {zero} of {len(y)} images")
            fooled = (attacks.predict(model, result.x_adv) != y) & clean
            changed = result.l0[fooled].float()
            median = f"{changed.median().item():.0f}" if len(changed) else "-"
            share = 100 * fooled.sum().item() / max(clean.sum().item(), 1)
            line.append(f"JSMA on the {'logits' if use_logits else 'softmax'}: fooled {share:.1f}%, median L0 {median}")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
