"""Export any gating strategy as valid Gating-ML 2.0, keeping the names it had.

Gating-ML gate ids are ``xs:ID`` (an XML NCName: no ``+``, ``:`` or spaces, no leading
digit) and unique in the file; flowkit refuses files that break this. FlowJo trees
routinely do (``CD4+`` under two parents, ``Q1: CD4- , CD8+``). Before export every
gate gets a valid, unique id (:func:`gatingml_id`); the id -> population name mapping
is returned, so the file re-applied gives the same counts under the same names.
"""

from __future__ import annotations

import copy
import io
import re

import numpy as np

_SIGN = re.compile(r"([+-])(?=$|[^0-9a-z])")


def gatingml_id(name: str) -> str:
    """A valid NCName for a population name.

    ``+`` -> ``_pos``; ``-`` closing a marker (before the end, punctuation or an upper-case
    letter, as in ``CD4-CD8+``) -> ``_neg``; other characters outside ``[A-Za-z0-9_.-]``
    -> ``_``; a leading digit, ``-`` or ``.`` gets the prefix ``g_``.

    >>> gatingml_id("CD4+CD8-"), gatingml_id("IL-4+"), gatingml_id("Q1: CD4- , CD8+")
    ('CD4_pos_CD8_neg', 'IL-4_pos', 'Q1_CD4_neg_CD8_pos')
    """
    text = _SIGN.sub(lambda m: "_pos_" if m.group(1) == "+" else "_neg_", name.strip())
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    text = re.sub(r"_+", "_", text).strip("_") or "gate"
    if not re.match(r"[A-Za-z_]", text):
        text = "g_" + text
    return text


def _unique(candidate: str, parent_id: str | None, used: set[str]) -> str:
    if candidate not in used:
        return candidate
    if parent_id:
        candidate = f"{parent_id}__{candidate}"
    n, base = 2, candidate
    while candidate in used:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def export_gatingml(strategy) -> tuple[str, dict[str, str]]:
    """Gating-ML 2.0 text of ``strategy`` with valid unique ids, and {id: original name}.

    FlowJo-born strategies are made expressible first: compensation matrices get
    fluorochrome names (:func:`_name_fluorochromes`) and rectangle/quadrant bounds on
    FlowJo-only transforms move to raw values (:func:`_bounds_in_raw_values`). The strategy
    passed in is not modified. Raises :class:`GatingMLExportError` when the result does not
    pass the Gating-ML 2.0 schema (e.g. a polygon on FlowJo's biex scale).
    """
    import flowkit as fk

    s, names = with_valid_ids(strategy)
    _name_fluorochromes(s)
    _bounds_in_raw_values(s)
    buf = io.BytesIO()
    fk.export_gatingml(s, buf)
    xml = _schema_fixups(buf.getvalue())
    _validate(xml)
    return xml, names


def with_valid_ids(strategy):
    """A copy of ``strategy`` whose gates have valid, unique xs:ID names; and {id: original name}."""
    s = copy.deepcopy(strategy)
    renamed: dict[tuple[str, ...], tuple[str, ...]] = {("root",): ("root",)}
    used: set[str] = set()
    names: dict[str, str] = {}
    for gid, parent in sorted(strategy.get_gate_ids(), key=lambda it: len(it[1])):
        parent = tuple(parent)
        new_parent = renamed[parent]
        new_id = _unique(gatingml_id(gid), new_parent[-1] if len(new_parent) > 1 else None, used)
        used.add(new_id)
        if new_id != gid:
            s.rename_gate(gid, new_id, gate_path=new_parent)
        renamed[parent + (gid,)] = new_parent + (new_id,)
        names[new_id] = gid
    _retarget_boolean_refs(s, renamed)
    return s, names


def _retarget_boolean_refs(strategy, renamed: dict[tuple[str, ...], tuple[str, ...]]) -> None:
    """Point Boolean gates at the renamed gates they reference.

    flowkit's ``rename_gate`` updates references only in the renamed gate's own
    descendants; a Boolean gate referencing a sibling or cousin keeps the old name.
    """
    from flowkit import gates as fk_gates
    from flowkit.exceptions import QuadrantReferenceError

    done = set(renamed.values())
    for gid, path in strategy.get_gate_ids():
        try:
            gate = strategy.get_gate(gid, gate_path=tuple(path))
        except QuadrantReferenceError:
            continue
        if not isinstance(gate, fk_gates.BooleanGate):
            continue
        for ref in gate.gate_refs:
            full = tuple(ref["path"]) + (ref["ref"],)
            if full in renamed and full not in done:
                new = renamed[full]
                ref["path"], ref["ref"] = new[:-1], new[-1]


def _name_fluorochromes(strategy) -> None:
    """Give every compensation matrix fluorochrome names: its detectors' names where empty.

    Gating-ML 2.0 requires a non-empty name for each fluorochrome of a ``spectrumMatrix``;
    FlowJo matrices (its acquisition-defined one included) have none. The gates name
    detectors ($PnN), which readers find before any fluorochrome name, so naming each
    fluorochrome after its detector changes no count.
    """
    for ref, m in list(strategy.comp_matrices.items()):
        names = getattr(m, "fluorochromes", None)
        if names is not None and not all(names):
            m = copy.copy(m)
            m.fluorochromes = [f or d for f, d in zip(names, m.detectors)]
            strategy.comp_matrices[ref] = m


# Transforms Gating-ML 2.0 has (flowkit's classes); FlowJo's biex and log are not among them.
_GML_TRANSFORMS = ("LinearTransform", "LogTransform", "AsinhTransform", "HyperlogTransform", "LogicleTransform",
                   "RatioTransform")


def _bounds_in_raw_values(strategy) -> None:
    """Rectangle and quadrant gates on a transform Gating-ML lacks (FlowJo's biex): bounds
    moved to raw values, transform dropped; unused such transforms removed.

    A transform is monotone increasing, so ``lo <= f(x) < hi`` is ``f⁻¹(lo) <= x < f⁻¹(hi)``:
    the same events, in a form any Gating-ML reader applies. Polygons and ellipses are not
    straight in raw values and keep the transform (the export then fails its schema check).
    """
    from flowkit import gates as fk_gates
    from flowkit.exceptions import QuadrantReferenceError

    xforms = strategy.transformations
    foreign = {ref for ref, x in xforms.items() if type(x).__name__ not in _GML_TRANSFORMS}
    if not foreign:
        return

    def raw(ref, value):
        return None if value is None else float(xforms[ref].inverse(np.array([[float(value)]]))[0, 0])

    used = set()
    for gid, path in strategy.get_gate_ids():
        try:
            gate = strategy.get_gate(gid, gate_path=tuple(path))
        except QuadrantReferenceError:
            continue
        for dim in getattr(gate, "dimensions", []):
            ref = getattr(dim, "transformation_ref", None)
            if ref not in foreign:
                used.add(ref)
            elif isinstance(gate, fk_gates.RectangleGate):
                dim.min, dim.max, dim.transformation_ref = raw(ref, dim.min), raw(ref, dim.max), None
            elif isinstance(gate, fk_gates.QuadrantGate):
                dim.values, dim.transformation_ref = [raw(ref, v) for v in dim.values], None
            else:
                used.add(ref)
    for ref in foreign - used:
        del xforms[ref]


class GatingMLExportError(ValueError):
    """The strategy has no valid Gating-ML 2.0 form (e.g. FlowJo's biex transform)."""


_GML = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
_XF = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
_KEEP_REFS = {"uncompensated", "FCS"}


def _schema_fixups(xml: bytes) -> str:
    """Make flowkit's output schema-valid where FlowJo-born strategies break it.

    * every dimension/divider gets ``compensation-ref="uncompensated"`` when it has none
      (the schema requires the attribute; FlowJo gates often carry no reference);
    * transformation and spectrumMatrix ids (FlowJo uses channel labels with spaces) become
      valid NCNames, and every reference to them follows.
    """
    from lxml import etree

    root = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    comp_attr, xf_attr = f"{{{_GML}}}compensation-ref", f"{{{_GML}}}transformation-ref"
    id_attr = f"{{{_XF}}}id"
    # xs:ID values are unique across the whole document: gate ids count too.
    used: set[str] = {el.get(f"{{{_GML}}}id") for el in root.iter() if el.get(f"{{{_GML}}}id")}
    new_ids: dict[str, str] = {}
    for el in list(root.iter(f"{{{_XF}}}transformation")) + list(root.iter(f"{{{_XF}}}spectrumMatrix")):
        old = el.get(id_attr)
        new = _unique(gatingml_id(old), None, used)
        used.add(new)
        new_ids[old] = new
        el.set(id_attr, new)
    for tag in ("dimension", "divider"):
        for el in root.iter(f"{{{_GML}}}{tag}"):
            ref = el.get(comp_attr)
            if ref is None:
                el.set(comp_attr, "uncompensated")
            elif ref not in _KEEP_REFS and ref in new_ids:
                el.set(comp_attr, new_ids[ref])
            xf = el.get(xf_attr)
            if xf is not None and xf in new_ids:
                el.set(xf_attr, new_ids[xf])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode("utf-8")


def _validate(xml: str) -> None:
    """Raise GatingMLExportError unless ``xml`` passes the Gating-ML 2.0 schema."""
    from flowkit._resources import gml_schema
    from lxml import etree

    doc = etree.fromstring(xml.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    if not gml_schema.validate(etree.ElementTree(doc)):
        raise GatingMLExportError(f"not valid Gating-ML 2.0: {gml_schema.error_log.last_error.message}")
