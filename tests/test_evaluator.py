"""gating.evaluator: same masks as flowkit and as the Gating-ML 2.0 / FlowJo references.

Reference tests (marked ``reference``) read ../shared/data through the ``shared_data``
fixture and skip with a reason when it is absent; the synthetic tests below them pin
the boundary conventions and the caching without any file.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest

from assays.records import Channel, FcsSample, Spillover
from gating.compiled_strategy import compile_strategy
from gating.evaluator import evaluate_strategy
from gating.sample_gating import evaluate_flowkit_sample, evaluate_sample, flowkit_fcs_spillover

GML = Path("fcs/gatingml2")

# Single-gate files whose gate id differs from the truth file's name.
TRUTH_ALIASES = {("gml_parent_quadrant_rect_gate.xml", "ParRectangle1"): "ParQuadRect"}

# In gml/ but not Gating-ML 2.0 as flowkit reads it (the gate sits inside a
# non-standard <sample> element); flowkit.parse_gating_xml rejects it.
NOT_PARSEABLE = {"gml_range_gate_attr_testing.xml"}


def _flowkit_path(m) -> tuple[str, ...]:
    """flowkit's GatingResults gate_path for one of our memberships."""
    anc = m.path[:-2] if m.gate_type == "Quadrant" else m.path[:-1]
    return ("root",) + anc


def _assert_same_as_flowkit(memberships, results, where: str) -> None:
    """Every membership equals flowkit's mask; and flowkit reports no extra population."""
    for m in memberships:
        theirs = np.asarray(results.get_gate_membership(m.gate_id, gate_path=_flowkit_path(m)), dtype=bool)
        assert np.array_equal(theirs, m.mask), (
            f"{where}: {'/'.join(m.path)} differs from flowkit in {(theirs != m.mask).sum()} events"
        )
    assert len(results.report) == len(memberships), f"{where}: population count differs from flowkit"


def _truth(shared_data: Path, name: str) -> np.ndarray | None:
    path = shared_data / GML / "truth" / f"Results_{name}.txt"
    if not path.exists():
        return None
    return np.loadtxt(path, dtype=np.int64).astype(bool)


@functools.lru_cache(maxsize=None)
def _load_sample(path: str) -> fk.Sample:
    """Read each reference FCS file once per test session (flowkit parsing is the slow part)."""
    return fk.Sample(path)


@pytest.fixture
def data1(shared_data):
    return _load_sample(str(shared_data / GML / "data1.fcs"))


# ----- (a) Gating-ML 2.0 compliance: all gates in one strategy ------------------------


@pytest.mark.reference
def test_compliance_all_gates_match_truth(shared_data, data1):
    gs = fk.parse_gating_xml(str(shared_data / GML / "gml" / "gml_all_gates.xml"))
    out = evaluate_flowkit_sample(gs, data1)
    checked = 0
    for m in out:
        truth = _truth(shared_data, m.gate_id)
        if truth is None:
            continue
        checked += 1
        assert np.array_equal(m.mask, truth), (
            f"{m.gate_id}: {(m.mask != truth).sum()} events differ from the ISAC truth"
        )
    # 49 populations (47 gates + quadrants) with truth; all of them must be compared.
    assert checked == 49
    types = {m.gate_type for m in out}
    assert {"RectangleGate", "PolygonGate", "EllipsoidGate", "Quadrant", "BooleanGate"} <= types


# ----- (b) and (c): each single-gate file: truth and flowkit's own results ------------


def _single_gate_files(shared_data: Path) -> list[Path]:
    return sorted(
        p for p in (shared_data / GML / "gml").glob("gml_*.xml")
        if p.name != "gml_all_gates.xml" and p.name not in NOT_PARSEABLE
    )


@pytest.mark.reference
def test_compliance_single_gate_files(shared_data, data1):
    files = _single_gate_files(shared_data)
    assert len(files) == 45  # 46 single-gate files, one not parseable
    no_truth = []
    for path in files:
        gs = fk.parse_gating_xml(str(path))
        out = evaluate_flowkit_sample(gs, data1)
        assert out, path.name
        for m in out:
            truth = _truth(shared_data, TRUTH_ALIASES.get((path.name, m.gate_id), m.gate_id))
            if truth is None:
                no_truth.append(f"{path.name}:{m.gate_id}")
                continue
            assert np.array_equal(m.mask, truth), f"{path.name}: {m.gate_id} differs from truth"
    # myEllipse2 is the only gate of the suite without a truth file (flowkit equality covers it).
    assert no_truth == ["gml_ellipse2_gate.xml:myEllipse2"]


@pytest.mark.reference
def test_same_masks_as_flowkit_on_compliance_files(shared_data, data1):
    for path in [shared_data / GML / "gml" / "gml_all_gates.xml", *_single_gate_files(shared_data)]:
        gs = fk.parse_gating_xml(str(path))
        out = evaluate_flowkit_sample(gs, data1)
        _assert_same_as_flowkit(out, gs.gate_sample(data1), path.name)


# The four quadrants of CD4_CD8, each placed by a location on either side of both dividers.
_QUADRANTS_CD4_CD8 = "".join(
    f"""    <gating:Quadrant gating:id="{qid}">
      <gating:position gating:divider_ref="d_cd4" gating:location="{cd4}"/>
      <gating:position gating:divider_ref="d_cd8" gating:location="{cd8}"/>
    </gating:Quadrant>
"""
    for qid, cd4, cd8 in (("CD4_pos_CD8_neg", 0.9, 0.1), ("CD4_neg_CD8_pos", 0.1, 0.9),
                          ("CD4_pos_CD8_pos", 0.9, 0.9), ("CD4_neg_CD8_neg", 0.1, 0.1))
)

# A small logicle T-cell template for 100715.fcs: file $SPILLOVER ('FCS'), logicle on
# fluorescence, linear scatter, polygon > rectangle > quadrant > gate under a quadrant,
# an ellipse, a ratio dimension and Boolean gates referencing a quadrant.
TEMPLATE_100715 = """<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML
    xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
    xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
    xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
  <transforms:transformation transforms:id="lin">
    <transforms:flin transforms:T="262144" transforms:A="0"/>
  </transforms:transformation>
  <transforms:transformation transforms:id="logicle">
    <transforms:logicle transforms:T="262144" transforms:W="0.5" transforms:M="4.5" transforms:A="0"/>
  </transforms:transformation>
  <transforms:transformation transforms:id="fsc_ratio">
    <transforms:fratio transforms:A="1" transforms:B="0" transforms:C="0">
      <data-type:fcs-dimension data-type:name="FSC-H"/>
      <data-type:fcs-dimension data-type:name="FSC-A"/>
    </transforms:fratio>
  </transforms:transformation>
  <gating:PolygonGate gating:id="Lymphocytes">
    <gating:dimension gating:compensation-ref="uncompensated" gating:transformation-ref="lin">
      <data-type:fcs-dimension data-type:name="FSC-A"/>
    </gating:dimension>
    <gating:dimension gating:compensation-ref="uncompensated" gating:transformation-ref="lin">
      <data-type:fcs-dimension data-type:name="SSC-A"/>
    </gating:dimension>
    <gating:vertex><gating:coordinate data-type:value="0.15"/><gating:coordinate data-type:value="0.0"/></gating:vertex>
    <gating:vertex><gating:coordinate data-type:value="0.6"/><gating:coordinate data-type:value="0.0"/></gating:vertex>
    <gating:vertex><gating:coordinate data-type:value="0.6"/><gating:coordinate data-type:value="0.3"/></gating:vertex>
    <gating:vertex><gating:coordinate data-type:value="0.15"/><gating:coordinate data-type:value="0.2"/></gating:vertex>
  </gating:PolygonGate>
  <gating:RectangleGate gating:id="Singlets" gating:parent_id="Lymphocytes">
    <gating:dimension gating:compensation-ref="uncompensated" gating:min="0.8" gating:max="1.2">
      <data-type:new-dimension data-type:transformation-ref="fsc_ratio"/>
    </gating:dimension>
  </gating:RectangleGate>
  <gating:RectangleGate gating:id="CD3_pos" gating:parent_id="Singlets">
    <gating:dimension gating:compensation-ref="FCS" gating:transformation-ref="logicle" gating:min="0.45">
      <data-type:fcs-dimension data-type:name="R780-A"/>
    </gating:dimension>
    <gating:dimension gating:compensation-ref="FCS" gating:transformation-ref="logicle" gating:max="0.55">
      <data-type:fcs-dimension data-type:name="VIVID / CD14"/>
    </gating:dimension>
  </gating:RectangleGate>
  <gating:QuadrantGate gating:id="CD4_CD8" gating:parent_id="CD3_pos">
    <gating:divider gating:id="d_cd4" gating:compensation-ref="FCS" gating:transformation-ref="logicle">
      <data-type:fcs-dimension data-type:name="V655-A"/>
      <gating:value>0.42</gating:value>
    </gating:divider>
    <gating:divider gating:id="d_cd8" gating:compensation-ref="FCS" gating:transformation-ref="logicle">
      <data-type:fcs-dimension data-type:name="V800-A"/>
      <gating:value>0.45</gating:value>
    </gating:divider>
""" + _QUADRANTS_CD4_CD8 + """  </gating:QuadrantGate>
  <gating:RectangleGate gating:id="CD127_lo" gating:parent_id="CD4_pos_CD8_neg">
    <gating:dimension gating:compensation-ref="FCS" gating:transformation-ref="logicle" gating:max="0.5">
      <data-type:fcs-dimension data-type:name="G560-A"/>
    </gating:dimension>
  </gating:RectangleGate>
  <gating:EllipsoidGate gating:id="CCR7_CD45RO" gating:parent_id="CD4_pos_CD8_neg">
    <gating:dimension gating:compensation-ref="FCS" gating:transformation-ref="logicle">
      <data-type:fcs-dimension data-type:name="G610-A"/>
    </gating:dimension>
    <gating:dimension gating:compensation-ref="FCS" gating:transformation-ref="logicle">
      <data-type:fcs-dimension data-type:name="R660-A"/>
    </gating:dimension>
    <gating:mean>
      <gating:coordinate data-type:value="0.5"/><gating:coordinate data-type:value="0.55"/>
    </gating:mean>
    <gating:covarianceMatrix>
      <gating:row><gating:entry data-type:value="0.01"/><gating:entry data-type:value="0.002"/></gating:row>
      <gating:row><gating:entry data-type:value="0.002"/><gating:entry data-type:value="0.01"/></gating:row>
    </gating:covarianceMatrix>
    <gating:distanceSquare data-type:value="2"/>
  </gating:EllipsoidGate>
  <gating:BooleanGate gating:id="not_CD8" gating:parent_id="CD3_pos">
    <gating:not>
      <gating:gateReference gating:ref="CD4_neg_CD8_pos"/>
    </gating:not>
  </gating:BooleanGate>
  <gating:BooleanGate gating:id="CD4_any_not_127lo">
    <gating:and>
      <gating:gateReference gating:ref="CD4_pos_CD8_pos"/>
      <gating:gateReference gating:ref="CD127_lo" gating:use-as-complement="true"/>
    </gating:and>
  </gating:BooleanGate>
</gating:Gating-ML>
"""


@pytest.fixture
def sample_100715(shared_data):
    return _load_sample(str(shared_data / "fcs" / "flowkit" / "100715.fcs"))


@pytest.fixture(scope="module")
def template_100715(tmp_path_factory):
    path = tmp_path_factory.mktemp("gml") / "tcell_logicle.xml"
    path.write_text(TEMPLATE_100715)
    return fk.parse_gating_xml(str(path))


@pytest.mark.reference
def test_same_as_flowkit_session_on_100715_logicle_template(sample_100715, template_100715):
    session = fk.Session(gating_strategy=template_100715, fcs_samples=[sample_100715])
    session.analyze_samples(use_mp=False)
    results = session.get_gating_results(sample_100715.id)

    out = evaluate_flowkit_sample(template_100715, sample_100715)
    _assert_same_as_flowkit(out, results, "100715")
    by_path = {m.path: m for m in out}
    # Populations are non-trivial, so equality above means something.
    for path in [("Lymphocytes",), ("Lymphocytes", "Singlets", "CD3_pos")]:
        assert 0 < by_path[path].count < len(by_path[path].mask)
    q = ("Lymphocytes", "Singlets", "CD3_pos", "CD4_CD8", "CD4_pos_CD8_neg")
    assert by_path[q].parent_path == ("Lymphocytes", "Singlets", "CD3_pos")
    assert by_path[q + ("CD127_lo",)].parent_path == q
    assert by_path[q].count > 100
    # flowkit's counts, as a DataFrame, agree too
    for row in results.report.itertuples():
        own = row.gate_path[1:] + ((row.quadrant_parent,) if row.quadrant_parent else ()) + (row.gate_name,)
        assert by_path[own].count == row.count


@pytest.mark.reference
def test_fcs_sample_record_with_spillover_in_keyword_order(sample_100715, template_100715):
    """An FcsSample whose $SPILLOVER lists detectors in another order gives the same masks."""
    ref = evaluate_flowkit_sample(template_100715, sample_100715)
    fk_matrix = flowkit_fcs_spillover(sample_100715)
    perm = np.random.default_rng(7).permutation(len(fk_matrix.detectors))
    spill = Spillover(
        detectors=[fk_matrix.detectors[i] for i in perm],
        matrix=np.asarray(fk_matrix.matrix)[np.ix_(perm, perm)],
        source="$SPILLOVER",
    )
    channels = [
        Channel(i, pnn, pns.strip() or None)
        for i, (pnn, pns) in enumerate(zip(sample_100715.pnn_labels, sample_100715.pns_labels))
    ]
    record = FcsSample(
        sample_id="100715", source_name="100715.fcs", source_sha256="", version="FCS3.0",
        channels=channels, events=sample_100715.get_events(source="raw"), keywords={},
        spillover=spill, acquired_at=None, instrument=None,
    )
    out = evaluate_sample(template_100715, record)
    assert [m.path for m in out] == [m.path for m in ref]
    for a, b in zip(out, ref):
        assert np.array_equal(a.mask, b.mask), a.path


# ----- (d) FlowJo workspaces: FlowJo's own counts ------------------------------------


def _flowjo_counts(wsp: Path) -> dict[str, dict[tuple[str, ...], int]]:
    """Population counts FlowJo stored per sample: SampleList/Sample/SampleNode/.../Population."""
    out: dict[str, dict[tuple[str, ...], int]] = {}

    def walk(el, prefix, acc):
        for sub in el.findall("Subpopulations"):
            for pop in sub.findall("Population"):
                path = prefix + (pop.get("name"),)
                acc[path] = int(pop.get("count"))
                walk(pop, path, acc)

    root = ET.parse(wsp).getroot()
    for sample in root.find("SampleList").findall("Sample"):
        node = sample.find("SampleNode")
        acc: dict[tuple[str, ...], int] = {}
        walk(node, (), acc)
        out[node.get("name")] = acc
    return out


FLOWJO_WORKSPACES = [
    "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect.wsp",
    "simple_diamond_example/test_data_diamond_asinh_rect2.wsp",
    "simple_diamond_example/test_data_diamond_biex_rect.wsp",
    "simple_line_example/single_ellipse_51_events.wsp",
]


@pytest.mark.reference
@pytest.mark.parametrize("rel", FLOWJO_WORKSPACES)
def test_flowjo_workspace_counts(shared_data, rel):
    wsp = shared_data / "fcs" / "flowkit" / rel
    expected = _flowjo_counts(wsp)
    ws = fk.Workspace(str(wsp), fcs_samples=str(wsp.parent))
    sample_ids = ws.get_sample_ids()
    assert sample_ids
    for sid in sample_ids:
        out = evaluate_flowkit_sample(ws.get_gating_strategy(sid), ws.get_sample(sid))
        counts = {m.path: m.count for m in out}
        assert counts == expected[sid], rel


# ----- synthetic: conventions and caching, no reference files ------------------------


def _dim(ch, lo=None, hi=None, xform=None, comp="uncompensated"):
    return fk.Dimension(ch, compensation_ref=comp, transformation_ref=xform, range_min=lo, range_max=hi)


def _strategy(*gates_with_paths, transforms=(), matrices=()):
    gs = fk.GatingStrategy()
    for tid, t in transforms:
        gs.add_transform(tid, t)
    for mid, m in matrices:
        gs.add_comp_matrix(mid, m)
    for gate, path in gates_with_paths:
        gs.add_gate(gate, path)
    return gs


def test_rectangle_bounds_are_min_inclusive_max_exclusive_and_open_ended():
    events = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, -1e9], [np.nan, 5.0]])
    gs = _strategy(
        (fk.gates.RectangleGate("closed", [_dim("A", 1.0, 3.0)]), ("root",)),
        (fk.gates.RectangleGate("open_top", [_dim("A", lo=1.0)]), ("root",)),
        (fk.gates.RectangleGate("outside", [_dim("A", 1.0, 3.0)], use_complement=True), ("root",)),
    )
    out = {m.gate_id: m.mask.tolist() for m in evaluate_strategy(gs, events, ["A", "B"])}
    assert out["closed"] == [False, True, True, False, False]
    assert out["open_top"] == [False, True, True, True, False]
    assert out["outside"] == [True, False, False, True, True]


def test_children_of_quadrants_booleans_and_complement_within_parent():
    rng = np.random.default_rng(0)
    events = rng.normal(size=(5000, 3))
    quadrants = [
        fk.gates.Quadrant("pp", ["dx", "dy"], [[0.0, None], [0.0, None]]),
        fk.gates.Quadrant("pn", ["dx", "dy"], [[0.0, None], [None, 0.0]]),
        fk.gates.Quadrant("np", ["dx", "dy"], [[None, 0.0], [0.0, None]]),
        fk.gates.Quadrant("nn", ["dx", "dy"], [[None, 0.0], [None, 0.0]]),
    ]
    dividers = [
        fk.QuadrantDivider("dx", "A", "uncompensated", [0.0]),
        fk.QuadrantDivider("dy", "B", "uncompensated", [0.0]),
    ]
    poly = fk.gates.PolygonGate(
        "tri", [_dim("B"), _dim("C")], [[-1, -1], [1, -1], [0, 1]], use_complement=True
    )
    gs = _strategy(
        (fk.gates.RectangleGate("top", [_dim("C", lo=-1.5)]), ("root",)),
        (fk.gates.QuadrantGate("quad", dividers, quadrants), ("root", "top")),
        (poly, ("root", "top", "quad", "pp")),
        (fk.gates.BooleanGate("or", "or", [
            {"ref": "pn", "path": ("root", "top", "quad"), "complement": False},
            {"ref": "tri", "path": ("root", "top", "quad", "pp"), "complement": True},
        ]), ("root",)),
        (fk.gates.BooleanGate("not", "not", [
            {"ref": "nn", "path": ("root", "top", "quad"), "complement": False},
        ]), ("root", "top")),
    )
    sample = fk.Sample(events, sample_id="syn", channel_labels=["A", "B", "C"])
    out = evaluate_flowkit_sample(gs, sample)
    _assert_same_as_flowkit(out, gs.gate_sample(sample), "synthetic")
    by = {m.path: m for m in out}
    assert [m.path for m in out][:2] == [("top",), ("top", "quad", "pp")]
    tri = by[("top", "quad", "pp", "tri")]
    assert tri.parent_path == ("top", "quad", "pp")
    assert not np.any(tri.mask & ~by[("top", "quad", "pp")].mask)  # complement stays in parent
    assert by[("top", "quad", "pn")].parent_path == ("top",)


class _CountingLogicle(fk.transforms.LogicleTransform):
    """LogicleTransform that counts how many values it was asked to transform."""

    calls = 0

    def apply(self, events):
        type(self).calls += 1
        return super().apply(events)


def test_each_channel_transformed_once_per_sample():
    rng = np.random.default_rng(1)
    events = rng.lognormal(5, 2, size=(2000, 3)) - 50
    xf = _CountingLogicle(262144, 0.5, 4.5, 0)
    gates = [
        (fk.gates.RectangleGate(f"g{i}", [_dim("A", lo=0.1 * i, xform="L"), _dim("B", hi=0.9, xform="L")]),
         ("root",))
        for i in range(6)
    ]
    gs = _strategy(*gates, transforms=[("L", xf)])
    _CountingLogicle.calls = 0
    plan = compile_strategy(gs)
    out = evaluate_strategy(plan, events, ["A", "B", "C"])
    assert _CountingLogicle.calls == 2  # A and B, not 12
    sample = fk.Sample(events, sample_id="c", channel_labels=["A", "B", "C"])
    _assert_same_as_flowkit(out, gs.gate_sample(sample), "cached")


def test_named_matrix_from_strategy_or_caller_and_clear_errors():
    rng = np.random.default_rng(2)
    events = rng.uniform(0, 1000, size=(3000, 3))
    spill = np.array([[1.0, 0.2], [0.1, 1.0]])
    matrix = fk.Matrix(spill, ["A", "B"])
    gate = fk.gates.RectangleGate("r", [_dim("A", lo=300, comp="M"), _dim("B", hi=600, comp="M")])
    gs = _strategy((gate, ("root",)), matrices=[("M", matrix)])
    sample = fk.Sample(events, sample_id="m", channel_labels=["A", "B", "C"])
    expected = gs.gate_sample(sample).get_gate_membership("r")
    assert np.array_equal(evaluate_strategy(gs, events, ["A", "B", "C"])[0].mask, expected)
    # The same matrix supplied by the caller (callable form) under another id.
    gs2 = _strategy((fk.gates.RectangleGate("r", [_dim("A", lo=300, comp="cfg"),
                                                    _dim("B", hi=600, comp="cfg")]), ("root",)))
    got = evaluate_strategy(gs2, events, ["A", "B", "C"], lambda ref: {"cfg": matrix}[ref])[0].mask
    assert np.array_equal(got, expected)
    with pytest.raises(KeyError, match="cfg"):
        evaluate_strategy(gs2, events, ["A", "B", "C"])
    with pytest.raises(LookupError, match="'Z'"):
        bad = _strategy((fk.gates.RectangleGate("r", [_dim("Z", lo=1)]), ("root",)))
        evaluate_strategy(bad, events, ["A", "B", "C"])
    with pytest.raises(ValueError, match="shape"):
        evaluate_strategy(gs, events[:, :2], ["A", "B", "C"])


@pytest.mark.reference
def test_cached_columns_bit_identical_to_flowkit_preprocessing(sample_100715):
    """Compensated block and lazily filled logicle columns equal flowutils' whole-column results."""
    from flowutils import compensate as fu_compensate

    from gating.evaluator import SampleState

    xf = fk.transforms.LogicleTransform(262144, 0.5, 4.5, 0)
    gs = fk.GatingStrategy()
    gs.add_transform("L", xf)
    plan = compile_strategy(gs)
    matrix = flowkit_fcs_spillover(sample_100715)
    raw = sample_100715.get_events(source="raw")
    state = SampleState(plan, raw, list(sample_100715.pnn_labels), None, {"FCS": matrix})
    expected_comp = fu_compensate.compensate(
        raw, matrix.matrix, [sample_100715.pnn_labels.index(d) for d in matrix.detectors]
    )
    rng = np.random.default_rng(3)
    for idx in range(raw.shape[1]):
        arr, j = state.source("FCS", idx)
        assert np.array_equal(arr[:, j], expected_comp[:, idx]), idx
        # fill the logicle column in three uneven pieces, then compare with one call
        a, b = rng.random(len(raw)) < 0.2, rng.random(len(raw)) < 0.5
        state.column("FCS", "L", idx, a)
        state.column("FCS", "L", idx, b)
        col = state.column("FCS", "L", idx, None)
        whole = xf.apply(expected_comp[:, [idx]]).reshape(-1)
        assert np.array_equal(col, whole, equal_nan=True), idx
