"""The options of `nemesis-fast train`, by group: data, model and recipe; training budget; output and resuming."""

from __future__ import annotations

import argparse
import ast
from typing import Any

from ._cli_evaluate import int_in

DATASETS = ("mnist", "cifar10")


_WORDS = {"true": True, "false": False, "none": None}


def _setting(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE true, false or none (any case), a Python literal (0.3, 10, (0, 1), True) or else a
    string (online)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    if value.lower() in _WORDS:
        return key, _WORDS[value.lower()]
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def add_model_arguments(p: argparse._ArgumentGroup) -> None:
    from .defenses.recipes import RECIPES
    from .models import ACTIVATIONS, CONV2_PADDINGS, MODELS

    # --dataset and --data-dir: the names evaluate and certify give these options
    p.add_argument("--data", "--dataset", choices=DATASETS, default="mnist", help="data set (default: mnist)")
    p.add_argument(
        "--root",
        "--data-dir",
        help="folder of the data files (MNIST IDX files, or cifar-10-batches-py or its parent); for MNIST the "
        "default is the 10k/2k sample shipped with the package",
    )
    p.add_argument("--model", choices=tuple(MODELS), help="network (default: mnist_cnn / cifar_cnn)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="relu (default), or brelu (bounded ReLU)")
    p.add_argument("--t", type=float, help="BReLU threshold (default 1; with --activation brelu or --paper)")
    p.add_argument("--depth", type=int, help="ResNet depth, 6n+2 (default 20; with --model resnet)")
    p.add_argument(
        "--conv2-padding",
        choices=CONV2_PADDINGS,
        help="cifar_cnn's second convolution (default valid; the authors' scripts: same)",
    )
    p.add_argument("--recipe", choices=tuple(RECIPES), default="standard", help="defense recipe (default: standard)")
    p.add_argument(
        "--set",
        dest="settings",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe setting, e.g. --set mode=online --set eps=0.2 (repeatable)",
    )
    p.add_argument("--source", help="checkpoint of the source model of offline recipes (default: train one)")
    p.add_argument("--limit", type=int_in(1), help="train on the first N training images only")


def add_budget_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--epochs", type=int_in(1), default=20, help="passes over the training set (default 20)")
    p.add_argument(
        "--batch-size", type=int_in(1), default=128, help="images per step, before augmentation (default 128)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="training images held out for validation (default 0.1)"
    )
    p.add_argument(
        "--val-rows",
        choices=("images", "last"),
        default="images",
        help="images: a random --val-fraction of the images, validated clean (default); last: the last rows of the "
        "training set as the recipe lays it out (GDA's fixed copies, offline examples), as Keras' validation_split",
    )
    p.add_argument(
        "--patience", type=int_in(0), default=5, help="early-stopping patience in epochs (default 5); 0: never stop"
    )
    p.add_argument("--seed", type=int_in(0), default=0, help="seeds the weights, shuffling and noise (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when a GPU is visible)")
    p.add_argument(
        "--amp",
        nargs="?",
        const="bf16",
        choices=("bf16", "fp16"),
        help="mixed precision: bf16 (also a bare --amp) or fp16 (with gradient scaling); default: none",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the forward passes")


def add_output_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--out", help="save the trained model to this checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out, --json and --out-dir's checkpoints where they exist (default: refused before training)",
    )
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="keep the whole training state in FILE after every epoch (with --paper: a folder, one "
        "FILE/<name>.state.pt per model); the same command run again after an interruption continues from it, to "
        "the weights an uninterrupted run would have (a state of another run is refused)",
    )
    p.add_argument("--out-dir", help="with --paper: save each model as OUT_DIR/<name>.pt")
    p.add_argument("--json", help="also write the results to this JSON file")
