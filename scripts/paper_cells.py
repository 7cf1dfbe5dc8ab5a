"""What the checks of `check_paper_cells.py` share: the `paper` run they start from, a model of it trained again with
one thing changed, and black-box cells judged on the run's chunks beside the run's cached verdicts."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nemesis_fast.evaluation import load_config, preset_path
from nemesis_fast.evaluation.attack import Attacks
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.parallel import Workers
from nemesis_fast.resume import FileCheckpoint
from nemesis_fast.training import train

# The black-box table's columns, FGSM and R+FGSM at the table's eps (the authors' notebook of 17 July 2017). Checks
# of 2026-12-02 made before it was found reported FGSM at 0.08 and 0.3 instead.
COLUMNS = [("fgsm", 0.1), ("rfgsm", 0.3), ("deepfool", None), ("jsma", None), ("cw", None)]


def keras_init(model: nn.Module) -> None:
    """Keras 2.0's defaults: glorot_uniform kernels, zero biases (convolutions and dense layers)."""
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def paper_evaluation(run: Path, data_dir: str, preset: str = "paper") -> Evaluation:
    """The `paper` run whose output folder (and cache) is `run`, on the MNIST files of `data_dir`, with the
    settings of `preset` (``paper_table``: the same models, JSMA and C&W as before 16 August 2017)."""
    config = load_config(preset_path(preset), {"data_dir": data_dir, "out_dir": str(run)})
    return Evaluation(config, Workers(), log=print, progress=False)


def train_variant(
    evaluation: Evaluation,
    name: str,
    tag: str,
    folder: Path,
    *,
    seed: int,
    init: str = "torch",
    rows: Callable[[], tuple[tuple, tuple]] | None = None,
    recipe: str | None = None,
    source: nn.Module | None = None,
    **changes: Any,
) -> nn.Module:
    """Model `name` of the run trained again as `tag` with `changes` (recipe settings, other arguments of
    :func:`nemesis_fast.train`), or loaded when trained before. `rows` builds ((training images, labels),
    (validation images, labels)) when the model is trained (None: the run's training set and split).
    `recipe` replaces the run's recipe of the model (then only `changes` give its settings); `source` replaces
    the run's CNN as the model an offline recipe makes its examples with."""
    models = evaluation.models
    torch.manual_seed(seed)
    model = models.build(name)
    if init == "keras":
        keras_init(model)
    path, record = folder / f"{tag}.pt", folder / f"{tag}.settings.json"
    key = models.key(name)
    # what the weights were trained from: the run's model key (preset, data, training) and what the check changed
    settings_of_weights = json.dumps(
        {"key": key, "seed": seed, "init": init, "rows": rows is not None, "recipe": recipe, "changes": changes},
        sort_keys=True,
        default=str,
    )
    if path.is_file():
        if record.is_file() and record.read_text() != settings_of_weights:
            raise SystemExit(f"{path} was trained with other settings than this check's ({record}); remove both")
        if not record.is_file():
            print(f"{tag}: loading {path}, trained before its settings were recorded", flush=True)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**(key["recipe_settings"] if recipe is None else {}), **changes.pop("settings", {})}
    budget = {**models.budget(name), "seed": seed, **changes}
    if source is None and "source_model" in key and recipe is None:
        source = models.get(models.examples_source(name))  # the run's: the standard CNN, or the first images' CNN
    data, validation = models._training_data(name)  # the run's: all the training images, or the first ones
    budget |= validation
    if rows is not None:
        data, budget["val_data"] = rows()
        budget["val_fraction"], budget["val_rows"] = 0.0, "images"
    recipe = recipe or key["recipe"]
    result = train(
        model, data, recipe, settings=settings, **budget, source_model=source, checkpoint=folder / f"{tag}.ckpt"
    )
    epochs = f"epoch {result.best_epoch} of {len(result.history)}"
    print(f"{tag}: best validation accuracy {100 * result.val_accuracy:.2f}% ({epochs})", flush=True)
    torch.save(model.state_dict(), path)
    record.write_text(settings_of_weights)
    (folder / f"{tag}.ckpt").unlink(missing_ok=True)
    return model.eval()


def unfinished_variant(evaluation: Evaluation, name: str, tag: str, folder: Path) -> tuple[nn.Module, str]:
    """Model `name` with the best weights so far of check `tag`'s training, still going or stopped (from its epoch
    checkpoint), and a name part saying which epoch they are, e.g. ``unfinished-epoch7of9``."""
    path = folder / f"{tag}.ckpt"
    if not path.is_file():
        raise SystemExit(f"--unfinished: no epoch checkpoint {path} (a finished check keeps {tag}.pt instead)")
    state = FileCheckpoint(path).load()
    model = evaluation.models.build(name)
    best = state["best_state"] is not None
    model.load_state_dict(state["best_state"] if best else state["model"])
    epoch = state["best_epoch"] if best else state["epoch"]
    print(f"{tag}: unfinished, the weights of epoch {epoch} (best so far) of {state['epoch']} trained", flush=True)
    return model.eval(), f"unfinished-epoch{epoch}of{state['epoch']}"


def checked_models(evaluation: Evaluation, tags: str | None, folder: Path, option: str) -> dict[str, nn.Module]:
    """The models of earlier defense checks named by their tags (comma-separated, e.g. ``label_smoothing-first1000``;
    the defense's name is the tag's first part), loaded from `folder`; `option` names the argument in the error."""
    models = {}
    for tag in tags.split(",") if tags else []:
        weights = folder / f"{tag}.pt"
        if not weights.is_file():
            raise SystemExit(f"{option}: no trained check {weights}")
        model = evaluation.models.build(tag.split("-")[0])
        model.load_state_dict(torch.load(weights, weights_only=True))
        models[tag] = model.eval()
    return models


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Clean accuracy (%) and the median top-1 minus top-2 logit."""
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    top = logits.topk(2, dim=1).values
    accuracy = 100 * (logits.argmax(1) == y).float().mean().item()
    return {"clean_accuracy": accuracy, "median_logit_margin": (top[:, 0] - top[:, 1]).median().item()}


def judge(evaluation: Evaluation, models: dict[str, nn.Module], chunks, adversarial) -> tuple[dict[str, float], int]:
    """Accuracy (%) of each of `models` on the adversarial images `adversarial(chunk, x, y)` of `chunks`."""
    attacks = evaluation.attacks
    correct: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    for chunk in chunks:
        x, y = attacks.test_chunk(chunk)
        x_adv, y = adversarial(chunk, x, y)
        for name, model in models.items():
            correct[name].append((attacks.predict(model, x_adv) == y).float())
    images = sum(len(c) for c in next(iter(correct.values())))
    return {name: 100 * torch.cat(c).mean().item() for name, c in correct.items()}, images


def crafted_on(
    evaluation: Evaluation,
    attacks: Attacks,
    source: nn.Module,
    attack: str,
    eps: float | None,
    limit: int,
    judges: dict[str, nn.Module],
) -> dict[str, Any]:
    """`attack` as `attacks` builds it, crafted on `source` for the first `limit` test images of the run's chunks
    (the run's per-chunk seeds), judged by `judges`, beside the run's cached verdicts for the same images (for
    the judges that are defenses of the run)."""
    started = time.perf_counter()

    def crafted(chunk, x, y):
        keep = chunk_stop(chunk, limit) - chunk[0]
        x, y = x[:keep], y[:keep]
        return attacks.make(attack, source, attacks.seed(attack, chunk), eps).run(x, y).x_adv, y

    chunks = first_chunks(evaluation, attack, limit)
    variant_accuracy, images = judge(evaluation, judges, chunks, crafted)
    run_accuracy = cached_accuracy(evaluation, attack, eps, limit)
    accuracy = {
        name: {"run_source": run_accuracy.get(name), "variant_source": variant_accuracy[name]} for name in judges
    }
    return {"images": images, "seconds": time.perf_counter() - started, "accuracy": accuracy}


def cached_accuracy(evaluation: Evaluation, attack: str, eps: float | None, limit: int) -> dict[str, float]:
    """The run's accuracy (%) of each of its defenses on the black-box `attack` at `eps`, on the first `limit` test
    images of the attack's chunks (0: all of them), from the run's cached verdicts."""
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in evaluation.config.defenses}
    for chunk in first_chunks(evaluation, attack, limit):
        verdict = evaluation.cache.load("verdict", evaluation.attacks.verdict_key(attack, eps, chunk))
        if verdict is None:
            raise SystemExit(f"the run's cache lacks the verdicts of {attack} at {eps}, chunk {chunk}")
        stop = chunk_stop(chunk, limit)
        for name in kept:
            kept[name].append(verdict["correct"][name][: stop - chunk[0]].float())
    return {name: 100 * torch.cat(c).mean().item() for name, c in kept.items()}


def first_chunks(evaluation: Evaluation, attack: str, limit: int) -> list[tuple[int, int]]:
    """The run's chunks of the black-box `attack` that hold any of the first `limit` test images (0: all)."""
    return [c for c in evaluation.blackbox_chunks(attack) if not limit or c[0] < limit]


def chunk_stop(chunk: tuple[int, int], limit: int) -> int:
    """Where a chunk's part among the first `limit` test images ends (0: no limit)."""
    return min(chunk[1], limit) if limit else chunk[1]


def table_columns(names: str | None, eps_list: str | None) -> list[tuple[str, float | None]]:
    """The (attack, eps) cells to judge: the table's columns named in `names` (None: all), FGSM and R+FGSM at each
    eps of `eps_list` (comma-separated; None: the table's eps)."""
    known = [a for a, _ in COLUMNS]
    asked = known if names is None else names.split(",")
    unknown = [a for a in asked if a not in known]
    if unknown:
        raise SystemExit(f"--columns: {', '.join(unknown)} is no column of the table ({', '.join(known)})")
    chosen = [(a, eps) for a, eps in COLUMNS if a in asked]
    if eps_list is None:
        return chosen
    if not any(a in ("fgsm", "rfgsm") for a, _ in chosen):
        raise SystemExit("--eps sets FGSM's and R+FGSM's eps, and neither is among the columns")
    sweep = [float(e) for e in eps_list.split(",")]
    return [(a, e) for a, eps in chosen for e in (sweep if a in ("fgsm", "rfgsm") else [eps])]


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """The --set KEY=VALUE arguments (VALUE in JSON) as a dict."""
    settings = {}
    for item in items or []:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    return settings


def results_name(tag: str, args: argparse.Namespace) -> str:
    """The name of a check's results file: the trained model's tag, the preset when it is not ``paper``, and the
    ``--label`` when there is one."""
    parts = [tag] + ([args.preset] if args.preset != "paper" else []) + ([args.label] if args.label else [])
    return "-".join(parts)


def percent(value: float | None) -> str:
    """An accuracy (%) to one decimal, "-" where there is none."""
    return "-" if value is None else f"{value:.1f}"


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that make a check's results what they are (not where the data, the run or the threads are)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("data_dir", "run", "threads")}


def results_file(folder: Path, name: str, args: argparse.Namespace) -> Path:
    """Where a check's report goes, `folder`/`name`.json; refused before any work when that file holds the report
    of a check made with other arguments (or of one that did not record them), so no results are overwritten."""
    path = folder / f"{name}.json"
    if path.is_file():
        earlier = json.loads(path.read_text()).get("arguments")
        if earlier != check_arguments(args):
            made = "arguments not recorded" if earlier is None else f"arguments {earlier}"
            raise SystemExit(f"{path} holds the results of another check ({made}); move it away to run this one")
    folder.mkdir(parents=True, exist_ok=True)
    return path
