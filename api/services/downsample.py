"""Largest-Triangle-Three-Buckets downsampling (Steinarsson, 2013), pure Python.

LTTB keeps the points that shape a line chart: the first and last point, then one point per bucket,
the one forming the largest triangle with the point kept in the previous bucket and the average of the
next bucket. Spikes survive (a chart of a 100k-step loss still shows its divergences), unlike striding
or bucket means.

The API image has no numpy, so the hot loop is written for CPython: locals only, C-level slicing, `sum`
and `zip`, and no function call per point.
"""

from __future__ import annotations

from collections.abc import Sequence


def lttb(xs: Sequence[float], ys: Sequence[float], n_out: int) -> list[int]:
    """Indices of at most `n_out` points to keep, increasing; always the first and the last point.

    `xs` must be non-decreasing (the chart's x order). Every index is returned when `len(xs) <= n_out`.
    O(len(xs)) time; each point is visited twice (once in its bucket, once in a next-bucket average).
    """
    n = len(xs)
    if len(ys) != n:
        raise ValueError(f"xs and ys differ in length ({n} != {len(ys)})")
    if n <= n_out:
        return list(range(n))
    if n_out < 2:
        raise ValueError(f"n_out must be at least 2 to keep the first and last point, got {n_out}")
    if n_out == 2:
        return [0, n - 1]

    kept = [0] * n_out
    kept[n_out - 1] = n - 1
    # The n - 2 inner points are split into n_out - 2 buckets of width (n - 2) / (n_out - 2) > 1;
    # bucket i covers [1 + i * inner // buckets, 1 + (i + 1) * inner // buckets). Integer arithmetic
    # keeps the last bucket ending exactly at n - 1, where float widths can drop a point.
    inner, buckets = n - 2, n_out - 2
    ax, ay = xs[0], ys[0]  # the point kept in the previous bucket
    start = 1
    for i in range(buckets):
        end = 1 + (i + 1) * inner // buckets
        # The third corner: the mean of the next bucket, which for the last bucket is the last point.
        nxt_end = min(1 + (i + 2) * inner // buckets, n)
        width = nxt_end - end
        cx = sum(xs[end:nxt_end]) / width
        cy = sum(ys[end:nxt_end]) / width
        # Twice the triangle's signed area is linear in the candidate (x, y):
        #   (ax - cx) * (y - ay) - (ax - x) * (cy - ay) = ky * y + kx * x + k0
        # so the per-point cost is two multiplications and a sign flip.
        ky = ax - cx
        kx = cy - ay
        k0 = -ky * ay - kx * ax
        best = -1.0
        pick = start
        j = start
        for x, y in zip(xs[start:end], ys[start:end], strict=True):
            area = ky * y + kx * x + k0
            if area < 0.0:
                area = -area
            if area > best:
                best = area
                pick = j
            j += 1
        kept[i + 1] = pick
        ax, ay = xs[pick], ys[pick]
        start = end
    return kept
