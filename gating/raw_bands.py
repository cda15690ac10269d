"""Raw-value threshold bands: deciding a logicle/hyperlog gate bound without transforming.

A rectangle bound or quadrant divider on a logicle/hyperlog dimension is a value of the
*transformed* scale. Both functions are strictly increasing, so a raw value clearly
below/above the raw image of the bound (a band of +-1e-7 scale units, its edges checked
with flowutils' own forward code) is on that side for flowutils too; only raw values
inside a band, off-scale (beyond T, where the C solver may not converge) or non-finite
need the transform. ``raw_band`` says why this is exact; ``gating.evaluator`` uses it
so that only the events near a bound go through the costly C loop.
"""

from __future__ import annotations

from typing import Any

import flowkit as fk
import numpy as np

__all__ = ["BAND_MARGIN", "MONOTONE_TRANSFORMS", "NO_BAND", "apply_column", "decided_on_raw", "in_range", "raw_band", "trusted_limit"]

# Transforms whose per-value function is known to be strictly increasing, so that
# thresholds can be compared in raw space (``raw_band``). Matched by exact type: a
# subclass may override ``apply`` with any function, and then takes the exact path.
MONOTONE_TRANSFORMS = (fk.transforms.LogicleTransform, fk.transforms.HyperlogTransform)

# Threshold bands (rectangle bounds, quadrant dividers on logicle/hyperlog dims).
# Half-width of the band, in transformed units (scales span about 0..1).
BAND_MARGIN = 1e-7
# A band that decides nothing: every event goes through the exact transform.
NO_BAND = (-np.inf, np.inf)


def decided_on_raw(xform: Any) -> bool:
    """True if thresholds of ``xform`` may be decided on raw values (``raw_band``)."""
    return type(xform) in MONOTONE_TRANSFORMS


def apply_column(xform: Any, src: np.ndarray) -> np.ndarray:
    """``xform.apply`` on an ``(k, 1)`` float64 column, flattened (the engine's only call)."""
    return np.ascontiguousarray(np.asarray(xform.apply(src), dtype=np.float64).reshape(-1))


def trusted_limit(xform: Any) -> float:
    """Largest ``|x|`` for which flowutils' C loop is trusted to have converged.

    ``logicle_scale`` / ``hyperlog_scale`` solve ``B(y) = x`` by Halley's method and
    return the sentinel ``-1`` when 40 (hyperlog: 10) steps do not converge, which
    makes the C output non-monotone there. Within ``|x| <= T`` (the top of scale)
    the solution lies in ``[2*x1 - 1, 1]``, where the absolute stopping tolerance
    ``3 * DBL_EPSILON`` is at least a few ulps, so the loop converges (hyperlog's
    tolerance does not grow with ``y``: sentinels were observed from about 2.5e9*T
    on; NaN and +-inf always give -1). Events beyond ``T`` are off-scale and rare,
    so they simply take the exact path.
    """
    t = float(getattr(xform, "param_t", 0.0))
    return t if np.isfinite(t) and t > 0 else 0.0


def raw_band(xform: Any, bound: float) -> tuple[float, float]:
    """Raw values ``(a, b)`` such that ``x <= a`` surely gives ``C(x) < bound`` and
    ``x >= b`` surely gives ``C(x) >= bound``, for trusted ``x`` (``|x| <= T``), where
    C is flowutils' C logicle/hyperlog as the engine calls it.

    Why this is exact: the true logicle/hyperlog function T is strictly increasing,
    and the C implementation (within the trusted range) returns T(x) to a few ulps
    (Halley's method stopped at a step below ``3 * DBL_EPSILON``; round trips
    ``C(inverse(y))`` agree with ``y`` to 2e-16), so its error ``err`` < 1e-14 is
    orders of magnitude below ``BAND_MARGIN / 4``.
    ``a`` and ``b`` come from the transform's own ``inverse`` at ``bound -/+ margin``,
    clamped into the trusted range, and are then checked with the very forward code
    the engine uses: ``C(a) <= bound - margin/2`` and ``C(b) >= bound + margin/2``.
    For trusted ``x <= a``: ``C(x) <= T(x) + err <= T(a) + err <= C(a) + 2*err < bound``;
    for trusted ``x >= b`` symmetrically ``C(x) > bound``. So a raw comparison gives the
    bit flowkit's ``C(x) >= bound`` / ``C(x) < bound`` gives; only ``a < x < b``,
    untrusted and non-finite values need the transform. Each edge stands on its own
    check: an edge whose inverse is NaN or whose check fails is dropped (``-inf`` /
    ``inf``), so e.g. a bound at the top of scale still decides everything below it.
    """
    limit = trusted_limit(xform)
    if not np.isfinite(bound) or limit <= 0:
        return NO_BAND
    margin = BAND_MARGIN
    try:
        edges = np.asarray(
            xform.inverse(np.array([[bound - margin], [bound + margin]])), dtype=np.float64
        ).reshape(-1)
    except Exception:  # a transform without a usable inverse: exact path
        return NO_BAND
    if edges.shape != (2,) or np.isnan(edges).any():
        return NO_BAND
    a, b = np.clip(edges, -limit, limit)  # the C check below must run on trusted values
    c_a, c_b = apply_column(xform, np.array([[a], [b]]))
    return (
        float(a) if c_a <= bound - margin / 2 else -np.inf,
        float(b) if c_b >= bound + margin / 2 else np.inf,
    )


def in_range(values: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """flowkit's range test ``lo <= v < hi`` (a missing bound is open)."""
    res = np.ones(values.shape, dtype=bool)
    if lo is not None:
        res &= values >= lo
    if hi is not None:
        res &= values < hi
    return res

