"""What the adaptive panel hands back: the placed strategy and how each gate was placed."""

from __future__ import annotations

from dataclasses import dataclass, field

from assays.records import Channel
from gating.qc import QcCheck


@dataclass
class GatePlacement:
    """How one adaptive gate was placed (kept for review and for ``flow_qc``)."""

    gate_id: str
    population: str
    method: str
    thresholds: dict[str, float] = field(default_factory=dict)  # marker -> logicle value
    note: str = ""


@dataclass
class AdaptiveGating:
    """Result of :func:`gating.adaptive.build_adaptive_gating`.

    ``strategy`` is a flowkit ``GatingStrategy``; ``names`` maps Gating-ML gate ids to the
    DESIGN.md population names; ``missing_optional`` lists populations left out because the
    file lacks their markers (NULL in ``immune_timeline``) and optional markers not found.
    """

    strategy: object
    names: dict[str, str]
    qc: list[QcCheck]
    missing_optional: list[str]
    channels: dict[str, Channel] = field(default_factory=dict)
    placements: list[GatePlacement] = field(default_factory=list)
