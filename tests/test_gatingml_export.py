"""Every stored analysis carries its gates as valid Gating-ML 2.0 that reproduces its counts.

Truth: FlowJo's own counts in the workspaces (``count`` of the sample's Population nodes).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

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


@pytest.mark.reference
@pytest.mark.parametrize("wsp,fcs", [
    ("simple_diamond_example/simple_diamond_example_quad_gate.wsp", "simple_diamond_example/test_data_diamond_01.fcs"),
    ("simple_diamond_example/test_data_diamond_asinh_rect.wsp", "simple_diamond_example/test_data_diamond_01.fcs"),
    ("simple_line_example/single_ellipse_51_events.wsp", "simple_line_example/data_set_simple_line_100.fcs"),
])
def test_stored_gatingml_reapplied_by_flowkit_gives_flowjo_counts(shared_data, tmp_path, wsp, fcs):
    import flowkit as fk

    base = shared_data / "fcs/flowkit"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(base / fcs, inbox)
    run_pipeline(inbox, tmp_path / "store", template=base / wsp)
    gml, ids = query(tmp_path / "store", "SELECT gatingml, population_ids FROM flow_gates")[0]
    ids = json.loads(ids)
    strategy = fk.parse_gating_xml(io.BytesIO(gml.encode()))  # flowkit validates the schema
    sample = fk.Sample(str(base / fcs), subsample=0, use_flowjo_labels=True)
    results = strategy.gate_sample(sample)
    report = results.report
    counts = {ids[row.gate_name]: int(row["count"]) for _, row in report.iterrows()}
    for name, n in _flowjo_counts(base / wsp).items():
        assert counts[name] == n, name


@pytest.mark.reference
@pytest.mark.parametrize("wsp", ["8_color_ICS.wsp", "8_color_ICS_boolean_gate_testing.wsp"])
def test_reused_flowjo_names_get_unique_valid_ids(shared_data, wsp):
    """The 8-colour ICS workspaces reuse names (CD107a+ under CD4+ and CD8+) and Boolean gates."""
    import re

    from flowkit import gates as fk_gates
    from flowkit.exceptions import QuadrantReferenceError

    t = load_template(shared_data / "fcs/flowkit/8_color_ics_no_events" / wsp)
    original = t.strategy.get_gate_ids()
    s, ids = with_valid_ids(t.strategy)
    new = s.get_gate_ids()
    assert len(new) == len(original) == len(ids)
    assert len({g for g, _ in new}) == len(new)  # unique
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", g) for g, _ in new)
    assert sorted(ids.values()) == sorted(g for g, _ in original)
    present = {(tuple(p), g) for g, p in new}
    for g, p in new:  # every Boolean reference points at a gate that exists after renaming
        try:
            gate = s.get_gate(g, gate_path=tuple(p))
        except QuadrantReferenceError:
            continue
        if isinstance(gate, fk_gates.BooleanGate):
            for ref in gate.gate_refs:
                assert (tuple(ref["path"]), ref["ref"]) in present
    assert t.strategy.get_gate_ids() == original  # the template itself is untouched


def _workspace_without_gates(src: Path, dst: Path, samples: int) -> None:
    """``src`` with the gate trees of its first ``samples`` samples removed (as compensation
    controls are saved: a sample node with no subpopulations)."""
    import xml.etree.ElementTree as ET  # writing only; the input is the project's reference file

    tree = ET.parse(src)
    for sample in tree.getroot().iter("Sample"):
        if samples <= 0:
            break
        node = sample.find("SampleNode")
        for sub in node.findall("Subpopulations"):
            node.remove(sub)
        samples -= 1
    tree.write(dst, encoding="utf-8", xml_declaration=True)


@pytest.mark.reference
def test_flowjo_template_is_the_sample_with_gates(shared_data, tmp_path):
    """A workspace whose first sample (a compensation control) has no gates: the template is
    the gated sample's tree (14 gates in 8_color_ICS.wsp), not an empty one; a workspace
    with no gates at all is refused with exit-2 ConfigError naming the file."""
    from assays.errors import ConfigError

    src = shared_data / "fcs/flowkit/8_color_ics_no_events/8_color_ICS.wsp"
    first_empty = tmp_path / "controls_first.wsp"
    _workspace_without_gates(src, first_empty, samples=1)
    assert len(load_template(first_empty).strategy.get_gate_ids()) == 14
    none = tmp_path / "no_gates.wsp"
    _workspace_without_gates(src, none, samples=99)
    with pytest.raises(ConfigError, match="no_gates.wsp: none of its 3 samples has gates"):
        load_template(none)
