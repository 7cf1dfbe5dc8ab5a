"""The benchmark harness's speed-ups on the same images."""

from __future__ import annotations

import pytest

from nemesis_fast.bench.harness import Row, ms_per_image_on, problem_size, record_same_images, same_images_speedup


def row(images: int, ms_per_image: float, same: tuple[int, float] | None = None) -> Row:
    """A row over `images` images; `same`: (images, ms per image) on the first images of the batch."""
    made = Row("case", "provider", images * ms_per_image, extra={"images": images, "ms_per_image": ms_per_image})
    if same:
        record_same_images(made, same[0], same[0] * same[1])
    return made


def test_speedup_is_taken_on_the_images_both_attacked():
    peer = row(2, 300.0)  # the peer attacked the first 2 images of the batch
    ours = row(8, 10.0, same=(2, 60.0))  # the first 2 are harder than the batch's average
    assert same_images_speedup(peer, ours) == pytest.approx(5.0)  # not 300 / 10
    assert same_images_speedup(ours, peer) == pytest.approx(0.2)
    assert ms_per_image_on(ours, 8) == 10.0 and ms_per_image_on(ours, 2) == 60.0


def test_speedup_on_equal_batches_and_missing_times():
    assert same_images_speedup(row(8, 30.0), row(8, 10.0)) == pytest.approx(3.0)
    assert same_images_speedup(row(2, 300.0), row(8, 10.0)) is None  # no time on the peer's images: no claim
    assert ms_per_image_on(row(8, 10.0), 4) is None


def test_a_suites_size_is_its_default_or_a_count_of_at_least_one():
    from nemesis_fast.bench import bounded_relu, gaussian_augment

    assert problem_size(None, 128) == 128 and problem_size(3, 128) == 3
    for suite in (bounded_relu, gaussian_augment):  # before any work: 0 is no longer read as "the default"
        with pytest.raises(ValueError, match="numel must be >= 1, got 0"):
            suite.run("cpu", numel=0)
    with pytest.raises(TypeError, match="numel must be an int, got float"):
        problem_size(1.5, 128)
