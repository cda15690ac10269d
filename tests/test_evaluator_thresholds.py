"""gating.evaluator threshold bands: rectangle bounds and quadrant dividers on
logicle/hyperlog dimensions are decided in raw space, transforming only the events
near a bound, and must still give flowkit 1.3.2's bits event by event.

The data put events exactly on the raw image of every bound (``T.inverse(bound)``),
on their ``nextafter`` neighbours, on the band edges the engine uses, at the edge of
the trusted range (``|x| = T``) and beyond it (where flowutils' C solver returns -1),
plus zeros, negatives, NaN and +-inf. The counting tests make sure the optimisation
is really used, so they fail if it silently falls back to transforming everything.
"""

from __future__ import annotations

import flowkit as fk
import flowutils.logicle_c as logicle_c
import numpy as np
import pandas as pd
import pytest

from gating import raw_bands
from gating.compiled_strategy import compile_strategy
from gating.evaluator import evaluate_strategy
from gating.sample_gating import evaluate_flowkit_sample

L = fk.transforms.LogicleTransform(262144, 0.5, 4.5, 0)
H = fk.transforms.HyperlogTransform(262144, 0.5, 4.5, 0)
L2 = fk.transforms.LogicleTransform(10000, 1.0, 4.0, 1.0)
TRANSFORMS = [("L", L), ("H", H), ("L2", L2)]
CHANNEL_OF = {"L": "A", "H": "B", "L2": "C"}  # each transform gates its own channel
PNN = ["A", "B", "C", "D"]
# raw zero of L/H is at scale 1/9; 1.0 is the top of scale (band would leave the
# trusted range: exact path), 1.2 is beyond it
BOUNDS = [-0.2, 0.0, 0.05, 1 / 9, 0.3, 0.55, 0.9, 1.0, 1.2]
SPILL = np.array([[1.0, 0.15], [0.08, 1.0]])


def _dim(ch, lo=None, hi=None, xform=None, comp="uncompensated"):
    return fk.Dimension(ch, compensation_ref=comp, transformation_ref=xform, range_min=lo, range_max=hi)


def _strategy(gates_with_paths, matrices=()):
    gs = fk.GatingStrategy()
    for tid, t in TRANSFORMS:
        gs.add_transform(tid, t)
    gs.add_transform("lin", fk.transforms.LinearTransform(262144, 0))
    for mid, m in matrices:
        gs.add_comp_matrix(mid, m)
    for gate, path in gates_with_paths:
        gs.add_gate(gate, path)
    return gs


def _steps(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` and its ``k`` nextafter neighbours on each side, in ``x``'s own dtype."""
    out = [x]
    up, down = x.copy(), x.copy()
    for _ in range(k):
        up = np.nextafter(up, np.asarray(np.inf, dtype=x.dtype))
        down = np.nextafter(down, np.asarray(-np.inf, dtype=x.dtype))
        out += [up, down]
    return np.concatenate(out)


def _special_values(xform, dtype, k: int = 40) -> np.ndarray:
    """Raw values on and around every bound, band edge and trusted-range edge of ``xform``."""
    plan = compile_strategy(_strategy([], ()))
    ref = next(r for r, t in TRANSFORMS if t is xform)
    pts = []
    for bound in BOUNDS:
        pts.append(float(np.asarray(xform.inverse(np.array([[bound]]))).ravel()[0]))
        pts += [e for e in plan.band(ref, bound) if np.isfinite(e)]
    t = xform.param_t
    pts += [0.0, -0.0, t, -t, 2 * t, -2 * t, 1e13, -1e13, 1e15, -1e15, 1e30]
    centre = np.array(pts, dtype=dtype)
    centre = centre[np.isfinite(centre)]
    extra = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    return np.concatenate([_steps(centre, k), extra]).astype(np.float64)


def _events(dtype, n_random: int = 20_000, seed: int = 7) -> np.ndarray:
    """Events whose A/B/C columns hold the special values of L/H/L2, mixed with noise.

    Each column is shuffled on its own so special values meet all kinds of values in
    the other dimensions (two-dimensional gates, quadrants, parents).
    """
    rng = np.random.default_rng(seed)
    specials = {CHANNEL_OF[tid]: _special_values(t, dtype) for tid, t in TRANSFORMS}
    n = n_random + max(s.size for s in specials.values())
    ev = np.empty((n, len(PNN)))
    for j, ch in enumerate(PNN):
        noise = np.concatenate([
            rng.normal(0, 300, n // 3),
            rng.lognormal(7, 2.5, n // 3),
            -rng.lognormal(5, 2, n - 2 * (n // 3)),
        ])
        col = noise.astype(dtype).astype(np.float64)
        if ch in specials:
            col[: specials[ch].size] = specials[ch]
        ev[:, j] = rng.permutation(col)
    return ev


def _gates():
    """Rectangle and quadrant gates on every bound of every transform (and complements),
    under parents, compensated, and a polygon that later needs whole transformed columns."""
    out = []
    for tid, _ in TRANSFORMS:
        ch = CHANNEL_OF[tid]
        for i, v in enumerate(BOUNDS):
            for comp in (False, True):
                sfx = f"{tid}_{i}_{'c' if comp else 'p'}"
                out.append((fk.gates.RectangleGate(f"ge_{sfx}", [_dim(ch, lo=v, xform=tid)], use_complement=comp), ("root",)))
                out.append((fk.gates.RectangleGate(f"lt_{sfx}", [_dim(ch, hi=v, xform=tid)], use_complement=comp), ("root",)))
            if i + 2 < len(BOUNDS):
                two = [_dim(ch, lo=v, hi=BOUNDS[i + 2], xform=tid), _dim("D", lo=0.0, xform="lin")]
                out.append((fk.gates.RectangleGate(f"in_{tid}_{i}", two, use_complement=bool(i % 2)), ("root",)))
    # parent restriction: only events inside "posD" are looked at
    out.append((fk.gates.RectangleGate("posD", [_dim("D", lo=0.0, xform="lin")]), ("root",)))
    out.append((fk.gates.RectangleGate("posD_A", [_dim("A", lo=0.55, xform="L")], use_complement=True), ("root", "posD")))
    out.append((fk.gates.RectangleGate(
        "posD_AB", [_dim("A", lo=1 / 9, hi=0.9, xform="L"), _dim("B", hi=0.3, xform="H")]), ("root", "posD")))
    dividers = [
        fk.QuadrantDivider("dA", "A", "uncompensated", [0.3, 0.55], transformation_ref="L"),
        fk.QuadrantDivider("dB", "B", "uncompensated", [1 / 9, 0.9], transformation_ref="H"),
    ]
    edges = [[None, 0.3], [0.3, 0.55], [0.55, None]], [[None, 1 / 9], [1 / 9, 0.9], [0.9, None]]
    quadrants = [
        fk.gates.Quadrant(f"q{i}{j}", ["dA", "dB"], [edges[0][i], edges[1][j]])
        for i in range(3) for j in range(3)
    ]
    out.append((fk.gates.QuadrantGate("quad", dividers, quadrants), ("root", "posD")))
    out.append((fk.gates.RectangleGate("q11_C", [_dim("C", lo=0.3, xform="L2")], use_complement=True),
                ("root", "posD", "quad", "q11")))
    root_quad = fk.gates.QuadrantGate(
        "quad0",
        [fk.QuadrantDivider("dC", "C", "uncompensated", [0.05], transformation_ref="L2")],
        [fk.gates.Quadrant("lowC", ["dC"], [[None, 0.05]]), fk.gates.Quadrant("highC", ["dC"], [[0.05, None]])],
    )
    out.append((root_quad, ("root",)))
    # one compensation for the whole gate (both dims read from matrix M)
    for comp in (False, True):
        out.append((fk.gates.RectangleGate(
            f"compAB_{int(comp)}",
            [_dim("A", lo=0.3, xform="L", comp="M"), _dim("B", hi=0.9, xform="H", comp="M")],
            use_complement=comp), ("root",)))
    # polygon on the same logicle/hyperlog columns, after rectangles filled them partly
    poly = fk.gates.PolygonGate("polyAB", [_dim("A", xform="L"), _dim("B", xform="H")],
                                [[0.05, 0.05], [0.95, 0.1], [0.6, 0.95]])
    out.append((poly, ("root", "posD")))
    return out


def _flowkit_path(m) -> tuple[str, ...]:
    anc = m.path[:-2] if m.gate_type == "Quadrant" else m.path[:-1]
    return ("root",) + anc


def test_masks_equal_flowkit_session_on_values_at_thresholds():
    """flowkit's own Session on a Sample (float32-stored events, as fk.Sample keeps
    them): every population mask identical, NaN/inf/off-scale events included."""
    events = _events(np.float32)
    gs = _strategy(_gates(), matrices=[("M", fk.Matrix(SPILL, ["A", "B"]))])
    sample = fk.Sample(events, sample_id="thr", channel_labels=PNN)
    assert np.array_equal(sample.get_events(source="raw"), events, equal_nan=True)
    session = fk.Session(gating_strategy=gs, fcs_samples=[sample])
    session.analyze_samples()
    results = session.get_gating_results("thr")
    out = evaluate_flowkit_sample(gs, sample)
    assert len(results.report) == len(out)
    for m in out:
        theirs = np.asarray(results.get_gate_membership(m.gate_id, gate_path=_flowkit_path(m)), dtype=bool)
        assert np.array_equal(theirs, m.mask), (
            f"{'/'.join(m.path)} differs from flowkit in {(theirs != m.mask).sum()} events"
        )
    # the data really straddle the bounds: both sides populated for the core bounds
    counts = {m.gate_id: m.count for m in out}
    for tid, _ in TRANSFORMS:
        for i in (1, 3, 5):
            assert 0 < counts[f"ge_{tid}_{i}_p"] < len(events)


def _flowkit_gate_masks(gs, events) -> dict[str, np.ndarray]:
    """Root-level gates evaluated by flowkit's own ``Gate.apply`` on float64 events,
    each dimension transformed by its transform's ``apply`` on the ``(n, 1)`` column
    (flowkit's per-gate pre-processing, without fk.Sample's float32 storage)."""
    out = {}
    for gate_id, ancestors in gs.get_gate_ids():
        if ancestors != ("root",):
            continue
        gate = gs.get_gate(gate_id)
        cols = {}
        for dim in gate.dimensions:
            name = dim.dimension_ref if isinstance(dim, fk.QuadrantDivider) else dim.id
            raw = events[:, [PNN.index(name)]]
            cols[name] = gs.get_transform(dim.transformation_ref).apply(raw).ravel()
        res = gate.apply(pd.DataFrame(cols))
        if isinstance(res, dict):
            out.update(res)
        else:
            out[gate_id] = res
    return out


def test_masks_equal_flowkit_gate_apply_on_float64_ulp_neighbours():
    """Same with float64 events (FCS 'D' data, compensated values): the raw image of
    each bound and 40 float64 ulps on each side, every band edge and its ulps."""
    events = _events(np.float64)
    gates = [(g, p) for g, p in _gates() if p == ("root",) and not g.gate_name.startswith("comp")]
    gs = _strategy(gates)
    expected = _flowkit_gate_masks(gs, events)
    out = evaluate_strategy(gs, events, PNN)
    assert len(out) == len(expected)
    for m in out:
        assert np.array_equal(expected[m.gate_id], m.mask), (
            f"{m.gate_id} differs in {(expected[m.gate_id] != m.mask).sum()} events"
        )


@pytest.fixture
def transformed_values(monkeypatch):
    """Counts the values flowutils' C logicle and hyperlog loops are asked to transform."""
    seen = {"logicle": 0, "hyperlog": 0}

    def counting(name, real):
        def run(t, w, m, a, y):
            seen[name] += y.size
            return real(t, w, m, a, y)
        return run

    monkeypatch.setattr(logicle_c, "logicle_scale", counting("logicle", logicle_c.logicle_scale))
    monkeypatch.setattr(logicle_c, "hyperlog_scale", counting("hyperlog", logicle_c.hyperlog_scale))
    return seen


def test_only_undecided_events_are_transformed(transformed_values):
    """Ordinary data are decided in raw space; NaN, inf and off-scale events (beyond T)
    are transformed, but only inside the gate's parent."""
    rng = np.random.default_rng(3)
    n = 50_000
    events = np.column_stack([rng.normal(0, 2000, n), rng.lognormal(7, 1, n), rng.normal(0, 1, n), rng.normal(0, 1, n)])
    events[:3, 0] = [np.nan, np.inf, -np.inf]
    events[3:5, 0] = [3e5, -1e9]  # beyond T = 262144: not trusted
    events[5:8, 1] = [np.nan, 1e15, 7e5]
    events[:8, 3] = -1.0  # outside the parent "posD" below ...
    events[5:8, 3] = 1.0  # ... except the B specials
    gs = _strategy([
        (fk.gates.RectangleGate("A_ge", [_dim("A", lo=0.3, xform="L")]), ("root",)),
        (fk.gates.RectangleGate("A_in_out", [_dim("A", lo=0.2, hi=0.6, xform="L")], use_complement=True), ("root",)),
        (fk.gates.RectangleGate("posD", [_dim("D", lo=0.0, xform="lin")]), ("root",)),
        (fk.gates.RectangleGate("B_lt", [_dim("B", hi=0.55, xform="H")]), ("root", "posD")),
    ])
    plan = compile_strategy(gs)
    first = evaluate_strategy(plan, events, PNN)
    transformed_values.update(logicle=0, hyperlog=0)
    second = evaluate_strategy(plan, events, PNN)  # bands are cached in the plan
    # A: 5 untrusted events, each transformed once although two gates test them;
    # B: only the 3 untrusted events inside posD (nothing else is near 0.55 +- 1e-7)
    assert transformed_values == {"logicle": 5, "hyperlog": 3}
    for a, b in zip(first, second):
        assert np.array_equal(a.mask, b.mask)
    sample = fk.Sample(events, sample_id="u", channel_labels=PNN)
    expected = _flowkit_gate_masks(gs, sample.get_events(source="raw"))
    got = {m.gate_id: m.mask for m in evaluate_flowkit_sample(gs, sample)}
    for gid in ("A_ge", "A_in_out"):
        assert np.array_equal(got[gid], expected[gid]), gid


def test_threshold_data_transform_far_fewer_values(transformed_values, monkeypatch):
    """The point of the optimisation, even on data crowded around the bounds: the C
    loops see a small fraction of what the exact path (bands disabled) transforms."""
    events = _events(np.float32)
    gates = [(g, p) for g, p in _gates() if not isinstance(g, fk.gates.PolygonGate)]
    gs = _strategy(gates, matrices=[("M", fk.Matrix(SPILL, ["A", "B"]))])

    def count(plan) -> dict[str, int]:
        transformed_values.update(logicle=0, hyperlog=0)
        out = evaluate_strategy(plan, events, PNN)
        return dict(transformed_values), out

    banded, out_banded = count(compile_strategy(gs))
    monkeypatch.setattr(raw_bands, "MONOTONE_TRANSFORMS", ())
    exact, out_exact = count(compile_strategy(gs))
    for m, e in zip(out_banded, out_exact):
        assert np.array_equal(m.mask, e.mask), m.gate_id
    # exact path: A and C (logicle), B (hyperlog) whole, A and B again compensated
    assert exact["logicle"] >= 3 * len(events) and exact["hyperlog"] >= len(events)
    for name in ("logicle", "hyperlog"):
        assert banded[name] < 0.15 * exact[name], (banded, exact)


def test_bands_are_verified_and_fall_back_when_not_decidable():
    """Band edges bracket the bound with flowutils' own forward code and stay in the
    trusted range; at the top of scale and above only the lower edge remains (every
    trusted value is below), a NaN bound has no band."""
    plan = compile_strategy(_strategy([]))
    for tid, xform in TRANSFORMS:
        t = xform.param_t
        bottom = xform.apply(np.array([[-float(t)]]))[0, 0]  # scale value of -T
        for bound in (-0.2, 0.0, 1 / 9, 0.55, 0.9):
            a, b = plan.band(tid, bound)
            if bound > bottom + 1e-6:
                assert -t <= a < b <= t
            else:  # L2 reaches only -0.2 at -T: nothing trusted lies surely below
                assert a == -np.inf and -t <= b <= t
            ta, tb = xform.apply(np.array([[a], [b]])).ravel()
            assert ta < bound < tb
        a, b = plan.band(tid, 1.0)
        assert a < t and b == np.inf
        assert plan.band(tid, 1.2) == (t, np.inf)
        assert plan.band(tid, float("nan")) == (-np.inf, np.inf)
