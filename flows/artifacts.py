"""Prefect artifacts: a markdown summary of each run, visible in the Prefect UI.

Patient identifiers stay out unless ``[privacy] show_patient_ids`` is set: files are
then named, otherwise only counts and reasons are shown.
"""

from __future__ import annotations

import logging

log = logging.getLogger("graftwatch")


def summary_markdown(summary, show_names: bool) -> str:
    lines = [
        "# graftwatch inbox run",
        "",
        "| files | stored | duplicates | quarantined | samples | flagged for review | chimerism results |",
        "|---|---|---|---|---|---|---|",
        f"| {summary.files} | {summary.stored} | {summary.duplicates} | {len(summary.quarantined)} | "
        f"{summary.samples} | {len(summary.flagged_samples)} | {summary.chimerism_results} |",
    ]
    if summary.flagged_samples:
        lines += ["", "## Flagged for review (a QC check failed)", ""]
        if show_names:
            lines += [f"- {sid}: gating pictures in `gating_plots/{sid}/` beside the store" for sid in summary.flagged_samples]
        else:
            lines.append(f"- {len(summary.flagged_samples)} sample(s); see `flow_qc` where passed = false")
    if summary.quarantined:
        lines += ["", "## Quarantined", ""]
        for i, q in enumerate(summary.quarantined, 1):
            name = q.name if show_names else f"file {i}"
            lines.append(f"- **{name}**: {q.reason.splitlines()[0][:300]}")
    return "\n".join(lines)


def publish_run_summary(summary, config) -> None:
    """Attach the run summary to the current flow run (no-op outside one)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            key="inbox-run-summary",
            markdown=summary_markdown(summary, config.privacy.show_patient_ids),
            description="Files stored, duplicates and quarantined in this run",
        )
    except Exception as exc:  # an artifact is a convenience; never fail a run over it
        log.debug("artifact not published: %s", exc)
