"""Cohort views (storage/cohort.py, issue 17): statistics against scipy, windows, exclusions.

The views are built over hand-made ``patients_latest`` / ``sample_timepoints`` /
``immune_timeline`` / ``chimerism_timeline`` tables with known values (seeded numbers), so
every expected number is computed here from those inputs with scipy and numpy.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest
from scipy.stats import false_discovery_control, wilcoxon

from assays.errors import ConfigError
from storage.cohort import (IMMUNE_PARAMETERS, bh_adjust, cohort_params, create_cohort_views, parse_windows,
                            wilcoxon_p)

MST = dt.date(2025, 1, 10)


def test_wilcoxon_p_is_scipys_and_exact_for_small_n():
    # All five differences positive: W+ = 15 is the most extreme of 2^5 equally likely sign
    # patterns, so the exact two-sided p is 2/32.
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)
    rng = np.random.default_rng(17)
    d = list(rng.normal(1.0, 2.0, size=12))
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue, rel=1e-12)
    assert wilcoxon_p(d + [None]) == pytest.approx(wilcoxon(d).pvalue, rel=1e-12)
    assert wilcoxon_p([0.0, 0.0]) is None and wilcoxon_p([]) is None and wilcoxon_p(None) is None


def test_bh_adjust_known_values_and_scipy():
    # Sorted 0.005, 0.01, 0.03, 0.04 (m = 4): m p / i = 0.02, 0.02, 0.04, 0.04 (already monotone).
    assert bh_adjust([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.02, 0.04, None, 0.04, 0.02])
    p = list(np.random.default_rng(3).uniform(0, 0.2, size=20))
    assert bh_adjust(p) == pytest.approx(list(false_discovery_control(p, method="bh")))
    assert bh_adjust([None, None]) == [None, None]


@pytest.mark.parametrize("specs, needle", [
    (("D14:7..21",), "exactly one window must end before day 0"),
    (("pre:-30..-1", "a:-5..-2", "D14:7..21"), "exactly one window must end before day 0.*found 2"),
    (("pre:-30..-1", "D14:7..21", "D30:21..45"), "overlap"),
    (("pre:-30..5",), "spans the MST day"),
    (("pre:-30..-1", "D14 7-21"), "NAME:FIRST..LAST"),
    (("pre:-30..-1", "D14:7..21@30"), "FIRST <= TARGET <= LAST"),
])
def test_bad_windows_are_config_errors(specs, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_windows(specs)


def test_default_windows():
    w = {x.name: x for x in cohort_params().windows}
    assert list(w) == ["pre", "D14", "D30", "M3", "M6"]
    assert w["pre"].baseline and w["pre"].target_day == -1 and not w["D14"].baseline
    assert (w["D14"].first_day, w["D14"].last_day, w["D14"].target_day) == (7, 21, 14)
    # Post windows leave no gap from day 7 on: every later sample up to M6 has a window.
    post = [x for x in w.values() if not x.baseline]
    assert all(b.first_day == a.last_day + 1 for a, b in zip(post, post[1:]))


def _connection(samples: list[tuple], chimerism: list[tuple], registry: list[tuple]):
    """A DuckDB connection holding the linked views the cohort views read.

    samples: (sample_id, patient_id, day since the patient's cycle-1 MST, cd3, review, specimen, role)
    chimerism: (sample_id, method, donor_id, donor_pct, lod_pct, detected, review)
    registry: (patient_id, cycle, days of this cycle's MST after MST)
    """
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE patients_latest (patient_id VARCHAR, cycle INTEGER, mst_date DATE)")
    con.executemany("INSERT INTO patients_latest VALUES (?, ?, ?)",
                    [(p, c, MST + dt.timedelta(days=d)) for p, c, d in registry])
    con.execute("CREATE TABLE sample_timepoints (sample_id VARCHAR, patient_id VARCHAR, collection_date DATE, "
                "specimen VARCHAR, cell_fraction VARCHAR, role VARCHAR, control_of VARCHAR)")
    con.executemany("INSERT INTO sample_timepoints VALUES (?, ?, ?, ?, 'whole', ?, NULL)",
                    [(s, p, MST + dt.timedelta(days=d), spec, role) for s, p, d, _, _, spec, role in samples])
    cols = ", ".join(f"{c} DOUBLE" for c in IMMUNE_PARAMETERS)
    con.execute(f"CREATE TABLE immune_timeline (sample_id VARCHAR, review BOOLEAN, {cols})")
    others = ", ".join("NULL" for _ in IMMUNE_PARAMETERS[1:])
    con.executemany(f"INSERT INTO immune_timeline VALUES (?, ?, ?, {others})",
                    [(s, review, cd3) for s, _, _, cd3, review, _, _ in samples])
    con.execute("CREATE TABLE chimerism_timeline (sample_id VARCHAR, method VARCHAR, cell_fraction VARCHAR, "
                "donor_id VARCHAR, donor_pct DOUBLE, lod_pct DOUBLE, detected BOOLEAN, review BOOLEAN)")
    if chimerism:
        con.executemany("INSERT INTO chimerism_timeline VALUES (?, ?, 'whole', ?, ?, ?, ?, ?)", chimerism)
    create_cohort_views(con)
    return con


def _rows(con, sql):
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_cohort_immune_windows_pairs_and_exclusions():
    rng = np.random.default_rng(2025)
    pre = rng.uniform(40, 60, size=7)
    d30 = pre + rng.normal(12, 3, size=7)  # built-in effect: CD3 up after MST
    samples = []
    for i in range(7):
        p = f"P{i}"
        samples += [(f"{p}-OLD", p, -40, 10.0, False, "PB", "recipient_pre"),  # older pre: not the last
                    (f"{p}-PRE", p, -5, pre[i], False, "PB", "recipient_pre"),
                    (f"{p}-D03", p, 3, 99.0, False, "PB", "post"),             # days 0-6: no window
                    (f"{p}-D33", p, 33, d30[i] + 50, False, "PB", "post"),     # farther from day 30
                    (f"{p}-D29", p, 29, d30[i], False, "PB", "post"),
                    (f"{p}-BM", p, 30, 1.0, False, "BM", "post"),              # marrow: not compared
                    (f"{p}-DON", p, -5, 1.0, False, "PB", "donor")]
    samples += [("P0-D14", "P0", 14, 70.0, True, "PB", "post"),   # flagged: left out, counted
                ("P1-D31", "P1", 31, 5.0, True, "PB", "post")]
    con = _connection(samples, [], [(f"P{i}", 1, 0) for i in range(7)])
    assert {r["window"] for r in _rows(con, "SELECT * FROM cohort_sample_windows WHERE sample_id LIKE '%-D03' "
                                            "OR sample_id LIKE '%-BM' OR sample_id LIKE '%-DON'")} == set()
    rows = {(r["parameter"], r["window"]): r for r in _rows(con, "SELECT * FROM cohort_immune")}
    base = rows[("cd3_pct_lymph", "pre")]
    assert base["n_patients"] == 7 and base["median"] == pytest.approx(np.median(pre))
    assert base["wilcoxon_p"] is None and base["n_extra_samples"] == 7  # the -40 day samples
    r = rows[("cd3_pct_lymph", "D30")]
    assert r["n_patients"] == r["n_paired"] == 7
    assert r["median"] == pytest.approx(np.median(d30))
    assert (r["q1"], r["q3"]) == pytest.approx(tuple(np.percentile(d30, [25, 75])))
    assert r["baseline_median"] == pytest.approx(np.median(pre))
    assert r["paired_diff_median"] == pytest.approx(np.median(d30 - pre))
    assert r["wilcoxon_p"] == pytest.approx(wilcoxon(d30 - pre).pvalue) and r["wilcoxon_p"] < 0.05
    assert r["n_excluded_review"] == 1 and r["n_extra_samples"] == 7
    d14 = rows[("cd3_pct_lymph", "D14")]  # its one sample is flagged: no value, counted
    assert (d14["n_patients"], d14["n_excluded_review"], d14["median"]) == (0, 1, None)
    # Only D30 is tested: its BH-adjusted p is its own p (a family of one).
    assert r["p_bh"] == pytest.approx(r["wilcoxon_p"])
    cd4 = rows[("cd4_pct_lymph", "D30")]  # NULL in every sample
    assert cd4["n_patients"] == 0 and cd4["wilcoxon_p"] is None and "no value" in cd4["note"]


def test_cohort_immune_too_few_pairs_and_bh_over_the_view():
    samples = []
    for i in range(6):
        p = f"P{i}"
        samples += [(f"{p}-PRE", p, -3, 50.0 + i, False, "PB", "recipient_pre"),
                    (f"{p}-D14", p, 14, 60.0 + 2 * i, False, "PB", "post"),
                    (f"{p}-M3", p, 90, 50.0 + i + (0.5 if i % 2 else -0.7) * i, False, "PB", "post")]
    samples += [("P0-M6", "P0", 180, 80.0, False, "PB", "post")]
    con = _connection(samples, [], [(f"P{i}", 1, 0) for i in range(6)])
    rows = {r["window"]: r for r in _rows(con, "SELECT * FROM cohort_immune WHERE parameter = 'cd3_pct_lymph'")}
    assert rows["M6"]["wilcoxon_p"] is None and "1 patient(s)" in rows["M6"]["note"]
    ps = [rows["D14"]["wilcoxon_p"], rows["M3"]["wilcoxon_p"]]
    assert ps[0] == pytest.approx(wilcoxon([10.0 + i for i in range(6)]).pvalue)
    assert [rows["D14"]["p_bh"], rows["M3"]["p_bh"]] == pytest.approx(list(false_discovery_control(ps)))


def test_cycles_windows_relative_to_each_mst():
    # Cycle 2 at day 60: the day-30 and day-50 samples are cycle 1's D30 and M3, never
    # cycle 2's baseline; that is the last earlier sample outside a post window (day 3).
    samples = [("A-PRE", "A", -2, 40.0, False, "PB", "recipient_pre"),
               ("A-D03", "A", 3, 45.0, False, "PB", "post"),
               ("A-D30", "A", 30, 50.0, False, "PB", "post"),
               ("A-D50", "A", 50, 55.0, False, "PB", "post"),
               ("A-C2D14", "A", 74, 60.0, False, "PB", "post")]
    con = _connection(samples, [], [("A", 1, 0), ("A", 2, 60)])
    got = {r["sample_id"]: (r["cycle"], r["window"], r["day_in_cycle"])
           for r in _rows(con, "SELECT * FROM cohort_sample_windows")}
    assert got == {"A-PRE": (1, "pre", -2), "A-D03": (2, "pre", -57), "A-D30": (1, "D30", 30),
                   "A-D50": (1, "M3", 50), "A-C2D14": (2, "D14", 14)}


def test_cohort_chimerism_detection_table():
    samples = [(f"P{i}-PRE", f"P{i}", -3, 50.0, False, "PB", "recipient_pre") for i in range(4)]
    samples += [(f"P{i}-D30", f"P{i}", 30, 50.0, False, "PB", "post") for i in range(4)]
    chim = [("P0-D30", "qpcr", "DN1", 0.5, 0.01, True, False),
            ("P1-D30", "qpcr", "DN1", 0.2, 0.02, True, False),
            ("P1-D30", "qpcr", "DN2", 0.1, 0.03, False, False),      # second donor: summed per sample
            ("P2-D30", "qpcr", "DN1", 0.004, 0.01, False, False),
            ("P3-D30", "qpcr", "DN1", 3.0, 0.01, True, True)]        # flagged: left out, counted
    con = _connection(samples, chim, [(f"P{i}", 1, 0) for i in range(4)])
    (r,) = _rows(con, "SELECT * FROM cohort_chimerism")
    assert (r["window"], r["method"], r["n_samples"], r["n_detected"], r["n_excluded_review"]) == ("D30", "qpcr", 3, 2, 1)
    assert r["detection_rate"] == pytest.approx(2 / 3)
    assert r["median_donor_pct"] == pytest.approx(np.median([0.5, 0.3, 0.004]))
    assert r["median_lod_pct"] == pytest.approx(np.median([0.01, 0.03, 0.01]))
