"""The state of one pass down the panel's hierarchy, shared by the placement units.

Each unit (:mod:`~gating.adaptive.scatter`, :mod:`~gating.adaptive.singlets`,
:mod:`~gating.adaptive.markers`, with :mod:`~gating.adaptive.quadrant` and
:mod:`~gating.adaptive.cytokine`) reads the parent's events from here and records its gate,
its placement and its QC rows here; :mod:`~gating.adaptive.walk` runs them in panel order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gating.adaptive.prepare import Prepared
from gating.adaptive.records import GatePlacement
from gating.adaptive.strategy import COMP_ID, SCATTER_XFORM
from gating.adaptive.thresholds import SINGLE_HOW
from gating.panel import Panel, PopulationSpec
from gating.qc import QcCheck, separation, too_few_to_place, unresolved_marker

MIN_PLACEMENT_EVENTS = 100


@dataclass
class Walk:
    """Masks, ids and paths of the populations placed so far, the cut of each (marker,
    parent), and what the pass produced (flowkit gates, placements, QC rows, populations
    left out, scatter parameters used)."""

    prep: Prepared
    panel: Panel
    seed: int = 0
    quadrant: str = "auto"
    control: Walk | None = None  # the unstimulated control tube's own walk
    with_cytokines: bool = True
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=lambda: {"root": "root"})
    paths: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"root": ("root",)})
    redirect: dict[str, str] = field(default_factory=dict)  # population left out -> its stand-in
    cache: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    gates: list[tuple[PopulationSpec, object, tuple[str, ...]]] = field(default_factory=list)
    placements: list[GatePlacement] = field(default_factory=list)
    qc: list[QcCheck] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    scatter_used: list[str] = field(default_factory=list)
    quadrants: dict[tuple[str, frozenset], tuple[str, str]] = field(default_factory=dict)  # quadrant pairs

    def __post_init__(self):
        self.masks.setdefault("root", np.ones(self.prep.rows.size, bool))

    @property
    def comp_ref(self) -> str:
        return COMP_ID if self.prep.has_comp else "uncompensated"

    def parent_of(self, spec: PopulationSpec) -> str:
        """The population a gate hangs from: its parent, or what stands in for a left-out one."""
        parent = spec.parent
        while parent in self.redirect:
            parent = self.redirect[parent]
        return parent

    def add(self, spec: PopulationSpec, parent: str, gate, mask: np.ndarray) -> None:
        path = self.paths[parent]
        self.masks[spec.name] = mask
        self.ids[spec.name] = spec.gate_id
        self.paths[spec.name] = path + (spec.gate_id,)
        self.gates.append((spec, gate, path))

    def placement_values(self, marker: str, pmask: np.ndarray, parent: str | None = None) -> np.ndarray:
        vals = self.prep.fluor[marker][pmask]
        if vals.size < MIN_PLACEMENT_EVENTS:
            # Too few events to place a gate: place it on all events so the strategy stays
            # complete (and exports), and leave the values below the parent empty.
            if parent is not None:
                self.too_few(parent, vals.size)
            vals = self.prep.fluor[marker]
        return vals

    def too_few(self, parent: str, count: int) -> None:
        """Mark ``parent``'s populations unresolved: fewer than ``MIN_PLACEMENT_EVENTS`` to place on."""
        gate_id = self.ids[parent]
        if parent != "root" and not any(q.unresolved_in == gate_id and q.check.startswith("placement_events@")
                                         for q in self.qc):
            self.qc.append(too_few_to_place(gate_id, parent, count, MIN_PLACEMENT_EVENTS))

    def axis_qc(self, marker: str, parent: str, vals: np.ndarray) -> None:
        t, how = self.cache[(marker, parent)]
        above = vals >= t
        where = f"{marker}@{self.ids[parent]}"
        self.qc.append(separation(where, vals[~above], vals[above], what=f"{marker}+ gate in {parent}"))
        if (how.startswith("one peak") or SINGLE_HOW in how) and self.panel.markers[marker].required:
            # A required marker that does not resolve into two populations gives numbers
            # nobody should trust without looking.
            self.qc.append(unresolved_marker(marker, self.ids[parent], parent))

    def scatter_dim(self, param: str):
        import flowkit as fk

        if param not in self.scatter_used:
            self.scatter_used.append(param)
        return fk.Dimension(self.prep.scatter_pnn[param], compensation_ref="uncompensated",
                            transformation_ref=SCATTER_XFORM)

    def scatter_axes(self, spec: PopulationSpec):
        """The parameter each axis uses: the first of its choices the file has, or None."""
        choices = spec.channel_choices or tuple((c,) for c in spec.channels)
        return [next((c for c in axis if c in self.prep.scatter), None) for axis in choices], choices
