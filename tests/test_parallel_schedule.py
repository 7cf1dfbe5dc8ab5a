"""The training schedule (who trains which model), its cost estimates, the CPU threads under torchrun, and the
byte packing of weights: everything of nemesis_fast.parallel that runs in one process."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch

from nemesis_fast.parallel import (
    Job,
    Workers,
    auto_threads,
    plan,
    set_threads,
    share_out,
    train_models,
    training_cost,
)
from nemesis_fast.parallel.exchange import pack, packed_size, unpack
from nemesis_fast.parallel.workers import usable_cores, wait_timeout

# The quick preset's models on MNIST, with the costs of training_cost (per 4500 training images).
PAPER = [
    Job("standard", 1.0),
    Job("label_smoothing", 1.0),
    Job("fgsm_adversarial", 3.0, ("standard",)),
    Job("vat", 3.2),
    Job("gda", 13.2),
    Job("gda_brelu", 13.2),
    Job("resnet_source", 1.7),
]


def check_valid(schedule, jobs, world_size):
    """Every job trained exactly once by a real rank, each after what it needs (on its rank or sent ahead)."""
    trained = [name for rank in range(world_size) for name in schedule.to_train(rank)]
    assert sorted(trained) == sorted(job.name for job in jobs)
    assert all(0 <= schedule.trainer[name] < world_size for name in trained)
    for job in jobs:
        rank = schedule.trainer[job.name]
        mine = schedule.to_train(rank)
        for need in job.needs:
            if schedule.trainer[need] == rank:
                assert mine.index(need) < mine.index(job.name)
            else:
                assert (need, schedule.trainer[need], rank) in schedule.transfers
        assert schedule.order.index(job.name) > max((schedule.order.index(n) for n in job.needs), default=-1)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 8, 16])
def test_every_model_is_trained_once_after_what_it_needs(world_size):
    schedule = plan(PAPER, world_size)
    check_valid(schedule, PAPER, world_size)
    assert schedule == plan(list(PAPER), world_size)  # deterministic
    assert set(schedule.source) == {job.name for job in PAPER}


def test_one_process_trains_everything_dependencies_first():
    schedule = plan(PAPER, 1)
    mine = schedule.to_train(0)
    assert len(mine) == len(PAPER) and schedule.transfers == ()
    assert mine.index("standard") < mine.index("fgsm_adversarial")
    assert schedule.busy == (pytest.approx(sum(job.cost for job in PAPER)),)


def test_the_work_is_balanced():
    jobs = [Job("gda", 11.0), *(Job(f"plain{i}", 1.0) for i in range(6))]
    schedule = plan(jobs, 2)
    assert schedule.to_train(0) == ["gda"]  # alone on its rank: the six others together cost less
    assert sorted(schedule.to_train(1)) == [f"plain{i}" for i in range(6)]
    two_gda = plan(PAPER, 2)
    assert two_gda.trainer["gda"] != two_gda.trainer["gda_brelu"]
    assert max(two_gda.busy) <= 1.05 * sum(job.cost for job in PAPER) / 2
    wide = plan(PAPER, 3)
    assert max(wide.busy) == pytest.approx(13.2)  # the two GDA models bound it: each alone on a rank


def test_more_ranks_than_models_leaves_ranks_idle():
    schedule = plan(PAPER[:3], 8)
    check_valid(schedule, PAPER[:3], 8)
    assert sum(1 for rank in range(8) if schedule.to_train(rank)) <= 3
    assert plan([], 4).order == () and plan([], 4).busy == (0.0,) * 4


def test_a_dependency_on_a_busy_rank_is_sent_ahead():
    jobs = [Job("big", 4.0), Job("dep", 1.0), Job("child1", 4.0, ("dep",)), Job("child2", 4.0, ("dep",))]
    schedule = plan(jobs, 2)
    check_valid(schedule, jobs, 2)
    assert schedule.trainer["dep"] != schedule.trainer["child2"]
    assert schedule.transfers == (("dep", schedule.trainer["dep"], schedule.trainer["child2"]),)


def test_held_models_are_not_trained_and_come_from_the_lowest_holder():
    schedule = plan(PAPER, 3, held=[set(), {"gda", "standard"}, {"gda"}])
    assert "gda" not in schedule.trainer and "standard" not in schedule.trainer
    assert schedule.source["gda"] == 1 and schedule.source["standard"] == 1
    assert schedule.order[:2] == ("standard", "gda")  # held ones first, in job order
    fgsm = schedule.trainer["fgsm_adversarial"]
    assert fgsm == 1 or ("standard", 1, fgsm) in schedule.transfers
    lines = schedule.describe({job.name: job.cost for job in PAPER})
    assert "schedule: from the cache of rank 1: standard, gda" in lines


def test_a_resumable_training_goes_to_a_rank_holding_its_checkpoint():
    for rank in range(4):
        resumable = [set() for _ in range(4)]
        resumable[rank] = {"label_smoothing"}
        assert plan(PAPER, 4, resumable=resumable).trainer["label_smoothing"] == rank
    shared = plan(PAPER, 2, resumable=[{"gda"}, {"gda"}])  # a shared folder: any rank may resume it
    assert shared.trainer == plan(PAPER, 2).trainer


@pytest.mark.parametrize(
    "jobs,world_size,kwargs,message",
    [
        (PAPER, 0, {}, "world_size must be an integer >= 1"),
        ([Job("a", 1.0), Job("a", 2.0)], 2, {}, "'a' appears twice"),
        ([Job("a", 0.0)], 2, {}, "the cost of 'a' must be a finite number > 0"),
        ([Job("a", float("nan"))], 2, {}, "the cost of 'a'"),
        ([Job("a", 1.0, ("b",))], 2, {}, "'a' needs 'b', which is not among the jobs"),
        ([Job("a", 1.0, ("b",)), Job("b", 1.0, ("a",))], 2, {}, "form a cycle"),
        (PAPER, 2, {"held": [set()]}, "held must hold one set per rank"),
        (PAPER, 2, {"resumable": [set()] * 3}, "resumable must hold one set"),
        (["standard"], 2, {}, "jobs must hold Job objects"),
    ],
)
def test_bad_schedules_name_the_argument(jobs, world_size, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        plan(jobs, world_size, **kwargs)


def test_costly_units_of_work_land_on_different_ranks():
    # The paper run's shape: many cheap chunks, then a few costly units at the end of the list.
    costs = [1.0] * 40 + [200.0, 200.0, 3900.0, 3900.0]
    owner = share_out(costs, 2)
    assert owner[-1] != owner[-2] and owner[-3] != owner[-4]
    loads = [sum(c for c, r in zip(costs, owner) if r == rank) for rank in range(2)]
    assert max(loads) / min(loads) < 1.01
    assert share_out(costs, 2) == owner  # the same on every process
    assert share_out(costs, 1) == [0] * len(costs)
    assert sorted(set(share_out(costs, 64))) == list(range(44))  # more ranks than units: one each, some idle


def test_units_already_held_stay_with_their_lowest_holder_at_no_cost():
    costs = [5.0, 5.0, 5.0, 5.0]
    owner = share_out(costs, 2, held=[{2}, {0, 1, 2}])
    assert owner[:3] == [1, 1, 0]
    assert owner[3] == 0  # held units count for nothing: both ranks are free, the tie goes to the lower
    assert share_out(costs, 2, held=[{0, 1}, set()])[2:] == [0, 1]


@pytest.mark.parametrize(
    "costs,world_size,held,message",
    [
        ([1.0], 0, None, "world_size must be an integer >= 1"),
        ([1.0, -1.0], 2, None, r"costs\[1\] must be a finite number >= 0"),
        ([float("inf")], 2, None, r"costs\[0\]"),
        ([True], 1, None, r"costs\[0\]"),
        ([1.0], 2, [set()], "held must hold one set per rank"),
        ([1.0], 2, [{1}, set()], r"held\[0\] holds 1, not the index of a unit"),
    ],
)
def test_bad_shares_name_the_argument(costs, world_size, held, message):
    with pytest.raises(ValueError, match=message):
        share_out(costs, world_size, held)


def test_training_costs_follow_data_and_architecture():
    cnn = training_cost("mnist_cnn", {}, "standard", {}, 1000)
    assert cnn == 1000
    assert training_cost("mnist_cnn", {}, "gda", {"copies": 10}, 1000) == pytest.approx(13.2 * cnn)
    assert training_cost("mnist_cnn", {}, "gda", {"copies": 2}, 1000) == pytest.approx(3.6 * cnn)
    assert training_cost("mnist_cnn", {}, "fgsm_adversarial", {"mode": "offline"}, 1000) == 3 * cnn
    resnet20 = training_cost("resnet", {"depth": 20}, "standard", {}, 1000)
    assert 3 * cnn < resnet20 < 6 * cnn and training_cost("resnet", {"depth": 8}, "standard", {}, 1000) < resnet20
    assert training_cost("cifar_cnn", {}, "standard", {}, 2000) == 2 * cnn


def test_threads_under_torchrun_share_the_cores():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cores = usable_cores()
    assert auto_threads(cpu, {}) is None  # not under torchrun: torch's default
    assert auto_threads(cpu, {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}) == max(1, cores // 2)
    assert auto_threads(cpu, {"LOCAL_WORLD_SIZE": "2"}) == max(1, cores // 2)
    assert auto_threads(cpu, {"LOCAL_WORLD_SIZE": "1"}) == cores
    assert auto_threads(cpu, {"LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}) is None  # the user's choice
    assert auto_threads(cpu, {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "3"}) is None  # the user's choice
    assert auto_threads(cpu, {"LOCAL_WORLD_SIZE": str(4 * cores)}) == 1
    assert auto_threads(cuda, {"LOCAL_WORLD_SIZE": "2"}) is None
    before = torch.get_num_threads()
    try:
        assert set_threads(1, cpu) == 1 and Workers().threads == 1
    finally:
        torch.set_num_threads(before)
    for bad in (-1, 10**9):
        with pytest.raises(ValueError, match=r"threads must be an integer in \[0, 1024\]"):
            set_threads(bad, cpu)


def test_weights_travel_as_bytes_bit_for_bit():
    state = {
        "w": torch.randn(3, 5).t(),  # not contiguous
        "b": torch.tensor([float("nan"), -0.0, 1e-40]),
        "count": torch.tensor(7),
        "mask": torch.tensor([True, False]),
        "half": torch.randn(4).half(),
        "empty": torch.zeros(0, 2),
    }
    buffer = pack(state)
    assert buffer.dtype == torch.uint8 and buffer.numel() == packed_size(state)
    back = unpack(buffer, {k: torch.empty_like(v) for k, v in state.items()})
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert pack({name: back[name]}).tolist() == pack({name: tensor}).tolist(), name
    assert torch.equal(back["w"], state["w"]) and back["count"].item() == 7
    with pytest.raises(ValueError, match="buffer holds"):
        unpack(buffer[1:], state)


class MemoryStore:
    def __init__(self, models=None, checkpoints=()):
        self.models, self.checkpoints, self.saved = dict(models or {}), set(checkpoints), []

    def load(self, name):
        return self.models.get(name)

    def save(self, name, state, meta):
        self.models[name] = (state, meta)
        self.saved.append(name)

    def exists(self, name):
        return name in self.models

    def resumable(self, name):
        return name in self.checkpoints


def test_one_process_trains_what_its_store_lacks_and_stores_it():
    jobs = [Job("a", 1.0), Job("b", 2.0, ("a",))]
    held = ({"x": torch.ones(2)}, {"seconds": 1.0})
    store = MemoryStore({"a": held})
    calls = []

    def fake_train(name, needs):
        calls.append((name, sorted(needs)))
        return {"x": needs["a"]["x"] + 1}, {"seconds": 2.0}

    template = lambda name: {"x": torch.zeros(2)}  # noqa: E731
    trained = train_models(jobs, Workers(), template=template, train=fake_train, store=store)
    assert calls == [("b", ["a"])] and store.saved == ["b"]
    assert torch.equal(trained["b"][0]["x"], torch.full((2,), 2.0))
    assert trained["b"][1] == {"seconds": 2.0, "trained_by": 0, "processes": 1, "threads": torch.get_num_threads()}
    assert trained["a"] == held


def test_a_process_waits_for_the_others_as_long_as_asked():
    assert wait_timeout({}) == timedelta(hours=24)  # longer than any one unit of work, unlike torch's 30 minutes
    assert wait_timeout({"NEMESIS_FAST_WAIT_HOURS": "0.5"}) == timedelta(minutes=30)
    for bad in ("0", "-1", "soon", "inf", "nan", "1e13"):  # 1e13 hours: beyond timedelta and the collectives
        with pytest.raises(ValueError, match="NEMESIS_FAST_WAIT_HOURS must be a number of hours > 0"):
            wait_timeout({"NEMESIS_FAST_WAIT_HOURS": bad})
