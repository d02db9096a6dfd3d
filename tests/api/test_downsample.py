"""LTTB downsampling: hand-checked small cases and properties on seeded random series."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from api.services.downsample import lttb


def test_short_series_are_returned_whole() -> None:
    assert lttb([], [], 10) == []
    assert lttb([5], [1.0], 1) == [0]
    assert lttb([1, 2, 3], [1.0, 5.0, 2.0], 3) == [0, 1, 2]
    assert lttb(list(range(7)), [0.0] * 7, 100) == list(range(7))


def test_two_points_keep_the_ends_and_fewer_is_refused() -> None:
    assert lttb(list(range(10)), [float(i) for i in range(10)], 2) == [0, 9]
    with pytest.raises(ValueError, match="at least 2"):
        lttb(list(range(10)), [0.0] * 10, 1)
    with pytest.raises(ValueError, match="differ in length"):
        lttb([1, 2], [1.0], 5)


# Within a bucket every triangle shares the base from the previous kept point A to the next bucket's mean
# C, and the x-extent of A..C, so the largest triangle is the point furthest (vertically) from line AC.


def test_three_points_keep_the_largest_triangle() -> None:
    # One bucket, points 1..3; line AC runs (0, 0) -> (4, 0): distances 1, 3, 2.
    assert lttb([0, 1, 2, 3, 4], [0.0, 1.0, -3.0, 2.0, 0.0], 3) == [0, 2, 4]


def test_hand_checked_buckets() -> None:
    # 8 inner points in 4 buckets of 2: [1, 2] [3, 4] [5, 6] [7, 8], then the last point 9.
    xs = list(range(10))
    ys = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0, -4.0, 0.0, 1.0, 0.0]
    # [1, 2]: AC (0, 0) -> (3.5, 0); distances 0, 5 -> 2.
    # [3, 4]: AC (2, 5) -> (5.5, -2), y = 9 - 2x; line at 3, 1; distances 3, 1 -> 3.
    # [5, 6]: AC (3, 0) -> (7.5, 0.5); line at 0.22, 0.33; distances 0.22, 4.33 -> 6.
    # [7, 8]: AC (6, -4) -> (9, 0), the last point; line at -2.67, -1.33; distances 2.67, 2.33 -> 7.
    assert lttb(xs, ys, 6) == [0, 2, 3, 6, 7, 9]


def test_a_spike_is_kept() -> None:
    n = 1000
    ys = [1.0] * n
    ys[537] = 50.0
    kept = lttb(list(range(n)), ys, 10)
    assert 537 in kept and kept[0] == 0 and kept[-1] == n - 1 and len(kept) == 10


@pytest.mark.parametrize("seed", range(5))
def test_indices_increase_and_count_is_exact(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(50, 3000)
    xs = sorted(rng.sample(range(10 * n), n))  # uneven gaps, as steps can have
    ys = [rng.gauss(0, 1) for _ in range(n)]
    n_out = rng.randint(3, n - 1)
    kept = lttb(xs, ys, n_out)
    assert len(kept) == n_out and kept[0] == 0 and kept[-1] == n - 1
    assert all(a < b for a, b in pairwise(kept))


@pytest.mark.parametrize("scale", [0.001, 2.0, 1000.0])
def test_scaling_x_does_not_change_the_choice(scale: float) -> None:
    rng = random.Random(7)
    xs = list(range(2000))
    ys = [rng.random() for _ in xs]
    assert lttb([x * scale for x in xs], ys, 100) == lttb(xs, ys, 100)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_single_extreme_spike_is_the_kept_max_or_min(seed: int, sign: float) -> None:
    rng = random.Random(seed)
    n = rng.randint(200, 5000)
    ys = [rng.random() for _ in range(n)]
    ys[rng.randrange(1, n - 1)] = sign * 1e6
    kept = lttb(list(range(n)), ys, rng.randint(10, 200))
    extreme = ys.index(max(ys)) if sign > 0 else ys.index(min(ys))
    assert extreme in kept


@pytest.mark.parametrize("seed", range(10))
def test_a_spike_and_a_dip_far_apart_are_both_kept(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(200, 5000)
    ys = [rng.random() for _ in range(n)]
    # A third of the series apart: more than two buckets for n_out >= 10, so neither is the other's
    # bucket or next-bucket mean.
    up, down = rng.randrange(1, n // 3), rng.randrange(2 * n // 3, n - 1)
    ys[up], ys[down] = 1e6, -1e6
    kept = lttb(list(range(n)), ys, rng.randint(10, 200))
    assert ys.index(max(ys)) in kept and ys.index(min(ys)) in kept


def test_large_series_is_linear_enough() -> None:
    # Not a timing assertion: a guard that 100k points take one pass (a quadratic bug would hang here).
    n = 100_000
    kept = lttb(list(range(n)), [float(i % 97) for i in range(n)], 2000)
    assert len(kept) == 2000
