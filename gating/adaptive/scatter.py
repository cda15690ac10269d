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


def lymphocyte_polygon(fsc: np.ndarray, ssc: np.ndarray, n_components: int = 5, seed: int = 0,
                       distance2: float = 5.991, n_vertices: int = 48,
                       max_fit: int = 20_000) -> tuple[np.ndarray, float]:
    """Polygon around the lymphocyte cloud on linear FSC-A/SSC-A.

    Method: a ``GaussianMixture`` (full covariances, ``n_components``) is fitted to the
    robustly standardised scatter of up to ``max_fit`` events. The lymphocyte component is the
    lowest-SSC component among those holding >= 5 % of events whose FSC mean is at least half
    the median FSC (which excludes debris). The gate is that component's ellipse at squared
    Mahalanobis distance ``distance2`` (95 % of a 2-D normal), written as a polygon.
    Returns the vertices (same units as the input) and a separation score: the smallest
    Mahalanobis distance from the lymphocyte mean to another component's mean, under the
    average of the two covariances.

    Failure mode: when lymphocytes are a minority among many small components (e.g. a lysed
    whole-blood tube with dominant granulocytes and debris), or when the lymphocyte cloud is
    split across two components, the chosen ellipse can be too small or sit on dead cells;
    the separation score and the ``lymphocytes`` count check flag such tubes.
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
    covs = gmm.covariances_ * np.outer(scale, scale)
    fsc_floor = 0.5 * float(np.median(fit[:, 0]))
    ok = [i for i in range(n_components) if gmm.weights_[i] >= 0.05 and means[i, 0] >= fsc_floor]
    if not ok:
        ok = [int(np.argmax(gmm.weights_))]
    k = min(ok, key=lambda i: means[i, 1])
    others = [i for i in range(n_components) if i != k and gmm.weights_[i] >= 0.02]
    sep = float("inf")
    for i in others:
        d = means[i] - means[k]
        sep = min(sep, float(np.sqrt(d @ np.linalg.solve((covs[i] + covs[k]) / 2, d))))
    vals, vecs = np.linalg.eigh(covs[k])
    angles = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    circle = np.column_stack([np.cos(angles), np.sin(angles)])
    vertices = means[k] + (circle * np.sqrt(vals * distance2)) @ vecs.T
    return vertices, sep


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
                         "(any of the names listed), or gate it with a Gating-ML or FlowJo template")
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
    walk.placements.append(GatePlacement(spec.gate_id, spec.name, "gaussian mixture ellipse",
                                         note="scatter " + " / ".join(prep.scatter_pnn[c] for c in axes)))
    return gate, pmask & inside
