"""Placement unit ``markers`` (``Live``, ``CD3+``, the CD4/CD8 quadrant, Th and Treg subsets):
a rectangle gate on logicle fluorescence, one cut per marker term.

Each (marker, parent) cut is placed once and reused by every population of that parent:
a ``valley`` marker by :func:`~gating.adaptive.thresholds.marker_threshold` (the viability
dye too: ``Live`` is left out, its children hanging from its parent, when the file has no
viability channel), a quadrant pair by :func:`gating.adaptive.quadrant.place`, a cytokine by
:func:`gating.adaptive.cytokine.cut`. A marker on several channels is first given its
best-separated one in the parent it is first gated in (:mod:`gating.adaptive.channel_choice`).
"""

from __future__ import annotations

from gating.adaptive import channel_choice, cytokine, quadrant
from gating.adaptive.records import GatePlacement
from gating.adaptive.state import Walk
from gating.adaptive.strategy import FLUOR_XFORM
from gating.adaptive.thresholds import marker_threshold
from gating.panel import GateTerm, PopulationSpec


def _terms_for(spec: PopulationSpec, walk: Walk) -> tuple[GateTerm, ...] | None:
    fluor = walk.prep.fluor
    if all(t.marker in fluor for t in spec.gate):
        return spec.gate
    if spec.fallback and all(t.marker in fluor for t in spec.fallback):
        return spec.fallback
    return None


def place(spec: PopulationSpec, parent: str, walk: Walk):
    """The rectangle gate of ``spec`` inside ``parent``: ``(gate, mask)``, or None when the
    file lacks its markers (left out, listed in ``walk.missing``) or it is a cytokine gate
    on a control tube's walk."""
    import flowkit as fk

    panel, prep, cache = walk.panel, walk.prep, walk.cache
    terms = _terms_for(spec, walk)
    if terms is None:
        if spec.bypass_when_missing:
            walk.redirect[spec.name] = parent
        walk.missing.append(spec.name)
        return None
    if not walk.with_cytokines and any(panel.markers[t.marker].threshold == "cytokine" for t in terms):
        return None
    for term in terms:
        channel_choice.choose(term.marker, parent, walk)
    pmask = walk.masks[parent]
    dims, thresholds, notes = [], {}, []
    mask = pmask.copy()
    quad = walk.quadrants.get((spec.parent, frozenset(t.marker for t in terms)))
    if quad is not None and terms == spec.gate and any((m, parent) not in cache for m in quad):
        quadrant.place(*quad, parent, walk)
    for term in terms:
        key = (term.marker, parent)
        if key not in cache:
            if panel.markers[term.marker].threshold == "cytokine":
                cache[key] = cytokine.cut(term.marker, parent, pmask, walk)
            else:
                vals = walk.placement_values(term.marker, pmask, parent)
                cache[key] = marker_threshold(vals, panel.markers[term.marker].majority)
                walk.axis_qc(term.marker, parent, vals)
        t, how = cache[key]
        thresholds[term.marker] = t
        notes.append(f"{term.marker}: {how}")
        pnn = prep.channels[term.marker].pnn
        if term.positive:
            dims.append(fk.Dimension(pnn, compensation_ref=walk.comp_ref,
                                     transformation_ref=FLUOR_XFORM, range_min=float(t)))
            mask &= prep.fluor[term.marker] >= t
        else:
            dims.append(fk.Dimension(pnn, compensation_ref=walk.comp_ref,
                                     transformation_ref=FLUOR_XFORM, range_max=float(t)))
            mask &= prep.fluor[term.marker] < t
    gate = fk.gates.RectangleGate(spec.gate_id, dims)
    walk.placements.append(GatePlacement(spec.gate_id, spec.name, "thresholds", thresholds, "; ".join(notes)))
    return gate, mask
