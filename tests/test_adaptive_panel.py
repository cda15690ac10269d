"""The built-in adaptive T-cell panel: accuracy on simulated tubes, Gating-ML round trip,
missing markers, the 2-D CD4/CD8 quadrant fallback, and the real 100715.fcs."""

from __future__ import annotations

import io

import numpy as np
import pytest

from assays.errors import InputError
from assays.fcs import read_fcs
from simulators.tcell import simulate_tube
import gating.adaptive.quadrant as adaptive_quadrant
from gating.adaptive import AdaptiveGating, build_adaptive_gating, density_valley, quadrant_mixture
from gating.sample_gating import apply_strategy
from gating.panel import load_panel

SEEDS = [101, 202, 303, 404, 505, 606, 707, 808]
# Seeds whose random truth has the extreme CD4:CD8 ratios of the simulator's range.
LOW_CD8_SEEDS = [2217, 225, 302]  # ratio ~4
HIGH_CD8_SEEDS = [498, 828, 141]  # ratio ~0.4
QUADRANT_ROW = "quadrant_CD4_CD8@CD3_pos:"
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


@pytest.fixture(scope="module")
def extreme_tubes(tmp_path_factory):
    """Tubes with few CD8 (ratio ~4) and many CD8 (ratio ~0.4) T cells, no controls."""
    root = tmp_path_factory.mktemp("extreme")
    out = []
    for i, seed in enumerate(LOW_CD8_SEEDS + HIGH_CD8_SEEDS):
        truth = simulate_tube(root / f"s{seed}.fcs", seed=seed, label_variant=i)
        out.append((seed, truth, read_fcs(root / f"s{seed}.fcs"), None))
    return out


def _check_accuracy(tubes, panel, with_control=False, quadrant="auto", method=None):
    worst = dict.fromkeys(TOLERANCE, 0.0)
    failures = []
    for seed, truth, sample, control in tubes:
        gating = build_adaptive_gating(sample, panel, control=control if with_control else None,
                                       quadrant=quadrant)
        if method is not None:
            rows = [q for q in gating.qc if q.check.startswith(QUADRANT_ROW)]
            assert [q.check for q in rows] == [QUADRANT_ROW + method], (seed, rows)
            assert rows[0].passed, (seed, rows)
        errs = _errors(_report(_counts(gating, sample)), truth)
        for key, err in errs.items():
            worst[key] = max(worst[key], err)
            if err > TOLERANCE[key]:
                failures.append(f"seed {seed} {key}: error {err:.3f} > {TOLERANCE[key]}")
    print(f"worst errors ({quadrant})", {k: round(v, 3) for k, v in worst.items()})
    assert not failures, failures


@pytest.mark.parametrize("with_control", [False, True], ids=["no_control", "control"])
def test_accuracy_on_simulated_tubes(tubes, panel, with_control):
    # Simulated CD4/CD8 show clear 1-D valleys: the 2-D fallback must not be used.
    _check_accuracy(tubes, panel, with_control, method="valley_1d")


def test_accuracy_with_low_and_high_cd8(extreme_tubes, panel):
    assert {round(t.cd4_cd8_ratio) for _s, t, _x, _c in extreme_tubes} == {0, 4}
    _check_accuracy(extreme_tubes, panel, method="valley_1d")


def test_accuracy_with_the_2d_quadrant_method_forced(tubes, extreme_tubes, panel):
    """The 2-D mixture placing both CD4/CD8 cuts meets the same tolerances."""
    _check_accuracy(tubes + extreme_tubes, panel, quadrant="mixture_2d", method="mixture_2d")


def test_unknown_quadrant_mode_is_refused(tubes, panel):
    with pytest.raises(ValueError, match="quadrant"):
        build_adaptive_gating(tubes[0][2], panel, quadrant="2d")


def test_implausible_1d_cut_falls_back_to_the_2d_mixture(tubes, panel, monkeypatch):
    """A CD8 1-D cut above the data (as on 100715.fcs) is replaced by the 2-D mixture's cut.

    The 1-D placement of the quadrant's second axis (CD8) is forced to the fate it has on an
    unresolved file: one peak, cut 4 rSD above the mode of everything, i.e. above the CD8+
    cells. The walk must see that < 1 % of CD3+ is left above it and take the CD8 cut from
    the 2-D mixture, keeping the CD4 valley; the numbers then meet the usual tolerances.
    """
    real = adaptive_quadrant.marker_threshold
    calls = []

    def second_axis_unresolved(values, majority="negative"):
        # The quadrant's own placement: x first, then y.
        calls.append(majority)
        if len(calls) % 2 == 0:
            return float(np.max(values)) + 0.01, "one peak: mode + 4 rSD"
        return real(values, majority)

    monkeypatch.setattr(adaptive_quadrant, "marker_threshold", second_axis_unresolved)
    seed, truth, sample, _control = tubes[2]
    gating = build_adaptive_gating(sample, panel)
    rows = {q.check: q for q in gating.qc if q.check.startswith(QUADRANT_ROW)}
    assert list(rows) == [QUADRANT_ROW + "mixture_2d"] and rows[QUADRANT_ROW + "mixture_2d"].passed
    note = next(p.note for p in gating.placements if p.population == "CD4+CD8-")
    assert "CD4: density valley" in note and "CD8: 2-D mixture" in note
    assert not [q for q in gating.qc if q.check.startswith("resolved_")]
    errs = _errors(_report(_counts(gating, sample)), truth)
    assert all(errs[k] <= TOLERANCE[k] for k in errs), (seed, errs)


@pytest.mark.parametrize("quadrant", ["auto", "mixture_2d"])
def test_gatingml_export_reapplied_by_flowkit_gives_same_counts(tubes, panel, tmp_path, quadrant):
    import flowkit as fk

    for seed, _truth, sample, control in tubes[:2]:
        gating = build_adaptive_gating(sample, panel, control=control, quadrant=quadrant)
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


def _cloud(rng, n, mean, sd, r):
    cov = np.array([[sd * sd, r * sd * sd], [r * sd * sd, sd * sd]])
    return rng.multivariate_normal(mean, cov, n)


def test_quadrant_mixture_separates_populations_with_no_1d_valley():
    """CD4 T and CD8 T cells offset across the anti-diagonal, spread along the diagonal:
    neither marginal has a valley, the plane separates them. Axis-parallel cuts cannot hold
    such clouds whole, and ``recovery`` says so; the ratio survives (symmetric losses)."""
    rng = np.random.default_rng(1)
    pts = np.vstack([_cloud(rng, 6000, [0.55, 0.40], 0.08, 0.92),
                     _cloud(rng, 3000, [0.40, 0.55], 0.08, 0.92),
                     _cloud(rng, 500, [0.35, 0.35], 0.05, 0.3)])
    x, y = pts[:, 0], pts[:, 1]
    assert density_valley(x) is None and density_valley(y) is None
    fit = quadrant_mixture(x, y)
    assert fit is not None and fit.separation >= 2
    assert 0.45 < fit.cut_x < 0.50 and 0.45 < fit.cut_y < 0.50
    n4 = int(((x >= fit.cut_x) & (y < fit.cut_y)).sum())
    n8 = int(((x < fit.cut_x) & (y >= fit.cut_y)).sum())
    assert abs(n4 / n8 - 2.0) < 0.15
    assert fit.recovery < 0.9  # flagged: the quadrant cuts through the clouds


def test_quadrant_mixture_finds_a_rare_population_between_clean_clusters():
    rng = np.random.default_rng(2)
    pts = np.vstack([_cloud(rng, 9000, [0.65, 0.24], 0.035, 0.0),
                     _cloud(rng, 200, [0.24, 0.72], 0.04, 0.0),
                     _cloud(rng, 400, [0.24, 0.24], 0.04, 0.0)])
    fit = quadrant_mixture(pts[:, 0], pts[:, 1])
    assert fit is not None and fit.recovery > 0.99
    n8 = int(((pts[:, 0] < fit.cut_x) & (pts[:, 1] >= fit.cut_y)).sum())
    assert abs(n8 - 200) <= 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadrant_mixture_refuses_one_cloud_along_the_diagonal(seed):
    """One correlated cloud (plus a dim diffuse one and a bright tail, as in 100715.fcs):
    every component is high or low on both markers at once, so no CD4+CD8- / CD4-CD8+
    pair exists and no cut is invented."""
    rng = np.random.default_rng(seed)
    pts = np.vstack([_cloud(rng, 10000, [0.45, 0.47], 0.05, 0.7),
                     _cloud(rng, 2000, [0.35, 0.34], 0.09, 0.3),
                     _cloud(rng, 300, [0.70, 0.68], 0.05, 0.9)])
    assert quadrant_mixture(pts[:, 0], pts[:, 1], seed=seed) is None


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
@pytest.mark.xfail(reason="100715.fcs has no resolvable CD4/CD8 populations: inside CD3+ the two "
                          "markers form one cloud along the diagonal (every channel of the file is "
                          "one correlated background cloud plus a tail bright in all channels), so "
                          "neither the 1-D valleys nor the 2-D mixture (no CD4-high/CD8-low vs "
                          "CD4-low/CD8-high pair) can place a CD4/CD8 cut; the sample is flagged "
                          "(quadrant_CD4_CD8@CD3_pos:unresolved) instead of given an invented ratio",
                   strict=True)
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
    # The 2-D fallback was tried and refused: the QC row says so and fails.
    rows = [q for q in gating.qc if q.check.startswith(QUADRANT_ROW)]
    assert [(q.check, q.passed) for q in rows] == [(QUADRANT_ROW + "unresolved", False)]


@pytest.mark.reference
def test_real_100715_cd4_cd8_is_one_diagonal_cloud(shared_data, panel):
    """The evidence behind the xfail above, measured: inside CD3+ CD4 and CD8 are strongly
    correlated and the anti-diagonal (CD8 - CD4), where CD4 T and CD8 T cells would lie
    apart, holds a single narrow peak with no valley."""
    from gating.adaptive.prepare import prepare, spill_covers
    from gating.adaptive.walk import walk as walk_panel
    from assays.markers import match_markers

    sample = read_fcs(shared_data / "fcs" / "flowkit" / "100715.fcs")
    matched = match_markers(sample.channels, panel.aliases, panel.required)
    prep = prepare(sample, panel, matched, 100_000, 0)
    prep.has_comp = spill_covers(sample, matched)
    walk = walk_panel(prep, panel)
    cd3 = walk.masks["CD3+"]
    x, y = prep.fluor["CD4"][cd3], prep.fluor["CD8"][cd3]
    assert np.corrcoef(x, y)[0, 1] > 0.5
    assert density_valley(y - x) is None
    for seed in (0, 1, 2):
        assert quadrant_mixture(x, y, seed=seed) is None


@pytest.mark.parametrize("t,w,m,a", [(262144, 0.5, 4.5, 0.0), (262144, 1.0, 4.5, 0.0), (10000, 0.5, 4.0, 0.5)])
def test_placement_logicle_table_matches_the_exact_transform(t, w, m, a):
    """Placement transforms by table (speed); it must agree with flowutils' exact logicle to
    far below a density-valley's resolution. Seeded compensated-like data with negatives,
    a long tail and off-scale values."""
    import flowkit as fk

    from gating.adaptive import logicle_by_table

    xform = fk.transforms.LogicleTransform(param_t=t, param_w=w, param_m=m, param_a=a)
    rng = np.random.default_rng(17)
    v = np.concatenate([rng.normal(0, 200, 40_000), np.exp(rng.normal(7, 2, 40_000)), [-5000.0, t - 1, 10 * t]])
    exact = xform.apply(v.reshape(-1, 1))[:, 0]
    assert np.abs(logicle_by_table(xform, v) - exact).max() < 1e-6


# Fresh seeds used by no other test: a broader draw of the simulator's random truth (CD3
# 40-85 %, CD4:CD8 0.4-4, subset shares, drift) than the fixtures above.
SWEEP_SEEDS = list(range(9301, 9317))


def test_accuracy_over_a_broad_seed_sweep(tmp_path, panel):
    """Every reported population is within TOLERANCE on 16 fresh simulated tubes.

    Truth comes from the seeded simulator (``simulators.tcell.simulate_tube``): each
    tube's percentages are computed from the labels it gave its events. The label spellings
    cycle through every variant index and a random spelling per marker (``label_variant=None``),
    every other tube is gated with its unstimulated control (cytokine thresholds from the
    control) and the rest without (from the negatives), and the event count varies
    (30k-60k). On such data the CD4/CD8 pair always resolves: the quadrant QC row must pass
    and no required marker may be left unresolved.
    """
    variants = [0, 1, 2, 3, None]
    failures = []
    for i, seed in enumerate(SWEEP_SEEDS):
        variant = variants[i % len(variants)]
        n_events = (30_000, 45_000, 60_000)[i % 3]
        path = tmp_path / f"s{seed}.fcs"
        truth = simulate_tube(path, seed=seed, n_events=n_events, label_variant=variant)
        control = None
        if i % 2:
            cpath = tmp_path / f"c{seed}.fcs"
            simulate_tube(cpath, seed=seed + 1, n_events=n_events, truth=truth, control=True,
                          label_variant=None if variant is None else variant + 1)
            control = read_fcs(cpath)
        sample = read_fcs(path)
        gating = build_adaptive_gating(sample, panel, control=control)
        rows = [q for q in gating.qc if q.check.startswith(QUADRANT_ROW)]
        if len(rows) != 1 or not rows[0].passed:
            failures.append(f"seed {seed}: quadrant {[(q.check, q.passed) for q in rows]}")
        unresolved = [q.check for q in gating.qc if q.check.startswith("resolved_")]
        if unresolved:
            failures.append(f"seed {seed}: {unresolved}")
        for key, err in _errors(_report(_counts(gating, sample)), truth).items():
            if err > TOLERANCE[key]:
                failures.append(f"seed {seed} (labels {variant}, control {control is not None}) "
                                f"{key}: error {err:.3f} > {TOLERANCE[key]}")
    assert not failures, failures


# ----------------------------------------------------------------- scatter without area
# Older instruments record height or unsuffixed scatter only (BD FACSCalibur/FACScan:
# FSC-H, SSC-H; older Beckman Coulter, Partec: FS/SS or FSC/SSC): the Lymphocytes gate uses
# them, and with no forward area/height pair no Singlets gate is invented (QC row
# ``singlets_not_gated``; Live, or CD3+, hangs from Lymphocytes).

FACSCALIBUR = {"FSC-A": None, "SSC-A": "SSC-H"}  # the simulated SSC-A stands in for SSC-H
UNSUFFIXED = {"FSC-A": None, "FSC-H": "FS", "SSC-A": "SS"}
BECKMAN = {"FSC-A": "FS INT", "FSC-H": "fs peak", "SSC-A": "SS INT"}  # integral = area, peak = height
HEIGHT_SEEDS = [101, 202, 2217, 498]  # includes a ratio ~4 and a ratio ~0.4 tube
_FCS_LAYOUT_KEYS = {"par", "tot", "begindata", "enddata", "beginstext", "endstext", "beginanalysis",
                    "endanalysis", "byteord", "datatype", "mode", "nextdata"}


def _rescatter(src, dst, rename: dict[str, str | None]):
    """Write ``src`` again as ``dst`` with its channels renamed (``$PnN``) or dropped (None):
    the same events, as an instrument without area scatter would have recorded them."""
    from array import array

    import flowio

    fd = flowio.FlowData(str(src))
    data = fd.as_array(preprocess=False)
    pnn = [fd.text[f"p{i}n"] for i in range(1, fd.channel_count + 1)]
    pns = [fd.text.get(f"p{i}s", "") for i in range(1, fd.channel_count + 1)]
    keep = [i for i, p in enumerate(pnn) if rename.get(p, p) is not None]
    meta = {k: v for k, v in fd.text.items()
            if k not in _FCS_LAYOUT_KEYS and not (k[:1] == "p" and k[1:2].isdigit())}
    values = array("f")
    values.frombytes(np.ascontiguousarray(data[:, keep], dtype="<f4").tobytes())
    with open(dst, "wb") as fh:
        flowio.create_fcs(fh, values, [rename.get(pnn[i], pnn[i]) for i in keep],
                          opt_channel_names=[pns[i] for i in keep], metadata_dict=meta)
    return read_fcs(dst)


def _gate_paths(gating: AdaptiveGating) -> dict[str, tuple[str, ...]]:
    """Population name -> names of its gate path (root excluded, itself last), from the strategy."""
    return {gating.names[gid]: tuple(gating.names.get(g, g) for g in (*parent, gid) if g != "root")
            for gid, parent in gating.strategy.get_gate_ids()}


@pytest.fixture(scope="module")
def height_tubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("height")
    out = []
    for i, seed in enumerate(HEIGHT_SEEDS):
        truth = simulate_tube(root / f"s{seed}.fcs", seed=seed, n_events=30_000, label_variant=i)
        out.append((seed, truth, root / f"s{seed}.fcs"))
    return out


@pytest.mark.parametrize("layout,code", [(FACSCALIBUR, 1.0), (UNSUFFIXED, 3.0)],
                         ids=["FSC-H_SSC-H", "FS_SS"])
def test_height_or_unsuffixed_scatter_meets_the_tolerances(height_tubes, panel, tmp_path, layout, code):
    """Simulated tubes written again without area scatter: CD3/CD4/CD8 % and the ratio stay
    within TOLERANCE of the simulator's truth (live singlet lymphocytes), Singlets is left
    out with a passing ``singlets_not_gated`` row (value 1: no forward area; 3: neither
    area nor height), and Live hangs from Lymphocytes."""
    failures = []
    for seed, truth, path in height_tubes:
        sample = _rescatter(path, tmp_path / f"h{seed}.fcs", layout)
        assert not {"FSC-A", "SSC-A"} & {c.pnn for c in sample.channels}
        gating = build_adaptive_gating(sample, panel)
        rows = [q for q in gating.qc if q.check.startswith("singlet")]
        assert [(q.check, q.value, q.passed) for q in rows] == [("singlets_not_gated", code, True)], seed
        assert "Singlets" not in gating.names.values() and "Singlets" in gating.missing_optional
        assert _gate_paths(gating)["Live"] == ("Lymphocytes", "Live")
        lymph = next(p for p in gating.placements if p.population == "Lymphocytes")
        assert "FSC-A" not in lymph.note and "SSC-A" not in lymph.note, lymph.note
        errs = _errors(_report(_counts(gating, sample)), truth)
        for key in ("cd3_pct_lymph", "cd4_pct_lymph", "cd8_pct_lymph", "cd4_cd8_ratio"):
            if errs[key] > TOLERANCE[key]:
                failures.append(f"seed {seed} {key}: error {errs[key]:.3f} > {TOLERANCE[key]}")
    assert not failures, failures


def test_vendor_area_and_height_spellings_keep_the_singlet_gate(height_tubes, panel, tmp_path):
    """Beckman Coulter names (FS INT = area, FS PEAK = height, any case) are the FSC-A/FSC-H
    pair: the same events give the same gates and counts as the original names."""
    seed, _truth, path = height_tubes[0]
    original = read_fcs(path)
    renamed = _rescatter(path, tmp_path / "beckman.fcs", BECKMAN)
    want = _counts(build_adaptive_gating(original, panel), original)
    gating = build_adaptive_gating(renamed, panel)
    assert _counts(gating, renamed) == want
    assert "Singlets" in gating.names.values()
    assert not [q for q in gating.qc if q.check == "singlets_not_gated"]


def test_no_side_scatter_at_all_is_an_input_error(height_tubes, panel, tmp_path):
    _seed, _truth, path = height_tubes[0]
    sample = _rescatter(path, tmp_path / "no_ssc.fcs", {"SSC-A": None})
    with pytest.raises(InputError) as err:
        build_adaptive_gating(sample, panel)
    text = str(err.value)
    assert "side scatter" in text and "forward scatter" not in text
    assert all(n in text for n in ("SSC-A", "SSC-H", "SSC", "SS INT"))  # what would do
    assert "channels FSC-A, FSC-H, Time" in text  # what the file has


def _through_the_pipeline(path, tmp_path, panel):
    """``process_file`` on ``path``, its rows committed to a fresh store with a sample-sheet
    row; returns (outcome rows by table, immune_timeline row as a dict, store)."""
    import datetime as dt

    from flows.inbox import InboxFile
    from flows.process import GatingSetup, process_file
    from storage.store import Batch, Store, utcnow
    from storage.views import connect

    out = process_file(InboxFile(path, path.name, kind="fcs"), GatingSetup(panel=panel), set())
    assert out.status == "stored", out.error
    rows = {t: [dict(r) for r in rs] for t, rs in out.rows.items()}
    rows.update({t: tbl.to_pylist() for t, tbl in out.tables.items()})
    store = Store(tmp_path / "store")
    batch = Batch(store, "ingest")
    for table, data in [*out.rows.items(), *out.tables.items()]:
        batch.add(table, data)
    sid = out.sample_ids[0]
    batch.add("sample_sheet", [{"sample_id": sid, "patient_id": "P1", "collection_date": dt.date(2026, 1, 5),
                                "specimen": "PB", "cell_fraction": "whole", "role": "post", "row_no": 0,
                                "ingested_at": utcnow(), "source_sha256": "sheet"}])
    batch.n_files = 1
    batch.commit()
    cur = connect(store).execute("SELECT * FROM immune_timeline")
    cols = [d[0] for d in cur.description]
    timeline = [dict(zip(cols, r)) for r in cur.fetchall()]
    assert len(timeline) == 1
    return rows, timeline[0]


def _check_rows_without_singlets(rows, timeline, path):
    """No Singlets row; % of lymphocytes is of the deepest of Lymphocytes > Live present;
    immune_timeline has CD3/CD4/CD8; the stored Gating-ML re-applied by flowkit to the
    file gives the stored counts."""
    import flowkit as fk

    pops = {r["population"]: r for r in rows["flow_populations"]}
    assert "Singlets" not in pops
    base = pops["Live"] if "Live" in pops else pops["Lymphocytes"]
    assert pops["CD3+"]["path"].startswith(base["path"] + "/")
    assert base["path"] in ("Lymphocytes", "Lymphocytes/Live")
    for name in ("CD3+", "CD4+CD8-", "CD4-CD8+"):
        assert pops[name]["pct_of_lymphocytes"] == pytest.approx(100 * pops[name]["count"] / base["count"])
    assert timeline["cd3_pct_lymph"] == pytest.approx(pops["CD3+"]["pct_of_lymphocytes"])
    assert timeline["cd4_pct_lymph"] == pytest.approx(pops["CD4+CD8-"]["pct_of_lymphocytes"])
    assert timeline["cd8_pct_lymph"] == pytest.approx(pops["CD4-CD8+"]["pct_of_lymphocytes"])
    qc = {r["check"]: r for r in rows["flow_qc"]}
    assert qc["singlets_not_gated"]["passed"] and "singlet_share" not in qc
    gates = rows["flow_gates"][0]
    strategy = fk.parse_gating_xml(io.BytesIO(gates["gatingml"].encode()))
    names = __import__("json").loads(gates["population_ids"])
    results = strategy.gate_sample(fk.Sample(str(path), subsample=0))
    theirs = {names[gid]: int(results.get_gate_membership(gid, gate_path=parent).sum())
              for gid, parent in strategy.get_gate_ids()}
    assert theirs == {name: r["count"] for name, r in pops.items()}
    return pops, qc


def test_height_only_tube_through_the_pipeline(height_tubes, panel, tmp_path):
    """A FACSCalibur-style tube end to end: stored, statistics relative to Live lymphocytes,
    immune_timeline filled, Gating-ML export re-applied by flowkit with the same counts."""
    seed, truth, path = height_tubes[1]
    sample_path = tmp_path / f"calibur{seed}.fcs"
    _rescatter(path, sample_path, FACSCALIBUR)
    rows, timeline = _through_the_pipeline(sample_path, tmp_path, panel)
    pops, _qc = _check_rows_without_singlets(rows, timeline, sample_path)
    assert pops["Live"]["path"] == "Lymphocytes/Live"
    assert abs(timeline["cd3_pct_lymph"] - truth.cd3_pct_lymph) <= TOLERANCE["cd3_pct_lymph"]
    assert abs(timeline["cd4_cd8_ratio"] / truth.cd4_cd8_ratio - 1) <= TOLERANCE["cd4_cd8_ratio"]


@pytest.mark.reference
def test_real_facscalibur_data1_is_gated_on_height_scatter(shared_data, panel, tmp_path):
    """data1.fcs (BD FACSCalibur, FCS 2.0, Gating-ML 2.0 compliance set): FSC-H/SSC-H only,
    CD4 FITC, CD8 B PE, CD3 PerCP, CD8 APC, no viability dye. Stored, not quarantined; CD3+
    hangs directly from Lymphocytes.

    Measured (seed 0): Lymphocytes 1750 of 13,367 events, CD3+ 572 (32.7 % of lymphocytes),
    CD4+CD8- 442 (25.3 %), CD4-CD8+ 101 (5.8 %), ratio 4.4; CD4/CD8 resolved by 1-D valleys
    on CD8 APC (separation 3.8 in CD3+; CD8 B PE, 1.2, is not used: channel_CD8@CD3_pos). Only
    13k events: the lymphocyte and CD3 count checks fail, so the sample goes to review.
    The ~35 % CD3+ share is the same across the FSC range of the gate (not debris
    diluting it); most of the file's events are a CD3- CD4-dim cloud outside the gate.
    """
    path = shared_data / "fcs" / "gatingml2" / "data1.fcs"
    rows, timeline = _through_the_pipeline(path, tmp_path, panel)
    pops, qc = _check_rows_without_singlets(rows, timeline, path)
    print("data1.fcs", {n: (r["count"], r["pct_of_lymphocytes"]) for n, r in pops.items()}, timeline)
    assert "Live" not in pops and pops["CD3+"]["path"] == "Lymphocytes/CD3+"
    assert 30 <= timeline["cd3_pct_lymph"] <= 90
    resolved = [c for c in qc if c.startswith(QUADRANT_ROW)]
    assert len(resolved) == 1
    if resolved[0].endswith(":unresolved"):  # flagged as for 100715.fcs: no ratio invented
        assert timeline["cd4_cd8_ratio"] is None
    else:
        assert 0.3 <= timeline["cd4_cd8_ratio"] <= 6
