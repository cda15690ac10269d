"""Chimerism through the real inbox flow: simulated exports with known donor % (issue 4).

Truth: simulators.str_sim / qpcr_sim / ddpcr_sim, seeds named below.
"""

from __future__ import annotations

import pytest

from simulators.ddpcr_sim import write_ddpcr_case
from simulators.qpcr_sim import write_qpcr_case
from simulators.sheets import write_registry, write_sample_sheet
from simulators.str_sim import write_str_case
from conftest import query, run_pipeline


def test_str_qpcr_ddpcr_on_the_timeline(tmp_path):
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    str_case = write_str_case(inbox, seed=7, donor_pcts=(40.0, 10.0), patient_id="P01")
    q_case = write_qpcr_case(inbox, seed=8, donor_pcts=(1.0, 0.1), patient_id="P02")
    d_case = write_ddpcr_case(inbox, seed=9, donor_pcts=(1.0, 0.1), patient_id="P02")
    # Data first, sheet later: chimerism appears once the roles are known.
    s1 = run_pipeline(inbox, store)
    assert s1.stored == 3 and s1.chimerism_results == 0
    write_sample_sheet(inbox / "sheet.csv", str_case.sheet + q_case.sheet)
    write_registry(inbox / "registry.csv", str_case.registry + q_case.registry)
    s2 = run_pipeline(inbox, store)
    assert s2.stored == 2 and s2.chimerism_results > 0
    rows = query(store, """SELECT sample_id, method, donor_pct, detected, days_post_mst, cycle
                           FROM chimerism_timeline ORDER BY sample_id, method""")
    by_key = {(r[0], r[1]): r for r in rows}
    for post in str_case.posts:
        (truth,) = post.donor_pct.values()
        r = by_key[(post.sample_id, "str")]
        assert r[2] == pytest.approx(truth, abs=2.0)
        assert r[4] == (post.collection_date - str_case.registry[0].mst_date).days
        assert r[5] == 1
    for post in q_case.posts:
        (truth,) = post.donor_pct.values()
        for method in ("qpcr", "ddpcr"):
            r = by_key[(post.sample_id, method)]
            assert r[3] is True
            assert truth / 1.5 <= r[2] <= truth * 1.5, (method, truth, r[2])
    # A re-run with nothing new adds no chimerism rows.
    n = query(store, "SELECT count(*) FROM chimerism")[0][0]
    write_sample_sheet(inbox / "sheet_again.csv", str_case.sheet)  # new bytes, same content
    run_pipeline(inbox, store)
    assert query(store, "SELECT count(*) FROM chimerism")[0][0] == n
    stored_wells = {r[0] for r in query(store, "SELECT DISTINCT sample_id FROM ddpcr_wells")}
    assert {d_case.case.recipient_sample, *d_case.case.donor_samples.values(),
            *(p.sample_id for p in d_case.posts)} <= stored_wells


def test_a_later_plate_does_not_recalibrate_earlier_samples(tmp_path):
    """Plates are quantified on their own standards (seeds 21 and 22)."""
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    first = write_qpcr_case(inbox, seed=21, donor_pcts=(2.0, 0.2), patient_id="P05")
    write_sample_sheet(inbox / "sheet1.csv", first.sheet)
    write_registry(inbox / "registry1.csv", first.registry)
    run_pipeline(inbox, store)
    before = query(store, "SELECT sample_id, donor_pct, analysis_id FROM chimerism_timeline ORDER BY 1")
    assert len(before) == 2
    second = write_qpcr_case(inbox, seed=22, donor_pcts=(5.0,), patient_id="P06", ct_noise=0.3)
    write_sample_sheet(inbox / "sheet2.csv", second.sheet)
    write_registry(inbox / "registry2.csv", second.registry)
    run_pipeline(inbox, store)
    after = query(store, "SELECT sample_id, donor_pct, analysis_id FROM chimerism_timeline ORDER BY 1")
    assert [r for r in after if r[0].startswith("P05")] == before
    assert any(r[0].startswith("P06") for r in after)


def _stored_ids(store):
    samples = {r[0] for r in query(store, "SELECT sample_id FROM samples")}
    unlinked = {r[0] for r in query(store, "SELECT sample_id FROM unlinked_samples")}
    return samples, unlinked


def test_controls_are_no_samples_but_still_calibrate(tmp_path):
    """Issue 18: qPCR standards and NTCs, ddPCR NTCs are no rows of `samples`, never in
    `unlinked_samples`, not counted in the run summary; the plate's LoB (NTC, recipient
    wells) and dilution series still serve the quantification (seeds 31 and 32)."""
    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    q_case = write_qpcr_case(inbox, seed=31, donor_pcts=(1.0, 0.1), patient_id="P09", dilution_series=True)
    d_case = write_ddpcr_case(inbox, seed=32, donor_pcts=(1.0,), patient_id="P09")
    write_sample_sheet(inbox / "sheet.csv", q_case.sheet)
    write_registry(inbox / "registry.csv", q_case.registry)
    summary = run_pipeline(inbox, store)
    samples, unlinked = _stored_ids(store)
    patients = {r.sample_id for r in q_case.sheet}
    assert samples == patients and not unlinked
    on_ddpcr = {d_case.case.recipient_sample, *d_case.case.donor_samples.values(), *(p.sample_id for p in d_case.posts)}
    assert summary.samples == len(patients) + len(on_ddpcr)  # patient samples per plate, no control
    wells = {r[0] for r in query(store, "SELECT DISTINCT sample_id FROM qpcr_wells")}
    assert {"NTC"} | {w for w in wells if w.startswith("STD")} <= wells - samples and len(wells - samples) > 1
    assert "NTC" in {r[0] for r in query(store, "SELECT DISTINCT sample_id FROM ddpcr_wells")}
    rows = query(store, f"SELECT method, detected, lod_pct FROM chimerism_timeline WHERE sample_id = '{q_case.posts[0].sample_id}'")
    assert {r[0] for r in rows} == {"qpcr", "ddpcr"} and all(r[1] and r[2] is not None for r in rows)
    assert d_case.posts[0].sample_id == q_case.posts[0].sample_id


@pytest.mark.reference
def test_controls_of_real_exports_are_no_samples(tmp_path, shared_data):
    """Real exports (shared data): QuantStudio NTC/standard/NAC/(+)/(-) wells, the QX NTC and
    the GeneMapper ladders and positive controls never become samples or unlinked samples."""
    from assays.records import is_control_record

    inbox, store = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    files = [shared_data / "qpcr" / "quantstudio_classic" / f"appbio_quantstudio_example0{i}.txt" for i in (2, 4, 5, 7)]
    files += [shared_data / "qpcr" / "quantstudio_classic" / "example_quantsudio_results_only.txt",
              shared_data / "ddpcr" / "ddpcr_daattali_QXManager_SMN2v2_20220630.csv",
              shared_data / "str" / "genemapper_idx_wide_set3.txt"]
    for f in files:
        (inbox / f.name).write_bytes(f.read_bytes())
    summary = run_pipeline(inbox, store)
    assert summary.stored == len(files) and not summary.quarantined
    samples, unlinked = _stored_ids(store)
    controls = set()
    for table in ("qpcr_wells", "ddpcr_wells", "str_peaks"):
        controls |= {r[0] for r in query(store, f"SELECT DISTINCT sample_id FROM {table}")} - samples
    assert {"NTC", "NAC", "(+)", "(-)", "16-Ladder__", "01-Pos.ktr.__", "Standard 1 (1e8)"} <= controls
    assert not controls & (samples | unlinked) and unlinked == samples  # no sheet: every patient sample unlinked
    assert summary.samples == len(samples) and not any(is_control_record(type("R", (), {"sample_id": s})) for s in samples)
