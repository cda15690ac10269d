"""Gating pictures (drawn by reports/gating_pictures.py, written by flows/gating_plots.py):
adaptive panel on a simulated tube, every Gating-ML 2.0 gate type from the reference data,
file placement, failure handling."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory):
    from assays.fcs import read_fcs
    from simulators.tcell import simulate_tube
    from gating.adaptive import build_adaptive_gating
    from gating.sample_gating import apply_strategy
    from gating.panel import load_panel

    path = tmp_path_factory.mktemp("tube") / "tube.fcs"
    simulate_tube(path, seed=11, n_events=30_000, sample_id="SIM-PIC")
    sample = read_fcs(path)
    gating = build_adaptive_gating(sample, load_panel())
    return sample, gating.strategy, apply_strategy(gating.strategy, sample), gating.names


def test_adaptive_picture_draws_every_gate(adaptive):
    from flows.gating_plots import render_picture as render_gating_png
    from reports.gating_pictures import DPI, N_COLS, PANEL_INCHES, _panels

    sample, strategy, memberships, names = adaptive
    t0 = time.perf_counter()
    png = render_gating_png(sample, strategy, memberships, names)
    seconds = time.perf_counter() - t0
    assert png[:8] == PNG_MAGIC
    panels, booleans = _panels(strategy, memberships, names)
    drawn = sum(len(p.gates) + len(p.quadrants) for p in panels) + len(booleans)
    assert drawn == len(memberships)  # every population is on some panel
    # Gates sharing parent and axes share a panel (the CD4/CD8 quadrant is one panel).
    assert len(panels) < len(memberships)
    img = _image(png)
    n_rows = -(-len(panels) // N_COLS)
    assert img.shape[1] == int(PANEL_INCHES * min(N_COLS, len(panels)) * DPI)
    assert img.shape[0] == int((PANEL_INCHES * n_rows + 0.4) * DPI)
    # Gate outlines are drawn in red: there must be clearly red pixels.
    red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert red.sum() > 500
    assert img.std() > 20  # not blank
    assert len(png) < 1_000_000
    print(f"\nadaptive picture: {len(panels)} panels, {len(png) / 1024:.0f} kB, {seconds:.2f} s for 30k events")


def test_picture_is_deterministic(adaptive):
    from flows.gating_plots import render_picture as render_gating_png

    sample, strategy, memberships, names = adaptive
    assert _image(render_gating_png(sample, strategy, memberships, names)).tobytes() == \
        _image(render_gating_png(sample, strategy, memberships, names)).tobytes()


def test_all_gatingml_gate_types(shared_data):
    """Polygons, rectangles, ranges, ellipses, quadrants, booleans, ratio dimensions, transforms."""
    import flowkit as fk

    from assays.fcs import read_fcs
    from gating.sample_gating import apply_strategy
    from flows.gating_plots import render_picture as render_gating_png
    from reports.gating_pictures import _panels

    strategy = fk.parse_gating_xml(str(shared_data / "fcs/gatingml2/gml/gml_all_gates.xml"))
    sample = read_fcs(shared_data / "fcs/gatingml2/data1.fcs")
    memberships = apply_strategy(strategy, sample)
    png = render_gating_png(sample, strategy, memberships, {})
    assert png[:8] == PNG_MAGIC
    panels, booleans = _panels(strategy, memberships, {})
    assert booleans, "the reference template has boolean gates: listed in a text panel"
    assert sum(len(p.quadrants) for p in panels) > 0
    assert _image(png).std() > 20


def test_picture_path_beside_store_and_safe(tmp_path):
    from reports.gating_pictures import PICTURES_DIR, picture_path

    store = tmp_path / "data" / "store"
    p = picture_path(str(store), "HP01-D030", "20250101T000000-abcd")
    assert p == tmp_path / "data" / PICTURES_DIR / "HP01-D030" / "20250101T000000-abcd.png"
    # Ids cannot climb out of the pictures folder or collide.
    odd = picture_path(str(store), "../x/y z%", "a")
    assert odd.parent.parent == tmp_path / "data" / PICTURES_DIR
    assert odd.parent.name == "%2E.%2Fx%2Fy%20z%25"
    assert picture_path(str(store), "a/b", "x") != picture_path(str(store), "a%2Fb", "x")
    assert picture_path(f"file://{store}", "S", "A") == picture_path(str(store), "S", "A")


def test_write_gating_png_atomic_and_never_raises(adaptive, tmp_path, caplog):
    from flows.gating_plots import picture_path, write_gating_png

    sample, strategy, memberships, names = adaptive
    store = tmp_path / "store"
    path = write_gating_png(str(store), sample, strategy, memberships, names, "A1")
    assert path == picture_path(str(store), sample.sample_id, "A1")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["A1.png"]  # no temporary left behind
    # A broken call logs a warning without the sample id and returns None.
    assert write_gating_png(str(store), sample, strategy, memberships[:1] + [None], names, "A2") is None
    assert "gating picture not written" in caplog.text and sample.sample_id not in caplog.text


def test_run_draws_pictures_of_flagged_samples_and_report_draws_the_rest(tmp_path):
    """Default policy ("review"): during the run only samples flagged for review get a
    picture (a lead signs those off now); any other is drawn from the store on demand.
    Seeded simulator tubes: 30k events pass QC, 5k events fail ``events_acquired``."""
    from simulators.tcell import simulate_tube
    from conftest import query, run_pipeline
    from flows.gating_plots import picture_path, render_stored_picture

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    simulate_tube(inbox / "ok.fcs", seed=21, n_events=30_000, sample_id="PIC-OK")
    simulate_tube(inbox / "few.fcs", seed=22, n_events=5_000, sample_id="PIC-FEW")
    run_pipeline(inbox, store)
    rows = dict(query(store, "SELECT sample_id, analysis_id FROM latest_analyses WHERE kind = 'flow'"))
    flagged = {r[0] for r in query(store, "SELECT sample_id FROM latest_analyses WHERE review")}
    assert flagged == {"PIC-FEW"}
    assert picture_path(str(store), "PIC-FEW", rows["PIC-FEW"]).read_bytes()[:8] == PNG_MAGIC
    ok_path = picture_path(str(store), "PIC-OK", rows["PIC-OK"])
    assert not ok_path.exists()
    assert render_stored_picture(str(store), "PIC-OK", rows["PIC-OK"]) == ok_path
    assert ok_path.read_bytes()[:8] == PNG_MAGIC


def test_picture_coordinates_are_the_evaluators(shared_data):
    """Pictures draw the gating evaluator's own columns (gating.sample_gating.sample_columns):
    on the drawn subset of events they equal the full-sample columns the gates were tested
    on, for every gate of the reference template (compensation, transforms, ratios), and a
    rectangle gate's events drawn inside its bounds are exactly its members."""
    import flowkit as fk

    from assays.fcs import read_fcs
    from gating.sample_gating import apply_strategy
    from gating.sample_gating import sample_columns

    strategy = fk.parse_gating_xml(str(shared_data / "fcs/gatingml2/gml/gml_all_gates.xml"))
    sample = read_fcs(shared_data / "fcs/gatingml2/data1.fcs")
    memberships = apply_strategy(strategy, sample)
    rows = np.arange(0, sample.events.shape[0], 7)
    full, sub = sample_columns(strategy, sample), sample_columns(strategy, sample, rows)
    checked = 0
    for m in memberships:
        if m.gate_type in ("Quadrant", "BooleanGate"):
            continue
        gate = strategy.get_gate(m.gate_id, gate_path=("root",) + tuple(m.path[:-1]))
        for a, b in zip(sub.gate_columns(gate), full.gate_columns(gate)):
            np.testing.assert_array_equal(a, b[rows])
        if isinstance(gate, fk.gates.RectangleGate) and not gate.use_complement:
            inside = np.ones(rows.size, bool)
            for dim, col in zip(gate.dimensions, sub.gate_columns(gate)):
                if dim.min is not None:
                    inside &= col >= dim.min
                if dim.max is not None:
                    inside &= col < dim.max
            parent = np.ones(rows.size, bool) if not m.parent_path else \
                np.asarray(next(p.mask for p in memberships if p.path == m.parent_path))[rows]
            np.testing.assert_array_equal(inside & parent, np.asarray(m.mask)[rows])
        checked += 1
    assert checked >= 5


def test_axes_in_instrument_units():
    """Gating-picture axes read in the instrument's units: decades on logicle axes (at the
    transform of 10^k, so a tick sits where events of that intensity are), round raw values
    on linear scatter axes; never the transforms' 0-1 scale units."""
    import flowkit as fk

    from reports.gating_pictures import axis_ticks

    logicle = fk.transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0)
    pos, labels = axis_ticks(logicle, 0.0, 1.0)
    assert {"0", "$10^{3}$", "$10^{4}$", "$10^{5}$"} <= set(labels)
    at = dict(zip(labels, pos))
    assert at["$10^{4}$"] == pytest.approx(float(logicle.apply(np.array([[1e4]]))[0, 0]))
    assert all(0.0 <= p <= 1.0 for p in pos) and pos == sorted(pos)
    scatter = fk.transforms.LinearTransform(param_t=262144, param_a=0)
    pos, labels = axis_ticks(scatter, 0.0, 1.0)
    assert labels == ["0", "100K", "200K"]
    assert pos[1] == pytest.approx(100_000 / 262144)
    assert axis_ticks(None, 0.0, 1.0) is None
