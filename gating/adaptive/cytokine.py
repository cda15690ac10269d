"""Placement of a cytokine cut (IFN-γ, IL-4, IL-17A): from the unstimulated control tube
when one is given, else from the stimulated tube's own negative population; either way
with a check that the data separate the producers from the negatives."""

from __future__ import annotations

import dataclasses

import numpy as np

from gating.adaptive.state import Walk
from gating.adaptive.producers import control_cytokine_cut, cytokine_threshold
from gating.qc import producers_not_separated

MIN_CONTROL_EVENTS = 200


def cut(marker: str, parent: str, pmask: np.ndarray, walk: Walk) -> tuple[float, str]:
    """The cytokine cut of ``marker`` inside ``parent`` and how it was found.

    With a control walk holding at least :data:`MIN_CONTROL_EVENTS` events of the same
    parent: :func:`~gating.adaptive.producers.control_cytokine_cut`; otherwise, or when
    that control is too small to set the cut within the Th bound (it returns None),
    :func:`~gating.adaptive.producers.cytokine_threshold` on the stimulated tube. When the
    producers are not separated from the negatives (``CytokineCut.resolved`` False) a
    failing ``resolved_<marker>@<parent>`` row marks every population of ``parent`` gated
    on ``marker`` unresolved: their values are left empty and the sample goes to review.
    """
    vals = walk.placement_values(marker, pmask, parent)
    ctrl = walk.control
    found = None
    small = ""
    if ctrl is not None and marker in ctrl.prep.fluor and parent in ctrl.masks:
        ctrl_vals = ctrl.prep.fluor[marker][ctrl.masks[parent]]
        if ctrl_vals.size >= MIN_CONTROL_EVENTS:
            found = control_cytokine_cut(vals, ctrl_vals)
        if found is None:
            small = f"the control's {ctrl_vals.size} {parent} events are too few to set the cut; "
    if found is None:
        found = cytokine_threshold(vals)
        if small:
            found = dataclasses.replace(found, how=small + found.how, reason=small + found.reason if found.reason else "")
    if not found.resolved:
        gates = tuple(spec.gate_id for spec in walk.panel.populations
                      if walk.parent_of(spec) == parent
                      and any(t.marker == marker for t in (*spec.gate, *spec.fallback)))
        names = [spec.name for spec in walk.panel.populations if spec.gate_id in gates]
        walk.qc.append(producers_not_separated(marker, walk.ids[parent], parent, found.hidden_pct,
                                               found.allowed_pct, gates, names, found.reason, found.remedy))
    return found.cut, found.how
