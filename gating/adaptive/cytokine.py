"""Placement of a cytokine cut (IFN-γ, IL-4, IL-17A): from the unstimulated control tube
when one is given, else from the stimulated tube's own negative population."""

from __future__ import annotations

import numpy as np

from gating.adaptive.state import Walk
from gating.adaptive.thresholds import CONTROL_PERCENTILE, control_threshold, cytokine_threshold

MIN_CONTROL_EVENTS = 200


def cut(marker: str, parent: str, pmask: np.ndarray, walk: Walk) -> tuple[float, str]:
    """The cytokine cut of ``marker`` inside ``parent`` and how it was found.

    With a control walk holding at least :data:`MIN_CONTROL_EVENTS` events of the same
    parent: the control's :data:`~gating.adaptive.thresholds.CONTROL_PERCENTILE` th
    percentile (:func:`~gating.adaptive.thresholds.control_threshold`); otherwise
    :func:`~gating.adaptive.thresholds.cytokine_threshold` on the stimulated tube.
    """
    ctrl = walk.control
    if ctrl is not None and marker in ctrl.prep.fluor and parent in ctrl.masks:
        ctrl_vals = ctrl.prep.fluor[marker][ctrl.masks[parent]]
        if ctrl_vals.size >= MIN_CONTROL_EVENTS:
            return control_threshold(ctrl_vals), f"control P{CONTROL_PERCENTILE:g}"
    return cytokine_threshold(walk.placement_values(marker, pmask, parent))
