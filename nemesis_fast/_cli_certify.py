"""`nemesis-fast certify`: certified L2 robustness of a trained checkpoint by randomized smoothing."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._checks import MAX_THREADS, first_output
from ._cli_certify_records import describe, is_record_path, load_certificates, record, record_path, record_paths
from ._cli_evaluate import THREADS_HELP, int_in
from ._io import (
    check_checkpoint_path,
    check_distinct_files,
    check_output_file,
    refuse_existing,
    write_atomic,
    write_json_atomic,
)

if TYPE_CHECKING:
    from .parallel import Workers

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
# The images are certified in chunks, after each of which the certificates so far are kept in the process's record
# (see _cli_certify_records), where an interrupted run resumes: a first chunk of about FIRST_CHUNK_DRAWS forward passes
# (at least one image; on a 2-core CPU some 20 s), then chunks sized to take about CHUNK_SECONDS each (GPU or CPU).
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
        "drawn on the model's device; an image's certificate depends on --seed and its index, not on --batch-size "
        "or the number of processes. Under torchrun the images are shared out among the processes (a GPU each) and "
        "process 0 writes the outputs. The certificates so far are kept beside OUT as the run goes (OUT.partial.json; "
        "under torchrun one OUT.partial.R-of-W.json per process): run the same command again after an interruption, "
        "on any number of processes, and it resumes there.",
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
    # --N, --N0 and --first: the spellings torchrun passes on (it takes --n and --start for abbreviations of its own)
    p.add_argument(
        "--n", "--N", dest="n", type=int, default=100_000, help="estimation draws per image (default 100,000)"
    )
    p.add_argument("--n0", "--N0", dest="n0", type=int, default=100, help="selection draws per image (default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability of each certificate (0.001)")
    p.add_argument("--images", type=int, default=0, help="certify this many test images (default 0: all)")
    p.add_argument(
        "--start",
        "--first",
        dest="start",
        type=int,
        default=0,
        help="index of the first test image to certify (default 0)",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="noisy copies per forward pass (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="the noise's seed (default 0)")
    p.add_argument(
        "--device", help="cpu or cuda (default: cuda when a GPU is visible; under torchrun, each process's own)"
    )
    p.add_argument("--threads", type=int_in(0, MAX_THREADS), default=0, help=THREADS_HELP)
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


def _check_arguments(args: argparse.Namespace) -> None:
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
            "the resume file of --out": record_path(args.out),
        }
    )
    if args.json and is_record_path(args.out, args.json):
        raise ValueError(f"--json: {args.json!r} is the name of a resume record of --out; give another path")
    if not args.overwrite:
        refuse_existing({"--out": args.out, "--json": args.json})
    check_checkpoint_path(args.checkpoint, "--checkpoint")
    check_device(args.device, "--device")


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

    records = record_paths(args.out)
    if not records:
        return "no chunk was finished"
    again = same_command_again({"--out": args.out, "--json": args.json}, args.overwrite)
    return f"{again} resumes from {describe(args.out, records)}"


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
        raise ValueError(f"--start (--first) must be < {len(labels)} (the test images), got {args.start}")
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
    from .parallel import start, stop

    _check_arguments(args)
    workers = start(args.device or "auto", args.threads)
    try:
        return _certify_run(args, workers)
    finally:
        stop(workers)


def _certify_run(args: argparse.Namespace, workers: Workers) -> int:
    from .certify import Smooth
    from .checkpoints import NoArchitectureError, load_checkpoint
    from .defenses import FeatureSqueezing

    device = workers.device
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
    _check_same_run(identity, images, labels, workers)
    known, records = load_certificates(args.out, identity, len(labels), num_classes)
    if known and workers.is_main:
        print(f"resuming: {len(known)} of {len(labels)} images already certified ({describe(args.out, records)})")
    share = _share(len(labels), workers)
    started = time.perf_counter()
    prediction, radius, fresh = _certify_share(smooth, images, args, share, known, identity, workers)
    gathered = workers.gather((prediction, radius, fresh))  # every process's share, in order of their images
    seconds = time.perf_counter() - started
    if workers.is_main:
        prediction = torch.tensor([p for part in gathered for p in part[0]], dtype=torch.int64)
        radius = torch.tensor([r for part in gathered for r in part[1]], dtype=torch.float64)
        fresh = sum(part[2] for part in gathered)
        _report(args, meta, where, (sigma, sigma_source), workers, labels, prediction, radius, seconds, fresh)
    workers.barrier()  # the outputs are written: the records may go
    for path in {record_path(args.out, workers.rank, workers.world_size), *records}:
        path.unlink(missing_ok=True)
    return 0


def _check_same_run(identity: dict[str, Any], images: torch.Tensor, labels: torch.Tensor, workers: Workers) -> None:
    """ValueError on every process where the processes of a run under torchrun do not certify the same checkpoint,
    test images and settings (each machine reads its own files): their certificates would not make one run's CSV."""
    if not workers.distributed:
        return
    digest = hashlib.sha256(images.contiguous().numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
    mine = {**{k: v for k, v in identity.items() if k != "data"}, "test_images_sha256": digest}  # (paths may differ)
    every = workers.gather(mine)
    differ = sorted({k for other in every for k in mine if other[k] != every[0][k]})
    if differ:
        ranks = [rank for rank, other in enumerate(every) if other != every[0]]
        raise ValueError(
            f"the processes do not certify the same run: {', '.join(differ)} of process(es) "
            f"{', '.join(map(str, ranks))} differ from process 0's (give every machine the same files and options)"
        )


def _share(images: int, workers: Workers) -> range:
    """The positions among the run's images that this process certifies: a contiguous block, the same number (to
    one) for every process, as every image costs the same n0 + n forward passes."""
    return range(workers.rank * images // workers.world_size, (workers.rank + 1) * images // workers.world_size)


def _certify_share(smooth, images, args, share, known, identity, workers) -> tuple[list[int], list[float], int]:
    """CERTIFY on this process's `share` of the images, those not `known` already, in chunks (see CHUNK_SECONDS),
    its record rewritten as each chunk ends (the noise of an image depends on its index, not on the chunks or the
    processes); returns (prediction, radius) of every image of the share, and how many it certified."""
    from ._progress import progress_bar

    per_image = args.n0 + args.n  # (the bar counts noisy copies: an image of n = 100,000 takes a while)
    bar = None
    if workers.is_main:  # one bar, of process 0's share: the others' move alike
        bar = progress_bar(
            args.progress, total=len(share) * per_image, desc="certify", unit="copies", unit_scale=True, leave=True
        )
    if bar is not None:
        bar.update(sum(i in known for i in share) * per_image)
    own = record_path(args.out, workers.rank, workers.world_size)
    chunk = max(1, FIRST_CHUNK_DRAWS // per_image)
    prediction, radius, fresh = [], [], 0
    try:
        while len(prediction) < len(share):
            begin = share[len(prediction)]
            if begin in known:
                prediction.append(known[begin][0])
                radius.append(known[begin][1])
                continue
            stop = begin + 1
            while stop < share.stop and stop - begin < chunk and stop not in known:
                stop += 1
            chunk_started = time.perf_counter()
            result = smooth.certify(
                images[begin:stop],
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
            fresh += stop - begin
            write_json_atomic(own, record(identity, share.start, prediction, radius))
            seconds = max(time.perf_counter() - chunk_started, 1e-6)
            chunk = max(1, min(4 * chunk, round(chunk * CHUNK_SECONDS / seconds)))
    finally:
        if bar is not None:
            bar.close()
    return prediction, radius, fresh


def _report(args, meta, where, sigma_and_source, workers, labels, prediction, radius, seconds, fresh) -> None:
    """Process 0: writes the CSV (and --json) and prints the summary."""
    sigma, sigma_source = sigma_and_source
    write_atomic(Path(args.out), _csv(args.start, labels, prediction, radius))
    summary = _summary(args, meta, where, sigma, workers, labels, prediction, radius, seconds, fresh)
    model_said = f"recipe {meta.get('recipe')}{_behind(meta['squeezer'])}"
    processes = f" ({workers.world_size} processes x {workers.threads} thread(s))" if workers.distributed else ""
    print(
        f"certified {len(labels)} {where} ({model_said}) at sigma {sigma:g} ({sigma_source}), "
        f"n0 {args.n0}, n {args.n}, alpha {args.alpha:g}: {fresh} images in {seconds:.1f} s on {workers.device}"
        f"{processes} ({summary['noisy_images_per_s'] or 0:,.0f} noisy images/s)"
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


def _behind(squeezer: dict[str, Any] | None) -> str:
    """How the output names the squeezer a model was certified behind ("" for none)."""
    if squeezer is None:
        return ""
    bits = squeezer["bit_depth"]
    parts = [f"{bits} bit{'s' * (bits != 1)}"] if bits else []
    parts += [f"median {squeezer['median_size']}"] if squeezer["median_size"] else []
    return f", behind feature squeezing: {', '.join(parts)}"


def _summary(args, meta, where, sigma, workers, labels, prediction, radius, seconds, fresh) -> dict[str, Any]:
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
        "device": str(workers.device),  # process 0's
        "processes": workers.world_size,
        "threads": workers.threads,  # process 0's torch threads
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
