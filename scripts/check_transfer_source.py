"""How much the black-box table depends on the source model's own training: a check for the `paper` preset's
cells that sit far from the paper's (BENCHMARKS.md, "MNIST: the authors' experiment").

Trains a second copy of the authors' small ResNet with the preset's recipe (Adam, batch 128, 10% validation,
up to 20 epochs, patience 5) but another variant, crafts the preset's black-box attacks on it (same settings,
same per-chunk seeds, so JSMA draws the same targets) on the first test images, and reports every defense's
accuracy on them beside the accuracy on the run's own source's adversarials for the same images (read from the
run's cached verdicts). Variants:

- ``seed:N``: the same initialisation scheme (torch's), another seed for the weights, the batch order and the
  validation split;
- ``keras``: the initialisation the authors' Keras 2.0 code had (Glorot-uniform kernels, zero biases), seed 0.

Also prints the sources' clean accuracy and logit margins (top-1 minus top-2 logit on the test images), which
set how far C&W's confidence 10 pushes. The trained variant is kept in `<run>/checks/` so a rerun resumes.

    python scripts/check_transfer_source.py --data-dir ../shared/data/mnist --run runs/paper-mnist \\
        --variant keras --images 2000 --cw-images 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from nemesis_fast.evaluation import load_config, preset_path
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.models import build_model
from nemesis_fast.parallel import Workers, set_threads
from nemesis_fast.training import train

ATTACKS = ("fgsm", "rfgsm", "deepfool", "jsma", "cw")


def keras_init(model: nn.Module) -> None:
    """Keras 2.0's defaults: glorot_uniform kernels, zero biases (convolutions and dense layers)."""
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def train_variant(evaluation: Evaluation, variant: str, folder: Path) -> nn.Module:
    arch, kwargs = evaluation.models.architecture(SOURCE)
    path = folder / f"source-{variant.replace(':', '')}.pt"
    seed = int(variant.split(":")[1]) if variant.startswith("seed:") else evaluation.config.seed
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs)
    if variant == "keras":
        keras_init(model)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    data = evaluation.data
    budget = {**evaluation.models.budget(), "seed": seed}
    checkpoint = folder / f"source-{variant.replace(':', '')}.ckpt"
    result = train(model, (data.train_images, data.train_labels), "standard", **budget, checkpoint=checkpoint)
    print(f"variant {variant}: best validation accuracy {result.val_accuracy:.2f}%", flush=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Clean accuracy (%) and the median top-1 minus top-2 logit."""
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    top = logits.topk(2, dim=1).values
    return 100 * (logits.argmax(1) == y).float().mean().item(), (top[:, 0] - top[:, 1]).median().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--run", default="runs/paper-mnist", help="the paper run's output folder (its cache)")
    parser.add_argument("--variant", default="keras", help="keras or seed:N")
    parser.add_argument("--images", type=int, default=2000, help="first test images for FGSM, R+FGSM, DeepFool, JSMA")
    parser.add_argument("--cw-images", type=int, default=200, help="first test images for C&W")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.variant != "keras" and not (args.variant.startswith("seed:") and args.variant[5:].isdigit()):
        raise SystemExit(f"--variant must be keras or seed:N, got {args.variant!r}")
    set_threads(args.threads, torch.device("cpu"))
    run = Path(args.run)
    config = load_config(preset_path("paper"), {"data_dir": args.data_dir, "out_dir": str(run)})
    evaluation = Evaluation(config, Workers(), log=print, progress=False)
    attacks, defenses = evaluation.attacks, config.defenses
    own = evaluation.models.get(SOURCE)
    variant = train_variant(evaluation, args.variant, run / "checks")
    x_all = evaluation.data.test_images.float().div(255)
    y_all = evaluation.data.test_labels
    report: dict = {"variant": args.variant, "sources": {}}
    for name, model in (("run's source", own), (args.variant, variant)):
        accuracy, margin = margins(model, x_all, y_all)
        report["sources"][name] = {"clean_accuracy": accuracy, "median_logit_margin": margin}
        print(f"{name}: clean {accuracy:.2f}%, median logit margin {margin:.2f}", flush=True)
    report["cells"] = {}
    for attack in ATTACKS:
        limit = args.cw_images if attack == "cw" else args.images
        chunks = [c for c in evaluation.chunks(config.attack.cw_test_samples if attack == "cw" else 0) if c[0] < limit]
        started = time.perf_counter()
        ours = {d: [] for d in defenses}
        theirs = {d: [] for d in defenses}
        for chunk in chunks:
            stop = min(chunk[1], limit)
            x, y = attacks.test_chunk(chunk)
            x, y = x[: stop - chunk[0]], y[: stop - chunk[0]]
            adversarial = attacks.make(attack, variant, attacks.seed(attack, chunk)).run(x, y).x_adv
            verdict = evaluation.cache.load("verdict", attacks.verdict_key(attack, None, chunk))
            for d in defenses:
                theirs[d].append((attacks.predict(evaluation.models.get(d), adversarial) == y).float())
                if verdict is not None:
                    ours[d].append(verdict["correct"][d][: stop - chunk[0]].float())
        rows = {}
        for d in defenses:
            variant_accuracy = 100 * torch.cat(theirs[d]).mean().item()
            run_accuracy = 100 * torch.cat(ours[d]).mean().item() if ours[d] else float("nan")
            rows[d] = {"run_source": run_accuracy, "variant_source": variant_accuracy}
        images = sum(len(t) for t in theirs[defenses[0]])
        report["cells"][attack] = {"images": images, "seconds": time.perf_counter() - started, "accuracy": rows}
        line = ", ".join(f"{d} {r['run_source']:.1f} -> {r['variant_source']:.1f}" for d, r in rows.items())
        print(f"{attack} ({images} images): {line}", flush=True)
        out = run / "checks" / f"transfer-{args.variant.replace(':', '')}.json"
        out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
