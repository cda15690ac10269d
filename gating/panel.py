"""The adaptive panel definition: markers, aliases and the population hierarchy.

A panel is a TOML file (the built-in one is ``gating/panels/tcell.toml``); this module
only reads and checks it. Gate positions are computed per sample by ``gating.adaptive``.

Scatter gates name scatter *parameters* (``FSC-A``, ``FSC-H``, ``FSC``, ``SSC-A``, ...),
not channels: the panel's ``[scatter]`` table lists the ``$PnN`` spellings of each
(matched by `assays.names.name_key`: case, spaces, ``_`` and ``-`` ignored), and an axis of a
gate may list several parameters, the first one the file has being used
(``channels = [["FSC-A", "FSC-H", "FSC"], ["SSC-A", "SSC-H", "SSC"]]``). A panel without a
``[scatter]`` table takes the built-in panel's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from assays.errors import ConfigError
from assays.names import name_key

BUILTIN_TCELL = Path(__file__).parent / "panels" / "tcell.toml"

_SIGNS = ("lo", "+", "-")
_METHODS = ("scatter_gmm", "singlet_band", "markers")
_XS_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class MarkerSpec:
    """One marker of the panel: its spellings, whether a file must have it, and how its
    negative/positive threshold is found (``valley`` or ``cytokine``)."""

    name: str
    aliases: tuple[str, ...]
    required: bool
    threshold: str
    majority: str = "negative"  # which side most parent events are on, when unimodal


@dataclass(frozen=True)
class GateTerm:
    """One ``<marker><sign>`` term of a marker gate, e.g. ``CD127lo``."""

    marker: str
    sign: str  # '+', '-' or 'lo'

    @property
    def positive(self) -> bool:
        return self.sign == "+"


@dataclass(frozen=True)
class PopulationSpec:
    """One population of the hierarchy: DESIGN.md name, Gating-ML id, parent name, method."""

    name: str
    gate_id: str
    parent: str  # population name, or "root"
    method: str
    channels: tuple[str, ...] = ()  # the preferred scatter parameter of each axis
    gate: tuple[GateTerm, ...] = ()
    fallback: tuple[GateTerm, ...] = ()
    bypass_when_missing: bool = False
    # Scatter parameters each axis may use, in order of preference (first: ``channels``).
    channel_choices: tuple[tuple[str, ...], ...] = ()

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(t.marker for t in self.gate)


@dataclass
class Panel:
    """A whole panel: markers by name, populations parents-first, logicle parameters."""

    name: str
    markers: dict[str, MarkerSpec]
    populations: list[PopulationSpec]
    logicle: dict[str, float] = field(default_factory=lambda: dict(t=262144.0, w=0.5, m=4.5, a=0.0))
    scatter_range: float = 262144.0
    source: str = ""
    # Scatter parameter -> $PnN spellings (see the module docstring and ``[scatter]``).
    scatter: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def aliases(self) -> dict[str, list[str]]:
        """Marker -> spellings, the form ``assays.markers.match_markers`` takes."""
        return {m.name: list(m.aliases) for m in self.markers.values()}

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.markers.values() if m.required)

    def population(self, name: str) -> PopulationSpec:
        for p in self.populations:
            if p.name == name:
                return p
        raise KeyError(name)


def parse_term(text: str) -> GateTerm:
    """``"IFN-γ+"`` -> GateTerm("IFN-γ", "+"); ``"CD127lo"`` -> GateTerm("CD127", "lo")."""
    for sign in _SIGNS:
        if text.endswith(sign) and len(text) > len(sign):
            return GateTerm(text[: -len(sign)], sign)
    raise ValueError(f"gate term {text!r} does not end in one of {', '.join(_SIGNS)}")


def load_panel(path: str | Path = BUILTIN_TCELL) -> Panel:
    """Read and check a panel TOML file; any inconsistency is a ``ConfigError``."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"panel {path}: cannot read it ({exc})") from None
    try:
        return _build(doc, str(path))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"panel {path}: {exc}") from None


def _scatter_table(doc: dict) -> dict[str, tuple[str, ...]]:
    """The ``[scatter]`` table: parameter -> spellings (the parameter's own name included).
    A spelling may stand for one parameter only."""
    table = doc.get("scatter")
    if table is None:
        builtin = tomllib.loads(BUILTIN_TCELL.read_text(encoding="utf-8"))
        table = builtin.get("scatter", {})
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for param, names in table.items():
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"scatter {param}: spellings must be a list of strings")
        spellings = tuple(dict.fromkeys([param, *names]))
        for n in spellings:
            key = name_key(n)
            if owner.get(key, param) != param:
                raise ValueError(f"scatter spelling {n!r} is listed under both {owner[key]} and {param}")
            owner[key] = param
        out[param] = spellings
    return out


def _channel_choices(name: str, method: str, channels: list, scatter: dict,
                     strict: bool) -> tuple[tuple[str, ...], ...]:
    """``channels`` of a scatter gate: one entry per axis, a parameter or a list of them.
    ``strict`` (the panel has its own ``[scatter]`` table): each must be listed there;
    otherwise a parameter the built-in table lacks is matched by its own name."""
    if method == "markers":
        return ()
    choices = tuple((c,) if isinstance(c, str) else tuple(c) for c in channels)
    if len(choices) != 2 or any(not axis or not all(isinstance(c, str) for c in axis) for axis in choices):
        raise ValueError(f"population {name}: `channels` must name two scatter axes "
                         "(a parameter, or a list of parameters in order of preference)")
    for axis in choices:
        for c in axis:
            if strict and c not in scatter:
                raise ValueError(f"population {name}: scatter parameter {c!r} is not under [scatter]")
    return choices


def _build(doc: dict, source: str) -> Panel:
    head = doc.get("panel", {})
    scatter = _scatter_table(doc)
    markers = {}
    for name, spec in doc.get("markers", {}).items():
        threshold = spec.get("threshold", "valley")
        if threshold not in ("valley", "cytokine"):
            raise ValueError(f"marker {name}: threshold must be valley or cytokine, not {threshold!r}")
        majority = spec.get("majority", "negative")
        if majority not in ("positive", "negative"):
            raise ValueError(f"marker {name}: majority must be positive or negative, not {majority!r}")
        markers[name] = MarkerSpec(name, tuple(spec.get("aliases", [name])),
                                   bool(spec.get("required", False)), threshold, majority)
    pops: list[PopulationSpec] = []
    known = {"root"}
    for spec in doc.get("populations", []):
        method = spec["method"]
        if method not in _METHODS:
            raise ValueError(f"population {spec['name']}: unknown method {method!r}")
        gate = tuple(parse_term(t) for t in spec.get("gate", []))
        fallback = tuple(parse_term(t) for t in spec.get("fallback", []))
        for term in gate + fallback:
            if term.marker not in markers:
                raise ValueError(f"population {spec['name']}: marker {term.marker!r} is not under [markers]")
        if method == "markers" and not gate:
            raise ValueError(f"population {spec['name']}: a markers gate needs `gate` terms")
        gate_id = spec.get("id", spec["name"])
        if not _XS_ID.match(gate_id):
            raise ValueError(f"population {spec['name']}: id {gate_id!r} is not a valid xs:ID")
        if spec["parent"] not in known:
            raise ValueError(f"population {spec['name']}: parent {spec['parent']!r} must come before it")
        known.add(spec["name"])
        choices = _channel_choices(spec["name"], method, list(spec.get("channels", ())), scatter,
                                   "scatter" in doc)
        pops.append(PopulationSpec(
            name=spec["name"], gate_id=gate_id, parent=spec["parent"], method=method,
            channels=tuple(axis[0] for axis in choices), gate=gate, fallback=fallback,
            bypass_when_missing=bool(spec.get("bypass_when_missing", False)),
            channel_choices=choices,
        ))
    ids = [p.gate_id for p in pops]
    if len(set(ids)) != len(ids):
        raise ValueError("population ids must be unique")
    logicle = {k: float(v) for k, v in head.get("logicle", {}).items()} or None
    panel = Panel(name=head.get("name", source), markers=markers, populations=pops, source=source,
                  scatter_range=float(head.get("scatter_range", 262144.0)), scatter=scatter)
    if logicle:
        panel.logicle = logicle
    return panel
