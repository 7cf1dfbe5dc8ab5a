"""nemesis_fast.parallel.train_models on two gloo processes (torch.multiprocessing): each model trained once, by
the rank the schedule names, dependencies sent ahead, every rank ending with the same bits, caches shared or not,
models already in a cache (or resumable there) not trained again from scratch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from _processes import run_processes
from _support import write_cifar

from nemesis_fast.parallel import Job, Workers, plan, start, stop, train_models

# "child2" waits for "dep", trained on the other rank: the schedule sends it ahead (see test_parallel_schedule).
JOBS = [Job("big", 4.0), Job("dep", 1.0), Job("child1", 4.0, ("dep",)), Job("child2", 4.0, ("dep",))]
BASE = {"big": 100.0, "dep": 10.0, "child1": 1000.0, "child2": 2000.0}


class FolderStore:
    """A cache of one process in a folder: <name>.pt, and <name>.ckpt where a training can resume."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def load(self, name):
        path = self.folder / f"{name}.pt"
        return tuple(torch.load(path, weights_only=True)) if path.is_file() else None

    def save(self, name, state, meta):
        torch.save([state, meta], self.folder / f"{name}.pt")
        (self.folder / f"{name}.ckpt").unlink(missing_ok=True)

    def exists(self, name):
        return (self.folder / f"{name}.pt").is_file()

    def resumable(self, name):
        return (self.folder / f"{name}.ckpt").is_file()


def template(name):
    return {"w": torch.zeros(3), "rank": torch.zeros((), dtype=torch.int64)}


def _process(stores: list[str], out: str) -> None:
    workers = start("cpu")
    calls = []

    def fake_train(name, needs):
        """Weights that tell who trained the model and from which dependency."""
        calls.append(name)
        w = torch.full((3,), BASE[name]) + sum(state["w"] for state in needs.values())
        return {"w": w + workers.rank / 1000, "rank": torch.tensor(workers.rank)}, {"seconds": float(workers.rank)}

    try:
        store = FolderStore(Path(stores[workers.rank]))
        trained = train_models(JOBS, workers, template=template, train=fake_train, store=store)
        torch.save({"calls": calls, "trained": trained}, Path(out) / f"rank{workers.rank}.pt")
    finally:
        stop(workers)


def run_two(tmp_path: Path, stores: list[Path]) -> list[dict]:
    """Both ranks' calls of `train` and results (their stores in `stores`, by rank)."""
    run_processes(_process, 2, [str(s) for s in stores], str(tmp_path))
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def check_identical(results: list[dict]) -> None:
    first, second = (r["trained"] for r in results)
    assert list(first) == list(second)
    for name in first:
        assert all(torch.equal(first[name][0][k], second[name][0][k]) for k in template(name)), name
        assert first[name][1] == second[name][1], name


def test_two_processes_train_each_model_once_with_their_own_caches(tmp_path):
    stores = [tmp_path / "node0", tmp_path / "node1"]
    results = run_two(tmp_path, stores)
    schedule = plan(JOBS, 2)
    assert schedule.transfers  # the case where a dependency crosses ranks
    for rank in range(2):
        assert results[rank]["calls"] == schedule.to_train(rank)
    check_identical(results)
    trained = results[0]["trained"]
    for name, rank in schedule.trainer.items():
        assert trained[name][0]["rank"].item() == rank and trained[name][1]["trained_by"] == rank
        assert trained[name][1]["processes"] == 2
    for child in ("child1", "child2"):  # made from the dependency's weights, wherever it was trained
        dep_rank = schedule.trainer["dep"] / 1000
        expected = BASE[child] + BASE["dep"] + dep_rank + schedule.trainer[child] / 1000
        assert torch.allclose(trained[child][0]["w"], torch.full((3,), expected, dtype=torch.float32))
    for store in stores:  # every rank wrote every model to its own cache, with the same bits
        on_disk = FolderStore(store)
        for name in BASE:
            assert torch.equal(on_disk.load(name)[0]["w"], trained[name][0]["w"])


def test_cached_models_are_not_retrained_and_a_checkpoint_pins_its_rank(tmp_path):
    stores = [tmp_path / "node0", tmp_path / "node1"]
    planted = {"w": torch.full((3,), -5.0), "rank": torch.tensor(7)}
    FolderStore(stores[1]).save("big", planted, {"seconds": 9.0})
    FolderStore(stores[1]).save("dep", {"w": torch.full((3,), -1.0), "rank": torch.tensor(8)}, {"seconds": 1.0})
    FolderStore(stores[0])
    (stores[0] / "child2.ckpt").touch()  # an interrupted training of child2 that rank 0 can resume
    results = run_two(tmp_path, stores)
    assert "big" not in results[0]["calls"] + results[1]["calls"]
    assert "dep" not in results[0]["calls"] + results[1]["calls"]
    assert "child2" in results[0]["calls"]
    check_identical(results)
    trained = results[0]["trained"]
    assert torch.equal(trained["big"][0]["w"], planted["w"]) and trained["big"][1] == {"seconds": 9.0}
    assert FolderStore(stores[0]).load("big")[1] == {"seconds": 9.0}  # rank 0's cache got rank 1's model
    assert trained["child2"][0]["w"][0].item() == pytest.approx(BASE["child2"] - 1.0)  # from the cached dep
    assert not (stores[0] / "child2.ckpt").exists()


def test_a_shared_cache_folder_is_read_by_every_rank(tmp_path):
    shared = tmp_path / "shared"
    FolderStore(shared).save("child1", {"w": torch.full((3,), 3.0), "rank": torch.tensor(5)}, {"seconds": 0.5})
    results = run_two(tmp_path, [shared, shared])
    calls = results[0]["calls"] + results[1]["calls"]
    assert sorted(calls) == ["big", "child2", "dep"]  # each once, child1 from the cache
    check_identical(results)
    assert sorted(p.name for p in shared.glob("*.pt")) == sorted(f"{name}.pt" for name in BASE)


def _process_waiting(out: str, answer: bool) -> None:
    """train_models with a `while_waiting` that records its calls; rank 0's trainings take 1 s each."""
    workers = start("cpu")
    events = []

    def slow_train(name, needs):
        events.append(name)
        if workers.rank == 0:
            time.sleep(1.0)
        w = torch.full((3,), BASE[name]) + sum(state["w"] for state in needs.values())
        return {"w": w, "rank": torch.tensor(workers.rank)}, {"seconds": 0.0}

    def while_waiting(held):
        events.append(("wait", sorted(held)))
        time.sleep(0.01)
        return answer

    try:
        trained = train_models(JOBS, workers, template=template, train=slow_train, while_waiting=while_waiting)
        torch.save({"events": events, "trained": trained}, Path(out) / f"rank{workers.rank}.pt")
    finally:
        stop(workers)


@pytest.mark.parametrize("answer", [True, False])
def test_a_rank_done_training_works_while_waiting_until_all_have_trained(tmp_path, answer):
    run_processes(_process_waiting, 2, str(tmp_path), answer)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    check_identical(results)
    schedule = plan(JOBS, 2)
    waits = []
    for rank, result in enumerate(results):
        trainings = [e for e in result["events"] if isinstance(e, str)]
        calls = [e[1] for e in result["events"] if not isinstance(e, str)]
        assert trainings == schedule.to_train(rank)
        assert result["events"][: len(trainings)] == trainings  # only once its own models are trained
        for held in calls:  # with the models it holds: its own and those sent to it
            assert set(schedule.to_train(rank)) <= set(held) <= set(BASE)
        waits.append(len(calls))
    assert waits[0] == 0  # the last to arrive
    if answer:  # rank 1 waits for rank 0's slow trainings, working all the while
        assert waits[1] >= 10
    else:  # nothing to do: asked once
        assert waits[1] == 1


def _process_arrivals(out: str, delays: list[float], first_piece: list[float]) -> None:
    """_work_until_all_arrive with pieces of work of 10 ms (the first `first_piece[rank]` s), entered after
    `delays[rank]` s; records the number of pieces each rank did."""
    from nemesis_fast.parallel.executor import _work_until_all_arrive

    workers = start("cpu")
    pieces = []

    def work():
        time.sleep(first_piece[workers.rank] if not pieces else 0.01)
        pieces.append(time.monotonic())
        return True

    try:
        time.sleep(delays[workers.rank])
        _work_until_all_arrive(work)
        (Path(out) / f"rank{workers.rank}.json").write_text(json.dumps(len(pieces)))
    finally:
        stop(workers)


def _pieces(tmp_path, delays, first_piece):
    run_processes(_process_arrivals, 2, str(tmp_path), delays, first_piece)
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_the_last_rank_to_arrive_starts_no_work(tmp_path):
    waiting, last = _pieces(tmp_path, [0.0, 1.0], [0.01, 0.01])
    assert last == 0 and waiting >= 10


def test_a_rank_arriving_while_another_finishes_a_piece_works_meanwhile(tmp_path):
    # Rank 0 starts a 2 s piece; rank 1 arrives 0.5 s later and works in 10 ms pieces until that piece ends.
    long, short = _pieces(tmp_path, [0.0, 0.5], [2.0, 0.01])
    assert long == 1 and short >= 10


def _process_claims(out: str, names: list[str]) -> None:
    workers = start("cpu")
    try:
        order = names if workers.rank == 0 else names[::-1]
        won = [name for name in order if workers.claim(name)]
        (Path(out) / f"rank{workers.rank}.json").write_text(json.dumps(won))
    finally:
        stop(workers)


def test_each_name_is_claimed_by_one_rank(tmp_path):
    names = [f"unit{i}" for i in range(40)]
    run_processes(_process_claims, 2, str(tmp_path), names)
    won = [set(json.loads((tmp_path / f"rank{rank}.json").read_text())) for rank in range(2)]
    assert won[0] | won[1] == set(names) and not won[0] & won[1]
    assert Workers().claim("unit0") and Workers().claim("unit0")  # one process claims everything


def _train_paper(root: str, out: str) -> None:
    from nemesis_fast.cli import main

    args = ["train", "--paper", "--data", "cifar10", "--root", root, "--epochs", "1", "--batch-size", "16"]
    main([*args, "--device", "cpu", "--threads", "1", "--no-progress", "--out-dir", out, "--json", f"{out}/paper.json"])


def test_train_paper_on_two_processes_trains_each_model_once(tmp_path):
    root = write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n=12).parent  # 60 training, 12 test images
    run_processes(_train_paper, 2, str(root), str(tmp_path / "two"))
    run_processes(_train_paper, 1, str(root), str(tmp_path / "one"))
    two, one = (json.loads((tmp_path / d / "paper.json").read_text()) for d in ("two", "one"))
    assert (two["processes"], two["threads"], one["processes"]) == (2, 1, 1)
    trainers = {row["name"]: row["trained_by"] for row in two["models"]}
    assert trainers.pop("feature_squeezing") is None and set(trainers.values()) == {0, 1}
    assert [row["test_accuracy"] for row in two["models"]] == [row["test_accuracy"] for row in one["models"]]
    for name in trainers:  # the same weights as one process trains
        a, b = (torch.load(tmp_path / d / f"{name}.pt", weights_only=True)["state_dict"] for d in ("two", "one"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
