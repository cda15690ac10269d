"""Run configuration: embedded defaults, optionally overridden by a TOML file (``--config``).

Example ``graftwatch.toml``::

    [chimerism]
    reference_genes = ["RPP30", "ALB"]
    str_lod_pct = 1.0
    qpcr_lod_pct = 0.1

    [inbox]
    stable_seconds = 10.0    # without file events (network shares) a file must keep its size and mtime this long
    chunk_files = 100        # files committed together (smaller = less rework after a crash)
    chunk_mb = 2048          # ... and at most about this many MB of files per commit

    [privacy]
    show_patient_ids = false # patient identifiers in logs and Prefect artifacts

    [prefect]
    port = 4200              # local Prefect server (and UI) of `watch` / `serve` without PREFECT_API_URL
    start_timeout_seconds = 120

    [flow]
    gating_pictures = "review"  # PNG of the gates beside the store during the run: "all",
                                # "review" (only samples flagged for review) or "none";
                                # `graftwatch report` draws any missing picture on demand
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from assays.errors import ConfigError

DEFAULT_REFERENCE_GENES = ("RPP30", "RNaseP", "ALB", "GAPDH", "HBB", "ACTB", "TERT", "B2M", "CCR5")


@dataclass
class ChimerismSettings:
    reference_genes: tuple[str, ...] = DEFAULT_REFERENCE_GENES
    str_lod_pct: float = 1.0
    qpcr_lod_pct: float = 0.1


@dataclass
class InboxSettings:
    # Without file events (network shares, files present at start) a file is read once
    # its size and mtime have not changed this long; a copy over SMB/NFS can stall for
    # several seconds mid-file. Files written on this machine are read right after their
    # writer closes them, whatever this says.
    stable_seconds: float = 10.0
    # A file that reads as cut off is looked at again after this long before it is
    # quarantined: if it grew meanwhile, a writer was still at it and it goes back to the inbox.
    truncated_recheck_seconds: float = 2.0
    chunk_files: int = 100
    chunk_mb: float = 2048.0
    poll_seconds: float = 1.0


PICTURE_POLICIES = ("all", "review", "none")


@dataclass
class FlowSettings:
    # Which samples get their gating picture drawn during the run (~0.5-1 s per 1M-event
    # file, as much as gating itself). Flagged samples need one now, for sign-off; the rest
    # are drawn by `graftwatch report` when someone looks.
    gating_pictures: str = "review"


@dataclass
class PrefectSettings:
    # The local Prefect server that `watch` and `serve` start when PREFECT_API_URL is not
    # set (a one-shot `run` needs none): its port (the UI is http://127.0.0.1:PORT) and how
    # long it may take to answer before the command gives up with exit 2.
    port: int = 4200
    start_timeout_seconds: float = 120.0


@dataclass
class PrivacySettings:
    show_patient_ids: bool = False


@dataclass
class Config:
    chimerism: ChimerismSettings = field(default_factory=ChimerismSettings)
    inbox: InboxSettings = field(default_factory=InboxSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    flow: FlowSettings = field(default_factory=FlowSettings)
    prefect: PrefectSettings = field(default_factory=PrefectSettings)
    panel: str | None = None  # path of a panel TOML replacing the built-in T-cell panel


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


_SECTIONS = ("chimerism", "inbox", "privacy", "flow", "prefect")


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
