"""`nemesis-fast train`: one model with a defense recipe, or the paper's seven models (--paper)."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ._checks import MAX_THREADS, first_output
from ._cli_evaluate import THREADS_HELP, int_in
from ._cli_train_options import add_budget_arguments, add_model_arguments, add_output_arguments


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a model with a defense recipe (or the paper's seven models with --paper)",
        description="Train with Adam (the paper: batch 128, 20 epochs) on a data set kept on the device. "
        "Prints one line per epoch (a progress bar on a terminal) and the clean test accuracy.",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="train the paper's seven models and print their table (under torchrun: each model trained once, by "
        "one process)",
    )
    add_model_arguments(p.add_argument_group("data, model and recipe"))
    add_budget_arguments(p.add_argument_group("training budget"))
    add_output_arguments(p.add_argument_group("output and resuming"))
    p.add_argument("--threads", type=int_in(0, MAX_THREADS), default=0, help=THREADS_HELP)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    p.set_defaults(handler=run, interrupted=_interrupted)


def _data_root(args: argparse.Namespace) -> str | Path | None:
    """The folder the data are read from: --root, or for MNIST the sample shipped with the package."""
    from .data.mnist import MNIST_SAMPLE_DIR

    if args.root:
        return args.root
    return MNIST_SAMPLE_DIR if args.data == "mnist" else None


def _data_files(args: argparse.Namespace) -> dict[str, Path]:
    """The data files the training reads, by the name an error gives them."""
    from .data import data_files

    root = _data_root(args)
    return {} if root is None else data_files(root, "--root" if args.root else "the MNIST sample", (args.data,))


def _load(
    args: argparse.Namespace, quiet: bool = False
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from .data import load_cifar10, load_mnist

    root = _data_root(args)
    if root is None:
        raise SystemExit("nemesis-fast train: --root is required for cifar10")
    if not args.root and not quiet:
        print(f"using the MNIST sample shipped with the package ({root}); pass --root for the full set")
    load = load_cifar10 if args.data == "cifar10" else load_mnist
    train_data, test_data = load(root, "train"), load(root, "test")
    if args.limit is not None:
        train_data = (train_data[0][: args.limit], train_data[1][: args.limit])
    return train_data, test_data


def _train_kwargs(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The arguments of :func:`nemesis_fast.train` the options set."""
    return dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        val_rows=args.val_rows,
        patience=args.patience or None,
        device=device,
        amp=args.amp or False,
        compile=args.compile,
        progress=args.progress,
    )


def _rank_log(rank: int) -> Callable[[str], None]:
    def say(message: str) -> None:
        sys.stderr.write(f"[rank {rank}] {message}\n")  # one write: lines of several processes do not interleave
        sys.stderr.flush()

    return say


def _paper(args: argparse.Namespace) -> int:
    """--paper: the seven models, shared out among the processes under torchrun; process 0 prints and writes."""
    import time

    from ._io import write_json_atomic
    from .paper_models import train_paper_models
    from .parallel import start, stop

    given = args.settings or args.recipe != "standard" or args.activation != "relu" or args.source
    if given or args.depth is not None or args.conv2_padding is not None:
        raise SystemExit(
            "nemesis-fast train --paper: --recipe, --activation, --set, --source, --depth and --conv2-padding do not "
            "apply (the authors' CIFAR-10 models: nemesis-fast evaluate --preset paper_cifar10)"
        )
    started = time.perf_counter()
    try:
        workers = start(args.device or "auto", args.threads)
    except ValueError as error:  # NEMESIS_FAST_WAIT_HOURS under torchrun, or a device this process cannot use
        raise SystemExit(f"nemesis-fast train: {error}") from error
    try:
        train_data, test_data = _load(args, quiet=not workers.is_main)
        model_name = _model_name(args)
        _check_paper_shape(model_name, train_data[0])
        say = _rank_log(workers.rank) if workers.distributed else True
        rows = train_paper_models(
            train_data,
            test_data,
            dataset=args.data,
            model_name=model_name,
            t=1.0 if args.t is None else args.t,
            out_dir=args.out_dir,
            seed=args.seed,
            workers=workers,
            log=say,
            checkpoint=args.resume,
            **_train_kwargs(args, workers.device),
        )
    finally:
        stop(workers)
    if not workers.is_main:
        return 0
    total, wall = sum(r["seconds"] for r in rows), time.perf_counter() - started
    print(f"{'model':<18} {'recipe':<40} {'test acc':>9} {'seconds':>8} {'rank':>4}")
    for r in rows:
        rank = "" if r["trained_by"] is None else r["trained_by"]
        print(f"{r['name']:<18} {r['recipe']:<40} {100 * r['test_accuracy']:>8.2f}% {r['seconds']:>8.1f} {rank:>4}")
    processes = f"{workers.world_size} process(es) x {workers.threads} thread(s)"
    print(f"total training time {total:.1f} s on {workers.device} ({processes}); wall time {wall:.1f} s")
    if args.json:
        summary = {"device": str(workers.device), "processes": workers.world_size, "threads": workers.threads}
        write_json_atomic(Path(args.json), {**summary, "wall_seconds": wall, "models": rows})
    return 0


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted run kept, for the line Ctrl-C ends it with."""
    from ._io import same_command_again

    if not args.resume:
        return "nothing was kept (--resume FILE keeps the training state after every epoch)"
    saved = Path(args.resume)
    again = same_command_again({"--out": args.out, "--json": args.json, **_paper_files(args.out_dir)}, args.overwrite)
    if (saved.is_dir() and any(saved.glob("*.state.pt"))) or saved.is_file():
        return f"{again} resumes from --resume {args.resume}, after the last epoch saved there"
    return f"no epoch had ended, so --resume {args.resume} holds nothing yet: {again} starts again"


# train()'s arguments that an option sets, by the name train()'s errors give them
_OPTIONS = {"lr": "--lr", "val_fraction": "--val-fraction", "batch_size": "--batch-size", "epochs": "--epochs"}
# train()'s other words for its arguments in such a message (check_compiled_batches'), as the command line says them
_ARGUMENTS_SAID = (
    ("compile=True", "--compile"),
    ("a batch_size", "a --batch-size"),
    ("or compile=False", "or no --compile"),
)


def _named_as_typed(message: str, args: argparse.Namespace) -> str:
    """`message` (an error of train() or of a recipe's settings) naming the option the user typed: "--lr must be
    > 0", "--set sigma=abc: sigma must be a real number"."""
    first = message.split(" ", 1)[0]
    name, equals, value = first.partition("=")
    if name in _OPTIONS:
        message = (f"{_OPTIONS[name]} {value}" if equals else _OPTIONS[name]) + message[len(first) :]
        for said, typed in _ARGUMENTS_SAID:
            message = message.replace(said, typed)
        return message
    given = dict(args.settings)
    if name in given:
        return f"{message} (from --set {name}={given[name]})"
    return message


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (OSError, ValueError, TypeError) as error:  # missing or malformed files, bad settings: no traceback
        raise SystemExit(f"nemesis-fast train: {_named_as_typed(str(error), args)}") from error


def _check_model_arguments(args: argparse.Namespace) -> None:
    """--t, --depth and --conv2-padding only where they shape the model: refused, not ignored, elsewhere."""
    if args.t is not None and args.activation != "brelu" and not args.paper:
        raise SystemExit("nemesis-fast train: --t is BReLU's threshold; it needs --activation brelu (or --paper)")
    if args.depth is not None and _model_name(args) != "resnet" and not args.paper:
        raise SystemExit(f"nemesis-fast train: --depth is the ResNet's; --model is {_model_name(args)}")
    if args.conv2_padding is not None and _model_name(args) != "cifar_cnn" and not args.paper:
        raise SystemExit(f"nemesis-fast train: --conv2-padding is cifar_cnn's; --model is {_model_name(args)}")


def _model_name(args: argparse.Namespace) -> str:
    from .paper_models import DEFAULT_MODEL

    return args.model or DEFAULT_MODEL[args.data]


def _paper_files(out_dir: str | None) -> dict[str, Path]:
    """The checkpoints --paper writes under `out_dir`, by the name an error gives them."""
    from .paper_models import PAPER_MODELS

    if not out_dir:
        return {}
    return {f"--out-dir's {m.name}.pt": Path(out_dir) / f"{m.name}.pt" for m in PAPER_MODELS}


def _check_outputs(args: argparse.Namespace) -> None:
    """The options that write files, checked before the training rather than after it."""
    from ._io import (
        check_checkpoint_path,
        check_distinct_files,
        check_output_file,
        check_output_folder,
        refuse_existing,
    )

    if args.paper and args.out:
        raise ValueError("--out saves one model; with --paper give --out-dir")
    if args.out_dir and not args.paper:
        raise ValueError("--out-dir applies with --paper only; save one model with --out")
    resume_file = None if args.paper else args.resume
    for option, path in (("--out", args.out), ("--json", args.json), ("--resume", resume_file)):
        if path is not None:
            check_output_file(path, option)
    for option, folder in (("--out-dir", args.out_dir), ("--resume", args.resume if args.paper else None)):
        if folder is not None:
            check_output_folder(folder, option)
    if args.source is not None:
        check_checkpoint_path(args.source, "--source")
    inputs = {**_data_files(args), "--source": args.source}
    written = {"--out": args.out, "--json": args.json, **_paper_files(args.out_dir)}
    check_distinct_files({**inputs, **written, "--resume": resume_file})
    if not args.overwrite:
        refuse_existing(written)


def _input_shape(model_name: str) -> tuple[int, int | None]:
    """(channels, image size; None: any) of the images `model_name` takes when built without them."""
    from .models import MODELS

    parameters = inspect.signature(MODELS[model_name]).parameters
    size = parameters["input_size"].default if "input_size" in parameters else None
    return parameters["in_channels"].default, size


def _shape_kwargs(model_name: str, images: torch.Tensor) -> dict[str, int]:
    """The builder's in_channels (and input_size, where it takes one) for `images`: any --model takes the data."""
    _, channels, height, width = images.shape
    kwargs = {"in_channels": channels}
    if _input_shape(model_name)[1] is not None:
        if height != width:
            raise ValueError(f"--model {model_name} takes square images; the data are {channels}x{height}x{width}")
        kwargs["input_size"] = height
    return kwargs


def _check_paper_shape(model_name: str, images: torch.Tensor) -> None:
    """--paper builds `model_name` for its default input: refused where the data have another shape."""
    channels, size = _input_shape(model_name)
    _, *shape = images.shape
    if shape[0] != channels or (size is not None and shape[1:] != [size, size]):
        takes = f"{channels}x{size}x{size}" if size is not None else f"{channels}-channel"
        raise ValueError(
            f"--model {model_name} with --paper takes {takes} images, but the data are {'x'.join(map(str, shape))}; "
            "choose another --model"
        )


def _run(args: argparse.Namespace) -> int:
    from ._checks import check_device
    from ._io import write_json_atomic
    from .checkpoints import load_checkpoint, save_checkpoint
    from .models import build_model
    from .parallel import set_threads
    from .resume import FileCheckpoint
    from .training import evaluate_accuracy, train

    device = check_device(args.device, "--device")
    _check_model_arguments(args)
    _check_outputs(args)
    if args.paper:
        return _paper(args)
    set_threads(args.threads, device)
    if not args.out:
        print("no --out: the trained model will not be saved (pass --out FILE to keep it)")
    train_data, test_data = _load(args)
    model_name = _model_name(args)
    model_kwargs: dict[str, Any] = {
        "activation": args.activation,
        "t": 1.0 if args.t is None else args.t,
        **_shape_kwargs(model_name, train_data[0]),
    }
    if model_name == "resnet":
        model_kwargs["depth"] = 20 if args.depth is None else args.depth
    if args.conv2_padding is not None:
        model_kwargs["conv2_padding"] = args.conv2_padding
    common = _train_kwargs(args, device)
    torch.manual_seed(args.seed)
    model = build_model(model_name, **model_kwargs)
    source = None
    if args.source:
        source, _ = load_checkpoint(args.source)
        first_output(source, train_data[0], "--source")
    result = train(
        model,
        train_data,
        args.recipe,
        settings=dict(args.settings),
        dataset=args.data,
        seed=args.seed,
        source_model=source,
        checkpoint=FileCheckpoint(args.resume, "--resume") if args.resume else None,
        **common,
    )
    accuracy = evaluate_accuracy(model, *test_data)
    print(
        f"{args.recipe} {model_name} ({args.activation}): test accuracy {100 * accuracy:.2f}% after "
        f"{len(result.history)} epochs (best {result.best_epoch}), {result.seconds:.1f} s on {device}"
    )
    metrics = {"test_accuracy": accuracy, "val_accuracy": result.val_accuracy, "history": result.history}
    if args.out:
        save_checkpoint(args.out, model, recipe=args.recipe, settings=result.settings, metrics=metrics)
        print(f"saved {args.out}")
    if args.json:
        write_json_atomic(Path(args.json), {"recipe": args.recipe, "settings": result.settings, **metrics})
    return 0
