"""Placements of the schedule worked out by hand: longest-processing-time first in share_out, dependency waits and
the critical path in plan, no transfer of a model the receiving rank holds; and the evaluation's test chunks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.parallel import Job, plan, share_out


def test_share_out_places_the_costliest_unit_first():
    # LPT: 4 -> rank 0, then the four 1s on rank 1 (loads 4 and 4). Cheapest first would give loads 6 and 2.
    assert share_out([1.0, 1.0, 1.0, 1.0, 4.0], 2) == [1, 1, 1, 1, 0]


def test_a_model_waits_for_what_it_needs_on_any_rank():
    # B can start only when A is done (at 4) wherever it goes: both ranks finish it at 5, so it stays with A on the
    # lower rank, and nothing is sent.
    schedule = plan([Job("A", 4.0), Job("B", 1.0, ("A",))], 2)
    assert schedule.trainer == {"A": 0, "B": 0}
    assert schedule.transfers == ()
    assert schedule.busy == (5.0, 0.0)


def test_the_longest_chain_is_placed_first():
    # A (1) heads a chain A -> B (2) of 3: placed first, it finishes at 1 and B starts at once on the other rank's
    # idle time: makespan 4. Placing by the jobs' own costs (X and Y first) would give 5.
    jobs = [Job("X", 2.0), Job("Y", 2.0), Job("A", 1.0), Job("B", 2.0, ("A",))]
    schedule = plan(jobs, 2)
    assert schedule.order[0] == "A"
    assert max(schedule.busy) == pytest.approx(4.0)


def test_a_dependency_the_trainer_holds_is_not_sent():
    jobs = [Job("S", 1.0), Job("G", 3.0), Job("F", 3.0, ("S",))]
    schedule = plan(jobs, 2, held=[{"S"}, {"S"}])
    assert schedule.trainer == {"G": 0, "F": 1}
    assert schedule.source["S"] == 0
    assert schedule.transfers == ()  # rank 1 has S in its own cache


@pytest.mark.parametrize("total,size", [(24, 8), (25, 8), (17, 8), (1, 8), (9, 4), (7, 7), (8, 1)])
def test_chunks_cover_every_test_image_once(total, size):
    view = SimpleNamespace(data=SimpleNamespace(test_labels=range(total)), config=SimpleNamespace(batch_size=size))
    chunks = Evaluation.chunks(view)
    covered = [i for start, stop in chunks for i in range(start, stop)]
    assert covered == list(range(total))
    assert all(0 < stop - start <= size for start, stop in chunks)
    for limit in (1, total // 2 or 1, total + 3):  # the first `limit` images
        covered = [i for start, stop in Evaluation.chunks(view, limit) for i in range(start, stop)]
        assert covered == list(range(min(limit, total)))
