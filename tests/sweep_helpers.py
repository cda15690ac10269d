"""Shared tally of the chimerism seed-sweep tests (CI coverage and detection per true donor %)."""

from __future__ import annotations


def tally(results, posts, covered: dict, detected: dict) -> None:
    """Add one simulated plate to ``covered`` / ``detected`` (counts keyed by true donor %).

    ``posts``: the simulator's post samples (``donor_pct`` = {donor: truth}); every result
    must carry a number and an interval.
    """
    by_sample = {r.sample_id: r for r in results}
    for post in posts:
        (truth,) = post.donor_pct.values()
        r = by_sample[post.sample_id]
        assert r.donor_pct is not None and r.ci_low is not None and r.ci_high is not None, r
        covered[truth] += r.ci_low <= truth <= r.ci_high
        detected[truth] += bool(r.detected)
