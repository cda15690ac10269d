"""The display/gating scales of the built-in panel: logicle for fluorescence, linear for scatter.

Logicle (Parks, Roederer & Moore 2006, Cytometry A 69A:541-551; the parametrisation and the
reference implementation used here: Moore & Parks 2012, "Update for the logicle data scale
including operational code implementations", Cytometry A 81A:273-277; also Gating-ML 2.0,
section 5.4). A data value ``x`` maps to the scale value ``y`` with ``x = B(y)``: ``y = 1`` at
``x = T`` (the scale goes on above 1 beyond T), ``y = x_1 = (W + A) / (M + A)`` at ``x = 0``:

.. math::

    B(y) = a e^{b y} - c e^{-d y} + f \\quad (y \\ge x_1), \\qquad B(y) = -B(2 x_1 - y) \\quad (y < x_1)

    w = W / (M + A),\\; x_2 = A / (M + A),\\; x_1 = x_2 + w,\\; x_0 = x_2 + 2 w,\\; b = (M + A) \\ln 10

    d:\\; 2 (\\ln d - \\ln b) + w (b + d) = 0

    c_a = e^{x_0 (b + d)},\\; m_a = e^{b x_1} - c_a e^{-d x_1},\\;
    a = T / (e^{b} - m_a - c_a e^{-d}),\\; c = c_a a,\\; f = -m_a a

Parameters: ``T`` the top of the data scale (the largest value, $PnR of an 18-bit
cytometer: 262144), ``M`` the decades of the full logarithmic scale (4.5), ``W`` the
decades of the linear region around zero (0.5: compensated negatives spread there instead
of piling up), ``A`` additional negative decades (0). B is linear near zero and
exponential (logarithmic scale) above a few hundred units. flowkit/flowutils evaluate it
(``flowkit.transforms.LogicleTransform``) by Moore & Parks' Halley iteration.

Examples
--------
>>> xf = logicle({"t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0})
>>> import numpy as np
>>> y = xf.apply(np.array([[0.0], [262144.0]]))[:, 0]
>>> [round(float(v), 6) for v in y]
[0.111111, 1.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def logicle(params: dict[str, float]):
    """flowkit logicle transform of the panel's ``{"t", "w", "m", "a"}`` parameters (formula above).

    Parameters
    ----------
    params : dict
        ``t`` top of scale, ``w`` linear-region width (decades), ``m`` total decades,
        ``a`` additional negative decades.

    Returns
    -------
    flowkit.transforms.LogicleTransform
    """
    import flowkit as fk

    return fk.transforms.LogicleTransform(param_t=params["t"], param_w=params["w"], param_m=params["m"],
                                          param_a=params["a"])


def scatter_linear(top: float):
    """flowkit linear transform of scatter: ``y = x / top`` (Gating-ML 2.0 flin with A = 0).

    Reference: Gating-ML 2.0 (Spidlen et al., Cytometry A 2015), section on flin.

    Parameters
    ----------
    top : float
        The top of the scatter scale (the panel's or the file's ``$PnR``), mapped to 1.

    Returns
    -------
    flowkit.transforms.LinearTransform
        The transform gates and pictures apply to scatter channels.

    Examples
    --------
    >>> import numpy as np
    >>> float(scatter_linear(262144.0).apply(np.array([[131072.0]]))[0, 0])
    0.5
    """
    import flowkit as fk

    return fk.transforms.LinearTransform(param_t=top, param_a=0.0)


# A file's range must exceed the panel's by this factor before the scale follows the file.
WIDER = 2.0


@dataclass(frozen=True)
class Scales:
    """The scales one sample is gated on: linear scatter top and logicle parameters."""

    scatter_top: float
    logicle: dict[str, float]


def file_scales(panel_logicle: dict[str, float], panel_scatter_top: float, scatter_ranges: list[float],
                fluor_ranges: list[float], negative_p5: float | None) -> Scales:
    """The scales of a file: the panel's for conventional data, widened to the file's own range.

    A file whose ``$PnR`` stays within :data:`WIDER` times the panel's logicle ``T`` and
    scatter range (18-bit cytometers: 262144, some write 262207; FACSCalibur 1024-channel
    data) is gated on the panel's parameters unchanged. A wider file (spectral cytometers, Aurora/ID7000: ``$PnR`` 4,194,304) gets:

    * scatter top = its largest scatter ``$PnR`` (else its events sit above the linear scale);
    * logicle ``T`` = its largest marker ``$PnR``, ``M`` unchanged;
    * logicle ``W`` from the negative spread (Parks, Roederer & Moore 2006; Moore & Parks
      2012): ``W = (M - log10(T / |r|)) / 2`` with ``r`` the 5th percentile of the
      compensated marker values when negative, kept between the panel's ``W`` and
      ``M / 2 - 0.1`` (logicle needs ``W <= M / 2``).

    Parameters
    ----------
    panel_logicle : dict
        The panel's ``t, w, m, a``.
    panel_scatter_top : float
        The panel's linear scatter top (``scatter_range``).
    scatter_ranges, fluor_ranges : list of float
        ``$PnR`` of the scatter and marker channels used (unparseable ones left out).
    negative_p5 : float or None
        5th percentile of the compensated marker values (the most negative over markers).

    Returns
    -------
    Scales

    Examples
    --------
    >>> p = {"t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0}
    >>> file_scales(p, 262144.0, [262207.0], [262207.0], -300.0) == Scales(262144.0, p)
    True
    >>> s = file_scales(p, 262144.0, [4194304.0], [4194304.0], -13121.0)
    >>> s.scatter_top, s.logicle["t"], round(s.logicle["w"], 2)
    (4194304.0, 4194304.0, 1.0)
    """
    scatter_top = max([panel_scatter_top, *scatter_ranges])
    if scatter_top <= WIDER * panel_scatter_top:
        scatter_top = panel_scatter_top
    t = max([panel_logicle["t"], *fluor_ranges])
    params = dict(panel_logicle)
    if t > WIDER * panel_logicle["t"]:
        m = panel_logicle["m"]
        w = panel_logicle["w"]
        if negative_p5 is not None and negative_p5 < 0:
            w = (m - math.log10(t / abs(negative_p5))) / 2
        params.update(t=t, w=min(max(w, panel_logicle["w"]), m / 2 - 0.1))
    return Scales(float(scatter_top), params)
