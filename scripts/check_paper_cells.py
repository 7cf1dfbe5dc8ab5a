"""Checks for the `paper` preset's black-box cells that sit far from the paper's (BENCHMARKS.md, "MNIST: the
authors' experiment"): train one model of the run again with one thing changed, and see how far the cells move.

``source VARIANT [--images N] [--cw-images N] [--columns fgsm,rfgsm,...] [--eps 0.1,0.2,...] [--train-images N]
[--epochs N] [--also TAG,...]``: another black-box source, by default a second copy of the run's (the authors' small
ResNet, the preset's recipe: Adam, batch 128, 10% validation, up to 20 epochs, patience 5) with another
initialisation; the preset's black-box attacks (those of ``--columns``; FGSM and R+FGSM at the eps of ``--eps``) are
crafted on it (same settings, same per-chunk seeds, so JSMA draws the same targets) on the first test images, and
every defense is judged on them beside the run's own source's adversarials for the same images (the run's cached
verdicts). Also prints both sources' clean accuracy and median logit margin (top-1 minus top-2 logit), which sets
how far C&W's confidence 10 pushes. VARIANT:

- ``seed:N``: torch's initialisation with seed N (the weights, the batch order and the validation split);
- ``keras``: the initialisation of the authors' Keras 2.0 code (Glorot-uniform kernels, zero biases), seed 0;
- ``model:NAME``: a trained model of the run as the source (``model:standard``: the CNN, as in the authors'
  "same architecture" figure, where the CNN itself is attacked white-box);
- ``check:TAG``: the model of an earlier defense check (e.g. ``check:standard-first1000``).

``--train-images N`` trains the new source (``seed:N``, ``keras``) on the first N training images only, split as for
``defense --train-images``, and ``--epochs N`` for N epochs (the authors' scripts trained for 1 epoch by default until
27 June 2017, 6ce5edd24); ``--also TAG,...`` adds the models of earlier defense checks to the judges.

``attack NAME [--set KEY=VALUE ...] [--eps EPS] [--images N]``: the run's own source and one black-box attack with
attack settings changed (keys of the config's [attack] section, e.g. ``cw_confidence=0``; same per-chunk seeds),
on the first N test images, judged by every defense (and by the source itself) beside the run's cached verdicts
for the same images.

``defense NAME [--set KEY=VALUE ...] [--patience N|none] [--epochs N] [--seed N] [--init keras] [--examples-from TAG]
[--images N] [--noisy-validation | --keras-validation | --cleverhans-2017 | --train-images N] [--columns fgsm,rfgsm,...]
[--eps 0.1,0.2,...]``: the defense retrained with recipe settings, the early-stopping patience, the epochs, the seed or
the initialisation changed (``--init keras``: the authors' Keras 2.0 defaults, as for ``source keras``), or validated on
the rows the authors' Keras code validated on (``validation_split`` holds out the *last* 10% of the rows it is given,
unshuffled): for GDA noisy held-out images (``--noisy-validation``), or the authors' own rows (``--keras-validation``:
all 60,000 originals, then 10 noisy copies of all of them, copy by copy, unclipped; the last 66,000 rows, noisy copies
of images trained on, validate), for the offline recipes (FGSM adversarial training, VAT) their examples of the last
12,000 training images, with the originals and the other examples trained on (``--keras-validation``:
:func:`nemesis_fast.train`'s ``val_rows="last"``, the `paper` preset's own validation since 2026-12-03, where the flag
then changes nothing; the checks before drew the copies' noise with torch.randn, not the library's counter-based noise;
with ``--examples-of test`` the examples are made of the test images, as the scripts from 15 August 2017 could only use
them: 60,000 originals and 3,000 examples trained on, 7,000 validated on), or for VAT with its examples made as the
authors' code made them (``--cleverhans-2017``: cleverhans' vatm given their Keras model's softmax output for logits, 5
power iterations, cleverhans' 2017 normalisation, its KL averaged over all 60,000 images as their one call did, or over
each batch of 1,000 with ``--vat-mean-over 0``; validated as the run validates VAT, on the last rows since 2026-12-03),
or trained on the first N training images only (``--train-images``: the authors' `train.py` of 27 June 2017 trained on
the first 1,000, validating on the last 100 of them); ``--examples-from TAG`` has the CNN of an earlier check (e.g.
``standard-first1000``) make an offline recipe's examples; ``--unfinished`` judges the best weights so far of a check
whose training is still going (or was stopped), from its epoch checkpoint, without training. Prints each model's
accuracy on the clean test and training images. Judged beside the run's model on the run's own cached black-box
adversarials (all test images, or the first N with ``--images N``), crafted again on the run's source with the run's
per-chunk seeds where the cache no longer holds them (the committed archive keeps verdicts, not images; DeepFool, JSMA
and C&W then take long: ``--images`` and ``--columns`` limit them; whole chunks crafted so go into the run's cache, for
the next check). ``--eps`` judges FGSM and R+FGSM at these eps instead of the table's (the authors' notebook plots them
at 0.1-1.0).

``--preset paper_table`` (before the kind of check) crafts and judges with that preset's attack settings (JSMA theta
0.1, C&W confidence 2.3: the scripts' until 16 August 2017) beside its verdicts in the same cache; the results file
then ends in ``-paper_table``. ``--label TEXT`` (before the kind of check) appends ``-TEXT`` to the results file's
name, e.g. to judge more models (``--also``) beside a source check already made.

Trained variants are kept in `<run>/checks/` (with an epoch checkpoint), so a rerun resumes; the results go to
`<run>/checks/<name>.json` (``defense``: `<name>-images<N>.json` with ``--images``), with the check's arguments. A
check whose file already holds the results of a check with other arguments is refused before it starts (move the
file away to run it).

    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist source keras --images 2000 --cw-images 200
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist attack cw --set cw_confidence=0 --images 200
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist defense fgsm_adversarial --set eps=0.1
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist defense gda --noisy-validation
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist defense label_smoothing --init keras \
        --columns fgsm,rfgsm
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist defense fgsm_adversarial --keras-validation
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist defense label_smoothing --train-images 1000 \
        --columns fgsm,rfgsm --eps 0.1,0.2,0.3
    python scripts/check_paper_cells.py --data-dir ../shared/data/mnist defense fgsm_adversarial --keras-validation \
        --examples-of test
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch
from authors_training_sets import (  # beside this script
    authors_vat_data,
    first_training_images,
    keras_validation_of_test_examples,
    noisy_validation,
)
from paper_cells import (  # beside this script
    COLUMNS,
    check_arguments,
    checked_models,
    chunk_stop,
    crafted_on,
    first_chunks,
    judge,
    margins,
    paper_evaluation,
    parse_settings,
    percent,
    results_file,
    results_name,
    table_columns,
    train_variant,
    unfinished_variant,
)
from torch import nn

from nemesis_fast.data.loader import to_float
from nemesis_fast.evaluation.attack import Attacks
from nemesis_fast.evaluation.config import ConfigError
from nemesis_fast.evaluation.load import validate
from nemesis_fast.evaluation.paper import paper_value
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import set_threads


def source_tag(args: argparse.Namespace) -> str:
    """The name of the ``source`` check's variant (its trained model's, when it trains one)."""
    variant = args.variant
    tag = f"source-{variant.replace(':', '')}"
    if variant.startswith(("model:", "check:")):
        if args.train_images is not None or args.epochs is not None:
            raise SystemExit("--train-images and --epochs train a new source; model: and check: name a trained one")
        return tag
    if not (variant == "keras" or (variant.startswith("seed:") and variant[5:].isdigit())):
        raise SystemExit(f"the source variant must be keras, seed:N, model:NAME or check:TAG, got {variant!r}")
    tag += f"-first{args.train_images}" if args.train_images is not None else ""
    return tag + (f"-epochs{args.epochs}" if args.epochs is not None else "")


def variant_source(evaluation: Evaluation, args: argparse.Namespace, tag: str, folder: Path) -> nn.Module:
    """The ``source`` check's source: a model of the run, of an earlier check, or one trained now as `tag`."""
    kind, _, name = args.variant.partition(":")
    if kind == "model":
        return evaluation.models.get(name)
    if kind == "check":
        return checked_models(evaluation, name, folder, "check:")[name]
    changes: dict[str, Any] = {}
    if args.train_images is not None:
        changes["rows"] = lambda: first_training_images(evaluation, args.train_images)
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    seed = int(name) if kind == "seed" else evaluation.config.seed
    init = "keras" if kind == "keras" else "torch"
    return train_variant(evaluation, SOURCE, tag, folder, seed=seed, init=init, **changes)


def check_source(evaluation: Evaluation, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    tag = source_tag(args)
    results = results_name(tag, args)
    path = results_file(folder, results, args)
    variant = args.variant
    sources = {"run": evaluation.models.get(SOURCE), variant: variant_source(evaluation, args, tag, folder)}
    x, y = evaluation.attacks.test_chunk((0, len(evaluation.data.test_labels)))
    report: dict[str, Any] = {
        "check": results,
        "arguments": check_arguments(args),
        "sources": {n: margins(m, x, y) for n, m in sources.items()},
        "cells": {},
    }
    print(json.dumps(report["sources"]), flush=True)
    judges = {d: evaluation.models.get(d) for d in evaluation.config.defenses} | checked_models(
        evaluation, args.also, folder, "--also"
    )
    for attack, eps in table_columns(args.columns, args.eps):
        limit = args.cw_images if attack == "cw" else args.images
        cell = crafted_on(evaluation, evaluation.attacks, sources[variant], attack, eps, limit, judges)
        report["cells"][f"{attack} {eps}"] = cell
        line = ", ".join(
            f"{d} {percent(a['run_source'])} -> {percent(a['variant_source'])}" for d, a in cell["accuracy"].items()
        )
        print(f"{attack} {eps} ({cell['images']} images): {line}", flush=True)
        path.write_text(json.dumps(report, indent=1))
    return report


def check_attack(evaluation: Evaluation, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    attack = args.name
    if attack not in [a for a, _ in COLUMNS]:
        raise SystemExit(f"the attack must be one of the black-box table's, got {attack!r}")
    config = copy.deepcopy(evaluation.config)
    changes = parse_settings(args.set)
    for key, value in changes.items():
        if not hasattr(config.attack, key):
            raise SystemExit(f"--set: unknown attack setting {key!r}")
        # only the attack's own settings change what it crafts (the image counts change the chunks judged, not it)
        if not key.startswith(f"{attack}_") or key.endswith("_test_samples"):
            raise SystemExit(f"--set: {key!r} does not change how {attack} crafts its images")
        setattr(config.attack, key, value)
    try:
        validate(config)
    except ConfigError as error:
        raise SystemExit(f"--set: {error}") from error
    attacks = Attacks(config, evaluation.data, evaluation.models, evaluation.cache)
    eps = args.eps if args.eps is not None else attacks.eps(attack, None)  # the changed config's eps, where set
    tag = results_name("-".join([f"attack-{attack}", *(f"{k}{v}" for k, v in changes.items())]), args)
    path = results_file(folder, tag, args)
    source = evaluation.models.get(SOURCE)
    judges = {d: evaluation.models.get(d) for d in evaluation.config.defenses} | {"source": source}
    cell = crafted_on(evaluation, attacks, source, attack, eps, args.images, judges)
    for name, a in cell["accuracy"].items():
        run = "" if a["run_source"] is None else f"run {a['run_source']:.2f} -> "
        print(f"{attack} {eps} {changes} ({cell['images']} images) {name}: {run}changed {a['variant_source']:.2f}")
    report = {"check": tag, "arguments": check_arguments(args), "attack": attack, "eps": eps, "changes": changes}
    report |= cell
    path.write_text(json.dumps(report, indent=1))
    return report


def defense_changes(evaluation: Evaluation, args: argparse.Namespace, folder: Path) -> tuple[str, int, dict[str, Any]]:
    """What ``defense`` changes in the training of its model: (the variant's tag, its seed, the other arguments of
    :func:`paper_cells.train_variant`, among them `rows`, which builds another training set only when it trains)."""
    name = args.name
    settings = parse_settings(args.set)
    changes: dict[str, Any] = {"settings": settings}
    if args.patience is not None:
        changes["patience"] = None if args.patience == "none" else int(args.patience)
    parts = [f"{k}{v}" for k, v in settings.items()] + ([f"patience{args.patience}"] if args.patience else [])
    if args.epochs is not None:
        changes["epochs"] = args.epochs
        parts.append(f"epochs{args.epochs}")
    seed = evaluation.config.seed
    if args.seed is not None:
        seed = args.seed
        parts.append(f"seed{seed}")
    if args.noisy_validation:
        changes["rows"] = lambda: noisy_validation(evaluation, name, seed)
        parts.append("noisyval")
    if args.examples_of is not None and not args.keras_validation:
        raise SystemExit("--examples-of needs --keras-validation")
    if args.keras_validation and args.examples_of == "test":
        changes["rows"] = lambda: keras_validation_of_test_examples(evaluation, name, seed)
        changes["recipe"] = "standard"
        parts.append("kerasval-testexamples")
    elif args.keras_validation and evaluation.models.budget(name)["val_rows"] != "last":
        changes["val_rows"] = "last"  # (the `paper` preset's own way since 2026-12-03: there nothing changes)
        parts.append("kerasval")
    if args.cleverhans_2017:
        changes["rows"] = lambda: authors_vat_data(evaluation, name, seed, args.vat_mean_over)
        changes["recipe"] = "standard"
        parts.append("cleverhans2017" + (f"-mean{args.vat_mean_over}" if args.vat_mean_over else ""))
    if args.train_images is not None:
        changes["rows"] = lambda: first_training_images(evaluation, args.train_images)
        parts.append(f"first{args.train_images}")
    if args.examples_from is not None:
        if "source_model" not in evaluation.models.key(name) or "recipe" in changes:
            raise SystemExit(f"--examples-from needs an offline recipe trained as the run trains it, got {name!r}")
        changes["source"] = checked_models(evaluation, args.examples_from, folder, "--examples-from")[
            args.examples_from
        ]
        parts.append(f"examplesof-{args.examples_from}")
    if args.init == "keras":
        parts.append("kerasinit")
    return "-".join([name, *parts]), seed, changes


def check_defense(evaluation: Evaluation, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    name = args.name
    if name not in evaluation.config.defenses or name == "feature_squeezing":
        raise SystemExit(f"the defense must be one of the run's trained defenses, got {name!r}")
    tag, seed, changes = defense_changes(evaluation, args, folder)
    judged = tag
    if args.unfinished:
        variant, epochs = unfinished_variant(evaluation, name, tag, folder)
        judged = f"{tag}-{epochs}"
    results = results_name(f"{judged}-images{args.images}" if args.images else judged, args)  # and the images judged
    path = results_file(folder, results, args)
    if not args.unfinished:
        variant = train_variant(evaluation, name, tag, folder, seed=seed, init=args.init, **changes)
    judges = {"run": evaluation.models.get(name), "variant": variant}
    x, y = evaluation.attacks.test_chunk((0, len(evaluation.data.test_labels)))
    train_x, train_y = to_float(evaluation.data.train_images), evaluation.data.train_labels
    models = {
        n: {**margins(m, x, y), "train_accuracy": margins(m, train_x, train_y)["clean_accuracy"]}
        for n, m in judges.items()
    }
    report: dict[str, Any] = {"check": results, "arguments": check_arguments(args), "models": models, "cells": {}}
    print(json.dumps(report["models"]), flush=True)
    attacks = evaluation.attacks
    source = evaluation.models.get(SOURCE)
    columns = table_columns(args.columns, args.eps)

    for attack, eps in columns:

        def stored(chunk, x, y, attack=attack, eps=eps):
            keep = chunk_stop(chunk, args.images) - chunk[0]
            if keep == len(y):  # a whole chunk: crafted once and cached, as the run does
                return attacks.adversarial(attack, eps, chunk)["x_adv"].to(x.device), y
            x, y = x[:keep], y[:keep]
            entry = evaluation.cache.load("blackbox", attacks.blackbox_key(attack, eps, chunk))
            if entry is not None:
                return entry["x_adv"][:keep].to(x.device), y
            return attacks.make(attack, source, attacks.seed(attack, chunk), eps).run(x, y).x_adv, y

        accuracy, images = judge(evaluation, judges, first_chunks(evaluation, attack, args.images), stored)
        table_eps = dict(COLUMNS)[attack]
        paper = paper_value("mnist", name, attack) if eps == table_eps else None
        report["cells"][f"{attack} {eps}"] = {"images": images, "paper": paper, **accuracy}
        print(
            f"{attack} {eps} ({images} images): run {accuracy['run']:.2f} -> variant {accuracy['variant']:.2f}",
            flush=True,
        )
        path.write_text(json.dumps(report, indent=1))
    return report


def command_line() -> argparse.ArgumentParser:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--run", default="runs/paper-mnist", help="the paper run's output folder (its cache)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--preset",
        choices=("paper", "paper_table"),
        default="paper",
        help="the attack settings (paper_table: JSMA theta 0.1, C&W confidence 2.3; its verdicts in the same cache)",
    )
    parser.add_argument(
        "--label", help="appended to the results file's name: keeps another variant of a check beside the first"
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    source = kinds.add_parser("source", help="another black-box source")
    source.add_argument(
        "variant", help="keras, seed:N, model:NAME (a model of the run) or check:TAG (an earlier check's)"
    )
    source.add_argument("--images", type=int, default=2000, help="first test images (FGSM, R+FGSM, DeepFool, JSMA)")
    source.add_argument("--cw-images", type=int, default=200, help="first test images for C&W")
    source.add_argument("--columns", help="comma-separated attacks of the table to craft (default: all five)")
    source.add_argument("--eps", help="comma-separated eps for FGSM and R+FGSM (default: the table's)")
    source.add_argument(
        "--train-images", type=int, help="train it on the first N training images (the last 10%% validate)"
    )
    source.add_argument("--epochs", type=int, help="train it for N epochs (default: the run's budget, 20)")
    source.add_argument("--also", help="comma-separated tags of earlier defense checks whose models judge too")
    attack = kinds.add_parser("attack", help="one black-box attack with its settings changed, on the run's source")
    attack.add_argument("name")
    attack.add_argument("--set", action="append", help="an attack setting of the config, KEY=VALUE (JSON value)")
    attack.add_argument("--eps", type=float, help="FGSM, R+FGSM: the eps (default: the preset's table eps)")
    attack.add_argument("--images", type=int, default=200, help="first test images")
    defense = kinds.add_parser("defense", help="a defense retrained with one change")
    defense.add_argument("name")
    defense.add_argument("--set", action="append", help="a recipe setting, KEY=VALUE (JSON value)")
    defense.add_argument("--patience", help="early-stopping patience, or none")
    defense.add_argument("--epochs", type=int, help="the training budget in epochs (default: the run's, 20)")
    defense.add_argument("--seed", type=int, help="another training seed (initialisation, batch order, split)")
    defense.add_argument("--init", choices=["torch", "keras"], default="torch", help="keras: Glorot-uniform, zero bias")
    defense.add_argument("--columns", help="comma-separated attacks of the table to judge (default: all five)")
    defense.add_argument("--eps", help="comma-separated eps for FGSM and R+FGSM (default: the table's)")
    defense.add_argument("--images", type=int, default=0, help="judge on the first N test images (default: all)")
    defense.add_argument(
        "--examples-from", help="offline recipes: the CNN of another check (its tag) makes the examples, not the run's"
    )
    defense.add_argument(
        "--unfinished",
        action="store_true",
        help="judge the best weights so far of this check's training, still going or stopped, without training",
    )
    validation = defense.add_mutually_exclusive_group()
    validation.add_argument("--noisy-validation", action="store_true", help="GDA: validate on noisy held-out images")
    validation.add_argument(
        "--keras-validation",
        action="store_true",
        help="GDA, offline recipes: the authors' rows, the last 10%% of them validating",
    )
    validation.add_argument(
        "--cleverhans-2017",
        action="store_true",
        help="vat: its examples made as the authors' code made them (softmax outputs taken for logits)",
    )
    validation.add_argument(
        "--train-images", type=int, help="train on the first N training images (the last 10%% of them validate)"
    )
    defense.add_argument(
        "--vat-mean-over",
        type=int,
        default=60000,
        help="--cleverhans-2017: the images vatm's KL is averaged over (the authors: 60000; 0: each batch of 1000)",
    )
    defense.add_argument(
        "--examples-of",
        choices=("train", "test"),
        help="--keras-validation: the offline examples made of the training images (default) or of the test images",
    )
    return parser


def main() -> None:
    args = command_line().parse_args()
    if getattr(args, "epochs", None) is not None and args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {args.epochs}")
    set_threads(args.threads, torch.device("cpu"))
    run = Path(args.run)
    evaluation = paper_evaluation(run, args.data_dir, args.preset)
    checks = {"source": check_source, "attack": check_attack, "defense": check_defense}
    checks[args.kind](evaluation, args, run / "checks")


if __name__ == "__main__":
    main()
