"""The evaluation on two gloo processes joined as torchrun joins them: each model trained once, by the rank the
schedule names; the same weights on both ranks; the results of one process reading those weights; no shared
cache folder needed (two simulated machines, each with its own); an interrupted run resumes. (The torchrun
launch itself, with a shared cache folder: test_evaluation.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from _processes import run_processes

from nemesis_fast.evaluation import evaluate, load_config
from nemesis_fast.evaluation.cache import ResultCache
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE, Models
from nemesis_fast.parallel import Workers, plan, start, stop

CONFIG = """
dataset = "mnist"
device = "cpu"
threads = 1
test_samples = 16
batch_size = 8
defenses = ["standard", "fgsm_adversarial", "gda_brelu"]
blackbox_attacks = ["fgsm"]
whitebox_attacks = ["fgsm"]
whitebox_eps = [0.1]

[training]
epochs = 1
train_samples = 300
source_depth = 8

[defense]
gda_copies = 2
"""


TRAINING = re.compile(r"training .+ \(\w+, recipe \w+\) on \d+ images")  # the line a model's training starts with


class Interrupted(Exception):
    pass


def _evaluate(config: str, outs: list[str], logs: str) -> None:
    """One process of a run: `outs[rank]` is its output folder (its cache in there), its log goes to a file."""
    rank = int(os.environ["RANK"])
    with open(Path(logs) / f"rank{rank}.log", "w") as log:
        sys.stderr = log
        evaluate(config, out_dir=outs[rank], progress=False)


def _evaluate_rank0_slow(config: str, outs: list[str], logs: str) -> None:
    """:func:`_evaluate`, with rank 0's trainings taking 2 s more each."""
    real_train = Models._train

    def slow_train(self, name, needs):
        if self.workers.rank == 0:
            time.sleep(2.0)
        return real_train(self, name, needs)

    Models._train = slow_train
    _evaluate(config, outs, logs)


def _train(config: str, cache: str, defenses: list[str], crash_after_epoch: int = 0) -> None:
    """Trains (only) `defenses` into `cache` on one process, dying after that epoch when asked."""
    overrides = {"cache_dir": cache, "defenses": defenses, "blackbox_attacks": []}
    workers = start("cpu", 1)
    real_save = ResultCache.save

    def crashing_save(self, kind, settings, payload):
        path = real_save(self, kind, settings, payload)
        if kind == "training" and payload["state"]["epoch"] == crash_after_epoch:
            raise Interrupted
        return path

    ResultCache.save = crashing_save
    try:
        Evaluation(load_config(config, overrides), workers, log=lambda m: None, progress=False).models.prepare()
    except Interrupted:
        pass
    finally:
        ResultCache.save = real_save
        stop(workers)


def write_config(tmp_path: Path, text: str = CONFIG) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def models_of(config: str, out: Path):
    """The run's models, their cache keys and the cache in `out`."""
    models = Evaluation(load_config(config, {"out_dir": str(out)}), Workers(), log=lambda m: None, progress=False)
    return models.models, ResultCache(out / "cache")


def cells(results_json: Path) -> list[tuple]:
    data = json.loads(results_json.read_text())
    return [(c["defense"], c["attack"], c["setting"], c["eps"], c["accuracy"], c["mean_l2"]) for c in data["cells"]]


def test_two_machines_without_a_shared_cache_train_each_model_once(tmp_path):
    config = write_config(tmp_path)
    outs = [tmp_path / "machine0", tmp_path / "machine1"]  # each machine's own folder, its cache inside
    run_processes(_evaluate, 2, config, [str(o) for o in outs], str(tmp_path), local_world_size=1)
    models, _ = models_of(config, outs[0])
    jobs = models.jobs()
    schedule = plan(jobs, 2)
    assert sorted(schedule.trainer) == ["fgsm_adversarial", "gda_brelu", "resnet_source", "standard"]
    assert set(schedule.trainer.values()) == {0, 1}
    entries = [[ResultCache(out / "cache").load("model", models.key(job.name)) for job in jobs] for out in outs]
    for job, first, second in zip(jobs, *entries):
        assert first["trained_by"] == second["trained_by"] == schedule.trainer[job.name], job.name
        assert first["processes"] == 2 and first["threads"] == 1
        assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    for rank in range(2):
        log = (tmp_path / f"rank{rank}.log").read_text()
        trained_here = [job.name for job in jobs if schedule.trainer[job.name] == rank]
        assert len(TRAINING.findall(log)) == len(trained_here)  # its own models only, each once
    # The attack units (2 black-box chunks; 2 white-box chunks of the 3 defenses, and of GDA + BReLU through its own
    # gradient besides BPDA) are shared out: each machine's cache holds the outcomes of its own share only.
    done = [{p.name for kind in ("verdict", "whitebox") for p in (out / "cache" / kind).glob("*.pt")} for out in outs]
    assert done[0] and done[1] and not done[0] & done[1] and len(done[0] | done[1]) == 10
    shares = re.findall(r"rank (\d): (\d+) units to compute", (tmp_path / "rank0.log").read_text())
    assert [(int(r), int(n)) for r, n in shares] == [(0, len(done[0])), (1, len(done[1]))]
    data = json.loads((outs[0] / "results.json").read_text())
    assert data["world_size"] == 2 and data["threads"] == 1
    assert "2 process(es) x 1 thread(s)" in (outs[0] / "results.md").read_text()

    single = tmp_path / "single"  # one process, the weights the two wrote (and nothing else of their caches)
    shutil.copytree(outs[0] / "cache" / "model", single / "cache" / "model")
    run_processes(_evaluate, 1, config, [str(single)], str(tmp_path))
    assert not TRAINING.findall((tmp_path / "rank0.log").read_text())
    assert cells(single / "results.json") == cells(outs[0] / "results.json")


def test_an_interrupted_two_machine_run_resumes(tmp_path):
    config = write_config(tmp_path, CONFIG.replace("epochs = 1", "epochs = 2\npatience = 2"))
    outs = [tmp_path / "machine0", tmp_path / "machine1"]
    cache = str(outs[1] / "cache")  # machine 1 had trained the standard model and half of GDA + BReLU
    run_processes(_train, 1, config, cache, ["standard"])
    run_processes(_train, 1, config, cache, ["gda_brelu"], 1)  # interrupted after its first epoch
    models, machine1 = models_of(config, outs[1])
    standard = machine1.path("model", models.key("standard")).read_bytes()
    assert machine1.path("training", models.key("gda_brelu")).is_file()
    schedule = plan(models.jobs(), 2, held=[set(), {"standard"}], resumable=[set(), {"gda_brelu"}])
    assert schedule.trainer["gda_brelu"] == 1 and schedule.trainer["fgsm_adversarial"] == 0
    assert schedule.transfers == (("standard", 1, 0),)  # rank 0's FGSM adv. training needs rank 1's model

    run_processes(_evaluate, 2, config, [str(o) for o in outs], str(tmp_path), local_world_size=1)
    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]
    assert "schedule: from the cache of rank 1: standard" in logs[0]
    assert "[rank 1] gda: resuming after epoch 1" in logs[1]
    assert sum(len(TRAINING.findall(log)) for log in logs) == 3  # gda_brelu (resumed), fgsm adv., the source
    assert machine1.path("model", models.key("standard")).read_bytes() == standard  # not trained again
    assert not list((outs[1] / "cache" / "training").glob("*.pt"))
    machine0 = ResultCache(outs[0] / "cache")
    resumed = [cache.load("model", models.key("gda_brelu")) for cache in (machine0, machine1)]
    assert resumed[0]["trained_by"] == resumed[1]["trained_by"] == 1
    assert machine0.load("model", models.key("standard"))["processes"] == 1  # rank 1's, as it was

    run_processes(_train, 1, config, str(tmp_path / "fresh"), ["gda_brelu"])  # uninterrupted
    fresh = ResultCache(tmp_path / "fresh").load("model", models.key("gda_brelu"))
    for entry in resumed:
        assert all(torch.equal(entry["state_dict"][k], v) for k, v in fresh["state_dict"].items())


def test_the_rank_holding_the_source_crafts_the_blackbox_examples_while_the_other_trains(tmp_path):
    text = CONFIG.replace('blackbox_attacks = ["fgsm"]', 'blackbox_attacks = ["fgsm", "rfgsm"]')
    config = write_config(tmp_path, text)
    outs = [tmp_path / "machine0", tmp_path / "machine1"]
    run_processes(_evaluate_rank0_slow, 2, config, [str(o) for o in outs], str(tmp_path), local_world_size=1)
    models, _ = models_of(config, outs[0])
    assert plan(models.jobs(), 2).trainer[SOURCE] == 1
    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]
    assert "[rank 1] crafted 4 chunks of black-box examples while waiting" in logs[1]
    assert "while waiting" not in logs[0]
    crafted = [sorted(p.name for p in (out / "cache" / "blackbox").glob("*.pt")) for out in outs]
    verdicts = [sorted(p.name for p in (out / "cache" / "verdict").glob("*.pt")) for out in outs]
    assert crafted[0] == [] and len(crafted[1]) == 4  # each chunk once, on rank 1
    assert verdicts[0] == [] and len(verdicts[1]) == 4  # and judged there, where its images are
    assert re.search(r"rank 1: \d+ units to compute \(\d+% of the estimated work left\)", logs[0])

    single = tmp_path / "single"  # the same cells from one process, crafting everything itself
    shutil.copytree(outs[0] / "cache" / "model", single / "cache" / "model")
    run_processes(_evaluate, 1, config, [str(single)], str(tmp_path))
    assert cells(single / "results.json") == cells(outs[0] / "results.json")

    for out in outs:  # again, with every model in both caches: nobody trains, so nobody waits and crafts
        for kind in ("blackbox", "verdict"):
            shutil.rmtree(out / "cache" / kind, ignore_errors=True)
    run_processes(_evaluate, 2, config, [str(o) for o in outs], str(tmp_path), local_world_size=1)
    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]
    assert "from the cache of rank 0" in logs[0] and not any("while waiting" in log for log in logs)
    assert cells(outs[0] / "results.json") == cells(single / "results.json")
