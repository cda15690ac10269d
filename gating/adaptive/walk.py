"""One pass down the panel's hierarchy: each population placed by the unit its ``method``
names, parents before children."""

from __future__ import annotations

from gating.adaptive import markers, scatter, singlets
from gating.adaptive.prepare import Prepared
from gating.adaptive.quadrant import quadrant_pairs
from gating.adaptive.state import Walk
from gating.panel import Panel

# Panel ``method`` -> placement unit; any other method is a marker gate.
PLACERS = {"scatter_gmm": scatter.place, "singlet_band": singlets.place, "markers": markers.place}


def walk(prep: Prepared, panel: Panel, control: Walk | None = None, seed: int = 0,
         with_cytokines: bool = True, quadrant: str = "auto") -> Walk:
    """Place every population of ``panel`` on ``prep``; ``control`` is the unstimulated
    tube's walk (cytokine cuts), ``with_cytokines=False`` for that control's own walk."""
    state = Walk(prep, panel, seed=seed, quadrant=quadrant, control=control, with_cytokines=with_cytokines)
    state.quadrants = quadrant_pairs(panel)
    for spec in panel.populations:
        parent = state.parent_of(spec)
        if parent not in state.masks:  # parent left out: so is this population
            state.missing.append(spec.name)
            continue
        placed = PLACERS.get(spec.method, markers.place)(spec, parent, state)
        if placed is not None:
            state.add(spec, parent, *placed)
    return state
