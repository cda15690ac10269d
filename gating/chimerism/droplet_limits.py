"""Limits of blank and detection of a ddPCR marker, on droplet counts.

CLSI EP17-A2 (LoB = the 95th percentile of blank results, LoD = the level detected with
95 % probability; Armbruster & Pry, Clin Biochem Rev 2008) applied to droplet counts,
whose false-positive droplets are Poisson (Milbury et al., Biomol Detect Quantif 2014);
a count of droplets becomes a donor fraction as in :func:`gating.chimerism.ddpcr.donor_fraction`.
Used per marker and per donor by the ddPCR driver (:mod:`gating.chimerism.ddpcr`).
"""

from __future__ import annotations

import math


def blank_rate(blank_positives: int, blank_droplets: int) -> float:
    """False-positive rate per droplet of the blank wells: r = x / N_b.

    ``x`` = marker-positive droplets pooled over the blank wells (the recipient's
    pre-transplant wells: no donor DNA), ``N_b`` = their accepted droplets. The point
    estimate, as CLSI EP17-A2 takes the LoB from the observed blank distribution; the
    minimum call count of :func:`lob_count` guards the case x = 0 (see there). 0 without
    blank droplets.

    Parameters
    ----------
    blank_positives : int
        Marker-positive droplets pooled over the blank wells.
    blank_droplets : int
        Their accepted droplets.

    Returns
    -------
    float
        False-positive droplets per droplet.
    """
    return blank_positives / blank_droplets if blank_droplets > 0 else 0.0


def lob_count(mu_blank: float, alpha: float = 0.05, min_call: int = 1) -> int:
    """Limit of blank in droplets: smallest k with P(Poisson(mu_b) <= k) >= 1 - alpha.

    CLSI EP17-A2 (LoB = the 95th percentile of blank results; Armbruster & Pry, Clin
    Biochem Rev 2008;29 Suppl 1:S49-52) applied to droplet counts, whose blank count
    in a sample of N_s droplets is Poisson(mu_b = r x N_s) (false-positive droplets
    modelled as Poisson, Milbury et al., Biomol Detect Quantif 2014;1:8-22). A result is
    *detected* when its marker-positive droplets exceed this k (EP17: measured > LoB),
    so at most ``alpha`` of blank samples are called detected.

    ``min_call`` (>= 1) is the fewest positive droplets that make a call: the LoB is at
    least ``min_call - 1``. It matters when the blanks show no false positive (x = 0,
    mu_b = 0, LoB 0): blank wells hold fewer droplets than a merged post sample (e.g. 4
    against 8 wells), so x = 0 often hides a rate that gives the post a stray droplet
    (simulated at 0.05 per well: 27 % of 0 % samples would be "detected" on one droplet).
    With ``min_call`` = 3, a clean blank keeps the old Poisson-floor rule (a call needs
    >= 3 droplets), false positives ~1 % at that rate. The one-sided 95 % upper bound of
    r (3 / N_b for x = 0) was not used: it makes the clean-blank LoB ~10 droplets and
    the LoD ~3.7x the Poisson floor (detection at 0.005 % donor ~17 %).

    Parameters
    ----------
    mu_blank : float
        Expected blank droplets in the sample, r x N_s (:func:`blank_rate`).
    alpha : float
        Share of blank samples allowed to be called detected.
    min_call : int
        Fewest positive droplets that make a call.

    Returns
    -------
    int
        The LoB in droplets: detected means more marker-positive droplets than this.
    """
    if not (mu_blank > 0) or not math.isfinite(mu_blank):
        k = 0
    else:
        from scipy import stats

        k = int(stats.poisson.ppf(1.0 - alpha, mu_blank))
        while k > 0 and stats.poisson.cdf(k - 1, mu_blank) >= 1.0 - alpha:  # ppf rounding guard
            k -= 1
    return max(k, int(min_call) - 1, 0)


def lod_count(lob: int, mu_blank: float, beta: float = 0.05) -> float:
    """Limit of detection in expected donor droplets: mu_d with P(Poisson(mu_b + mu_d) > LoB) = 1 - beta.

    CLSI EP17-A2: the LoD is the level detected (result > LoB) with probability
    1 - beta = 95 %. With P(Poisson(λ) <= k) = P(χ²(2k + 2) > 2λ), the total mean is
    λ = χ²_{1-beta}(2 LoB + 2) / 2 exactly, and mu_d = λ - mu_b. For LoB = 0 and a
    clean blank this is -ln 0.05 = 3.0 droplets, the Poisson floor of
    :func:`poisson_lod_fraction`; for LoB = 2 it is 6.3 droplets.

    Parameters
    ----------
    lob : int
        :func:`lob_count`.
    mu_blank : float
        Expected blank droplets in the sample.
    beta : float
        Share of samples at the LoD allowed to be missed.

    Returns
    -------
    float
        The LoD in expected donor (marker) droplets, mu_d >= 0.

    Examples
    --------
    >>> round(lod_count(0, 0.0), 2)
    3.0
    """
    from scipy import stats

    lam = float(stats.chi2.ppf(1.0 - beta, 2 * int(lob) + 2)) / 2.0
    return max(lam - max(mu_blank, 0.0), 0.0)


def droplets_to_fraction(droplets: float, total_droplets: int, lam_reference: float, factor: float = 2.0) -> float:
    """Donor fraction of ``droplets`` expected marker droplets among ``total_droplets``.

    Same conversion as :func:`gating.chimerism.ddpcr.donor_fraction` and :func:`poisson_lod_fraction`:
    (droplets / N_s) / λ_reference x factor, the marker λ being droplets / N_s when
    λ_marker << 1 (microchimerism, where the LoD lies).

    Parameters
    ----------
    droplets : float
        Expected marker droplets.
    total_droplets : int
        Accepted droplets of the sample, N_s.
    lam_reference : float
        λ of the reference gene.
    factor : float
        Reference copies per genome / marker copies per donor genome.

    Returns
    -------
    float
        Donor fraction (0..1); NaN without droplets or a usable reference λ.
    """
    if total_droplets <= 0 or not lam_reference or not math.isfinite(lam_reference):
        return math.nan
    return (droplets / total_droplets) / lam_reference * factor


def poisson_lod_fraction(total_droplets: int, lam_reference: float, factor: float = 2.0,
                         min_positives: float = 3.0) -> float:
    """Smallest donor fraction expected to give a positive droplet with 95 % probability.

    With ``min_positives`` = 3 expected marker copies, P(no copy) = e^-3 = 5 %; as a
    fraction: (3 / droplets) / λ_reference x factor. The count-based LoD of
    :func:`lod_count` with a clean blank and LoB = 0; kept as the LoD's floor.

    Parameters
    ----------
    total_droplets : int
        Accepted droplets of the sample.
    lam_reference : float
        λ of the reference gene.
    factor : float
        Reference copies per genome / marker copies per donor genome.
    min_positives : float
        Expected marker droplets at the limit (3: 95 % detection).

    Returns
    -------
    float
        Donor fraction (0..1) at the Poisson floor of the LoD.
    """
    return droplets_to_fraction(min_positives, total_droplets, lam_reference, factor)
