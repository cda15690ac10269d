"""Configuration errors (exit 2 with one line) and the privacy of run artifacts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from assays.errors import ConfigError
from flows.artifacts import summary_markdown
from flows.config import load_config
from flows.batch import QuarantinedFile, RunSummary


def test_config_defaults_and_overrides(tmp_path):
    assert load_config(None).chimerism.qpcr_lod_pct == 0.0  # no floor: the plate decides
    f = tmp_path / "g.toml"
    f.write_text('[chimerism]\nreference_genes = ["ALB"]\nstr_lod_pct = 2\nqpcr_lod_pct = 0.05\n'
                 '[flow]\ngating_pictures = false\n')
    c = load_config(f)
    assert c.chimerism.reference_genes == ("ALB",) and c.chimerism.str_lod_pct == 2.0
    assert c.chimerism.qpcr_lod_pct == 0.05
    assert c.flow.gating_pictures == "none"
    assert load_config(None).flow.gating_pictures == "review"


@pytest.mark.parametrize("text,needle", [
    ("[chimerism]\nlod = 1\n", "unknown setting"),
    ("[chimerism]\nstr_lod_pct = 'high'\n", "non-negative number"),
    ("[chimerism]\nqpcr_lod_pct = 'low'\n", "non-negative number"),
    ("[nonsense]\nx = 1\n", "unknown section"),
    ("[chimerism\n", "not valid TOML"),
    ("[flow]\ngating_pictures = 'some'\n", "must be one of 'all', 'review', 'none'"),
])
def test_bad_config_is_a_config_error(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(f)


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "x.csv").write_text("a,b\n")
    f = tmp_path / "bad.toml"
    f.write_text("[inbox]\nstable_seconds = -1\n")
    r = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--inbox", str(tmp_path / "inbox"),
                        "--store", str(tmp_path / "s"), "--config", str(f)], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "stable_seconds" in r.stderr
    assert (tmp_path / "inbox" / "x.csv").exists()


def test_artifact_hides_names_unless_configured():
    s = RunSummary(stored=2, quarantined=[QuarantinedFile("P07-secret.fcs", "Expected X; found Y.")],
                   flagged_samples=["P07-D030"])
    hidden = summary_markdown(s, show_names=False)
    assert "P07" not in hidden and "file 1" in hidden and "Expected X" in hidden
    shown = summary_markdown(s, show_names=True)
    assert "P07-secret.fcs" in shown and "P07-D030" in shown


def test_work_units_and_chunks_pack_by_size(tmp_path):
    from flows.inbox import InboxFile
    from flows.batch import pack, work_units

    files = []
    for i, n in enumerate([10, 10, 10, 10, 1000, 10, 10, 10]):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x" * n)
        files.append(InboxFile(p, p.name))
    units = work_units(files, workers=2)  # target = 1070 // 4 = 267 bytes
    assert [len(u) for u in units] == [4, 1, 3]
    assert [f for u in units for f in u] == files  # order kept, nothing lost
    assert [len(c) for c in pack(files, max_files=3, max_bytes=10**9)] == [3, 3, 2]


def test_progress_artifact_only_for_long_runs(prefect_server):
    """RunProgress inside a real flow run (a real Prefect server): a run past the
    delay gets one progress artifact ending at 100 %; a short one gets none."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.artifacts import RunProgress

    @flow(name="progress-check")
    def run(after: float):
        p = RunProgress(total=4, after=after, every=0.0)
        for done in range(1, 5):
            p.update(done)
        return p.artifact_id

    assert run(3600.0) is None
    artifact_id = run(0.0)
    assert artifact_id is not None
    with get_client(sync_client=True) as client:
        artifact = client.read_artifacts()
    mine = [a for a in artifact if a.id == artifact_id]
    assert len(mine) == 1 and mine[0].type == "progress" and float(mine[0].data) == 100.0


def test_configuration_page_is_the_code(tmp_path):
    """docs/configuration.md lists every setting with its default and meaning, as flows/config.py
    declares them; its example file parses to exactly the defaults."""
    import tomllib
    from dataclasses import fields

    from flows.config import SECTIONS, Config, configuration_reference, load_config

    from ops_helpers import REPO

    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == configuration_reference(), "regenerate: python -m flows.config > docs/configuration.md"
    for name, cls in SECTIONS.items():
        for f in fields(cls):
            assert f.metadata.get("help"), f"[{name}] {f.name} has no meaning in flows/config.py"
            assert f"`{f.name}`" in page
    example = page.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg_file = tmp_path / "example.toml"
    cfg_file.write_text(example, encoding="utf-8")
    assert load_config(cfg_file) == Config()
    assert tomllib.loads(example)["prefect"]["port"] == 4200
