"""Computation: compensation, transforms, gating templates, statistics, QC, chimerism.

flowkit is imported lazily from here on (:mod:`gating.flowkit_import`): gating needs its
gate and Gating-ML classes, not the plotting stack its package ``__init__`` loads.
"""

from gating.flowkit_import import install as _install_lazy_flowkit

_install_lazy_flowkit()
