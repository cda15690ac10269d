"""Placement unit ``scatter_gmm`` (the ``Lymphocytes`` gate): a Gaussian-mixture ellipse on
forward/side scatter, written as a polygon gate on linear scatter."""

from __future__ import annotations

import numpy as np

from assays.errors import InputError
from gating.adaptive.prepare import scatter_params, unsaturated
from gating.adaptive.records import GatePlacement
from gating.adaptive.state import MIN_PLACEMENT_EVENTS, Walk
from gating.panel import PopulationSpec
from gating.qc import separation_check, too_few_to_place


# Squared Mahalanobis distance bounding the gate: 99.5 % of a 2-D normal (chi-square, 2 df).
# The 95 % ellipse (5.991) of the first version kept 93-96 % of the simulated lymphocytes,
# on the edge of the 5 % count bound; beyond 99.5 % a cloud's edge holds too few events
# to matter and the posterior rule below, not the distance, keeps neighbours out.
CLOUD_DISTANCE2 = 10.597
# A component whose mean lies inside the lymphocyte component's 95 % ellipse is part of
# the same cloud (a core and its halo, or two halves of a skewed cloud), never a neighbour.
SAME_CLOUD_DISTANCE2 = 5.991
# Inside the cloud's 95 % ellipse every point is kept whatever the posterior: a broad
# background component (a smear of debris or dead cells) can outweigh a cloud's flank.
CORE_DISTANCE2 = 5.991


def lymphocyte_polygon(fsc: np.ndarray, ssc: np.ndarray, n_components: int = 5, seed: int = 0,
                       distance2: float = CLOUD_DISTANCE2, n_vertices: int = 64,
                       max_fit: int = 20_000) -> tuple[np.ndarray, float]:
    """Polygon around the whole lymphocyte cloud on linear FSC-A/SSC-A.

    Method: a ``GaussianMixture`` (full covariances, ``n_components``) is fitted to the
    robustly standardised scatter of up to ``max_fit`` events. The lymphocyte component is the
    lowest-SSC component among those holding >= 5 % of events whose FSC mean is at least half
    the median FSC (which excludes debris). Every component whose mean lies inside that
    component's 95 % ellipse (squared Mahalanobis distance <= :data:`SAME_CLOUD_DISTANCE2`)
    belongs to the same cloud: a mixture often spends two components on one non-Gaussian
    cloud (core and halo), and gating one of them kept about half the lymphocytes of a real
    tube. The gate is the region where (1) the cloud's components together have posterior
    probability >= 0.5 (the Bayes boundary against dead cells, monocytes, granulocytes and
    debris) and (2) the point is within squared Mahalanobis distance ``distance2`` of one of
    the cloud's components (:data:`CLOUD_DISTANCE2`, 99.5 % of a 2-D normal: the sparse edge
    of the mixture is not claimed). It is written as a star-shaped polygon: along each of
    ``n_vertices`` rays from the cloud's weighted mean, the first radius where the region
    ends (grid, then bisection).

    Returns the vertices (same units as the input) and a separation score: the smallest
    Mahalanobis distance from the lymphocyte component's mean to another component's mean
    outside the cloud, under the average of the two covariances.

    Failure mode: when lymphocytes are a minority among many small components (e.g. a lysed
    whole-blood tube with dominant granulocytes and debris), the chosen component can sit on
    dead cells; a region that is not star-shaped from the cloud's centre (a crescent) is cut
    at its first boundary along each ray. The separation score and the ``lymphocytes`` count
    check flag such tubes.
    """
    from sklearn.mixture import GaussianMixture

    x = np.column_stack([fsc, ssc]).astype(float)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 50:
        raise ValueError("too few events for the scatter mixture")
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= max_fit else x[rng.choice(len(x), max_fit, replace=False)]
    center = np.median(fit, axis=0)
    scale = np.subtract(*np.percentile(fit, [75, 25], axis=0)) / 1.349
    scale[scale <= 0] = 1.0
    z = (fit - center) / scale
    gmm = GaussianMixture(n_components=n_components, covariance_type="full", random_state=seed,
                          n_init=1, max_iter=200, reg_covar=1e-4).fit(z)
    means = gmm.means_ * scale + center
    fsc_floor = 0.5 * float(np.median(fit[:, 0]))
    ok = [i for i in range(n_components) if gmm.weights_[i] >= 0.05 and means[i, 0] >= fsc_floor]
    if not ok:
        ok = [int(np.argmax(gmm.weights_))]
    k = min(ok, key=lambda i: means[i, 1])
    prec = np.linalg.inv(gmm.covariances_)
    cloud = [i for i in range(n_components)
             if i == k or _d2(gmm.means_[i] - gmm.means_[k], prec[k]) <= SAME_CLOUD_DISTANCE2]
    sep = float("inf")
    for i in range(n_components):
        if i not in cloud and gmm.weights_[i] >= 0.02:
            d = gmm.means_[i] - gmm.means_[k]
            sep = min(sep, float(np.sqrt(_d2(d, np.linalg.inv((gmm.covariances_[i] + gmm.covariances_[k]) / 2)))))
    w = gmm.weights_[cloud] / gmm.weights_[cloud].sum()
    origin = w @ gmm.means_[cloud]

    def inside(pts: np.ndarray) -> np.ndarray:
        d2 = np.min([_d2(pts - gmm.means_[i], prec[i]) for i in cloud], axis=0)
        return (d2 <= CORE_DISTANCE2) | ((d2 <= distance2) & (gmm.predict_proba(pts)[:, cloud].sum(axis=1) >= 0.5))

    angles = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    rays = np.column_stack([np.cos(angles), np.sin(angles)])
    reach = max(np.sqrt(distance2 * np.linalg.eigvalsh(gmm.covariances_[i]).max())
                + np.linalg.norm(gmm.means_[i] - origin) for i in cloud)
    steps = np.linspace(0.0, reach, 65)[1:]
    grid = inside((origin + rays[:, None, :] * steps[None, :, None]).reshape(-1, 2)).reshape(n_vertices, -1)
    first_out = np.where(~grid.all(axis=1), np.argmin(grid, axis=1), len(steps) - 1)
    lo = np.where(first_out > 0, steps[np.maximum(first_out - 1, 0)], 0.0)
    hi = steps[first_out]
    for _ in range(8):
        mid = (lo + hi) / 2
        good = inside(origin + rays * mid[:, None])
        lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
    vertices = (origin + rays * lo[:, None]) * scale + center
    return vertices, sep


def _d2(diff: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``diff`` (or one vector) under ``precision``."""
    return np.einsum("...i,ij,...j->...", diff, precision, diff)


def place(spec: PopulationSpec, parent: str, walk: Walk):
    """The lymphocyte polygon inside ``parent``: ``(gate, mask)``.

    Raises ``InputError`` naming the scatter spellings tried when the file has no forward
    or no side scatter channel (the only scatter-related quarantine).
    """
    import flowkit as fk
    from flowutils import gating as fu_gating

    prep = walk.prep
    pmask = walk.masks[parent]
    axes, choices = walk.scatter_axes(spec)
    if None in axes:
        spellings = scatter_params(walk.panel)
        lacking = " and ".join(
            f"a {('forward', 'side')[i]} scatter channel ("
            + ", ".join(n for c in choices[i] for n in spellings.get(c, (c,))) + ")"
            for i, a in enumerate(axes) if a is None)
        raise InputError(f"{lacking} for the {spec.name} gate",
                         "channels " + ", ".join(prep.pnn),
                         "export the file with its forward and side scatter parameters "
                         "(any of the names listed), or gate it with a Gating-ML or FlowJo template",
                         problem="This FCS file has no forward and side scatter channels to find the lymphocytes by.")
    fsc, ssc = (prep.scatter[c] for c in axes)
    sel = pmask & unsaturated(fsc) & unsaturated(ssc)  # saturated events distort the mixture
    n_fit = int(np.count_nonzero(sel))
    if n_fit < MIN_PLACEMENT_EVENTS:
        # No mixture on a handful of events: the gate spans the scale (the strategy stays
        # complete and exportable) and every value below it is left empty.
        walk.qc.append(too_few_to_place(spec.gate_id, spec.name, n_fit, MIN_PLACEMENT_EVENTS))
        top = 1.0 + max(float(np.max(fsc, initial=0.0)), float(np.max(ssc, initial=0.0)))
        verts, sep = np.array([[-top, -top], [top, -top], [top, top], [-top, top]]), float("nan")
    else:
        verts, sep = lymphocyte_polygon(fsc[sel], ssc[sel], seed=walk.seed)
    gate = fk.gates.PolygonGate(spec.gate_id, [walk.scatter_dim(c) for c in axes],
                                [[float(a), float(b)] for a, b in verts])
    inside = fu_gating.points_in_polygon(np.asarray(gate.vertices, dtype=np.float64),
                                         np.column_stack([fsc, ssc]))
    walk.qc.append(separation_check(spec.gate_id, sep, 2.0, f"{spec.name} gate on scatter"))
    walk.placements.append(GatePlacement(spec.gate_id, spec.name, "gaussian mixture cloud",
                                         note="scatter " + " / ".join(prep.scatter_pnn[c] for c in axes)))
    return gate, pmask & inside
