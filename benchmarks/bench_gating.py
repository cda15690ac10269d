"""Gating speed: flowkit ``Session.analyze_samples`` vs ``gating.evaluator``.

Run by hand (not a test):  .venv/bin/python benchmarks/bench_gating.py [--events N] [--repeat R]

Generates one simulated tube (default 1,000,000 events x 13 channels: FSC-A, FSC-H,
SSC-A, 9 fluorescence channels with spillover, Time) and a 9-gate Gating-ML 2.0
template (two scatter polygons, then logicle rectangles on compensated
fluorescence: Live > CD3+ > CD4+/CD8+ > Th1/Th17/Treg). Times flowkit 1.3.2's
``Session(...).analyze_samples()`` (its defaults, and again with
``cache_events=True``) against ``evaluator.evaluate_strategy`` on the same raw
events, checks that every population count and mask is identical, and prints the
times and ratios. Reading the FCS file is excluded on both sides: this measures
compensation + transforms + gating only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowkit as fk  # noqa: E402

from gating.compiled_strategy import compile_strategy  # noqa: E402
from gating.evaluator import evaluate_strategy  # noqa: E402

PNN = [
    "FSC-A", "FSC-H", "SSC-A",
    "V450-A", "B515-A", "G560-A", "G610-A", "R660-A", "R710-A", "V655-A", "V800-A", "R780-A",
    "Time",
]
# marker carried by each fluorescence detector
MARKERS = ["Live", "CD3", "CD4", "CD8", "IFNg", "IL4", "IL17A", "CD25", "CD127"]
FLUORO = PNN[3:12]


def simulate(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Raw events (n x 13) of a PBMC-like tube, and the spillover used to make them."""
    rng = np.random.default_rng(seed)
    ev = np.empty((n, len(PNN)))
    lymph = rng.random(n) < 0.6
    ev[:, 0] = np.where(lymph, rng.normal(70_000, 9_000, n), rng.uniform(5_000, 250_000, n))
    doublet = rng.random(n) < 0.08
    ev[:, 1] = ev[:, 0] * np.where(doublet, rng.normal(0.55, 0.05, n), rng.normal(0.9, 0.03, n))
    ev[:, 2] = np.where(lymph, rng.normal(25_000, 6_000, n), rng.uniform(2_000, 200_000, n))

    def marker(p_pos: float | np.ndarray, pos: float) -> np.ndarray:
        is_pos = rng.random(n) < p_pos
        return np.where(is_pos, rng.lognormal(np.log(pos), 0.5, n), rng.normal(0, 150, n))

    dead = rng.random(n) < 0.1
    true = np.empty((n, 9))
    true[:, 0] = np.where(dead, rng.lognormal(np.log(20_000), 0.4, n), rng.normal(0, 150, n))
    true[:, 1] = marker(0.7, 8_000)
    cd4 = rng.random(n) < 0.6
    true[:, 2] = np.where(cd4, rng.lognormal(np.log(5_000), 0.4, n), rng.normal(0, 150, n))
    true[:, 3] = np.where(~cd4 & (rng.random(n) < 0.8), rng.lognormal(np.log(9_000), 0.4, n),
                          rng.normal(0, 150, n))
    for j, p in zip(range(4, 9), (0.2, 0.05, 0.03, 0.1, 0.5)):
        true[:, j] = marker(p, 4_000)
    spill = np.eye(9)
    for i in range(9):
        for j in range(9):
            if i != j and abs(i - j) <= 2:
                spill[i, j] = 0.12 / abs(i - j) * rng.uniform(0.5, 1.5)
    ev[:, 3:12] = true @ spill  # detector signal = true stain x spillover
    ev[:, 12] = np.sort(rng.uniform(0, 60_000, n))
    return ev, spill


def template_xml(spill: np.ndarray) -> str:
    """The 9-gate logicle template, compensated with a spectrumMatrix named 'Acq'."""
    fluoros = "".join(f'<data-type:fcs-dimension data-type:name="{m}"/>' for m in MARKERS)
    detectors = "".join(f'<data-type:fcs-dimension data-type:name="{d}"/>' for d in FLUORO)
    spectra = "".join(
        "<transforms:spectrum>"
        + "".join(f'<transforms:coefficient transforms:value="{float(v)!r}"/>' for v in row)
        + "</transforms:spectrum>"
        for row in spill
    )

    def dim(ch: str, lo: float | None = None, hi: float | None = None, comp: str = "Acq",
            xf: str = "logicle") -> str:
        rng = (f' gating:min="{lo}"' if lo is not None else "") + (f' gating:max="{hi}"' if hi is not None else "")
        return (f'<gating:dimension gating:compensation-ref="{comp}" gating:transformation-ref="{xf}"{rng}>'
                f'<data-type:fcs-dimension data-type:name="{ch}"/></gating:dimension>')

    def rect(gid: str, parent: str, *dims: str) -> str:
        return f'<gating:RectangleGate gating:id="{gid}" gating:parent_id="{parent}">{"".join(dims)}</gating:RectangleGate>'

    def poly(gid: str, parent: str | None, x: str, y: str, verts) -> str:
        par = f' gating:parent_id="{parent}"' if parent else ""
        vs = "".join(
            f'<gating:vertex><gating:coordinate data-type:value="{a}"/>'
            f'<gating:coordinate data-type:value="{b}"/></gating:vertex>' for a, b in verts
        )
        return (f'<gating:PolygonGate gating:id="{gid}"{par}>'
                f'{dim(x, comp="uncompensated", xf="lin")}{dim(y, comp="uncompensated", xf="lin")}{vs}'
                "</gating:PolygonGate>")

    gates = [
        poly("Lymphocytes", None, "FSC-A", "SSC-A",
             [(0.15, 0.02), (0.42, 0.02), (0.42, 0.2), (0.15, 0.2)]),
        poly("Singlets", "Lymphocytes", "FSC-A", "FSC-H",
             [(0.1, 0.08), (0.5, 0.4), (0.5, 0.5), (0.1, 0.11)]),
        rect("Live", "Singlets", dim("Live", hi=0.55)),
        rect("CD3_pos", "Live", dim("CD3", lo=0.55)),
        rect("CD4_pos", "CD3_pos", dim("CD4", lo=0.55), dim("CD8", hi=0.55)),
        rect("CD8_pos", "CD3_pos", dim("CD4", hi=0.55), dim("CD8", lo=0.55)),
        rect("Th1", "CD4_pos", dim("IFNg", lo=0.5), dim("IL4", hi=0.5)),
        rect("Th17", "CD4_pos", dim("IL17A", lo=0.5)),
        rect("Treg", "CD4_pos", dim("CD25", lo=0.5), dim("CD127", hi=0.5)),
    ]
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
 xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
 xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
<transforms:spectrumMatrix transforms:id="Acq">
<transforms:fluorochromes>{fluoros}</transforms:fluorochromes>
<transforms:detectors>{detectors}</transforms:detectors>{spectra}
</transforms:spectrumMatrix>
<transforms:transformation transforms:id="lin"><transforms:flin transforms:T="262144" transforms:A="0"/></transforms:transformation>
<transforms:transformation transforms:id="logicle"><transforms:logicle transforms:T="262144" transforms:W="0.5" transforms:M="4.5" transforms:A="0"/></transforms:transformation>
{"".join(gates)}
</gating:Gating-ML>"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each engine; the best is reported")
    args = ap.parse_args()

    events, spill = simulate(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "tcell_9gates.xml"
        xml.write_text(template_xml(spill))
        strategy = fk.parse_gating_xml(str(xml))
    sample = fk.Sample(events, sample_id="sim", channel_labels=PNN)
    raw = sample.get_events(source="raw")
    print(f"{args.events:,} events x {len(PNN)} channels, {len(strategy.get_gate_ids())} gates, "
          f"flowkit {fk.__version__}, {os.cpu_count()} cpus")

    def run_flowkit(cache: bool):
        session = fk.Session(gating_strategy=strategy, fcs_samples=[sample])
        t0 = time.perf_counter()
        session.analyze_samples(cache_events=cache)
        dt = time.perf_counter() - t0
        return dt, session.get_gating_results("sim")

    times_fk, times_fkc, times_fast = [], [], []
    for _ in range(args.repeat):
        dt, results = run_flowkit(False)
        times_fk.append(dt)
        dt, results_c = run_flowkit(True)
        times_fkc.append(dt)
        plan = compile_strategy(strategy)
        t0 = time.perf_counter()
        out = evaluate_strategy(plan, raw, PNN)
        times_fast.append(time.perf_counter() - t0)

    # identical results: every population's count and mask
    rows = {r.gate_name: r for r in results.report.itertuples()}
    assert len(rows) == len(out), (len(rows), len(out))
    for m in out:
        assert rows[m.gate_id].count == m.count, (m.gate_id, rows[m.gate_id].count, m.count)
        assert np.array_equal(results.get_gate_membership(m.gate_id), m.mask), m.gate_id
        assert np.array_equal(results_c.get_gate_membership(m.gate_id), m.mask), m.gate_id
    print("counts: " + ", ".join(f"{m.gate_id}={m.count:,}" for m in out) + "  (identical to flowkit)")

    t_fk, t_fkc, t_fast = min(times_fk), min(times_fkc), min(times_fast)
    print(f"flowkit Session.analyze_samples():                   {t_fk:7.3f} s")
    print(f"flowkit Session.analyze_samples(cache_events=True):  {t_fkc:7.3f} s")
    print(f"evaluator.evaluate_strategy:                       {t_fast:7.3f} s")
    print(f"ratio flowkit / evaluator: {t_fk / t_fast:.1f}x (default), {t_fkc / t_fast:.1f}x (cached flowkit)")


if __name__ == "__main__":
    main()
