"""Load a gating template: a Gating-ML 2.0 ``.xml`` or a FlowJo 10 ``.wsp``.

Both become a flowkit ``GatingStrategy``. XML is parsed by flowkit (lxml);
before that the file is screened with defusedxml so a template carrying a DTD,
external entities or entity expansion is refused rather than expanded.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assays.errors import ConfigError

# FlowJo's name for the compensation recorded at acquisition: each file's own $SPILLOVER.
ACQUISITION_DEFINED = "Acquisition-defined"


@dataclass
class Template:
    """A gating strategy and where it came from."""

    name: str  # file name, stored in flow_gates.template
    kind: str  # gatingml / flowjo
    strategy: object  # flowkit.GatingStrategy
    compiled: object | None = None  # gating.compiled_strategy.CompiledStrategy, set once per run
    # (Gating-ML 2.0 text or None, {Gating-ML id: population}): the same for every file
    # gated by this template, so exported once per run
    exported: tuple[str | None, dict[str, str]] | None = None
    # Gating-ML per acquisition-defined matrix (files of one instrument set-up share one):
    # matrix key -> (text, ids); shared by the per-file copies of :meth:`for_sample`.
    matrix_exports: dict = field(default_factory=dict, repr=False)

    def for_sample(self, sample) -> Template:
        """This template as it gates ``sample`` (an ``assays.records.FcsSample``).

        A FlowJo workspace compensating with FlowJo's ``Acquisition-defined`` matrix means
        "each file's own $SPILLOVER": the workspace only keeps a copy of the matrix of the
        file it was made on. For a file with a $SPILLOVER, that reference is bound to the
        file's matrix (detectors named from its $PnN as FlowJo spells them, '/' -> '_'), in
        the strategy, the compiled plan and the exported Gating-ML (made once per distinct
        matrix; None when it fails, for the caller to report). Otherwise the template itself.
        """
        from gating.gatingml_export import GatingMLExportError, export_gatingml

        matrices = acquisition_matrices(self, sample)
        if not matrices:
            return self
        strategy = copy.copy(self.strategy)  # shares the gate tree; only the matrices differ
        strategy.comp_matrices = {**self.strategy.comp_matrices, **matrices}
        compiled = self.compiled
        if compiled is not None:
            compiled = dataclasses.replace(compiled, comp_matrices={**compiled.comp_matrices, **matrices})
        m = matrices[ACQUISITION_DEFINED]
        key = ("|".join(m.detectors), m.matrix.tobytes())
        if key not in self.matrix_exports:
            try:
                self.matrix_exports[key] = export_gatingml(strategy)
            except GatingMLExportError:
                self.matrix_exports[key] = None
        return dataclasses.replace(self, strategy=strategy, compiled=compiled, exported=self.matrix_exports[key])


def acquisition_matrices(template: Template, sample) -> dict:
    """``{ACQUISITION_DEFINED: the file's own spillover as a flowkit Matrix}`` when the
    template compensates with FlowJo's acquisition-defined matrix and ``sample`` carries a
    $SPILLOVER; else empty. Fluorochromes are named as the detectors (Gating-ML 2.0 needs a
    name for each; FlowJo leaves them empty)."""
    import flowkit as fk

    spill = getattr(sample, "spillover", None)
    if spill is None or ACQUISITION_DEFINED not in template.strategy.comp_matrices:
        return {}
    detectors = [d.replace("/", "_") for d in spill.detectors] if template.kind == "flowjo" else list(spill.detectors)
    return {ACQUISITION_DEFINED: fk.Matrix(np.ascontiguousarray(spill.matrix, dtype=float), detectors,
                                           list(detectors))}


def _screen_xml(path: Path) -> bytes:
    import defusedxml.ElementTree as dET
    from defusedxml import DefusedXmlException

    data = path.read_bytes()
    try:
        dET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ConfigError(f"template {path.name}: refused, it declares a DTD or entities ({exc})") from None
    except dET.ParseError as exc:
        raise ConfigError(f"template {path.name}: not well-formed XML ({exc})") from None
    return data


def load_template(path: Path) -> Template:
    """Parse a Gating-ML 2.0 or FlowJo workspace file; ``ConfigError`` when unusable."""
    import flowkit as fk

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"template {path}: no such file")
    data = _screen_xml(path)
    head = data[:4096].decode("utf-8", "replace")
    if "<Workspace" in head or path.suffix.lower() == ".wsp":
        return Template(path.name, "flowjo", _flowjo_strategy(path))
    try:
        strategy = fk.parse_gating_xml(io.BytesIO(data))
    except Exception as exc:  # flowkit raises several types for invalid Gating-ML
        raise ConfigError(f"template {path.name}: not valid Gating-ML 2.0 ({type(exc).__name__}: {exc})") from None
    if not strategy.get_gate_ids():
        raise ConfigError(f"template {path.name}: Gating-ML file has no gates")
    return Template(path.name, "gatingml", strategy)


def _flowjo_strategy(path: Path):
    """The gating strategy of the FlowJo 10 workspace sample with the most gates.

    FlowJo stores a full gate tree per sample. Workspaces often begin with compensation
    controls (unstained, single stains) that carry no gates, so "the first sample" would
    be an empty template that silently gates nothing; the richest tree is the lab's
    gating (the first of equals when samples share one tree, the usual case).
    """
    import flowkit as fk

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "WSP references X, but sample was not loaded"
            wsp = fk.Workspace(str(path), load_missing_file_data=True)
        sample_ids = wsp.get_sample_ids(loaded_only=False)
        strategies = [wsp.get_gating_strategy(sid) for sid in sample_ids]
    except Exception as exc:
        raise ConfigError(f"template {path.name}: not a readable FlowJo 10 workspace ({type(exc).__name__}: {exc})") from None
    if not sample_ids:
        raise ConfigError(f"template {path.name}: the workspace has no samples, so no gate tree to use")
    best = max(strategies, key=lambda st: len(st.get_gate_ids()))  # max keeps the first of equals
    if not best.get_gate_ids():
        raise ConfigError(f"template {path.name}: none of its {len(sample_ids)} samples has gates; "
                          "save the workspace after gating at least one sample")
    return best
