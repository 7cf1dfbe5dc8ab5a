"""`nemesis-fast evaluate`: the robustness tables of the paper's seven models under five attacks."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ._checks import MAX_THREADS

THREADS_HELP = (
    "CPU threads per process (default 0: torch's default, or under torchrun usable cores / processes on the "
    "machine unless OMP_NUM_THREADS is set to more than 1; torchrun's own OMP_NUM_THREADS=1 counts as unset)"
)


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer in low..high (high None: no upper bound); argparse names the option."""
    bounds = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {value}")
        return value

    return parse


def _run(args: argparse.Namespace) -> int:
    import torch

    from .evaluation import ConfigError, evaluate, preset_path

    overrides = {
        "data_dir": args.data_dir,
        "dataset": args.dataset,
        "out_dir": args.out,
        "device": args.device,
        "test_samples": args.test_samples,
        "synthetic": True if args.synthetic else None,
        "cache_dir": args.cache_dir,
        "threads": args.threads,
    }
    if args.config and args.preset:
        raise SystemExit(
            "nemesis-fast evaluate: give --config or --preset, not both (a config file starts from a preset with "
            'a top-level base = "<preset>")'
        )
    try:
        config = args.config or (preset_path(args.preset) if args.preset else None)
        progress = None if not args.no_progress else False
        evaluate(config, progress=progress, cached_only=args.cached_only, **overrides)
    except (ConfigError, OSError) as error:  # OSError: a full disk, a folder that went away, ...
        raise SystemExit(f"nemesis-fast evaluate: {error}") from error
    except torch.OutOfMemoryError as error:
        raise SystemExit(
            f"nemesis-fast evaluate: out of GPU memory ({str(error).splitlines()[0]}). A smaller batch_size in the "
            "config (the test images of an attack batch), [certify] batch_size or [training] batch_size needs less; "
            "what is cached is kept, so the command then continues (the attack units of the old batch_size are "
            "computed again)"
        ) from error
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="train the paper's seven models and report their accuracy under white-box and black-box attacks",
        description="With no arguments: a small but real evaluation on the MNIST sample shipped with the package "
        "(the 'quick' preset, a few minutes on a CPU). With --data-dir: the full MNIST or CIFAR-10 files, with the "
        "'paper_headline' settings unless --preset or --config says otherwise (--preset paper: the authors' own "
        "experiment, on MNIST: its eps and bits are MNIST's, so --dataset cifar10 refuses it and the presets built "
        "on it; quick and paper_headline take either data set). Runs under torchrun too: each model is trained "
        "once, by one process, and the test set "
        "is sharded across the processes. Results go to --out: results.json/.csv/.md, whitebox.png, examples.png, "
        "blackbox_eps.png (the black-box eps sweep) and perturbation.png (the minimal perturbations) where the config "
        "asks for them (not quick), certified.png and "
        "certified.csv (the [certify] section), models/<name>.pt (every trained model, a checkpoint for "
        "`nemesis-fast certify`; save_models = false in the config: none); models, attacks and certificates are "
        "cached there (or in --cache-dir, which may be a folder local to each machine), so an "
        "interrupted run continues where it stopped.",
    )
    p.add_argument("--config", help="a TOML or JSON config file (see nemesis_fast/evaluation/presets/paper.toml)")
    p.add_argument(
        "--preset",
        help="a shipped config: quick, paper (the authors' settings), paper_table (their Table 1's attack "
        "settings and FGSM adversarial training's examples, black-box only), paper_weak_source (that table from "
        "a source as weak as theirs), paper_gpu_check (paper's models and black-box table on the first 1,000 test "
        "images, for one call of a GPU machine), paper_cifar10 (the authors' settings on CIFAR-10) or "
        "paper_headline (this package's first reading of the paper's text; the settings with --data-dir alone)",
    )
    p.add_argument("--data-dir", help="folder of the MNIST IDX files, or of cifar-10-batches-py")
    p.add_argument("--dataset", choices=("mnist", "cifar10"), help="default: mnist")
    p.add_argument("--synthetic", action="store_true", help="random data of the data set's shape (throughput runs)")
    p.add_argument("--test-samples", type=int_in(0), help="attack only the first N test images (0: all)")
    p.add_argument(
        "--out",
        help="output folder (default: nemesis-results); refused when it holds the results of a run with other "
        "settings, or files the run would write (results.csv, models/...) without a results.json of an evaluation",
    )
    p.add_argument(
        "--cache-dir",
        help="cache folder (default: <out>/cache); under torchrun on several machines it need not be shared",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--threads", type=int_in(0, MAX_THREADS), help=THREADS_HELP)
    p.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="train and attack nothing: report what the cache holds so far (models trained, cells complete) "
        "in <out>/partial/, with the models trained so far in <out>/partial/models/; for a look at a run still "
        "going on, beside it",
    )
    p.set_defaults(handler=_run, interrupted=lambda args: "the same command resumes from the units its cache holds")
