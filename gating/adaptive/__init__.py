"""The built-in adaptive T-cell panel: gate positions computed from each sample's own data.

The hierarchy and marker aliases come from a :class:`gating.panel.Panel` (default
``gating/panels/tcell.toml``). :func:`build_adaptive_gating` places every gate on the
sample and returns a flowkit ``GatingStrategy`` made of ordinary Gating-ML 2.0 gates
(polygon gates on linear scatter, rectangle gates on logicle-transformed compensated
fluorescence, the file's spillover embedded as a ``spectrumMatrix``). Counts are then taken
by evaluating that strategy (``gating.sample_gating.apply_strategy``), so the Gating-ML exported to
``flow_gates`` re-applied by flowkit to the same file gives the same counts.

Modules: :mod:`~gating.adaptive.build` (entry point), :mod:`~gating.adaptive.prepare`
(subsample, scatter lookup, logicle), :mod:`~gating.adaptive.walk` (the hierarchy, one unit
per panel ``method``), the placement units :mod:`~gating.adaptive.scatter` (lymphocyte
mixture), :mod:`~gating.adaptive.singlets` (singlet band), :mod:`~gating.adaptive.markers`
(viability, CD3, Treg: marker thresholds), :mod:`~gating.adaptive.quadrant` (CD4/CD8),
:mod:`~gating.adaptive.cytokine`; :mod:`~gating.adaptive.thresholds` (1-D threshold
statistics) and :mod:`~gating.adaptive.strategy` (the flowkit strategy build).

Placement methods (each function's docstring gives its failure mode):

* ``Lymphocytes`` - :func:`lymphocyte_polygon`: Gaussian mixture on forward/side scatter:
  FSC-A/SSC-A, else height (FSC-H/SSC-H: FACSCalibur, FACScan), else unsuffixed scatter
  (FSC/SSC, FS/SS), each axis separately, with the vendor spellings of the panel's
  ``[scatter]`` table (:func:`assays.names.name_key`: case, spaces, ``_``/``-``
  ignored). Only a file without any forward or any side scatter channel is an
  ``InputError`` (quarantined).
* ``Singlets`` - :func:`singlet_band`: band of the FSC-H/FSC-A ratio. A file without a
  forward-scatter area/height pair gets no singlet gate (none is invented): ``Singlets``
  is left out, its children (``Live``, or ``CD3+`` without a viability dye) hang from
  ``Lymphocytes``, and ``flow_qc`` gets the passing row ``singlets_not_gated``
  (:data:`~gating.adaptive.singlets.SINGLETS_NOT_GATED`), whose value says which half of the pair is missing:
  1 = no forward area (height or unsuffixed scatter only: FACSCalibur), 2 = no forward
  height, 3 = neither (a single unsuffixed forward scatter). Percentages of lymphocytes
  are then of the (Live) lymphocytes with any doublets the scatter gate lets in: most
  doublets already fall outside it (their side scatter adds up; on the simulated tubes
  the singlet gate removes < 0.1 % of the lymphocyte gate), but doublets of two small
  cells can stay and count once, with the markers of both cells.
* ``Live``, ``CD3+``, CD4/CD8 quadrant, CD25/CD127/FOXP3 - :func:`density_valley` on the
  parent population; without a valley :func:`mixture_threshold` (two resolved Gaussian
  components), and with a single population :func:`peak_threshold` on the side of the
  marker's expected minority (panel key ``majority``).
* a quadrant (four populations of one parent gated on the four sign combinations of two
  ``valley`` markers: CD4/CD8 inside CD3+) - each axis as above; an axis whose cut is not a
  valley or resolved 1-D mixture, is a valley inside a single population (Ashman's D of
  its two-component mixture < ``QUADRANT_MIN_D``), or leaves less than
  ``QUADRANT_MIN_SHARE`` of the parent on one side, takes its cut from
  :func:`quadrant_mixture` (2-D Gaussian mixture on both markers). If that does not
  resolve the pair either, or its cuts keep less than ``QUADRANT_MIN_RECOVERY`` of the
  events with their population, the quadrant QC row fails and the populations inside the
  parent are unresolved (values NULL, the row's message as the reason). The
  ``quadrant_<x>_<y>@<parent>:<method>`` row of ``flow_qc`` says which method placed the
  cuts (``valley_1d``, ``mixture_2d`` or ``unresolved``).
* a marker named by several channels (CD8a and CD8b) - the channel best separated in the
  parent it is first gated in (:mod:`~gating.adaptive.channel_choice`), recorded in the
  ``channel_<marker>@<parent>`` row of ``flow_qc``.
* cytokines - :func:`control_threshold` on the unstimulated control tube when given, else
  :func:`cytokine_threshold` on the negative population (mode + 3.5 upper-flank SD, or the
  valley above it; :mod:`~gating.adaptive.producers`); either way NULL with a
  `resolved_<marker>@<parent>` reason when the data do not separate the producers from
  the negatives (without a control: no producer population above the cut and hidden
  producers not excluded, a population cut through, or an unexplained upper flank; with
  one: its negatives not matching the tube's, a population cut through, or producers in
  excess of the control just below its cut; a control too small for its 99.9th
  percentile hands over to the tube's own negatives).

Gate positions are computed on at most ``max_events`` randomly chosen events (seeded):
the positions of a 1M-event tube are as good from 100k events and cost a tenth.
"""

from gating.adaptive.build import build_adaptive_gating
from gating.adaptive.prepare import find_scatter, logicle_by_table
from gating.adaptive.quadrant import QUADRANT_MODES, QuadrantFit, quadrant_mixture
from gating.adaptive.records import AdaptiveGating, GatePlacement
from gating.adaptive.scatter import lymphocyte_polygon
from gating.adaptive.singlets import SINGLETS_NOT_GATED, singlet_band
from gating.adaptive.producers import cytokine_threshold
from gating.adaptive.thresholds import control_threshold, density_valley, mixture_threshold, peak_threshold

__all__ = [
    "AdaptiveGating",
    "GatePlacement",
    "build_adaptive_gating",
    "lymphocyte_polygon",
    "singlet_band",
    "density_valley",
    "mixture_threshold",
    "peak_threshold",
    "cytokine_threshold",
    "control_threshold",
    "QuadrantFit",
    "quadrant_mixture",
    "QUADRANT_MODES",
    "SINGLETS_NOT_GATED",
    "find_scatter",
    "logicle_by_table",
]
