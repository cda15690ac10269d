"""Run configuration: embedded defaults, optionally overridden by a TOML file (``--config``).

Every setting is declared once below with its default and meaning (:func:`_setting`);
docs/configuration.md is generated from these declarations and a test keeps it equal.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from assays.errors import ConfigError
from storage.cohort import DEFAULT_MIN_PAIRS, DEFAULT_SPECIMENS, DEFAULT_WINDOWS

DEFAULT_REFERENCE_GENES = ("RPP30", "RNaseP", "ALB", "GAPDH", "HBB", "ACTB", "TERT", "B2M", "CCR5")


def _setting(default, help: str):
    """A setting with its default and its meaning (docs/configuration.md is made from these)."""
    if isinstance(default, (list, dict)):
        raise TypeError("settings are immutable values")
    return field(default=default, metadata={"help": help})


@dataclass
class ChimerismSettings:
    reference_genes: tuple[str, ...] = _setting(
        DEFAULT_REFERENCE_GENES, "qPCR/ddPCR targets that are the reference gene (every other target is a "
        "donor/recipient chimerism marker); names compared case- and punctuation-blind")
    str_lod_pct: float = _setting(1.0, "STR limit of detection, % donor: a donor share below it is reported "
                                       "as not detected")
    qpcr_lod_pct: float = _setting(0.0, "floor (% donor) the lab sets under the qPCR LOD read off each plate's "
                                        "dilution series, and the LOD of a plate without one; 0 = no floor, "
                                        "the plate decides (detection itself always comes from the plate's "
                                        "blank wells)")


@dataclass
class InboxSettings:
    stable_seconds: float = _setting(
        10.0, "without file events (network shares, files present at start) a file is read once its size and "
              "mtime have not changed this long (copies over SMB/NFS stall for seconds); files written on this "
              "machine are read right after their writer closes them")
    truncated_recheck_seconds: float = _setting(
        2.0, "a file that reads as cut off is looked at again after this long before it is quarantined; if it "
             "changed meanwhile, a writer was still at it and it goes back to the inbox")
    chunk_files: int = _setting(100, "files committed together (smaller: less work redone after a crash)")
    chunk_mb: float = _setting(2048.0, "and at most about this many MB of files per commit")
    poll_seconds: float = _setting(1.0, "the watcher rescans the inbox this often (network shares send no "
                                        "file events)")


PICTURE_POLICIES = ("all", "review", "none")


@dataclass
class FlowSettings:
    # ~0.5-1 s per 1M-event file, as much as gating itself: flagged samples need one now,
    # for sign-off; the rest are drawn by `graftwatch report` when someone looks.
    gating_pictures: str = _setting(
        "review", "which samples get their gating picture (PNG beside the store) during the run: \"all\", "
                  "\"review\" (only samples flagged for review) or \"none\" (or true / false); "
                  "`graftwatch report` draws any missing picture on demand")


@dataclass
class PrefectSettings:
    port: int = _setting(4200, "port of the local Prefect server (and UI, http://127.0.0.1:PORT) that "
                               "`watch` and `serve` start when PREFECT_API_URL is not set; a one-shot `run` "
                               "needs no server")
    start_timeout_seconds: float = _setting(120.0, "how long that server may take to answer before the "
                                                   "command gives up with exit 2")


@dataclass
class CohortSettings:
    windows: tuple[str, ...] = _setting(
        DEFAULT_WINDOWS, "windows of `graftwatch cohort` and the views cohort_immune / cohort_chimerism, as "
        "\"NAME:FIRST..LAST[@TARGET]\" in days after each cycle's MST date (inclusive): the one window ending "
        "before day 0 is the baseline (its latest sample is used); in a window after MST the sample nearest "
        "TARGET (default: the middle day) is used, one per patient. Windows may not overlap: a sample belongs "
        "to at most one window")
    min_pairs: int = _setting(DEFAULT_MIN_PAIRS, "patients with both a baseline and a value a window needs "
                                                 "before its Wilcoxon signed-rank test is run (fewer: p is empty, "
                                                 "with the reason)")
    specimens: tuple[str, ...] = _setting(DEFAULT_SPECIMENS, "specimens (sample sheet `specimen`) the cohort "
                                                             "compares; a blank specimen counts as blood (PB)")


@dataclass
class PrivacySettings:
    show_patient_ids: bool = _setting(False, "name files and samples (which can carry patient identifiers) "
                                             "in logs and Prefect artifacts")


SECTIONS = {"chimerism": ChimerismSettings, "inbox": InboxSettings, "privacy": PrivacySettings,
            "flow": FlowSettings, "prefect": PrefectSettings, "cohort": CohortSettings}


@dataclass
class Config:
    chimerism: ChimerismSettings = field(default_factory=ChimerismSettings)
    inbox: InboxSettings = field(default_factory=InboxSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    flow: FlowSettings = field(default_factory=FlowSettings)
    prefect: PrefectSettings = field(default_factory=PrefectSettings)
    cohort: CohortSettings = field(default_factory=CohortSettings)
    panel: str | None = None  # path of a panel TOML replacing the built-in T-cell panel


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def configuration_reference() -> str:
    """docs/configuration.md: every setting with its default and meaning, from the dataclasses
    above (``python -m flows.config > docs/configuration.md``; a test keeps the two equal)."""
    lines = ["# Configuration", "",
             "Every setting of the `--config FILE.toml` that `graftwatch run`, `watch` and `serve` take, with",
             "its default (used when the file does not set it, or when no file is given) and its meaning.",
             "This page is generated from `flows/config.py` (`python -m flows.config > docs/configuration.md`);",
             "a test fails when the two differ. Unknown sections or keys are a configuration error (exit 2).", "",
             "A top-level `panel = \"my_panel.toml\"` (relative to the config file) replaces the built-in",
             "T-cell panel's marker aliases and thresholds.", ""]
    for name, cls in SECTIONS.items():
        lines += [f"## [{name}]", "", "| setting | default | meaning |", "|---|---|---|"]
        for f in fields(cls):
            lines.append(f"| `{f.name}` | `{_toml(f.default)}` | {f.metadata.get('help', '')} |")
        lines.append("")
    lines += ["## Example", "", "```toml"]
    for name, cls in SECTIONS.items():
        lines.append(f"[{name}]")
        lines += [f"{f.name} = {_toml(f.default)}" for f in fields(cls)]
        lines.append("")
    lines[-1] = "```"
    return "\n".join(lines) + "\n"


def _apply(section_obj, values: dict, section: str, source: str) -> None:
    known = {f.name: f for f in fields(section_obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown setting [{section}] {key} (known: {', '.join(known)})")
        current = getattr(section_obj, key)
        if isinstance(current, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: [{section}] {key} must be a list of names")
            value = tuple(value)
        elif key == "gating_pictures":
            value = {True: "all", False: "none"}.get(value, value) if isinstance(value, bool) else value
            if value not in PICTURE_POLICIES:
                raise ConfigError(f"{source}: [{section}] {key} must be one of "
                                  f"{', '.join(repr(p) for p in PICTURE_POLICIES)} (or true / false)")
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: [{section}] {key} must be true or false")
        elif isinstance(current, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{source}: [{section}] {key} must be a non-negative number")
            value = type(current)(value)
        setattr(section_obj, key, value)


_SECTIONS = tuple(SECTIONS)


def load_config(path: str | Path | None) -> Config:
    """The embedded defaults, updated from a TOML file when one is given."""
    config = Config()
    if path is None:
        return config
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    for key, value in data.items():
        if key == "panel":
            config.panel = str((path.parent / value).resolve())
        elif key in _SECTIONS and isinstance(value, dict):
            _apply(getattr(config, key), value, key, str(path))
        else:
            raise ConfigError(f"{path}: unknown section or key {key!r} (known: {', '.join(_SECTIONS)}, panel)")
    return config


if __name__ == "__main__":
    print(configuration_reference(), end="")
