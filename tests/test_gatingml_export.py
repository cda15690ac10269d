"""Every stored analysis carries its gates as valid Gating-ML 2.0 that reproduces its counts.

Truth: FlowJo's own counts in the workspaces (``count`` of the sample's Population nodes).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import query, run_pipeline
from gating.gatingml_export import gatingml_id, with_valid_ids
from gating.templates import load_template
from test_pipeline_foundation import _flowjo_counts


def test_gatingml_ids_are_ncnames():
    assert gatingml_id("CD3+") == "CD3_pos"
    assert gatingml_id("CD4+CD8-") == "CD4_pos_CD8_neg"
    assert gatingml_id("IL-4+") == "IL-4_pos"
    assert gatingml_id("Q1: channel_A- , channel_B+") == "Q1_channel_A_neg_channel_B_pos"
    assert gatingml_id("3 parts") == "g_3_parts"


def _reapplied_by_flowkit(store: Path, fcs: Path) -> tuple[dict[str, int], dict[str, int], str]:
    """(counts flowkit gets re-applying the stored Gating-ML to ``fcs``, counts graftwatch
    stored, the Gating-ML), both keyed by population path."""
    import flowkit as fk

    gml, ids = query(store, "SELECT gatingml, population_ids FROM flow_gates")[0]
    assert gml is not None, "no Gating-ML stored"
    ids = json.loads(ids)
    strategy = fk.parse_gating_xml(io.BytesIO(gml.encode()))  # flowkit validates the schema
    report = strategy.gate_sample(fk.Sample(str(fcs), subsample=0, use_flowjo_labels=True)).report
    again = {"/".join(ids.get(g, g) for g in (*row.gate_path[1:], row.gate_name)): int(row["count"])
             for _, row in report.iterrows()}
    stored = dict(query(store, "SELECT path, count FROM flow_populations"))
    return again, stored, gml


@pytest.mark.reference
@pytest.mark.parametrize("wsp,fcs,counted", [
    ("simple_diamond_example/simple_diamond_example_quad_gate.wsp", "simple_diamond_example/test_data_diamond_01.fcs", True),
    ("simple_diamond_example/test_data_diamond_asinh_rect.wsp", "simple_diamond_example/test_data_diamond_01.fcs", True),
    ("simple_diamond_example/test_data_diamond_asinh_rect2.wsp", "simple_diamond_example/test_data_diamond_01.fcs", True),
    ("simple_diamond_example/test_data_diamond_biex_rect.wsp", "simple_diamond_example/test_data_diamond_01.fcs", True),
    ("simple_line_example/single_ellipse_51_events.wsp", "simple_line_example/data_set_simple_line_100.fcs", True),
    ("simple_line_example/simple_poly_and_rect.wsp", "simple_line_example/data_set_simple_line_100.fcs", False),
    ("simple_line_example/simple_poly_and_rect_v2_poly50.wsp", "simple_line_example/data_set_simple_line_100.fcs", False),
])
def test_stored_gatingml_reapplied_by_flowkit_gives_flowjo_counts(shared_data, tmp_path, wsp, fcs, counted):
    """Every real FlowJo workspace with its FCS file: the stored Gating-ML is schema-valid
    and flowkit re-applying it counts what graftwatch stored, and (``counted``) what FlowJo
    counted. The biex workspace's rectangle is stored on raw values (Gating-ML has no biex).
    The two simple_poly_and_rect workspaces hold no FlowJo counts of this file (0 or -1,
    the FCS was not loaded when they were saved): flowkit's re-application is the check."""
    base = shared_data / "fcs/flowkit"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(base / fcs, inbox)
    run_pipeline(inbox, tmp_path / "store", template=base / wsp)
    again, stored, _gml = _reapplied_by_flowkit(tmp_path / "store", base / fcs)
    assert again == stored
    by_name = {path.rsplit("/", 1)[-1]: n for path, n in again.items()}
    assert again
    for name, n in _flowjo_counts(base / wsp).items() if counted else ():
        assert by_name[name] == n, name


@functools.lru_cache(maxsize=1)
def _loaded(wsp: Path):
    return load_template(wsp)


@pytest.fixture
def ics_wsp(shared_data):
    """The 8-colour ICS workspace (FlowJo acquisition-defined compensation) and its template,
    loaded once per test process."""
    wsp = shared_data / "fcs/flowkit/8_color_ics_no_events/8_color_ICS.wsp"
    return wsp, _loaded(wsp)


def _eight_colour_tube(path: Path, strategy, seed: int = 3, n: int = 20_000) -> np.ndarray:
    """A seeded FCS file with the channels of the 8-colour ICS workspace (its FCS files are
    not shipped) and a $SPILLOVER unlike the workspace's copy of it (off-diagonals x 1.5).

    Events are drawn uniformly, in the workspace's own compensated and transformed
    coordinates, over boxes around its gates (so every gate holds events), then taken back
    to raw detector values through the inverse transforms and the file's spillover
    (observed = compensated @ S). Returns the file's spillover matrix.
    """
    from array import array

    import flowio

    rng = np.random.default_rng(seed)
    wsp_matrix = strategy.comp_matrices["Acquisition-defined"]
    fluor = list(wsp_matrix.detectors)
    spill = np.eye(len(fluor)) + 1.5 * (np.asarray(wsp_matrix.matrix) - np.eye(len(fluor)))
    boxes = {"FSC-A": (0.15, 0.9), "FSC-H": (0.1, 0.9), "FSC-W": (0.26, 0.37), "SSC-A": (0.0, 0.4),
             "SSC-H": (0.0, 0.4), "SSC-W": (0.2, 0.4), "Time": (0.1, 2.5), "Aqua Amine FLR-A": (0.15, 0.32),
             "CD3 APC-H7 FLR-A": (0.25, 0.72), "CD4 PE-Cy7 FLR-A": (0.15, 0.85), "CD8 PerCP-Cy55 FLR-A": (0.15, 0.85)}
    pnn = ["FSC-A", "FSC-H", "FSC-W", "SSC-A", "SSC-H", "SSC-W", *fluor, "Time"]
    data = np.column_stack([
        strategy.transformations[ch].inverse(rng.uniform(*boxes.get(ch, (0.2, 1.0)), (n, 1)))[:, 0] for ch in pnn])
    cols = [pnn.index(d) for d in fluor]
    data[:, cols] = data[:, cols] @ spill
    meta = {"$SPILLOVER": ",".join([str(len(fluor)), *fluor, *(repr(float(v)) for v in spill.ravel())])}
    meta.update({f"$P{i + 1}R": "262144" for i in range(len(pnn))})
    values = array("f")
    values.frombytes(np.ascontiguousarray(data, dtype="<f4").tobytes())
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, values, pnn, metadata_dict=meta)
    return spill


@pytest.mark.reference
def test_acquisition_defined_compensation_is_exported_and_reapplied(ics_wsp, tmp_path):
    """The 8-colour ICS workspace compensates with FlowJo's acquisition-defined matrix (no
    fluorochrome names; it means each file's own $SPILLOVER). On a seeded tube with that
    panel's channels and a $SPILLOVER of its own, the stored Gating-ML is schema-valid,
    carries the file's matrix (fluorochromes and detectors named by $PnN), and flowkit
    re-applying it to the file counts exactly what graftwatch stored, gate by gate."""
    from lxml import etree

    wsp, template = ics_wsp
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    spill = _eight_colour_tube(inbox / "ics.fcs", template.strategy)
    fcs = tmp_path / "ics.fcs"
    shutil.copy(inbox / "ics.fcs", fcs)
    run_pipeline(inbox, tmp_path / "store", template=wsp)
    again, stored, gml = _reapplied_by_flowkit(tmp_path / "store", fcs)
    assert again == stored and len(stored) == 14
    assert min(stored.values()) > 0  # every gate, down to the cytokine gates, holds events
    ns = {"t": "http://www.isac-net.org/std/Gating-ML/v2.0/transformations",
          "d": "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"}
    (matrix,) = etree.fromstring(gml.encode()).findall(".//t:spectrumMatrix", ns)
    name = "{%s}name" % ns["d"]
    fluoros = [e.get(name) for e in matrix.findall("t:fluorochromes/d:fcs-dimension", ns)]
    assert fluoros == [e.get(name) for e in matrix.findall("t:detectors/d:fcs-dimension", ns)]
    assert fluoros == list(template.strategy.comp_matrices["Acquisition-defined"].detectors)
    coeffs = [float(c.get("{%s}value" % ns["t"])) for c in matrix.iter("{%s}coefficient" % ns["t"])]
    assert np.allclose(coeffs, spill.ravel())  # the file's matrix, not the workspace's copy


@pytest.mark.reference
def test_acquisition_defined_matrix_follows_each_file(ics_wsp):
    """Two files of one run with different $SPILLOVER each get their own matrix in the gates
    and the Gating-ML; files sharing a matrix share one export (made once)."""
    from types import SimpleNamespace

    from assays.records import Spillover

    t = dataclasses.replace(ics_wsp[1], matrix_exports={})
    wsp = t.strategy.comp_matrices["Acquisition-defined"]
    dets = list(wsp.detectors)

    def tube(scale):
        m = np.eye(len(dets)) + scale * (np.asarray(wsp.matrix) - np.eye(len(dets)))
        return SimpleNamespace(spillover=Spillover(dets, m, "$SPILLOVER"))

    a, b, a2 = t.for_sample(tube(1.5)), t.for_sample(tube(0.5)), t.for_sample(tube(1.5))
    assert t.for_sample(SimpleNamespace(spillover=None)) is t
    for bound, scale in ((a, 1.5), (b, 0.5)):
        m = bound.strategy.comp_matrices["Acquisition-defined"]
        assert np.allclose(m.matrix, np.eye(len(dets)) + scale * (np.asarray(wsp.matrix) - np.eye(len(dets))))
    assert a.exported[0] != b.exported[0] and a2.exported is a.exported
    assert t.strategy.comp_matrices["Acquisition-defined"] is wsp  # the template itself is untouched
