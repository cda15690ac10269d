"""Grouped exact percentiles (gating/grouped_quantiles.py) against np.percentile, bit for bit.

Data: seeded numpy generators (seeds in each test); the truth is numpy's own percentile
and mean on each population's values.
"""

from __future__ import annotations

import numpy as np
import pytest

from gating.grouped_quantiles import event_groups, grouped_stats, order_bucket

PCTS = (15.87, 50.0, 84.13)


def _masks(rng: np.random.Generator, x: np.ndarray) -> list[np.ndarray]:
    n = x.size
    a = rng.random(n) < 0.7
    b = a & (x > np.median(x))          # nested
    c = a & (rng.random(n) < 0.3)       # overlaps b (siblings need not be disjoint)
    d = b & c
    single = np.zeros(n, dtype=bool)
    single[rng.integers(n)] = True
    empty = np.zeros(n, dtype=bool)
    return [np.ones(n, dtype=bool), a, b, c, d, single, empty]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_percentiles_equal_numpy_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    n = 50_000
    # compensated fluorescence: long right tail, negatives, exact zeros, heavy ties, one inf
    x = np.exp(rng.normal(5, 1.5, n)) - 60
    x[rng.random(n) < 0.05] = 0.0
    x[rng.random(n) < 0.05] = -0.0
    x[rng.random(n) < 0.1] = 123.0  # one heavily repeated value
    x[: n // 10] = np.round(x[: n // 10])  # ties
    x[5] = np.inf
    x[6] = 5e-320  # subnormal
    y = rng.normal(0, 1e3, n)  # a second channel: small populations are partitioned for all at once
    values = np.stack([x, y])
    masks = _masks(rng, x)
    groups = event_groups(masks, n)
    stats = grouped_stats(list(values), groups, PCTS)
    for p, m in enumerate(masks):
        if not m.any():
            assert np.isnan(stats.percentiles[p]).all() and np.isnan(stats.means[p]).all()
            continue
        for c, v in enumerate(values):
            np.testing.assert_array_equal(stats.percentiles[p, c], np.percentile(v[m], PCTS))
            if np.isfinite(v[m]).all():
                assert stats.means[p, c] == pytest.approx(v[m].mean(), rel=1e-10)
    assert min(m.sum() for m in masks if m.any()) < 100 and max(m.sum() for m in masks) > 32_768  # both paths


def test_groups_rebuild_every_population():
    rng = np.random.default_rng(11)
    x = rng.normal(size=10_000)
    masks = _masks(rng, x)
    groups = event_groups(masks, x.size)
    assert groups.label.shape == (x.size,) and groups.sizes.sum() == x.size  # every event in one group
    for p, m in enumerate(masks):
        np.testing.assert_array_equal(groups.members[p][groups.label], m)
        np.testing.assert_array_equal(groups.indices(p), np.flatnonzero(m))
    np.testing.assert_array_equal(groups.counts(), [m.sum() for m in masks])


def test_order_bucket_sorts_like_values():
    rng = np.random.default_rng(12)
    special = [-np.inf, -1e300, -1.0, -5e-320, -0.0, 0.0, 5e-320, 1e-300, 1.0, 1e300, np.inf]
    v = np.sort(np.concatenate([special, rng.normal(0, 1e4, 10_000), rng.normal(0, 1e-3, 1000)]))
    assert (np.diff(order_bucket(v).astype(np.int64)) >= 0).all()


def test_nan_channel_falls_back_to_numpy():
    rng = np.random.default_rng(13)
    x = rng.normal(100, 10, 1000)
    x[3] = np.nan
    masks = [np.ones(1000, dtype=bool), np.arange(1000) > 500]
    groups = event_groups(masks, x.size)
    stats = grouped_stats([x], groups, PCTS)
    assert np.isnan(stats.percentiles[0]).all()  # NaN in, NaN out, as np.percentile
    np.testing.assert_array_equal(stats.percentiles[1, 0], np.percentile(x[501:], PCTS))


def test_groups_with_many_populations():
    """More than 8 populations (masks are packed a byte at a time): seeded random masks."""
    rng = np.random.default_rng(14)
    n = 5000
    masks = [rng.random(n) < p for p in np.linspace(0.05, 0.95, 19)]
    groups = event_groups(masks, n)
    for p, m in enumerate(masks):
        np.testing.assert_array_equal(groups.members[p][groups.label], m)
    signatures = {tuple(col) for col in np.stack(masks).T}
    assert groups.members.shape == (19, len(signatures))  # one group per distinct signature
    # numbered in the order of their signatures read as bytes (masks 0-7 first): a
    # population's mean adds its groups' sums in this order, so it fixes the mean's bits
    as_bytes = [tuple(row) for row in np.packbits(groups.members.T, axis=1, bitorder="little")]
    assert as_bytes == sorted(set(as_bytes))


@pytest.mark.parametrize("n_masks", [5, 12])
def test_coarse_codes_with_many_groups(n_masks):
    """Many membership signatures shrink the codes (16 bits for up to 16 groups; here 15 and
    8 bits, for ~30 and ~4,000 groups); large populations must still equal np.percentile bit for bit. Seeded data with
    negatives, ties and both zeros; the truth is numpy's percentile."""
    rng = np.random.default_rng(20 + n_masks)
    n = 40_000
    x = rng.normal(0, 300, n) + np.where(rng.random(n) < 0.3, rng.lognormal(7, 1, n), 0)
    x[rng.random(n) < 0.02] = -0.0
    x[rng.random(n) < 0.02] = 0.0
    x[: n // 20] = np.round(x[: n // 20], -1)
    masks = [np.ones(n, dtype=bool)] + [rng.random(n) < (0.97 if i < 2 else 0.5) for i in range(n_masks)]
    groups = event_groups(masks, n)
    stats = grouped_stats([x, -x], groups, PCTS)
    large = [p for p, m in enumerate(masks) if m.sum() > 32_768]
    assert len(large) >= 2
    for p in large:
        for c, v in enumerate((x, -x)):
            np.testing.assert_array_equal(stats.percentiles[p, c], np.percentile(v[masks[p]], PCTS))
