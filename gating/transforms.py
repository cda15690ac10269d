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

    >>> import numpy as np
    >>> float(scatter_linear(262144.0).apply(np.array([[131072.0]]))[0, 0])
    0.5
    """
    import flowkit as fk

    return fk.transforms.LinearTransform(param_t=top, param_a=0.0)
