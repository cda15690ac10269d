"""The one name key: how graftwatch compares names written by people and instruments.

Column headers, qPCR targets, marker labels, scatter ``$PnN`` spellings and gate names are
all compared through :func:`name_key`, so "the same name" means one thing everywhere.
"""

from __future__ import annotations

import re
import unicodedata

# Greek letters, and their spelled-out names, as one Latin letter (marker labels only:
# ``IFN-γ`` = ``IFN gamma`` = ``IFNg``; a table header "Delta Ct" must keep its "delta").
_GREEK = {
    "γ": "g", "gamma": "g", "α": "a", "alpha": "a", "β": "b", "beta": "b",
    "δ": "d", "delta": "d", "κ": "k", "kappa": "k", "λ": "l", "lambda": "l",
}
_GREEK_RE = re.compile("|".join(sorted(map(re.escape, _GREEK), key=len, reverse=True)))


def name_key(name: str, *, greek: bool = False) -> str:
    """Comparison key of a name: case-, space- and punctuation-blind.

    Unicode NFKC first (the micro sign and the Greek mu compare equal, ``²`` is ``2``),
    then case folding; with ``greek=True`` Greek letters and their spelled names become
    one Latin letter; finally everything but letters and digits is dropped.

    Parameters
    ----------
    name : str
        A column header, target, channel label or gate name as written.
    greek : bool
        Fold Greek letters (marker labels: ``CD8α`` = ``CD8 alpha`` = ``CD8a``).

    Returns
    -------
    str
        The key; two names are the same name when their keys are equal.

    Examples
    --------
    >>> name_key("Sample.Name") == name_key("sample name") == "samplename"
    True
    >>> name_key("IFN-γ", greek=True) == name_key("IFN gamma", greek=True) == "ifng"
    True
    >>> name_key("FS INT") == name_key("fs_int") == name_key("FS-INT")
    True
    """
    text = unicodedata.normalize("NFKC", name).casefold()
    if greek:
        text = _GREEK_RE.sub(lambda m: _GREEK[m.group(0)], text)
    return "".join(ch for ch in text if ch.isalnum())
