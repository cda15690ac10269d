"""Spillover compensation.

For observed detector signals ``x`` (one row per event) and a spillover matrix
``S`` whose row *i* holds the fraction of fluorochrome *i*'s signal seen in each
detector, the compensated signals ``c`` solve ``c @ S = x``, i.e.
``c = x @ inv(S)`` (Bagwell & Adams 1993; FCS 3.1 $SPILLOVER).
"""

from __future__ import annotations

import numpy as np

from assays.errors import InputError
from assays.records import FcsSample, Spillover


# Right-hand-side columns (events) per LAPACK call in :func:`solve_by_chunks`.
SOLVE_CHUNK = 32_768


def _singular(*_args) -> None:
    raise np.linalg.LinAlgError("Singular matrix")


def _solve_gufunc():
    """The gufunc behind ``np.linalg.solve`` (it takes ``out=``), or None if this numpy hides it."""
    try:
        from numpy.linalg import _umath_linalg
    except ImportError:  # pragma: no cover - numpy moved its private module
        return None
    return getattr(_umath_linalg, "solve", None)


_SOLVE = _solve_gufunc()


def solve_by_chunks(spill_t: np.ndarray, observed_t: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(spill_t, observed_t)`` for a ``(k, n)`` right-hand side, 32k columns at a time.

    The same bits as one call: LAPACK's ``getrs`` runs the same forward and back
    substitution on every right-hand-side column on its own, so splitting the columns
    changes only memory traffic (tests/test_statistics.py checks bit equality). One call
    on 1M events allocates and faults in ~100 MB working copies, and two such calls in
    parallel threads ran no faster than one; 32k-column chunks stay in cache.

    Each chunk is solved by the gufunc ``np.linalg.solve`` itself calls (same LAPACK
    ``gesv`` on the same operands, same error on a singular matrix), writing straight
    into the result: ``np.linalg.solve`` returns a new array per chunk that was then
    copied, which cost ~40 % of the compensation (1M events x 9 detectors: 175 -> 106 ms).
    """
    k, n = observed_t.shape
    dtype = np.result_type(spill_t, observed_t, np.float64)
    out = np.empty((k, n), dtype=dtype)
    if _SOLVE is None or dtype != np.float64:
        for start in range(0, n, SOLVE_CHUNK):
            out[:, start:start + SOLVE_CHUNK] = np.linalg.solve(spill_t, observed_t[:, start:start + SOLVE_CHUNK])
        return out
    spill_t = np.asarray(spill_t)
    if spill_t.ndim != 2 or spill_t.shape[0] != spill_t.shape[1]:
        np.linalg.solve(spill_t, observed_t[:, :1])  # raises numpy's own LinAlgError
    # np.linalg.solve's error state: a singular matrix raises, overflow and underflow do not
    with np.errstate(call=_singular, invalid="call", over="ignore", divide="ignore", under="ignore"):
        for start in range(0, n, SOLVE_CHUNK):
            stop = start + SOLVE_CHUNK
            _SOLVE(spill_t, observed_t[:, start:stop], out=out[:, start:stop], signature="dd->d")
    return out


def compensate_array(events: np.ndarray, pnn: list[str], spill: Spillover) -> np.ndarray:
    """Return a copy of ``events`` with the spillover detectors compensated.

    Columns not named in ``spill.detectors`` (scatter, time) are unchanged.
    """
    try:
        idx = [pnn.index(d) for d in spill.detectors]
    except ValueError:
        missing = [d for d in spill.detectors if d not in pnn]
        raise InputError(
            f"every detector of the compensation matrix ({spill.source}) among the file's channels",
            f"{', '.join(missing)} not in {', '.join(pnn)}",
            "use a compensation matrix made for this instrument configuration",
            problem="The compensation matrix does not fit this file's detectors.",
        ) from None
    out = events.copy()
    # Solving S^T c^T = x^T is better conditioned than forming inv(S) explicitly.
    out[:, idx] = solve_by_chunks(spill.matrix.T, events[:, idx].T).T
    return out


def gates_compensation(used: dict) -> dict[int, np.ndarray] | None:
    """The compensated channels statistics should use, given what the gates used.

    ``used``: ``{compensation ref: {channel index: values}}`` from the gating engine
    (``ReusableColumns.compensated`` of ``gating.sample_gating.apply_strategy(..., reuse=)``). When the gates used exactly
    one matrix (a template's, or the file's own via ``'FCS'``), statistics are reported
    on those same values, as FlowJo reports them on the workspace's compensation; the
    solve is then reused, not repeated. Otherwise (no matrix, or several) None: the
    file's own spillover applies (:func:`channel_major`).
    """
    return next(iter(used.values())) if len(used) == 1 else None


def channel_major(sample: FcsSample, channels: list[int], spill: Spillover | None = None,
                  solved: dict[int, np.ndarray] | None = None,
                  raw: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """Compensated events of the given channel indices: one contiguous 1-D array per channel.

    Statistics scan one channel at a time, and a contiguous array is several times faster
    to scan than a strided column. Solving ``S^T C = X^T`` yields the compensated
    detectors already channel-major, so no full row-major copy is made. ``solved``:
    compensated channels already computed (:func:`gates_compensation`), used as they are
    instead of ``spill``; other channels are read uncompensated, from ``raw`` (contiguous
    copies already made, e.g. ``ReusableColumns.raw`` of ``apply_strategy(..., reuse=)``) where it has them.
    """
    raw = raw or {}
    if solved is None:
        solved = {}
        spill = spill or sample.spillover
        if spill is not None:
            pnn = sample.pnn
            det_idx = [pnn.index(d) for d in spill.detectors if d in pnn]
            if len(det_idx) == len(spill.detectors):
                comp_t = solve_by_chunks(spill.matrix.T, sample.events[:, det_idx].T)
                solved = {ch: comp_t[k] for k, ch in enumerate(det_idx)}
            else:
                compensate_array(sample.events, pnn, spill)  # raises the InputError naming the detectors
    return [np.ascontiguousarray(solved[ch] if ch in solved else raw.get(ch, sample.events[:, ch]), dtype=np.float64)
            for ch in channels]
