"""requirements.lock (what `make setup` installs) agrees with pyproject.toml (what the
project declares), and the environment the suite runs in is the locked one."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = _locked()
    problems = []
    for req in _declared():
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: declared in pyproject.toml, missing from requirements.lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}: locked {version}, outside pyproject.toml's {req.specifier}")
    assert not problems, "run `make lock` and commit requirements.lock:\n" + "\n".join(problems)


def test_known_breakage_pins_hold_in_the_lock():
    # DESIGN.md, Dependencies: prefect 3.8 needs fastapi < 0.151 and SQLAlchemy < 2.1; flowkit needs pandas < 3.
    pins = _locked()
    assert Requirement("fastapi<0.151").specifier.contains(pins["fastapi"])
    assert Requirement("sqlalchemy<2.1").specifier.contains(pins["sqlalchemy"])
    assert Requirement("pandas<3").specifier.contains(pins["pandas"])


def test_installed_environment_is_the_locked_one():
    pins = _locked()
    wrong = []
    for name in ("prefect", "flowkit", "fastapi", "sqlalchemy", "pandas", "numpy", "pyarrow", "duckdb", "scikit-learn"):
        installed = metadata.version(name)
        if installed != pins[canonicalize_name(name)]:
            wrong.append(f"{name}: installed {installed}, locked {pins[canonicalize_name(name)]}")
    assert not wrong, "the test environment drifted from requirements.lock (run `make setup`):\n" + "\n".join(wrong)


@pytest.mark.reference
def test_design_card_in_docs_is_the_shared_one(shared_data):
    """Code and docs cite DESIGN.md: docs/DESIGN.md is the project's copy of the shared design
    card (the contract), kept byte-equal to ../shared/DESIGN.md."""
    shared = shared_data.parent / "DESIGN.md"
    assert (REPO / "docs" / "DESIGN.md").read_bytes() == shared.read_bytes(), "copy ../shared/DESIGN.md to docs/"
