"""The built-in adaptive T-cell panel: accuracy on simulated tubes, Gating-ML round trip,
missing markers, and the real 100715.fcs."""

from __future__ import annotations

import io

import numpy as np
import pytest

from assays.errors import InputError
from assays.fcs import read_fcs
from assays.simulators.tcell import simulate_tube
from gating.adaptive import AdaptiveGating, build_adaptive_gating, density_valley
from gating.engine import apply_strategy
from gating.panel import load_panel

SEEDS = [101, 202, 303, 404, 505, 606, 707, 808]
TOLERANCE = {  # points, except the ratio (relative)
    "cd3_pct_lymph": 3.0, "cd4_pct_lymph": 3.0, "cd8_pct_lymph": 3.0, "cd4_cd8_ratio": 0.15,
    "th1_pct_cd4": 1.5, "th2_pct_cd4": 1.0, "th17_pct_cd4": 1.0, "treg_pct_cd4": 1.5,
    "th0_pct_cd4": 0.6,
}


def _counts(gating: AdaptiveGating, sample) -> dict[str, int]:
    return {gating.names[m.gate_id]: int(m.mask.sum()) for m in apply_strategy(gating.strategy, sample)}


def _report(counts: dict[str, int]) -> dict[str, float | None]:
    base = counts.get("Live", counts.get("Singlets"))
    cd4, cd8 = counts["CD4+CD8-"], counts["CD4-CD8+"]
    out = {
        "cd3_pct_lymph": 100 * counts["CD3+"] / base,
        "cd4_pct_lymph": 100 * cd4 / base,
        "cd8_pct_lymph": 100 * cd8 / base,
        "cd4_cd8_ratio": cd4 / cd8 if cd8 else None,
    }
    for name in ("Th1", "Th2", "Th0", "Th17", "Treg"):
        out[f"{name.lower()}_pct_cd4"] = 100 * counts[name] / cd4 if name in counts and cd4 else None
    return out


def _errors(reported, truth) -> dict[str, float]:
    errs = {}
    for key in TOLERANCE:
        want = getattr(truth, key)
        got = reported[key]
        errs[key] = abs(got - want) / want if key == "cd4_cd8_ratio" else abs(got - want)
    return errs


@pytest.fixture(scope="module")
def panel():
    return load_panel()


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    """Eight stimulated tubes (drift, label variants) with their unstimulated controls."""
    root = tmp_path_factory.mktemp("tubes")
    out = []
    for i, seed in enumerate(SEEDS):
        truth = simulate_tube(root / f"s{seed}.fcs", seed=seed, label_variant=i)
        simulate_tube(root / f"c{seed}.fcs", seed=seed + 1, truth=truth, control=True,
                      label_variant=i + 1)
        out.append((seed, truth, read_fcs(root / f"s{seed}.fcs"), read_fcs(root / f"c{seed}.fcs")))
    return out


@pytest.mark.parametrize("with_control", [False, True], ids=["no_control", "control"])
def test_accuracy_on_simulated_tubes(tubes, panel, with_control):
    worst = dict.fromkeys(TOLERANCE, 0.0)
    failures = []
    for seed, truth, sample, control in tubes:
        gating = build_adaptive_gating(sample, panel, control=control if with_control else None)
        errs = _errors(_report(_counts(gating, sample)), truth)
        for key, err in errs.items():
            worst[key] = max(worst[key], err)
            if err > TOLERANCE[key]:
                failures.append(f"seed {seed} {key}: error {err:.3f} > {TOLERANCE[key]}")
    print("worst errors", {k: round(v, 3) for k, v in worst.items()})
    assert not failures, failures


def test_gatingml_export_reapplied_by_flowkit_gives_same_counts(tubes, panel, tmp_path):
    import flowkit as fk

    for seed, _truth, sample, control in tubes[:2]:
        gating = build_adaptive_gating(sample, panel, control=control)
        ours = {m.gate_id: int(m.mask.sum()) for m in apply_strategy(gating.strategy, sample)}
        buf = io.BytesIO()
        fk.export_gatingml(gating.strategy, buf)
        xml = tmp_path / f"{seed}.xml"
        xml.write_bytes(buf.getvalue())
        reparsed = fk.parse_gating_xml(str(xml))
        results = reparsed.gate_sample(fk.Sample(str(sample.path), subsample=0))
        theirs = {}
        for gid, parent in reparsed.get_gate_ids():
            theirs[gid] = int(results.get_gate_membership(gid, gate_path=parent).sum())
        assert theirs == ours
        assert "+" not in xml.read_text(encoding="utf-8").split("gating:id=")[1][:40]


def test_gate_ids_are_xs_ids_and_names_are_design_names(tubes, panel):
    _seed, _truth, sample, _control = tubes[0]
    gating = build_adaptive_gating(sample, panel)
    assert gating.names["CD3_pos"] == "CD3+"
    assert gating.names["CD4_pos_CD8_neg"] == "CD4+CD8-"
    assert set(gating.names.values()) >= {"Lymphocytes", "Singlets", "Live", "CD3+", "CD4+CD8-",
                                          "CD4-CD8+", "CD4+CD8+", "CD4-CD8-", "Th1", "Th2", "Th0",
                                          "Th17", "Treg"}
    for gid in gating.names:
        assert gid[0].isalpha() or gid[0] == "_"
        assert all(ch.isalnum() or ch in "_-." for ch in gid)
    checks = {q.check for q in gating.qc}
    assert {"events_acquired", "stable_flow", "margin_events", "separation_Lymphocytes",
            "separation_CD3@Live"} <= checks
    assert all(q.passed for q in gating.qc), [q for q in gating.qc if not q.passed]


def test_missing_cd4_is_an_input_error_naming_it(tmp_path, panel):
    simulate_tube(tmp_path / "no_cd4.fcs", seed=9, n_events=5_000, omit=("CD4",))
    sample = read_fcs(tmp_path / "no_cd4.fcs")
    with pytest.raises(InputError) as err:
        build_adaptive_gating(sample, panel)
    text = str(err.value)
    assert "CD4" in text
    assert "BUV395-A" in text and "BV510-A" in text  # the channels found are listed


def test_missing_optional_markers_leave_populations_out(tmp_path, panel):
    truth = simulate_tube(tmp_path / "no_il17.fcs", seed=12, omit=("IL-17A", "viability"))
    sample = read_fcs(tmp_path / "no_il17.fcs")
    gating = build_adaptive_gating(sample, panel)
    assert "Th17" not in gating.names.values() and "Live" not in gating.names.values()
    assert "Th17" in gating.missing_optional
    counts = _counts(gating, sample)
    got = _report(counts)
    assert got["th17_pct_cd4"] is None and truth.th17_pct_cd4 is None
    # Without viability dye the base is Singlets: dead cells stay in, CD3 % stays close.
    assert abs(got["cd3_pct_lymph"] - truth.cd3_pct_lymph) < 5


def test_density_valley_finds_the_gap_and_refuses_one_peak():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.2, 0.04, 8000), rng.normal(0.7, 0.05, 2000)])
    assert 0.35 < density_valley(x) < 0.55
    assert density_valley(rng.normal(0.3, 0.05, 10000)) is None


@pytest.mark.reference
def test_real_100715(shared_data, panel):
    sample = read_fcs(shared_data / "fcs" / "flowkit" / "100715.fcs")
    gating = build_adaptive_gating(sample, panel)
    counts = _counts(gating, sample)
    got = _report(counts)
    print("100715.fcs", {k: v for k, v in got.items()}, counts)
    assert 40 <= got["cd3_pct_lymph"] <= 90
    for key in ("th1_pct_cd4", "th2_pct_cd4", "th0_pct_cd4", "th17_pct_cd4", "treg_pct_cd4"):
        assert got[key] is None
    assert {"Th1", "Th2", "Th0", "Th17", "Treg"} <= set(gating.missing_optional)


@pytest.mark.reference
@pytest.mark.xfail(reason="100715.fcs: CD4 and CD8 do not resolve into separate peaks inside CD3+ "
                          "(1-D valley and 2-component mixture both fail), so the CD8 cut falls "
                          "above the data; the sample is flagged by QC (resolved_CD8@CD3_pos)",
                   strict=False)
def test_real_100715_ratio_plausible(shared_data, panel):
    sample = read_fcs(shared_data / "fcs" / "flowkit" / "100715.fcs")
    gating = build_adaptive_gating(sample, panel)
    got = _report(_counts(gating, sample))
    assert got["cd4_cd8_ratio"] is not None and 0.5 <= got["cd4_cd8_ratio"] <= 5


@pytest.mark.reference
def test_real_100715_unresolved_markers_are_flagged(shared_data, panel):
    sample = read_fcs(shared_data / "fcs" / "flowkit" / "100715.fcs")
    gating = build_adaptive_gating(sample, panel)
    failed = {q.check for q in gating.qc if not q.passed}
    assert any(c.startswith("resolved_") or c.startswith("separation_") for c in failed)
