"""The placed gates as a flowkit ``GatingStrategy``: ordinary Gating-ML 2.0 gates, the file's
spillover embedded as a ``spectrumMatrix``, linear scatter and logicle fluorescence."""

from __future__ import annotations

import numpy as np

from assays.records import FcsSample
from gating.transforms import Scales, logicle, scatter_linear

COMP_ID = "spill"
SCATTER_XFORM = "scatter_linear"
FLUOR_XFORM = "logicle"


def build_strategy(sample: FcsSample, scales: Scales, gates) -> object:
    """A flowkit ``GatingStrategy`` holding ``gates`` (``(spec, flowkit gate, gate path)``
    in parent-first order) with the compensation and the transforms (``scales``) they reference."""
    import flowkit as fk

    strategy = fk.GatingStrategy()
    if sample.spillover is not None:
        by_pnn = {c.pnn: c for c in sample.channels}
        fluoro = [by_pnn[d].label if d in by_pnn else d for d in sample.spillover.detectors]
        strategy.add_comp_matrix(COMP_ID, fk.Matrix(np.asarray(sample.spillover.matrix, dtype=float),
                                                    list(sample.spillover.detectors), fluoro))
    strategy.add_transform(SCATTER_XFORM, scatter_linear(scales.scatter_top))
    strategy.add_transform(FLUOR_XFORM, logicle(scales.logicle))
    for _spec, gate, path in gates:
        strategy.add_gate(gate, gate_path=path)
    return strategy
