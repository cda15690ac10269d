"""Placement unit ``singlet_band`` (the ``Singlets`` gate): a band of the FSC-H/FSC-A ratio,
or no gate at all when the file has no forward area/height pair."""

from __future__ import annotations

import numpy as np

from gating.adaptive.records import GatePlacement
from gating.adaptive.state import Walk
from gating.panel import PopulationSpec
from gating.qc import singlet_share, singlets_not_gated

# flow_qc row written instead of ``singlet_share`` when the file has no FSC area/height
# pair; passes; value = 1 (no forward area), 2 (no forward height) or 3 (neither).
SINGLETS_NOT_GATED = "singlets_not_gated"


def singlet_band(area: np.ndarray, height: np.ndarray, k: float = 4.0,
                 top: float = 1.1) -> tuple[np.ndarray, float, float]:
    """Triangle (from the origin) holding events whose FSC-H/FSC-A ratio is in a band.

    Method: the ratio r = H/A of the parent's events has its median m and robust SD s
    (1.4826 MAD); singlets are m - k*s <= r <= m + k*s, written as a polygon with vertices
    (0,0), (top, top*lo), (top, top*hi) on the linear scale (``top`` above the largest value).
    Doublets, with area growing faster than height, fall below the band.
    Returns (vertices, lo, hi).

    Failure mode: if doublets are more than about a third of the parent, the median moves
    towards them and the band widens; the singlet-share check flags the tube.
    """
    ok = (area > 0) & np.isfinite(area) & np.isfinite(height)
    r = height[ok] / area[ok]
    m = float(np.median(r))
    s = 1.4826 * float(np.median(np.abs(r - m)))
    s = max(s, 1e-3 * m)
    lo, hi = m - k * s, m + k * s
    vertices = np.array([[0.0, 0.0], [top, top * lo], [top, top * hi]])
    return vertices, lo, hi


def place(spec: PopulationSpec, parent: str, walk: Walk):
    """The singlet band inside ``parent``: ``(gate, mask)``, or None when the file lacks a
    forward area/height pair (the population is left out and its children hang from
    ``parent``; ``flow_qc`` gets :data:`SINGLETS_NOT_GATED`)."""
    import flowkit as fk
    from flowutils import gating as fu_gating

    prep = walk.prep
    pmask = walk.masks[parent]
    axes, _choices = walk.scatter_axes(spec)
    if None in axes:
        # No area/height pair (FACSCalibur: height only): no singlet gate is invented.
        walk.redirect[spec.name] = parent
        walk.missing.append(spec.name)
        code = (1.0 if axes[0] is None else 0.0) + (2.0 if axes[1] is None else 0.0)
        walk.qc.append(singlets_not_gated(SINGLETS_NOT_GATED, code))
        return None
    area, height = (prep.scatter[c] for c in axes)
    verts, lo, hi = singlet_band(area[pmask], height[pmask])
    gate = fk.gates.PolygonGate(spec.gate_id, [walk.scatter_dim(c) for c in axes],
                                [[float(a), float(b)] for a, b in verts])
    inside = fu_gating.points_in_polygon(np.asarray(gate.vertices, dtype=np.float64),
                                         np.column_stack([area, height]))
    mask = pmask & inside
    share = float(mask.sum() / max(pmask.sum(), 1))
    walk.qc.append(singlet_share(share, 0.75))
    walk.placements.append(GatePlacement(spec.gate_id, spec.name, "FSC-H/FSC-A band",
                                         {"ratio_low": lo, "ratio_high": hi},
                                         "scatter " + " / ".join(prep.scatter_pnn[c] for c in axes)))
    return gate, mask
