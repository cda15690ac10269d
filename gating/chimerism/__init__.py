"""Donor chimerism and microchimerism from STR, qPCR and ddPCR measurements.

Modules: :mod:`.records` (configuration and result records), :mod:`.pairing` (samples
and targets to roles), one module per method with its formulas and its per-sample
driver (:mod:`.str`, :mod:`.qpcr`, :mod:`.ddpcr`), the qPCR helpers :mod:`.replicates`
and :mod:`.calibration`, the detection calls :mod:`.limits`, and the entry point
:func:`quantify_chimerism` (:mod:`.quantify`).
"""

from gating.chimerism.pairing import is_reference_target
from gating.chimerism.quantify import quantify_chimerism
from gating.chimerism.records import ChimerismConfig, ChimerismMarkerResult, ChimerismResult

__all__ = ["ChimerismConfig", "ChimerismMarkerResult", "ChimerismResult", "is_reference_target", "quantify_chimerism"]
