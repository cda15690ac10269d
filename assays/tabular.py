"""One helper for the delimited and XLSX exports of genetic analysers and PCR machines.

STR, qPCR and ddPCR readers all go through :func:`load_table`: it decodes the bytes,
collects ``* key = value`` / ``# key: value`` metadata lines, optionally narrows the text
to one ``[Section]``, finds the delimiter and the header row by the column names the
caller needs, and returns a :class:`Table` whose cells are read with
:meth:`Table.text` / :meth:`Table.number`. Every failure is an
:class:`~assays.errors.InputError` in plain language.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assays.errors import InputError
from assays.locale_numbers import MISSING_TOKENS, AmbiguousNumberError, number_shape, parse_number
from assays.names import name_key
from assays.text_decoding import decode, read_bytes
from assays.timestamps import parse_timestamp
from assays.xlsx import is_xlsx, xlsx_rows

# Readers call these through tabular (``tabular.decode``, ``tabular.parse_number`` ...).
__all__ = ["AmbiguousNumberError", "MISSING_TOKENS", "Table", "decode", "empty_file_error", "head_has_header",
           "head_text", "is_xlsx", "load_table", "metadata_lines", "number_shape", "parse_number",
           "parse_timestamp", "read_bytes", "text_lines", "xlsx_rows"]

_DELIMITERS = ("\t", ",", ";")
_HEADER_SEARCH_LINES = 400


def head_text(path: Path, n_bytes: int = 8192) -> str:
    """First ``n_bytes`` of a file decoded as text (what the readers' ``sniff`` expects)."""
    raw = read_bytes(path)
    if is_xlsx(raw):
        rows = xlsx_rows(raw, Path(path).name)
        return "\n".join("\t".join(r) for r in rows[:60])[:n_bytes]
    return decode(raw[:n_bytes], Path(path).name)


@dataclass
class Table:
    """A located table: header, data rows (list of cells) and the file's metadata lines."""

    source_name: str
    header: list[str]
    rows: list[list[str]]
    line_numbers: list[int]  # 1-based line (or sheet row) of each data row, for messages
    metadata: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    # Decimal-separator evidence per column and for the whole file, computed on first use.
    _evidence: dict[int, set[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _file_evidence: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    def find(self, *names: str) -> int | None:
        """Index of the first column matching any of ``names`` (normalized), else None."""
        keys = [name_key(c) for c in self.header]
        for name in names:
            key = name_key(name)
            if key in keys:
                return keys.index(key)
        return None

    def find_prefix(self, *prefixes: str) -> int | None:
        """Index of the first column whose normalized name starts with one of ``prefixes``."""
        keys = [name_key(c) for c in self.header]
        for prefix in prefixes:
            p = name_key(prefix)
            for i, k in enumerate(keys):
                if k.startswith(p):
                    return i
        return None

    def require(self, *names: str, what: str) -> int:
        """Like :meth:`find`, but a missing column is an InputError naming it."""
        idx = self.find(*names)
        if idx is None:
            raise InputError(
                expected=f"a column {' or '.join(repr(n) for n in names)} ({what})",
                found=f"only the columns {', '.join(repr(c) for c in self.header if c)}",
                action="export the table again with that column included",
                problem=f"This file lacks a column graftwatch needs ({' or '.join(names)}).",
            )
        return idx

    def text(self, row: list[str], idx: int | None) -> str | None:
        """Stripped cell text, or None when absent or one of the missing tokens."""
        if idx is None or idx >= len(row):
            return None
        value = row[idx].strip().strip('"').strip()
        return None if value.casefold() in MISSING_TOKENS else value

    def number(self, row_pos: int, idx: int | None) -> float | None:
        """Numeric cell of data row ``row_pos`` (None when missing); garbage is an InputError.

        A cell like ``1,234`` is read with the decimal separator the file itself proves
        (:meth:`decimal_mark`); when nothing in the file settles it, the file is refused
        rather than stored with a value off by a factor of 1000.
        """
        row = self.rows[row_pos]
        if idx is None or idx >= len(row):
            return None
        try:
            return parse_number(row[idx], self._mark_for(row[idx], idx))
        except AmbiguousNumberError:
            raise self._ambiguous_error(row_pos, idx) from None
        except ValueError:
            raise InputError(
                expected=f"a number in column {self.header[idx]!r}",
                found=f"{row[idx].strip()!r} on line {self.line_numbers[row_pos]} of {self.source_name}",
                action="correct or re-export the file; leave the cell empty if there is no value",
                problem="This file has text where a number belongs.",
            ) from None

    def decimal_mark(self, idx: int | None = None) -> str | None:
        """The decimal separator (``.`` or ``,``) proven by column ``idx``, else by the whole file.

        Proof is a cell that reads one way only (``21.5``, ``0,021``, ``1.250,000``). The
        column decides first because a file may carry a free-text column full of commas;
        None when the evidence is absent or contradictory.
        """
        if idx is not None:
            evidence = self._column_evidence(idx)
            if evidence:
                return _mark_from(evidence)
        if self._file_evidence is None:
            self._file_evidence = set()
            for i in range(max((len(r) for r in self.rows), default=0)):
                self._file_evidence |= self._column_evidence(i)
        return _mark_from(self._file_evidence)

    def _column_evidence(self, idx: int) -> set[str]:
        """Which unambiguous shapes (``point`` / ``comma``) column ``idx`` contains (cached)."""
        if idx not in self._evidence:
            shapes = {number_shape(r[idx]) for r in self.rows if idx < len(r)}
            self._evidence[idx] = shapes & {"point", "comma"}
        return self._evidence[idx]

    def _mark_for(self, cell: str, idx: int) -> str | None:
        """Decimal separator to read ``cell`` with; None when it cannot be decided.

        Without any proof in the file a decimal point is assumed for ``1.234`` (every
        instrument's default, and a comma- or tab-separated file cannot be a European
        Excel re-save), but never in a semicolon file, and never for ``1,234``.
        """
        shape = number_shape(cell)
        if shape not in ("ambiguous_point", "ambiguous_comma"):
            return "."  # the separator does not change this cell's value
        mark = self.decimal_mark(idx)
        if mark is not None or self._mixed(idx):
            return mark
        if shape == "ambiguous_point" and self.delimiter != ";":
            return "."
        return None

    def _mixed(self, idx: int) -> bool:
        """True when the deciding evidence for column ``idx`` holds both conventions."""
        evidence = self._column_evidence(idx) or self._file_evidence or set()
        return len(evidence) > 1

    def _ambiguous_error(self, row_pos: int, idx: int) -> InputError:
        """Why a cell such as ``1,234`` cannot be read, and how to get a readable file."""
        cell = self.rows[row_pos][idx].strip()
        as_point = parse_number(cell, ".")
        as_comma = parse_number(cell, ",")
        if self._mixed(idx):
            why = "the file mixes decimal points and decimal commas, so neither can be trusted"
        else:
            why = "no other number in the file shows which is the decimal separator"
        return InputError(
            expected=f"numbers in column {self.header[idx]!r} whose decimal separator is clear",
            found=(
                f"{cell!r} on line {self.line_numbers[row_pos]} of {self.source_name}, which is "
                f"{as_point:g} with a decimal point but {as_comma:g} with a decimal comma; {why}"
            ),
            action=(
                "export the table again straight from the instrument software (do not re-save it "
                "in Excel), or save it with decimal points and no thousands separators"
            ),
            problem="A number in this file reads two ways (decimal point or decimal comma), so its value is uncertain.",
        )

    def integer(self, row_pos: int, idx: int | None) -> int | None:
        """Like :meth:`number`, rounded to int (droplet counts are sometimes written as 123.0)."""
        value = self.number(row_pos, idx)
        return None if value is None else int(round(value))

    def meta(self, *keys: str) -> str | None:
        """First present metadata value among ``keys`` (normalized)."""
        norm = {name_key(k): v for k, v in self.metadata.items()}
        for key in keys:
            value = norm.get(name_key(key))
            if value is not None and value.strip().casefold() not in MISSING_TOKENS:
                return value.strip()
        return None


def _mark_from(evidence: set[str]) -> str | None:
    """``.`` or ``,`` when the evidence names one convention only, else None."""
    if evidence == {"point"}:
        return "."
    if evidence == {"comma"}:
        return ","
    return None


def metadata_lines(lines: Sequence[str]) -> dict[str, str]:
    """``* key = value`` (Applied Biosystems classic) and ``# key: value`` (Design & Analysis) pairs."""
    meta: dict[str, str] = {}
    for line in lines:
        s = line.strip()
        if s.startswith("*"):
            body = s.lstrip("*").strip()
            if "=" in body:
                key, value = body.split("=", 1)
                meta.setdefault(key.strip(), value.strip())
        elif s.startswith("#"):
            body = s.lstrip("#").strip().rstrip(",;\t").strip()
            if ":" in body:
                key, value = body.split(":", 1)
                meta.setdefault(key.strip(), value.strip().strip('"'))
    return meta


def section_lines(lines: Sequence[str], name: str) -> list[tuple[int, str]] | None:
    """(line number, line) pairs between ``[name]`` and the next ``[...]`` marker, or None."""
    wanted = name_key(name)
    start = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("[") and "]" in s:
            if start is not None:
                return [(j + 1, lines[j]) for j in range(start, i)]
            if name_key(s[1 : s.index("]")]) == wanted:
                start = i + 1
    if start is None:
        return None
    return [(j + 1, lines[j]) for j in range(start, len(lines))]


def has_section(text: str, name: str) -> bool:
    """True when a ``[name]`` section marker line is present."""
    wanted = name_key(name)
    return any(
        line.strip().startswith("[") and name_key(line.strip().split("]")[0][1:]) == wanted
        for line in text_lines(text)
    )


def _split(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error as exc:  # e.g. a field over csv's size limit: not an export we can read
        raise InputError(
            expected="a delimited export with ordinary cells",
            found=f"a line csv cannot split ({exc}): {line[:80]!r}...",
            action="export the table again from the instrument software; do not edit it in a text editor",
            problem="This file has a line that cannot be split into cells (often a stray quote from editing).",
        ) from None


def text_lines(text: str) -> list[str]:
    """Lines of a decoded export, with quoted marker lines unwrapped.

    A tool that quotes every field writes ``"* Chemistry = TAQMAN"`` or ``"[Results]","",""``;
    unwrapped, metadata and ``[Section]`` markers are recognised as in the original file.
    """
    return [_unwrap_marker(line) for line in text.lstrip("\ufeff").splitlines()]


def _unwrap_marker(line: str) -> str:
    """``"[Results]",""`` -> ``[Results]``; every other line unchanged."""
    if not line.lstrip().startswith('"'):
        return line
    for delimiter in _DELIMITERS:
        try:
            cells = next(csv.reader([line.strip()], delimiter=delimiter), [])
        except csv.Error:
            continue
        if cells and cells[0].lstrip().startswith(("*", "#", "[")) and not any(c.strip() for c in cells[1:]):
            return cells[0]
    return line


def _is_section_marker(line: str) -> bool:
    s = line.strip()
    return s.startswith("[") and s.endswith("]")


def _is_comment(line: str) -> bool:
    s = line.lstrip()
    return s.startswith("#") or s.startswith("*")


def _header_matches(cells: Sequence[str], required: Sequence[Sequence[str]]) -> bool:
    keys = {name_key(c) for c in cells}
    return all(any(name_key(alt) in keys for alt in group) for group in required)


def find_header(
    numbered: Sequence[tuple[int, str]], required: Sequence[Sequence[str]]
) -> tuple[int, str] | None:
    """Position in ``numbered`` of the header row and its delimiter, or None.

    ``required`` is a list of alternatives groups: every group must have one member
    among the row's cells. Trying each delimiter against the required names is what
    detects the delimiter: a wrong one never yields all the names.
    """
    for pos, (_, line) in enumerate(numbered[:_HEADER_SEARCH_LINES]):
        if not line.strip() or _is_comment(line):
            continue
        for delimiter in _DELIMITERS:
            if delimiter in line and _header_matches(_split(line, delimiter), required):
                return pos, delimiter
    return None


def empty_file_error(path: Path, what: str) -> InputError:
    """The error for a file with no content (an export saved before it finished)."""
    return InputError(
        expected=f"a {what}",
        found=f"an empty file ({Path(path).name})",
        action="export the data again; the file was probably saved before the export finished",
        problem="This file is empty.",
    )


def load_table(
    path: Path,
    required: Sequence[Sequence[str]],
    *,
    what: str,
    section: str | None = None,
    fixed_width: bool = False,
) -> Table:
    """Read ``path`` and return the table whose header holds all ``required`` names.

    Parameters
    ----------
    required : groups of alternative column names; each group must be present.
    what : plain-language name of the export ("QuantStudio results table"), used in errors.
    section : restrict the search to the ``[section]`` block (Applied Biosystems text).
    fixed_width : refuse data rows with filled cells beyond the header (machine-written
        exports only: a hand-made sheet may carry notes in unnamed columns).
    """
    path = Path(path)
    raw = read_bytes(path)
    if not raw.strip():
        raise empty_file_error(path, what)
    if is_xlsx(raw):
        cell_rows = xlsx_rows(raw, path.name)
        lines = ["\t".join(r) for r in cell_rows]
    else:
        text = decode(raw, path.name)
        lines = text_lines(text)
    meta = metadata_lines(lines[:_HEADER_SEARCH_LINES])
    if section is not None:
        numbered = section_lines(lines, section)
        if numbered is None:
            raise InputError(
                expected=f"a [{section}] section in this {what}",
                found=f"no [{section}] section in {path.name}",
                action=f"export again with the {section} section included",
                problem=f"This file lacks its {section} section.",
            )
    else:
        numbered = [(i + 1, line) for i, line in enumerate(lines)]
    located = find_header(numbered, required)
    if located is None:
        first = next((ln for _, ln in numbered if ln.strip() and not _is_comment(ln)), "")
        names = ", ".join(" / ".join(repr(a) for a in group) for group in required)
        raise InputError(
            expected=f"a {what} with a header row naming the columns {names}",
            found=f"no such header in {path.name} (first table line: {first[:160]!r})",
            action="export the complete table with its header row, without renaming or removing columns",
            problem="This file has no header row naming its columns.",
        )
    pos, delimiter = located
    header = [c.strip().strip('"').strip() for c in _split(numbered[pos][1], delimiter)]
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for number, line in numbered[pos + 1 :]:
        if _is_section_marker(line):
            break  # the next block of a sectioned export is not part of this table
        if not line.strip() or _is_comment(line):
            continue
        cells = _split(line, delimiter)
        if not any(c.strip() for c in cells):
            continue
        rows.append(cells)
        line_numbers.append(number)
    if not is_xlsx(raw):
        _refuse_cut_off(raw, rows, line_numbers, path.name, what)
        if fixed_width:
            _refuse_overlong(header, rows, line_numbers, delimiter, path.name, what)
    return Table(
        source_name=path.name,
        header=header,
        rows=rows,
        line_numbers=line_numbers,
        metadata=meta,
        delimiter=delimiter,
    )


def _refuse_cut_off(raw: bytes, rows: list[list[str]], line_numbers: list[int], name: str, what: str) -> None:
    """Refuse a text export that was cut off in its last row.

    A writer interrupted mid-file (a copy taken while the instrument software was still
    exporting) leaves no final line break and a last row with fewer cells than every
    other row. Storing it would silently drop that row's values. Rows that are short by
    design (footers, trimmed trailing cells) are not affected unless they are the last
    line *and* the line break is missing *and* every other row is longer.
    """
    if len(rows) < 2 or raw.rstrip(b" \t").endswith((b"\n", b"\r")):
        return
    last, shortest_other = len(rows[-1]), min(len(r) for r in rows[:-1])
    if last < shortest_other:
        raise InputError(
            expected=f"a complete {what}: its last row as long as the others ({shortest_other} columns)",
            found=f"line {line_numbers[-1]} of {name} stops after {last} columns and the file has no final "
                  "line break: it was cut off while being written or copied",
            action="export or copy the file again once the instrument software has finished writing it",
            problem="This file was cut off while being written or copied: its last row is incomplete.",
        )


_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon"}


def _refuse_overlong(header: list[str], rows: list[list[str]], line_numbers: list[int],
                     delimiter: str, name: str, what: str) -> None:
    """Refuse an export whose data rows have filled cells to the right of the header.

    Instrument software writes every row with the header's columns (at most some empty
    trailing ones). A row longer than that has its cells shifted: typically decimal commas
    in a comma-separated file (``21,5`` split into ``21`` and ``5``) or a separator inside an
    unquoted sample name. Every value right of the split would be read from the wrong
    column, so the file is refused instead of stored with wrong numbers.
    """
    width = len(header)
    for row, number in zip(rows, line_numbers):
        extra = [c.strip() for c in row[width:] if c.strip()]
        if extra:
            sep = _DELIMITER_NAMES.get(delimiter, repr(delimiter))
            raise InputError(
                expected=f"every row of the {what} to fit the {width} columns of its header row",
                found=(
                    f"line {number} of {name} has {len(row)} {sep}-separated cells, the last filled "
                    f"one {extra[-1]!r}: its values are shifted, usually by decimal commas or a "
                    f"{sep} inside an unquoted cell"
                ),
                action=(
                    "export the table again from the instrument software; if it was re-saved in Excel, "
                    "save it as CSV with ';' as separator or with decimal points"
                ),
                problem="A row of this file has its values shifted into the wrong columns.",
            )


def head_has_header(head: str, required: Sequence[Sequence[str]]) -> bool:
    """``sniff`` helper: does the decoded head contain a header row with ``required`` names?"""
    numbered = [(i + 1, ln) for i, ln in enumerate(text_lines(head))]
    return find_header(numbered, required) is not None
