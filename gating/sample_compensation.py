"""Compensation of one sample's events as flowkit applies it, for each compensation reference.

A gating plan names compensation references (``'FCS'``, a Gating-ML ``spectrumMatrix`` id,
a FlowJo matrix name, ``'uncompensated'``). :class:`SampleCompensation` resolves each to a
matrix (caller-supplied first, then the strategy's; ``'FCS'`` without a spillover =
uncompensated, the Gating-ML 2.0 rule) and solves it once per sample with the expression and
channel order flowkit uses, so every compensated value has flowkit's bits
(see :mod:`gating.evaluator`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import flowkit as fk
import numpy as np
from flowutils import compensate as fu_compensate

from gating.compensation import solve_by_chunks

__all__ = ["UNCOMPENSATED", "SampleCompensation"]

# Compensation references that mean "read the raw channel" (flowkit treats a
# missing reference the same as the Gating-ML keyword).
UNCOMPENSATED = (None, "uncompensated")

_MISSING = object()


class SampleCompensation:
    """The compensated values of one sample's events, one solve per compensation reference."""

    def __init__(
        self,
        events: np.ndarray,
        pnn: list[str],
        strategy_matrices: Mapping[str, Any],
        spillover_by_id: Callable[[str], Any] | Mapping[str, Any] | None,
        seconds: dict[str, float] | None = None,
    ):
        self.events = events
        self.pnn = pnn
        self.strategy_matrices = strategy_matrices
        self.spillover_by_id = spillover_by_id
        # seconds spent solving, added under "compensate" (shared with the caller's timings)
        self.seconds = seconds if seconds is not None else {}
        # comp ref -> (compensated block, channel index -> block column)
        self._comp: dict[Any, tuple[np.ndarray, dict[int, int]]] = {}
        self._identity = {i: i for i in range(events.shape[1])}

    def lookup_matrix(self, comp_ref: str) -> Any:
        """The matrix for ``comp_ref``: caller-supplied first, then the strategy's."""
        found: Any = _MISSING
        src = self.spillover_by_id
        if src is not None:
            if callable(src) and not isinstance(src, Mapping):
                try:
                    found = src(comp_ref)
                except KeyError:
                    found = _MISSING
            else:
                found = src.get(comp_ref, _MISSING)
        if found is not _MISSING and found is not None:
            return found
        if comp_ref in self.strategy_matrices:
            return self.strategy_matrices[comp_ref]
        if comp_ref == "FCS":
            # Gating-ML 2.0: 'FCS' with no spillover in the file = uncompensated.
            return None
        raise KeyError(
            f"compensation reference {comp_ref!r} is neither in the gating strategy "
            f"({sorted(self.strategy_matrices)}) nor supplied in spillover_by_id"
        )

    def compensated(self, comp_ref: Any) -> tuple[np.ndarray, dict[int, int]]:
        """Compensated values for ``comp_ref`` as ``(block, where)``.

        ``block`` is an (n_events, k) array and ``where`` maps a channel index to its
        column in ``block``; channels not in ``where`` are unaffected by this
        compensation and read from the raw events. No compensation: ``(events,
        identity)``.
        """
        if comp_ref in UNCOMPENSATED:
            return self.events, self._identity
        hit = self._comp.get(comp_ref)
        if hit is not None:
            return hit
        matrix = self.lookup_matrix(comp_ref)
        if matrix is None:
            out = (self.events, self._identity)
        else:
            t0 = time.perf_counter()
            out = self._apply_matrix(matrix, comp_ref)
            self.seconds["compensate"] = self.seconds.get("compensate", 0.0) + time.perf_counter() - t0
        self._comp[comp_ref] = out
        return out

    def compensated_channels(self) -> dict[Any, dict[int, np.ndarray]]:
        """``{comp ref: {channel index: values}}`` for every matrix applied so far."""
        return {
            ref: {ch: block[:, j] for ch, j in where.items()}
            for ref, (block, where) in self._comp.items()
            if block is not self.events
        }

    def source(self, comp_ref: Any, idx: int) -> tuple[np.ndarray, int]:
        """(2-D array, column) holding channel ``idx`` compensated with ``comp_ref``."""
        block, where = self.compensated(comp_ref)
        j = where.get(idx)
        return (self.events, idx) if j is None else (block, j)

    def _apply_matrix(self, matrix: Any, comp_ref: str) -> tuple[np.ndarray, dict[int, int]]:
        if isinstance(matrix, fk.SpectralMatrix):
            # Rare; flowutils' own function on the whole matrix.
            idx = [self.pnn_index(d, comp_ref) for d in matrix.detectors]
            full = fu_compensate.compensate_spectral_ols(self.events, matrix.matrix, idx)
            return full, self._identity
        if isinstance(matrix, fk.Matrix):
            # Same matrix and channel order as flowkit's Matrix.apply.
            idx = [self.pnn_index(d, comp_ref) for d in matrix.detectors]
            values = np.asarray(matrix.matrix)
        else:
            if isinstance(matrix, tuple) and len(matrix) == 2:
                detectors, values = matrix
            else:
                detectors, values = matrix.detectors, matrix.matrix
            values = np.asarray(values, dtype=np.float64)
            idx = [self.pnn_index(d, comp_ref) for d in detectors]
            # A spillover record ($SPILLOVER order) is put in file channel order
            # first: flowkit re-orders the file's spillover to its fluorescence
            # channel order before solving, and the solve's rounding depends on it.
            order = np.argsort(idx, kind="stable")
            values = values[np.ix_(order, order)]
            idx = [idx[i] for i in order]
        # The exact expression of flowutils.compensate.compensate
        # (``np.linalg.solve(spill.T, data[:, idx].T).T``) on the same operands, so
        # the same LAPACK call produces the same bits; it skips that function's copy
        # of the whole events matrix and the write-back, which only move data.
        # Detectors in consecutive columns (the usual layout) are passed as a strided
        # view: solve copies its operand into LAPACK's layout anyway, so the values it
        # sees are the same and a second copy of the detector block is saved.
        first = idx[0] if idx else 0
        detectors = (self.events[:, first:first + len(idx)] if idx == list(range(first, first + len(idx)))
                     else self.events[:, idx])
        block = solve_by_chunks(values.T, detectors.T).T
        return block, {c: j for j, c in enumerate(idx)}

    def pnn_index(self, detector: str, comp_ref: str) -> int:
        """Column of ``detector`` (a ``$PnN``) named by compensation ``comp_ref``."""
        try:
            return self.pnn.index(detector)
        except ValueError:
            raise LookupError(
                f"compensation {comp_ref!r} names detector {detector!r}, not a channel "
                f"of this sample ($PnN: {self.pnn})"
            ) from None
