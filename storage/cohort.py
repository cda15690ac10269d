"""Cohort views: each immune parameter and donor chimerism by window after MST (issue 17).

The MST immune-reconstitution question (Front. Immunol. 2025, doi 10.3389/fimmu.2025.1509588):
across patients, is CD3+ (CD4+CD8-, the CD4:CD8 ratio, Th0 ...) after MST different from the
same patients' pre-MST baseline, and how often is donor microchimerism detected?

Windows (relative to each cycle's MST date, ``day = collection_date - mst_date``):

* the **baseline** window (default ``pre``: days -90 to -1) holds the samples before a
  cycle's MST (and on or after the previous cycle's MST); its value is the **last** one;
* the **post** windows (default D14: days 7-21, D30: 22-45, M3: 46-135, M6: 136-240, without
  gaps from day 7 on) hold the samples of a cycle (on or after its MST, before the next one);
  per patient the sample nearest the window's target day is used (14, 30, 90, 180; ties:
  the earlier sample). Days 0-6 are in no window (too early to read an effect).
* A sample belongs to at most one window: post windows do not overlap, and a sample inside
  a post window of one cycle is never the next cycle's baseline (the next cycle then takes
  the last earlier sample, or has no baseline). Configured in ``[cohort]`` of the config
  (docs/configuration.md).

Exclusions (counted in the views): samples flagged for review (``review`` of
``immune_timeline`` / ``chimerism_timeline``), donor reference samples and unstimulated
control tubes, specimens other than the configured ones (default blood, ``PB``; a blank
specimen counts as blood), and NULL values (a parameter the panel or the data cannot support).

Views (of every :func:`storage.views.connect`, created when a statement first names them):

* ``cohort_windows``          the window definitions in force;
* ``cohort_sample_windows``   sample -> (patient, cycle, window, day in cycle);
* ``cohort_immune_samples``   per patient x cycle x window x parameter the value used and
  the same patient's baseline value (the page draws its paired lines from it);
* ``cohort_immune``           parameter x window x cycle: n_patients, median, q1, q3, and
  against the baseline: n_paired, baseline_median, paired_diff_median, wilcoxon_p, p_bh
  (Benjamini-Hochberg over every p of the view), note (why a p is NULL), exclusion counts;
* ``cohort_chimerism``        window x cycle x method x cell_fraction: n_samples, n_detected,
  detection_rate, median_donor_pct, median_lod_pct, n_excluded_review.

The tests are scipy's (:func:`wilcoxon_p`, :func:`bh_adjust`), called from SQL as the
scalar functions ``cohort_wilcoxon_p`` and ``cohort_bh_adjust``: DuckDB evaluates a view when
it is read, so scipy is imported only by a query that reads ``cohort_immune``, never by
a plain ``connect`` (importing scipy.stats costs 1-10 s here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from assays.errors import ConfigError

# Flow parameters of immune_timeline compared in the cohort (its column names).
IMMUNE_PARAMETERS = (
    "cd3_pct_lymph", "cd4_pct_lymph", "cd8_pct_lymph", "cd4_cd8_ratio",
    "th1_pct_cd4", "th2_pct_cd4", "th0_pct_cd4", "th17_pct_cd4", "treg_pct_cd4",
)

DEFAULT_WINDOWS = ("pre:-90..-1", "D14:7..21@14", "D30:22..45@30", "M3:46..135@90", "M6:136..240@180")
DEFAULT_MIN_PAIRS = 5
DEFAULT_SPECIMENS = ("PB",)

_WINDOW_RE = re.compile(r"^\s*([A-Za-z][\w-]*)\s*:\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*(?:@\s*(-?\d+))?\s*$")


@dataclass(frozen=True)
class Window:
    """Days ``first_day..last_day`` (inclusive) after a cycle's MST date.

    ``last_day < 0``: the baseline window (its latest sample is used); otherwise a post
    window (the sample nearest ``target_day`` is used).
    """

    name: str
    first_day: int
    last_day: int
    target_day: int

    @property
    def baseline(self) -> bool:
        return self.last_day < 0


@dataclass(frozen=True)
class CohortParams:
    """What the cohort views need from ``[cohort]`` of the config, parsed and checked."""

    windows: tuple[Window, ...]
    min_pairs: int = DEFAULT_MIN_PAIRS
    specimens: tuple[str, ...] = DEFAULT_SPECIMENS

    @property
    def baseline(self) -> Window:
        return next(w for w in self.windows if w.baseline)


def parse_windows(specs: Sequence[str]) -> tuple[Window, ...]:
    """``"NAME:FIRST..LAST[@TARGET]"`` strings -> windows, checked; ConfigError otherwise.

    Exactly one window ends before day 0 (the baseline); every other starts on or after
    day 0; windows do not overlap; names are unique; a target (default: the middle day)
    lies inside its window.
    """
    windows = []
    for spec in specs:
        m = _WINDOW_RE.match(spec)
        if not m:
            raise ConfigError(f"[cohort] windows: {spec!r} is not NAME:FIRST..LAST[@TARGET] "
                              "(e.g. \"D14:7..21@14\": days 7 to 21 after MST, nearest to day 14)")
        name, first, last = m.group(1), int(m.group(2)), int(m.group(3))
        default_target = last if last < 0 else (first + last) // 2  # baseline: the latest sample
        target = int(m.group(4)) if m.group(4) is not None else default_target
        if first > last or not first <= target <= last:
            raise ConfigError(f"[cohort] windows: {spec!r}: need FIRST <= TARGET <= LAST")
        if first < 0 <= last:
            raise ConfigError(f"[cohort] windows: {spec!r} spans the MST day: a window lies wholly "
                              "before day 0 (the baseline) or on/after it")
        windows.append(Window(name, first, last, target))
    names = [w.name for w in windows]
    if len(set(names)) != len(names):
        raise ConfigError(f"[cohort] windows: names repeat ({', '.join(names)})")
    if sum(w.baseline for w in windows) != 1:
        raise ConfigError("[cohort] windows: exactly one window must end before day 0 (the pre-MST "
                          f"baseline); found {sum(w.baseline for w in windows)}")
    ordered = sorted(windows, key=lambda w: w.first_day)
    for a, b in zip(ordered, ordered[1:]):
        if b.first_day <= a.last_day:
            raise ConfigError(f"[cohort] windows: {a.name} and {b.name} overlap (a sample belongs to "
                              "at most one window)")
    return tuple(ordered)


def cohort_params(windows: Sequence[str] = DEFAULT_WINDOWS, min_pairs: int = DEFAULT_MIN_PAIRS,
                  specimens: Sequence[str] = DEFAULT_SPECIMENS) -> CohortParams:
    """Checked :class:`CohortParams` from the config's plain values."""
    if int(min_pairs) < 1:
        raise ConfigError("[cohort] min_pairs must be at least 1")
    return CohortParams(parse_windows(windows), int(min_pairs), tuple(s.strip().upper() for s in specimens))


def wilcoxon_p(differences: Sequence[float | None] | None) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired differences ``d_i = x_i - baseline_i``.

    H0: the differences are symmetric about 0. Statistic (Wilcoxon 1945, Biometrics Bull.
    1:80-83): rank ``|d_i|`` over the non-zero differences (zeros dropped, ``zero_method=
    "wilcox"``; ties get mid-ranks), ``W+ = sum of ranks with d_i > 0``; p from the exact
    null distribution of W+ for small n without ties, else the normal approximation
    (``scipy.stats.wilcoxon``, ``method="auto"``). None when no non-zero difference remains
    (the test is undefined). NULLs in the input are ignored.

    Parameters
    ----------
    differences : sequence of float or None
        Paired differences of one parameter: a window's value minus the same patient's
        pre-MST baseline.

    Returns
    -------
    float or None
        The two-sided p value.
    """
    d = [float(x) for x in (differences or []) if x is not None]
    if not any(x != 0 for x in d):
        return None
    from scipy.stats import wilcoxon

    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def bh_adjust(p_values: Sequence[float | None] | None) -> list[float | None]:
    """Benjamini-Hochberg adjusted p values (false discovery rate), NULLs kept in place.

    With the m non-missing p values sorted ascending, ``p_(i)^BH = min_{j >= i} min(1,
    m p_(j) / j)`` (Benjamini & Hochberg 1995, J. R. Stat. Soc. B 57:289-300);
    ``scipy.stats.false_discovery_control(method="bh")``.

    Parameters
    ----------
    p_values : sequence of float or None
        The p values of one family of tests (e.g. every parameter x window).

    Returns
    -------
    list of float or None
        Adjusted p values in the input order; None where the input was None.

    Examples
    --------
    >>> [q if q is None else round(q, 3) for q in bh_adjust([0.01, None, 0.04, 0.03])]
    [0.03, None, 0.04, 0.04]
    """
    values = list(p_values or [])
    present = [i for i, p in enumerate(values) if p is not None]
    out: list[float | None] = [None] * len(values)
    if not present:
        return out
    from scipy.stats import false_discovery_control

    adjusted = false_discovery_control([float(values[i]) for i in present], method="bh")
    for i, q in zip(present, adjusted):
        out[i] = float(q)
    return out


def _bh_at(p_values, k):
    """The BH-adjusted p of the ``k``-th (1-based) entry: the SQL face of :func:`bh_adjust`."""
    if k is None or p_values is None or p_values[k - 1] is None:
        return None
    return bh_adjust(p_values)[k - 1]


def _windows_sql(params: CohortParams) -> str:
    rows = ", ".join(f"('{w.name}', {i}, {w.first_day}, {w.last_day}, {w.target_day}, {str(w.baseline).lower()})"
                     for i, w in enumerate(params.windows))
    return ("CREATE OR REPLACE TABLE cohort_windows AS SELECT * FROM (VALUES " + rows +
            ") AS t(\"window\", window_order, first_day, last_day, target_day, baseline)")


_VIEWS = """
-- Each cycle with its neighbours' MST dates: a cycle's samples lie in [mst_date, next_mst).
CREATE OR REPLACE VIEW cohort_cycles AS
SELECT patient_id, cycle, mst_date,
       lag(mst_date) OVER w AS prev_mst, lead(mst_date) OVER w AS next_mst
FROM patients_latest WINDOW w AS (PARTITION BY patient_id ORDER BY mst_date, cycle);

CREATE OR REPLACE VIEW cohort_sample_windows AS
WITH s AS (
  SELECT t.sample_id, t.patient_id, t.collection_date, c.cycle, c.mst_date, c.prev_mst, c.next_mst,
         CAST(t.collection_date - c.mst_date AS INTEGER) AS day_in_cycle
  FROM sample_timepoints t JOIN cohort_cycles c ON c.patient_id = t.patient_id
  WHERE t.collection_date IS NOT NULL AND t.control_of IS NULL AND coalesce(t.role, '') <> 'donor'
    AND (t.specimen IS NULL OR upper(trim(t.specimen)) IN ({specimens}))
), post AS (
  SELECT s.sample_id, s.patient_id, s.collection_date, s.cycle, w."window", w.window_order,
         s.day_in_cycle, w.target_day, false AS baseline
  FROM s JOIN cohort_windows w ON NOT w.baseline AND s.day_in_cycle BETWEEN w.first_day AND w.last_day
  WHERE s.collection_date >= s.mst_date AND (s.next_mst IS NULL OR s.collection_date < s.next_mst)
)
SELECT * FROM post
UNION ALL
SELECT s.sample_id, s.patient_id, s.collection_date, s.cycle, w."window", w.window_order,
       s.day_in_cycle, w.target_day, true
FROM s JOIN cohort_windows w ON w.baseline AND s.day_in_cycle BETWEEN w.first_day AND w.last_day
WHERE s.collection_date < s.mst_date AND (s.prev_mst IS NULL OR s.collection_date >= s.prev_mst)
  AND s.sample_id NOT IN (SELECT sample_id FROM post);

CREATE OR REPLACE VIEW cohort_immune_candidates AS
SELECT w.*, coalesce(i.review, false) AS review, {params}
FROM cohort_sample_windows w JOIN immune_timeline i USING (sample_id);

-- One sample per patient x cycle x window among those not flagged for review: the baseline
-- window's latest, a post window's nearest to its target day (ties: the earlier).
CREATE OR REPLACE VIEW cohort_immune_samples AS
WITH picked AS (
  SELECT * EXCLUDE (pick) FROM (
    SELECT *, row_number() OVER (PARTITION BY patient_id, cycle, "window" ORDER BY
             CASE WHEN baseline THEN -day_in_cycle ELSE abs(day_in_cycle - target_day) END,
             collection_date, sample_id) AS pick
    FROM cohort_immune_candidates WHERE NOT review) WHERE pick = 1
), long AS (
  UNPIVOT picked ON {params} INTO NAME parameter VALUE value
)
SELECT l.patient_id, l.cycle, l."window", l.window_order, l.baseline, l.sample_id, l.collection_date,
       l.day_in_cycle, l.parameter, l.value, b.sample_id AS baseline_sample_id, b.value AS baseline_value
FROM long l
LEFT JOIN long b ON b.baseline AND b.patient_id = l.patient_id AND b.cycle = l.cycle AND b.parameter = l.parameter;

CREATE OR REPLACE VIEW cohort_immune AS
WITH excl AS (
  SELECT cycle, "window", any_value(window_order) AS window_order, any_value(baseline) AS baseline,
         count(*) FILTER (WHERE review) AS n_excluded_review,
         count(*) FILTER (WHERE NOT review) - count(DISTINCT patient_id) FILTER (WHERE NOT review) AS n_extra_samples
  FROM cohort_immune_candidates GROUP BY cycle, "window"
), grid AS (
  -- Every parameter of every window holding a sample, so a window whose samples were all
  -- flagged still shows how many were left out.
  SELECT e.*, p.parameter FROM excl e, (SELECT unnest([{param_names}]) AS parameter) p
), agg AS (
  SELECT parameter, "window", cycle,
         count(*) AS n_patients, median(value) AS median,
         quantile_cont(value, 0.25) AS q1, quantile_cont(value, 0.75) AS q3,
         count(baseline_value) AS n_pairs,
         median(baseline_value) AS baseline_median,
         median(value - baseline_value) AS diff_median,
         list(value - baseline_value ORDER BY patient_id) FILTER (WHERE baseline_value IS NOT NULL) AS diffs
  FROM cohort_immune_samples GROUP BY parameter, "window", cycle
), tested AS (
  SELECT g.*, coalesce(a.n_patients, 0) AS n_patients, a.median, a.q1, a.q3, coalesce(a.n_pairs, 0) AS n_pairs,
         a.baseline_median, a.diff_median,
         CASE WHEN NOT g.baseline AND a.n_pairs >= {min_pairs} THEN cohort_wilcoxon_p(a.diffs) END AS p,
         row_number() OVER (ORDER BY g.cycle, g.window_order, g.parameter) AS k
  FROM grid g LEFT JOIN agg a USING (parameter, "window", cycle)
)
SELECT t.parameter, t."window", t.cycle, t.n_patients, t.median, t.q1, t.q3,
       CASE WHEN NOT t.baseline THEN t.n_pairs END AS n_paired,
       CASE WHEN NOT t.baseline THEN t.baseline_median END AS baseline_median,
       CASE WHEN NOT t.baseline THEN t.diff_median END AS paired_diff_median,
       t.p AS wilcoxon_p,
       cohort_bh_adjust(list(t.p) OVER (ORDER BY t.k ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
                        t.k) AS p_bh,
       CASE WHEN t.n_patients = 0 THEN 'no value: samples flagged for review, or the panel or data '
                 || 'cannot support this parameter'
            WHEN t.baseline THEN 'baseline (the last sample before MST)'
            WHEN t.n_pairs < {min_pairs} THEN 'no test: ' || t.n_pairs || ' patient(s) with both a baseline and a '
                 || 'value here, the Wilcoxon test is run from {min_pairs}'
            WHEN t.p IS NULL THEN 'no test: every paired difference is 0' END AS note,
       t.n_excluded_review, t.n_extra_samples, t.window_order
FROM tested t
ORDER BY t.cycle, t.window_order, list_position([{param_names}], t.parameter);

-- Per sample x method x cell fraction: the donors' summed share, detected when any donor is.
CREATE OR REPLACE VIEW cohort_chimerism_samples AS
SELECT w.patient_id, w.cycle, w."window", w.window_order, w.day_in_cycle, c.sample_id, c.method, c.cell_fraction,
       sum(c.donor_pct) AS donor_pct, bool_or(c.detected) AS detected, max(c.lod_pct) AS lod_pct,
       bool_or(coalesce(c.review, false)) AS review
FROM chimerism_timeline c JOIN cohort_sample_windows w USING (sample_id)
WHERE c.donor_id IS NOT NULL
GROUP BY ALL;

CREATE OR REPLACE VIEW cohort_chimerism AS
SELECT "window", cycle, method, cell_fraction,
       count(*) FILTER (WHERE NOT review) AS n_samples,
       count(*) FILTER (WHERE NOT review AND detected) AS n_detected,
       CAST(count(*) FILTER (WHERE NOT review AND detected) AS DOUBLE)
         / nullif(count(*) FILTER (WHERE NOT review), 0) AS detection_rate,
       median(donor_pct) FILTER (WHERE NOT review) AS median_donor_pct,
       median(lod_pct) FILTER (WHERE NOT review) AS median_lod_pct,
       count(*) FILTER (WHERE review) AS n_excluded_review,
       count(DISTINCT patient_id) FILTER (WHERE NOT review) AS n_patients,
       any_value(window_order) AS window_order
FROM cohort_chimerism_samples
GROUP BY "window", cycle, method, cell_fraction
ORDER BY cycle, window_order, method, cell_fraction;
"""


# The scalar functions the cohort views call (registered by :func:`register_functions`).
FUNCTIONS = ("cohort_wilcoxon_p", "cohort_bh_adjust")


def create_cohort_views(con, params: CohortParams | None = None) -> None:
    """Create (or replace, e.g. with configured windows) the cohort views on ``con``.

    ``con`` already has the views of :func:`storage.views.connect`.
    """
    register_functions(con)
    con.execute(cohort_sql(params))


def register_functions(con) -> None:
    """Register :data:`FUNCTIONS` on ``con`` (DuckDB's Python functions import numpy: ~0.15 s)."""
    import duckdb

    for name, fn, args in (("cohort_wilcoxon_p", wilcoxon_p, [duckdb.list_type("DOUBLE")]),
                           ("cohort_bh_adjust", _bh_at, [duckdb.list_type("DOUBLE"), "BIGINT"])):
        try:
            con.remove_function(name)
        except Exception:  # not registered yet on this connection
            pass
        con.create_function(name, fn, args, "DOUBLE", null_handling="special", side_effects=False)


def cohort_sql(params: CohortParams | None = None) -> str:
    """The SQL creating ``cohort_windows`` and the cohort views for ``params`` (default windows)."""
    params = params or cohort_params()
    specimens = ", ".join("'" + s.replace("'", "''") + "'" for s in params.specimens) or "NULL"
    return _windows_sql(params) + ";\n" + _VIEWS.format(
        specimens=specimens, params=", ".join(IMMUNE_PARAMETERS),
        param_names=", ".join(f"'{p}'" for p in IMMUNE_PARAMETERS), min_pairs=params.min_pairs)
