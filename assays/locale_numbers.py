"""Numbers as instruments and spreadsheets write them: decimal point or comma, thousands
separators, and shapes that read differently under the two conventions (refused unless the
file's own convention is known)."""

from __future__ import annotations

import re

#: Cell values that instruments write for "no value" (compared case-insensitively).
MISSING_TOKENS = frozenset(
    {"", "undetermined", "nan", "no call", "na", "n/a", "#n/a", "null", "-", "--", "nd"}
)

# Number shapes, after spaces/apostrophes used as thousands separators are removed.
# "Ambiguous" shapes read differently under the two conventions: "1,234" is 1234 with a
# decimal point and 1.234 with a decimal comma; "1.234" the other way round.
_EXP = r"(?:[eE][-+]?\d+)?"
_PLAIN = re.compile(rf"[-+]?\d+{_EXP}")
_AMBIGUOUS_POINT = re.compile(r"[-+]?[1-9]\d{0,2}\.\d{3}")
_AMBIGUOUS_COMMA = re.compile(r"[-+]?[1-9]\d{0,2},\d{3}")
_POINT_SHAPES = (
    re.compile(rf"[-+]?(?:\d+\.\d*|\.\d+){_EXP}"),  # 21.5, 0.021, 1.5e3, 16.484 (if not ambiguous)
    re.compile(rf"[-+]?\d{{1,3}}(?:,\d{{3}})+\.\d*{_EXP}"),  # 1,250.000
    re.compile(r"[-+]?\d{1,3}(?:,\d{3}){2,}"),  # 100,000,000
)
_COMMA_SHAPES = (
    re.compile(rf"[-+]?(?:\d+,\d*|,\d+){_EXP}"),  # 21,5, 0,021, 1,5E+08
    re.compile(rf"[-+]?\d{{1,3}}(?:\.\d{{3}})+,\d*{_EXP}"),  # 1.250,000
    re.compile(r"[-+]?\d{1,3}(?:\.\d{3}){2,}"),  # 100.000.000
)
_SPACE_GROUPED = re.compile(r"([-+]?\d{1,3}(?:[ '\u2009\u202f]\d{3})+)([.,]\d*)?" + _EXP)


class AmbiguousNumberError(ValueError):
    """A cell such as ``1,234`` whose value depends on the file's decimal separator."""


def _clean_number_text(text: str) -> str:
    """Cell text without quotes, ``%``, and spaces/apostrophes used as thousands separators."""
    s = text.strip().strip('"').strip().replace("\u00a0", " ").rstrip("%").strip()
    m = _SPACE_GROUPED.fullmatch(s)
    if m:
        s = re.sub(r"[ '\u2009\u202f]", "", m.group(1)) + s[m.end(1):]
    return s


def number_shape(text: str) -> str | None:
    """How a cell writes its number: ``plain``, ``point``, ``comma``, ``ambiguous_point``,
    ``ambiguous_comma``; None for a missing token or anything that is not a number.

    ``point`` / ``comma`` cells prove the file's decimal separator; ambiguous ones need it.
    """
    s = _clean_number_text(text)
    if s.casefold() in MISSING_TOKENS:
        return None
    if _PLAIN.fullmatch(s):
        return "plain"
    if _AMBIGUOUS_POINT.fullmatch(s):
        return "ambiguous_point"
    if _AMBIGUOUS_COMMA.fullmatch(s):
        return "ambiguous_comma"
    if any(p.fullmatch(s) for p in _POINT_SHAPES):
        return "point"
    if any(p.fullmatch(s) for p in _COMMA_SHAPES):
        return "comma"
    return None


def parse_number(text: str | None, decimal: str | None = ".") -> float | None:
    """A number as instruments print it; ``None`` for the missing tokens.

    Accepts thousands separators (``1,250.000``, ``1.250,000``, ``1 250``, ``1'250``), a
    decimal comma (``21,5``) and a trailing ``%``. ``decimal`` is the file's decimal
    separator, used only for cells that read differently under the two conventions
    (``1,234``, ``1.234``); None means it is unknown and such a cell raises
    :class:`AmbiguousNumberError`. Raises ``ValueError`` for anything else.
    """
    if text is None:
        return None
    s = _clean_number_text(text)
    if s.casefold() in MISSING_TOKENS:
        return None
    shape = number_shape(s)
    if shape in ("ambiguous_point", "ambiguous_comma"):
        if decimal not in (".", ","):
            raise AmbiguousNumberError(s)
        shape = "point" if decimal == "." else "comma"
    if shape == "point":
        s = s.replace(",", "")
    elif shape == "comma":
        s = s.replace(".", "").replace(",", ".")
    value = float(s)  # ValueError propagates for non-numbers
    if value != value:  # a literal "nan" spelled differently (e.g. "NaN " after strip is caught above)
        return None
    return value
