"""`nemesis-fast certify`: certified L2 robustness of a trained checkpoint by randomized smoothing."""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path
from typing import Any

import torch

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "certify",
        help="certify a trained model's test accuracy within L2 radii by randomized smoothing (Cohen et al. 2019)",
        description="Cohen et al.'s CERTIFY for each test image: the class with most votes among N0 noisy copies, "
        "a one-sided Clopper-Pearson lower bound pA on its probability from N fresh copies, and the certified L2 "
        "radius sigma * Phi^-1(pA), or an abstention where pA <= 1/2. Writes a CSV (index, label, prediction, "
        "radius, correct; prediction -1: abstained) and prints the certified accuracy at each radius. The noise is "
        "drawn on the model's device; results depend on --seed and --start but not on --batch-size.",
    )
    p.add_argument("--checkpoint", required=True, help="a model saved by `nemesis-fast train --out` or save_checkpoint")
    p.add_argument(
        "--data-dir",
        help="folder of the test files (MNIST IDX files, or cifar-10-batches-py or its parent); for MNIST the "
        "default is the sample shipped with the package",
    )
    p.add_argument("--dataset", choices=("mnist", "cifar10"), help="default: from the checkpoint's architecture")
    p.add_argument(
        "--sigma",
        type=float,
        help="standard deviation of the smoothing noise, in pixel units of [0, 1] images (default: the sigma the "
        "checkpoint was trained with, recorded by the gda recipe)",
    )
    p.add_argument("--n", type=int, default=100_000, help="estimation draws per image (default 100,000)")
    p.add_argument("--n0", type=int, default=100, help="selection draws per image (default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability of each certificate (0.001)")
    p.add_argument("--images", type=int, default=0, help="certify this many test images (default 0: all)")
    p.add_argument("--start", type=int, default=0, help="index of the first test image to certify (default 0)")
    p.add_argument("--batch-size", type=int, default=1000, help="noisy copies per forward pass (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="the noise's seed (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when a GPU is visible)")
    p.add_argument("--amp", nargs="?", const="bf16", choices=("bf16", "fp16"), help="mixed precision")
    p.add_argument("--out", default="certify.csv", help="the CSV to write (default certify.csv)")
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (OSError, ValueError, TypeError) as error:  # bad arguments, missing or malformed files: no traceback
        raise SystemExit(f"nemesis-fast certify: {error}") from error


def _check_arguments(args: argparse.Namespace) -> torch.device:
    from ._checks import check_device, check_int, check_number, check_positive
    from ._io import check_output_file

    if args.sigma is not None:
        check_positive(args.sigma, "--sigma")
    check_int(args.n, "--n", low=1, high=2**32)
    check_int(args.n0, "--n0", low=1, high=2**32)
    check_number(args.alpha, "--alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    check_int(args.images, "--images", low=0)
    check_int(args.start, "--start", low=0)
    check_int(args.batch_size, "--batch-size", low=1)
    check_int(args.seed, "--seed", low=0)
    for option, path in (("--out", args.out), ("--json", args.json)):
        if path:
            check_output_file(path, option)
    return check_device(args.device, "--device")


def _test_set(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, str]:
    from .data import load_cifar10, load_mnist
    from .data.mnist import MNIST_SAMPLE_DIR

    arch = meta.get("architecture") or {}
    dataset = args.dataset or ("cifar10" if arch.get("kwargs", {}).get("in_channels") == 3 else "mnist")
    if dataset == "cifar10" and not args.data_dir:
        raise ValueError("--data-dir is required for cifar10")
    root = Path(args.data_dir) if args.data_dir else MNIST_SAMPLE_DIR
    if args.data_dir and not root.is_dir():
        raise ValueError(f"--data-dir {str(root)!r} is not a folder")
    images, labels = (load_cifar10 if dataset == "cifar10" else load_mnist)(root, "test")
    if args.start >= len(labels):
        raise ValueError(f"--start must be < {len(labels)} (the test images), got {args.start}")
    stop = len(labels) if not args.images else min(len(labels), args.start + args.images)
    where = f"{dataset} test images {args.start}..{stop - 1} of {root}"
    return images[args.start : stop], labels[args.start : stop], where


def _sigma(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[float, str]:
    from .checkpoints import checkpoint_noise_sigma

    trained = checkpoint_noise_sigma(meta)
    if args.sigma is None:
        if trained is None:
            raise ValueError(
                f"--sigma is required: the checkpoint (recipe {meta.get('recipe')!r}) records no training noise"
            )
        return trained, "the checkpoint's training sigma"
    if trained is not None and trained != args.sigma:
        return args.sigma, f"given; the checkpoint was trained at sigma {trained:g}"
    return args.sigma, "given"


def _csv(start: int, labels: torch.Tensor, prediction: torch.Tensor, radius: torch.Tensor) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "label", "prediction", "radius", "correct"])
    for i, (label, predicted, r) in enumerate(zip(labels.tolist(), prediction.tolist(), radius.tolist())):
        writer.writerow([start + i, label, predicted, f"{r:.6f}", int(predicted == label)])
    return buffer.getvalue().encode()


def _run(args: argparse.Namespace) -> int:
    from ._io import write_atomic, write_json_atomic
    from ._progress import progress_bar
    from .certify import Smooth, certified_accuracy
    from .checkpoints import load_checkpoint

    device = _check_arguments(args)
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    images, labels, where = _test_set(args, meta)
    sigma, sigma_source = _sigma(args, meta)
    model = model.to(device).eval()
    with torch.no_grad():
        num_classes = model(images[:1].to(device).float().div(255)).shape[1]
    smooth = Smooth(model, sigma, num_classes, amp=args.amp or False)
    per_image = args.n0 + args.n
    bar = progress_bar(args.progress, total=len(labels), desc="certify", unit="img", leave=True)
    started = time.perf_counter()
    try:
        result = smooth.certify(
            images,
            args.n0,
            args.n,
            args.alpha,
            args.batch_size,
            seed=args.seed,
            offset=args.start,
            progress=(lambda rows: bar.update(rows / per_image)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    write_atomic(Path(args.out), _csv(args.start, labels, result.prediction, result.radius))
    accuracy = certified_accuracy(result.prediction, result.radius, labels, RADII)
    correct = result.prediction == labels
    from scipy.stats import norm

    summary = {
        "checkpoint": str(args.checkpoint),
        "recipe": meta.get("recipe"),
        "images": len(labels),
        "data": where,
        "sigma": sigma,
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "seed": args.seed,
        "device": str(device),
        "seconds": seconds,
        "noisy_images_per_s": len(labels) * per_image / seconds if seconds > 0 else None,
        "abstained": result.abstained.double().mean().item(),
        "mean_radius_of_correct": result.radius[correct].mean().item() if correct.any() else 0.0,
        "largest_certifiable_radius": sigma * float(norm.ppf(args.alpha ** (1 / args.n))),
        "certified_accuracy": {f"{r:g}": a for r, a in zip(RADII, accuracy)},
    }
    print(
        f"certified {len(labels)} {where} (recipe {meta.get('recipe')}) at sigma {sigma:g} ({sigma_source}), "
        f"n0 {args.n0}, n {args.n}, alpha {args.alpha:g}: {seconds:.1f} s on {device} "
        f"({summary['noisy_images_per_s']:,.0f} noisy images/s)"
    )
    print(
        f"abstained {100 * summary['abstained']:.2f}%; mean radius of the correct "
        f"{summary['mean_radius_of_correct']:.3f}; the largest radius n and alpha can certify: "
        f"{summary['largest_certifiable_radius']:.3f}"
    )
    print("certified accuracy: " + ", ".join(f"r={r:g} {100 * a:.2f}%" for r, a in zip(RADII, accuracy)))
    print(f"written: {args.out}" + (f", {args.json}" if args.json else ""))
    if args.json:
        write_json_atomic(Path(args.json), summary)
    return 0
