"""`nemesis-fast certify`: certified L2 robustness of a trained checkpoint by randomized smoothing."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from ._io import (
    check_checkpoint_path,
    check_distinct_files,
    check_output_file,
    refuse_existing,
    write_atomic,
    write_json_atomic,
)

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
# The images are certified in chunks, after each of which the certificates so far are kept in <out>.partial.json,
# where an interrupted run resumes: a first chunk of about FIRST_CHUNK_DRAWS forward passes (at least one image; on
# a 2-core CPU some 20 s), then chunks sized to take about CHUNK_SECONDS each (on a GPU as on a CPU).
FIRST_CHUNK_DRAWS = 100_000
CHUNK_SECONDS = 30.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "certify",
        help="certify a trained model's test accuracy within L2 radii by randomized smoothing (Cohen et al. 2019)",
        description="Cohen et al.'s CERTIFY for each test image: the class with most votes among N0 noisy copies, "
        "a one-sided Clopper-Pearson lower bound pA on its probability from N fresh copies, and the certified L2 "
        "radius sigma * Phi^-1(pA), or an abstention where pA <= 1/2. Writes a CSV (index, label, prediction, "
        "radius, correct; prediction -1: abstained) and prints the certified accuracy at each radius. The noise is "
        "drawn on the model's device; results depend on --seed and --start but not on --batch-size. The "
        "certificates so far are kept in OUT.partial.json as the run goes: run the same command again after an "
        "interruption and it resumes there.",
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
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out and --json where they exist (default: refused)"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    p.set_defaults(handler=run, interrupted=_interrupted)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (OSError, ValueError, TypeError) as error:  # bad arguments, missing or malformed files: no traceback
        raise SystemExit(f"nemesis-fast certify: {error}") from error


def _check_arguments(args: argparse.Namespace) -> torch.device:
    from ._checks import check_device, check_int, check_number, check_positive

    if args.sigma is not None:
        check_positive(args.sigma, "--sigma")
    check_int(args.n, "--n", low=1, high=2**32)
    check_int(args.n0, "--n0", low=1, high=2**32)
    check_number(args.alpha, "--alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    check_int(args.images, "--images", low=0)
    check_int(args.start, "--start", low=0)
    check_int(args.batch_size, "--batch-size", low=1)
    check_int(args.seed, "--seed", low=0, high=2**64 - 1)  # the noise's 64-bit key
    for option, path in (("--out", args.out), ("--json", args.json)):
        if path is not None:
            check_output_file(path, option)
    check_distinct_files(
        {
            **_test_files(args),
            "--checkpoint": args.checkpoint,
            "--out": args.out,
            "--json": args.json,
            "the resume file of --out": _partial_path(args.out),
        }
    )
    if not args.overwrite:
        refuse_existing({"--out": args.out, "--json": args.json})
    check_checkpoint_path(args.checkpoint, "--checkpoint")
    return check_device(args.device, "--device")


def _test_files(args: argparse.Namespace) -> dict[str, Path]:
    """The test files the run may read (of --dataset, or of either data set before the checkpoint tells), by the
    name an error gives them."""
    from .data import data_files
    from .data.mnist import MNIST_SAMPLE_DIR

    option, root = ("--data-dir", args.data_dir) if args.data_dir else ("the MNIST sample", MNIST_SAMPLE_DIR)
    datasets = (args.dataset,) if args.dataset else ("mnist", "cifar10")
    return data_files(root, option, datasets, ("test",))


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted run kept, for the line Ctrl-C ends it with."""
    from ._io import same_command_again

    partial = _partial_path(args.out)
    if not partial.is_file():
        return "no chunk was finished"
    return f"{same_command_again({'--out': args.out, '--json': args.json}, args.overwrite)} resumes from {partial}"


def _partial_path(out: str) -> Path:
    """Where the certificates of a run writing `out` are kept as it goes (see FIRST_CHUNK_DRAWS)."""
    return Path(str(out) + ".partial.json")


def first_output(model: torch.nn.Module, images: torch.Tensor, option: str) -> torch.Tensor:
    """`model`'s output on the first of `images` (uint8), in eval mode (batch norm's statistics untouched); a
    ValueError naming `option` where the model does not take images of their shape."""
    device = next(model.parameters(), torch.empty(0)).device
    training = model.training
    try:
        with torch.no_grad():
            return model.eval()(images[:1].to(device).float().div(255))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        shape = "x".join(str(n) for n in images.shape[1:])
        raise ValueError(f"{option}: its model does not take the data's {shape} images ({error})") from error
    finally:
        model.train(training)


def _test_set(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, str]:
    from .data import load_cifar10, load_mnist
    from .data.mnist import MNIST_SAMPLE_DIR

    arch = meta.get("architecture") or {}
    dataset = args.dataset or ("cifar10" if arch.get("kwargs", {}).get("in_channels") == 3 else "mnist")
    if dataset == "cifar10" and not args.data_dir:
        raise ValueError("--data-dir is required for cifar10")
    root = Path(args.data_dir).expanduser() if args.data_dir else MNIST_SAMPLE_DIR
    if args.data_dir and not root.is_dir():
        raise ValueError(f"--data-dir {str(root)!r} is not a folder")
    images, labels = (load_cifar10 if dataset == "cifar10" else load_mnist)(root, "test")
    if args.start >= len(labels):
        raise ValueError(f"--start must be < {len(labels)} (the test images), got {args.start}")
    stop = len(labels) if not args.images else min(len(labels), args.start + args.images)
    where = f"{dataset} test images {args.start}..{stop - 1} of {root.resolve()}"  # (resumes however it is spelt)
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
    from ._progress import progress_bar
    from .certify import Smooth
    from .checkpoints import NoArchitectureError, load_checkpoint
    from .defenses import FeatureSqueezing

    device = _check_arguments(args)
    try:
        model, meta = load_checkpoint(args.checkpoint, map_location=device)
    except NoArchitectureError as error:
        raise SystemExit(
            f"nemesis-fast certify: {args.checkpoint} records no architecture (a model built outside "
            "nemesis_fast.models): the command certifies the package's own networks; certify this one in Python, "
            "with the model loaded and nemesis_fast.certify.Smooth"
        ) from error
    squeezing = isinstance(model, FeatureSqueezing)  # a checkpoint of feature squeezing: certified behind it
    # (bpda, a rule for gradients, does not bear on certificates)
    meta["squeezer"] = {k: v for k, v in model.settings().items() if k != "bpda"} if squeezing else None
    images, labels, where = _test_set(args, meta)
    sigma, sigma_source = _sigma(args, meta)
    model = model.to(device).eval()
    num_classes = first_output(model, images, "--checkpoint").shape[1]
    smooth = Smooth(model, sigma, num_classes, amp=args.amp or False)
    identity = {
        "checkpoint_sha256": hashlib.sha256(Path(args.checkpoint).expanduser().read_bytes()).hexdigest(),
        "data": where,
        "sigma": sigma,
        **{k: getattr(args, k) for k in ("n0", "n", "alpha", "seed", "amp")},
    }
    partial = _partial_path(args.out)
    done = _resumed(partial, identity, len(labels), num_classes)
    if done["prediction"]:
        print(f"resuming: {len(done['prediction'])} of {len(labels)} images already certified ({partial})")
    per_image = args.n0 + args.n  # (the bar counts noisy copies: an image of n = 100,000 takes a while)
    bar = progress_bar(
        args.progress, total=len(labels) * per_image, desc="certify", unit="copies", unit_scale=True, leave=True
    )
    if bar is not None:
        bar.update(len(done["prediction"]) * per_image)
    started = time.perf_counter()
    try:
        prediction, radius = _certify_in_chunks(smooth, images, args, partial, identity, done, bar)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    write_atomic(Path(args.out), _csv(args.start, labels, prediction, radius))
    fresh = len(labels) - len(done["prediction"])
    summary = _summary(args, meta, where, sigma, device, labels, prediction, radius, seconds, fresh)
    model_said = f"recipe {meta.get('recipe')}{_behind(meta['squeezer'])}"
    print(
        f"certified {len(labels)} {where} ({model_said}) at sigma {sigma:g} ({sigma_source}), "
        f"n0 {args.n0}, n {args.n}, alpha {args.alpha:g}: {fresh} images in {seconds:.1f} s on {device} "
        f"({summary['noisy_images_per_s'] or 0:,.0f} noisy images/s)"
    )
    print(
        f"abstained {100 * summary['abstained']:.2f}%; mean radius of the correct "
        f"{summary['mean_radius_of_correct']:.3f}; the largest radius n and alpha can certify: "
        f"{summary['largest_certifiable_radius']:.3f}"
    )
    accuracy = summary["certified_accuracy"].values()
    print("certified accuracy: " + ", ".join(f"r={r:g} {100 * a:.2f}%" for r, a in zip(RADII, accuracy)))
    print(f"written: {args.out}" + (f", {args.json}" if args.json else ""))
    if args.json:
        write_json_atomic(Path(args.json), summary)
    partial.unlink(missing_ok=True)
    return 0


def _resumed(partial: Path, identity: dict[str, Any], images: int, num_classes: int) -> dict[str, list]:
    """The certificates an interrupted run of the same settings kept in `partial`, or none; a partial file of
    other settings is refused (it is another run's work), and so is one whose certificates are not those of at most
    `images` images (a prediction in -1..num_classes - 1 and a radius, >= 0, for each)."""
    if not partial.is_file():
        return {"prediction": [], "radius": []}
    try:
        kept = json.loads(partial.read_text())
        settings, prediction, radius = kept["settings"], kept["prediction"], kept["radius"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--out: {partial} is not the record of an interrupted certify; move it away") from error
    if settings != identity:
        differ = ", ".join(sorted(k for k in identity if settings.get(k) != identity[k]))
        raise ValueError(
            f"--out: {partial} holds an interrupted run with other settings ({differ}); finish it with those "
            "settings, or choose another --out, or move it away"
        )
    if not (
        isinstance(prediction, list)
        and isinstance(radius, list)
        and len(prediction) == len(radius) <= images
        and all(type(p) is int and -1 <= p < num_classes for p in prediction)
        and all(type(r) in (int, float) and r >= 0 for r in radius)
    ):
        raise ValueError(
            f"--out: {partial} does not hold the certificates of at most {images} images (a prediction and a "
            "radius each); it was not written by this command: move it away"
        )
    return {"prediction": prediction, "radius": radius}


def _certify_in_chunks(smooth, images, args, partial, identity, done, bar) -> tuple[torch.Tensor, torch.Tensor]:
    """CERTIFY on the images not in `done`, in chunks (see CHUNK_SECONDS), each chunk's certificates added to
    `partial` as it ends (the noise of an image depends on its index, not on the chunks); returns (prediction,
    radius) of every image."""
    per_image = args.n0 + args.n
    chunk = max(1, FIRST_CHUNK_DRAWS // per_image)
    prediction, radius = list(done["prediction"]), list(done["radius"])
    while len(prediction) < len(images):
        begin, chunk_started = len(prediction), time.perf_counter()
        result = smooth.certify(
            images[begin : begin + chunk],
            args.n0,
            args.n,
            args.alpha,
            args.batch_size,
            seed=args.seed,
            offset=args.start + begin,
            progress=bar.update if bar is not None else None,
        )
        prediction += result.prediction.tolist()
        radius += result.radius.tolist()
        write_json_atomic(partial, {"settings": identity, "prediction": prediction, "radius": radius})
        seconds = max(time.perf_counter() - chunk_started, 1e-6)
        chunk = max(1, min(4 * chunk, round(chunk * CHUNK_SECONDS / seconds)))
    return torch.tensor(prediction, dtype=torch.int64), torch.tensor(radius, dtype=torch.float64)


def _behind(squeezer: dict[str, Any] | None) -> str:
    """How the output names the squeezer a model was certified behind ("" for none)."""
    if squeezer is None:
        return ""
    bits = squeezer["bit_depth"]
    parts = [f"{bits} bit{'s' * (bits != 1)}"] if bits else []
    parts += [f"median {squeezer['median_size']}"] if squeezer["median_size"] else []
    return f", behind feature squeezing: {', '.join(parts)}"


def _summary(args, meta, where, sigma, device, labels, prediction, radius, seconds, fresh) -> dict[str, Any]:
    from .certify import certified_accuracy, largest_certifiable_radius

    correct = prediction == labels
    return {
        "checkpoint": str(args.checkpoint),
        "recipe": meta.get("recipe"),
        "squeezer": meta["squeezer"],  # the feature squeezing the model was certified behind, or None
        "images": len(labels),
        "data": where,
        "sigma": sigma,
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "seed": args.seed,
        "device": str(device),
        "seconds": seconds,  # of this run: `fresh` images (the others were certified by an interrupted run)
        "images_this_run": fresh,
        "noisy_images_per_s": fresh * (args.n0 + args.n) / seconds if fresh and seconds > 0 else None,
        "abstained": (prediction == -1).double().mean().item(),
        "mean_radius_of_correct": radius[correct].mean().item() if correct.any() else 0.0,
        "largest_certifiable_radius": largest_certifiable_radius(args.n, args.alpha, sigma),
        "certified_accuracy": {
            f"{r:g}": a for r, a in zip(RADII, certified_accuracy(prediction, radius, labels, RADII))
        },
    }
