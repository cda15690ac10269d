"""FCS 2.0 / 3.0 / 3.1 reader: validate the file's structure, then read it with flowio.

Validation happens on the HEADER and TEXT segments only, before any event is
allocated, so a truncated, mislabelled or hostile file costs a few kilobytes of
reading and becomes an :class:`~assays.errors.InputError` (quarantine), never a
traceback or a multi-gigabyte allocation.

Checks (FCS 3.1 standard, Spidlen et al. 2010, sections 3.1-3.2):

* HEADER: ``FCS2.0``/``FCS3.0``/``FCS3.1``, six 8-byte ASCII offsets;
  TEXT offsets inside the file.
* TEXT: a delimiter, an even number of key/value tokens, the required keywords
  ``$BYTEORD $DATATYPE $PAR $TOT`` and ``$PnN $PnB`` for every parameter.
* DATA: offsets inside the file (TEXT ``$BEGINDATA/$ENDDATA`` for 3.x, HEADER for
  2.0), HEADER and TEXT agreeing where both are given (a HEADER of zeros means
  "see TEXT", FCS 3.1 section 3.1), and ``$TOT x bytes-per-event`` equal to the
  DATA segment length.
* Keywords flowio needs to decode events: list mode (``$MODE L``), a byte order
  flowio maps to a real order (anything else it reads in native order, silently),
  numeric ``$PnR/$PnE/$PnG/$TIMESTEP``, no empty keyword values, and for integer
  data ``$PnR`` ranges flowio can bit-mask.

read_fcs then checks that flowio split the TEXT segment the way the standard does
(its splitter differs at edges: unusual delimiters, escaped delimiters next to a
separator, padded keywords, a TEXT not closed by its delimiter) and that the values
look like the declared ``$DATATYPE`` (floats labelled I, integers labelled F),
because in each of those cases flowio returns wrong events without an error.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from assays.errors import InputError
from assays.hashing import sha256_of
from assays.records import Channel, FcsSample, Spillover

FCS_VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1")
_HEADER_LEN = 58
# A sane upper bound on the TEXT segment: real files carry < 1 MB of keywords.
_MAX_TEXT_BYTES = 16 * 2**20
_ACTION_REEXPORT = (
    "re-export the file from the acquisition software (or copy it again from the "
    "instrument PC), then drop the new copy into the inbox"
)


def sniff(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) starts with an FCS version tag."""
    return head[:6].decode("ascii", "replace") in FCS_VERSIONS


def _int_field(raw: bytes, what: str, name: str) -> int:
    text = raw.decode("ascii", "replace").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise InputError(
            f"an FCS HEADER whose {what} is a byte offset (digits)",
            f"{text!r} in {name}",
            _ACTION_REEXPORT,
        )
    return int(text)


def parse_text_segment(raw: bytes) -> dict[str, str]:
    """Split an FCS TEXT segment into keywords (upper-cased) and values.

    The first byte is the delimiter; a doubled delimiter inside a key or value
    stands for one literal delimiter (FCS 3.1, section 3.2.7).
    """
    if len(raw) < 2:
        raise InputError("a TEXT segment with keywords", "an empty TEXT segment", _ACTION_REEXPORT)
    delim = raw[:1]
    body = raw[1:]
    if body.endswith(delim):
        body = body[:-1]
    placeholder = b"\x00\x01"
    tokens = body.replace(delim + delim, placeholder).split(delim)
    tokens = [t.replace(placeholder, delim).decode("utf-8", "replace") for t in tokens]
    _refuse_empty_values(tokens[0::2], delim.decode("latin-1"))
    if len(tokens) % 2:
        # Some writers leave a stray trailing token; drop it rather than refuse the file.
        tokens = tokens[:-1]
    return {tokens[i].strip().upper(): tokens[i + 1].strip() for i in range(0, len(tokens), 2)}


def _refuse_empty_values(keys: list[str], delim: str) -> None:
    """Refuse a TEXT whose keyword names swallowed the next keyword.

    FCS values may not be empty (FCS 3.1, 3.2.7): ``/$P2S//$P3N/CD3/`` is the key
    ``$P2S/$P3N`` by the escaping rule, so every later keyword shifts or vanishes
    (flowio then drops channels or reads the wrong $PnR). Writers that leave a value
    empty should write a space.
    """
    for key in keys:
        head, sep, tail = key.partition(delim)
        if sep and tail.lstrip().startswith("$"):
            raise InputError(
                "keyword values that are not empty (FCS 3.1, 3.2.7: two delimiters in a row "
                "are an escaped delimiter, not an empty value)",
                f"an empty value for {head.strip()!r} followed by {tail.strip()!r}",
                "re-export the file with the keyword filled in (a space is allowed), or remove "
                "the empty keyword with the acquisition software",
            )


def _bytes_per_event(text: dict[str, str], n_par: int, name: str) -> int | None:
    datatype = text.get("$DATATYPE", "").upper()
    if datatype == "F":
        return 4 * n_par
    if datatype == "D":
        return 8 * n_par
    if datatype == "I":
        bits = 0
        for i in range(1, n_par + 1):
            pnb = text.get(f"$P{i}B", "")
            if not pnb.isdigit() or int(pnb) % 8:
                raise InputError(
                    f"$P{i}B (bits per value) as a multiple of 8 for integer data",
                    f"{pnb!r} in {name}",
                    _ACTION_REEXPORT,
                )
            bits += int(pnb)
        return bits // 8
    if datatype == "A":
        # flowio (and so flowkit) cannot decode ASCII DATA; FCS 3.1 deprecates it.
        raise InputError(
            "binary event data ($DATATYPE F, D or I)",
            f"$DATATYPE A (ASCII numbers, deprecated in FCS 3.1) in {name}",
            "export the file again as FCS 3.0/3.1 with float (F) data",
        )
    raise InputError(
        "$DATATYPE F, D or I",
        f"{datatype or 'no $DATATYPE'} in {name}",
        _ACTION_REEXPORT,
    )


def validate_structure(path: Path) -> tuple[str, dict[str, str]]:
    """Check HEADER, TEXT and DATA geometry of an FCS file without reading events.

    Returns the version tag and the TEXT keywords; raises ``InputError`` naming the
    first problem found.
    """
    name = path.name
    size = path.stat().st_size
    if size < _HEADER_LEN:
        raise InputError(
            f"an FCS file of at least {_HEADER_LEN} bytes (HEADER)",
            f"{size} bytes in {name}" + (" (the file is empty)" if size == 0 else ""),
            "check that the instrument finished writing the file, then copy it again",
        )
    with open(path, "rb") as fh:
        header = fh.read(_HEADER_LEN)
        version = header[:6].decode("ascii", "replace")
        if version not in FCS_VERSIONS:
            raise InputError(
                "an FCS file starting with FCS2.0, FCS3.0 or FCS3.1",
                f"{header[:6]!r} at the start of {name}",
                "drop only FCS files exported by the cytometer software",
            )
        text_start = _int_field(header[10:18], "TEXT start", name)
        text_end = _int_field(header[18:26], "TEXT end", name)
        hdr_data_start = _int_field(header[26:34], "DATA start", name)
        hdr_data_end = _int_field(header[34:42], "DATA end", name)
        if not (_HEADER_LEN <= text_start < text_end < size):
            raise InputError(
                f"TEXT segment offsets inside the file (file size {size} bytes)",
                f"TEXT at bytes {text_start}-{text_end} in {name}",
                "the file is truncated or damaged; " + _ACTION_REEXPORT,
            )
        if text_end - text_start > _MAX_TEXT_BYTES:
            raise InputError(
                f"a TEXT segment under {_MAX_TEXT_BYTES // 2**20} MB",
                f"{(text_end - text_start) // 2**20} MB in {name}",
                _ACTION_REEXPORT,
            )
        fh.seek(text_start)
        text = parse_text_segment(fh.read(text_end - text_start + 1))

    missing = [k for k in ("$BYTEORD", "$DATATYPE", "$PAR") if k not in text]
    if version != "FCS2.0" and "$TOT" not in text:
        missing.append("$TOT")
    if missing:
        raise InputError(
            "the required FCS keywords $BYTEORD, $DATATYPE, $PAR and $TOT",
            f"{', '.join(missing)} missing in {name}",
            _ACTION_REEXPORT,
        )
    n_par_s = text["$PAR"]
    if not n_par_s.isdigit() or not (1 <= int(n_par_s) <= 10_000):
        raise InputError("$PAR (number of parameters) between 1 and 10000", f"{n_par_s!r} in {name}", _ACTION_REEXPORT)
    n_par = int(n_par_s)
    absent = [f"$P{i}N" for i in range(1, n_par + 1) if f"$P{i}N" not in text]
    if absent:
        raise InputError(
            f"a name ($PnN) for each of the {n_par} parameters",
            f"{', '.join(absent[:5])} missing in {name}",
            _ACTION_REEXPORT,
        )
    _check_mode(text, name)
    byteord = _check_byteord(text, n_par, name)
    width = {"F": 4, "D": 8}.get(text.get("$DATATYPE", "").upper())
    if width and len(byteord.split(",")) not in (width, 4 if width == 8 else width):
        # Some writers keep a 4-byte $BYTEORD for doubles; a 2-byte order for floats is never right.
        raise InputError(
            f"a $BYTEORD of {width} bytes for $DATATYPE {text['$DATATYPE']}",
            f"{text.get('$BYTEORD')!r} in {name}",
            _ACTION_REEXPORT,
        )

    if version == "FCS2.0":
        data_start, data_end = hdr_data_start, hdr_data_end
    else:
        absent = [k for k in ("$BEGINDATA", "$ENDDATA") if not text.get(k)]
        if absent:
            # Required in 3.x; flowio reads DATA offsets only from TEXT for 3.x files.
            raise InputError(
                "the FCS 3.x keywords $BEGINDATA and $ENDDATA (DATA offsets)",
                f"{', '.join(absent)} missing in {name}",
                _ACTION_REEXPORT,
            )
        try:
            data_start = int(text.get("$BEGINDATA", hdr_data_start) or 0)
            data_end = int(text.get("$ENDDATA", hdr_data_end) or 0)
        except ValueError:
            raise InputError(
                "$BEGINDATA/$ENDDATA as byte offsets",
                f"{text.get('$BEGINDATA')!r}/{text.get('$ENDDATA')!r} in {name}",
                _ACTION_REEXPORT,
            ) from None
        for which, hdr, txt in (("start", hdr_data_start, data_start), ("end", hdr_data_end, data_end)):
            # HEADER offsets are 0 when a segment passes 99,999,999 bytes (FCS 3.1, 3.1.1).
            if hdr and hdr != txt:
                raise InputError(
                    f"the DATA {which} offset in the HEADER to equal $%sDATA in TEXT"
                    % ("BEGIN" if which == "start" else "END"),
                    f"{hdr} (HEADER) vs {txt} (TEXT) in {name}: the file is internally inconsistent",
                    "re-export the file from the acquisition software; files edited by other tools "
                    "often break these offsets",
                )
    if not (0 < data_start <= data_end < size + 1):
        raise InputError(
            f"a DATA segment inside the file (file size {size} bytes)",
            f"DATA at bytes {data_start}-{data_end} in {name}",
            "the file is truncated or damaged; " + _ACTION_REEXPORT,
        )
    if data_end >= size:
        raise InputError(
            f"a DATA segment ending inside the file (file size {size} bytes)",
            f"DATA ending at byte {data_end} in {name}: the file is truncated",
            "check that the copy finished, then " + _ACTION_REEXPORT,
        )
    tot_s = text.get("$TOT")
    bpe = _bytes_per_event(text, n_par, name)
    _check_channel_keywords(text, n_par, name)
    if tot_s is not None and bpe is not None:
        if not tot_s.isdigit():
            raise InputError("$TOT (number of events) as a whole number", f"{tot_s!r} in {name}", _ACTION_REEXPORT)
        expected = int(tot_s) * bpe
        actual = data_end - data_start + 1
        # One byte over is a common writer bug (end offset exclusive); flowio tolerates it too.
        if actual not in (expected, expected + 1):
            raise InputError(
                f"$TOT x bytes per event = {tot_s} x {bpe} = {expected} bytes of DATA",
                f"{actual} bytes in {name}"
                + (" (the file is truncated or $TOT is wrong)" if actual < expected else ""),
                _ACTION_REEXPORT,
            )
    return version, text


# $BYTEORD values flowio maps to a byte order (flowdata.FlowData.__parse_data); it reads
# any other value in the machine's native order, with only a warning.
_FLOWIO_ORDER = {"1,2,3,4": "<", "1,2": "<", "4,3,2,1": ">", "2,1": ">"}


def _check_byteord(text: dict[str, str], n_par: int, name: str) -> str:
    """The $BYTEORD, refused unless flowio will read DATA in that order.

    FCS 3.1 allows only 1,2,3,4 and 4,3,2,1. flowio also maps 1,2 / 2,1 and reads
    anything else natively: right for 1,2,...,8 on a little-endian machine and for
    one-byte integers (no order at all), silently wrong for 8,7,...,1, 3,4,1,2 or a
    value with spaces inside, which is why those are refused here.
    """
    byteord = text.get("$BYTEORD", "")
    one_byte = text.get("$DATATYPE", "").upper() == "I" and all(
        text.get(f"$P{i}B", "") == "8" for i in range(1, n_par + 1))
    native = "1,2,3,4,5,6,7,8" if sys.byteorder == "little" else "8,7,6,5,4,3,2,1"
    if byteord in _FLOWIO_ORDER or byteord == native or one_byte:
        return byteord
    hint = " (spaces inside the value)" if " " in byteord else ""
    raise InputError(
        "$BYTEORD 1,2,3,4 or 4,3,2,1",
        f"{byteord!r}{hint} in {name}: flowkit would read these bytes in the wrong order",
        _ACTION_REEXPORT,
    )


def _check_mode(text: dict[str, str], name: str) -> None:
    """Only list-mode DATA holds events; flowio refuses just lower-case c/u, so an
    upper-case histogram ($MODE C/U) would be read as events."""
    mode = text.get("$MODE", "")
    if mode.upper() != "L":
        raise InputError(
            "list-mode data ($MODE L)",
            (f"$MODE {mode} (histogram data)" if mode else "no $MODE keyword") + f" in {name}",
            "export list-mode FCS files (one row per event) from the acquisition software",
        )


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _check_channel_keywords(text: dict[str, str], n_par: int, name: str) -> None:
    """The keywords flowio turns into numbers (gain, log, range, time step), checked
    here so a bad one is named instead of surfacing as a bare ValueError/KeyError."""
    for i in range(1, n_par + 1):
        label = text[f"$P{i}N"]
        pnr = text.get(f"$P{i}R", "")
        if not _is_number(pnr):
            raise InputError(f"$P{i}R (range of {label}) as a number",
                             f"{pnr or 'no $P%dR' % i!r} in {name}", _ACTION_REEXPORT)
        pne = text.get(f"$P{i}E")
        if pne is not None and (len(pne.split(",")) != 2 or not all(map(_is_number, pne.split(",")))):
            raise InputError(f"$P{i}E (amplification of {label}) as two numbers 'decades,offset'",
                             f"{pne!r} in {name}", _ACTION_REEXPORT)
        png = text.get(f"$P{i}G")
        if png is not None and not _is_number(png):
            raise InputError(f"$P{i}G (gain of {label}) as a number", f"{png!r} in {name}", _ACTION_REEXPORT)
    timestep = text.get("$TIMESTEP", "")
    # flowio reads $TIMESTEP only for a channel named "Time"; other files may carry junk there.
    has_time = any(text[f"$P{i}N"].lower() == "time" for i in range(1, n_par + 1))
    if has_time and timestep and not _is_number(timestep):
        raise InputError("$TIMESTEP as a number (seconds per time unit)", f"{timestep!r} in {name}",
                         _ACTION_REEXPORT)
    nextdata = text.get("$NEXTDATA", "0") or "0"
    if not nextdata.isdigit():
        raise InputError("$NEXTDATA as a byte offset (digits)", f"{nextdata!r} in {name}", _ACTION_REEXPORT)
    if text.get("$DATATYPE", "").upper() == "I":
        _check_integer_ranges(text, n_par, name)


def _next_power_of_2(x: int) -> int:
    return 1 if x <= 0 else 2 ** (x - 1).bit_length()


def _check_integer_ranges(text: dict[str, str], n_par: int, name: str) -> None:
    """Refuse integer $PnR that flowio's bit masking cannot handle.

    FCS 3.1 (3.2.20): integer values are masked to the next power of two of $PnR.
    flowio builds one mask of the parameters' common width, so when one channel needs
    masking and another declares a range wider than its $PnB bits it fails with an
    OverflowError; name the channel instead.
    """
    widths = [int(text[f"$P{i}B"]) for i in range(1, n_par + 1) if text.get(f"$P{i}B", "").isdigit()]
    if len(widths) != n_par or len(set(widths)) != 1:
        return  # bad $PnB is reported by _bytes_per_event; mixed widths use a modulo, which copes
    for i in range(1, n_par + 1):
        if not text[f"$P{i}R"].isdigit():  # flowio int()s it for integer data
            raise InputError(f"$P{i}R (range of {text[f'$P{i}N']}) as a whole number for integer data",
                             f"{text[f'$P{i}R']!r} in {name}", _ACTION_REEXPORT)
    bits = widths[0]
    ranges = [_next_power_of_2(int(text[f"$P{i}R"])) for i in range(1, n_par + 1)]
    if not any(r < 2**bits for r in ranges):
        return  # nothing is masked
    for i, r in enumerate(ranges, 1):
        if r > 2**bits:
            raise InputError(
                f"$P{i}R (range of {text[f'$P{i}N']}) at most 2^{bits} = {2**bits} for {bits}-bit integer data",
                f"$P{i}R = {text[f'$P{i}R']} in {name}",
                _ACTION_REEXPORT,
            )


def parse_spillover(value: str, source: str) -> Spillover:
    """Parse a $SPILLOVER / $SPILL / SPILL keyword value.

    Format (FCS 3.1, 3.2.19): ``n,name_1,...,name_n,v_11,...,v_nn`` row-major.
    """
    parts = [p.strip() for p in value.split(",")]
    try:
        n = int(parts[0])
    except (ValueError, IndexError):
        raise InputError(f"{source} starting with the number of detectors", f"{value[:40]!r}", _ACTION_REEXPORT) from None
    if len(parts) != 1 + n + n * n:
        raise InputError(
            f"{source} with 1 + n + n² = {1 + n + n * n} values for n = {n}",
            f"{len(parts)} values",
            "fix the compensation in the acquisition software and re-export",
        )
    try:
        matrix = np.array([float(v) for v in parts[1 + n:]], dtype=np.float64).reshape(n, n)
    except ValueError:
        raise InputError(f"numeric values in {source}", f"{value[:60]!r}", _ACTION_REEXPORT) from None
    return Spillover(detectors=parts[1:1 + n], matrix=matrix, source=source)


def _acquired_at(text: dict[str, str]) -> dt.datetime | None:
    date = text.get("$DATE", "")
    for fmt in ("%d-%b-%Y", "%d-%b-%y", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y"):
        try:
            day = dt.datetime.strptime(date.strip(), fmt)
            break
        except ValueError:
            continue
    else:
        return None
    m = re.match(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text.get("$BTIM", ""))
    if m:
        day = day.replace(hour=int(m.group(1)) % 24, minute=int(m.group(2)), second=int(m.group(3) or 0))
    return day


def sample_id_from(text: dict[str, str], file_name: str) -> str:
    """The contract's sample_id rule: ``SAMPLE ID``, else ``$SMNO``, else the file stem."""
    for key in ("SAMPLE ID", "$SMNO"):
        value = text.get(key, "").strip()
        if value:
            return value
    return Path(file_name).stem


_FLOAT_WIDTH = {"f": 4, "d": 8}


def _flowio_data_segment(data) -> tuple[int, int] | None:
    """(start, stop) of DATA as flowio uses them: HEADER for 2.0, TEXT for 3.x."""
    try:
        if data.version == "2.0":
            return int(data.header["data_start"]), int(data.header["data_stop"])
        return int(data.text["begindata"]), int(data.text["enddata"])
    except (KeyError, TypeError, ValueError):
        return None


def _load_float_events(data, path: Path, offset: int = 0) -> bool:
    """Fill ``data.events`` (a flowio ``FlowData`` read with ``only_text=True``) with numpy.

    Reproduces what flowio 1.x does for float/double list-mode DATA (``__parse_data``,
    ``__calc_data_item_count``, ``__parse_non_int_data`` with ``ignore_offset_error``):
    same segment offsets, same tolerance of a DATA end one byte too far, same item
    count, so ``data.as_array(preprocess=True)`` (flowio's gain, log, $TIMESTEP and
    time-channel rules) returns the same bits, minus the ``array.array`` detour.

    Returns False, touching nothing, for anything else (integer or ASCII data, another
    mode or byte order, odd offsets, a short read): the caller then lets flowio parse
    the file itself, errors included.
    """
    if sys.byteorder != "little":  # flowio's "<" means "no byteswap", i.e. native
        return False
    text = data.text
    width = _FLOAT_WIDTH.get(str(text.get("datatype", "")).lower())
    order = _FLOWIO_ORDER.get(text.get("byteord", ""))
    if width is None or order is None or str(text.get("mode", "")).strip().upper() != "L":
        return False
    segment = _flowio_data_segment(data)
    if segment is None:
        return False
    start, stop = segment
    size = stop - start + 1
    if size % width == 1:
        size -= 1  # flowio's ignore_offset_error: the end offset was exclusive
    if start < 0 or size <= 0 or size % width:
        return False
    count = size // width
    if offset + start + size > data.file_size:
        return False
    events = np.fromfile(str(path), dtype=f"{order}f{width}", count=count, offset=offset + start)
    if events.size != count:  # the file shrank since flowio measured it
        return False
    data.events = events
    return True


def _flowio_text(path: Path, name: str) -> dict[str, str] | None:
    """The TEXT keywords as flowio's own splitter reads them, before flowio acts on them.

    Uses flowio's private ``__parse_pairs`` (as the tests already pin its private
    ``__parse_data``): reading it first turns flowio's KeyError/regex errors on unusual
    delimiters into a message naming the delimiter. None if flowio renamed it; the
    caller then compares ``FlowData.text`` after the fact.
    """
    import flowio

    parse_pairs = getattr(flowio.FlowData, "_FlowData__parse_pairs", None)
    if parse_pairs is None:
        return None
    with open(path, "rb") as fh:
        header = fh.read(_HEADER_LEN)
        start, stop = int(header[10:18]), int(header[18:26])
        fh.seek(start)
        raw = fh.read(stop - start + 1)
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:
        decoded = raw.decode("ISO-8859-1")  # flowio's own fallback
    try:
        return parse_pairs(decoded)
    except Exception as exc:  # re.error on delimiters flowio puts unescaped into a regex
        raise InputError(
            "a TEXT delimiter flowkit can split on ('/', '|', '*', '\\' or a control character)",
            f"delimiter {decoded[:1]!r} in {name} ({type(exc).__name__}: {exc})",
            _ACTION_REEXPORT,
        ) from None


def _event_keywords(n_par: int) -> list[str]:
    """The keywords flowio turns into events (offsets, layout, gain, log, time step)."""
    keys = ["$PAR", "$DATATYPE", "$MODE", "$BYTEORD", "$BEGINDATA", "$ENDDATA", "$NEXTDATA", "$TIMESTEP"]
    for i in range(1, n_par + 1):
        keys += [f"$P{i}{c}" for c in "NBREG"]
    return keys


def _reads_alike(key: str, theirs: str | None, mine: str | None) -> bool:
    """Whether flowio's raw value means to flowio what the standard's value means.

    flowio int()s/float()s numbers (spaces harmless), but compares $BYTEORD and
    $DATATYPE as exact strings and finds the time channel by an exact $PnN 'time';
    other $PnN differences (flowio deletes every '$') only change labels.
    """
    if theirs is None or mine is None:
        return theirs is None and mine is None
    if key in ("$BYTEORD", "$DATATYPE"):
        return theirs == mine
    if re.fullmatch(r"\$P\d+N", key):
        return (theirs.lower() == "time") == (mine.lower() == "time")
    return theirs.strip() == mine


def _check_flowio_reads_text(theirs: dict[str, str], text: dict[str, str], name: str) -> None:
    """Refuse a file whose TEXT flowio splits differently from the FCS standard.

    flowio's splitter differs at the edges (a delimiter it does not escape, an escaped
    delimiter at the start or end of a value, padded keyword names, a TEXT segment not
    closed by its delimiter, where it drops the last character). Its events would then
    use wrong keywords, silently; flowkit reads the file the same way, so no one
    downstream can be right either.
    """
    for key in _event_keywords(int(text["$PAR"])):
        flowio_value = theirs.get(key[1:].lower())
        if not _reads_alike(key, flowio_value, text.get(key)):
            raise InputError(
                "a TEXT segment flowkit splits into the same keywords as the FCS 3.1 rules",
                f"{key} read as {flowio_value!r} by flowkit but {text.get(key)!r} by the standard in {name}"
                " (padded or lower-case-only differences in keyword names, an escaped delimiter next to"
                " a separator, or a TEXT segment not ending with its delimiter)",
                _ACTION_REEXPORT + "; flowkit would compute wrong events from this copy",
            )


# At most this many events are inspected for a $DATATYPE that does not fit the values.
_PLAUSIBILITY_EVENTS = 2000


def _check_float_values(data, text: dict[str, str], name: str) -> None:
    """Refuse float DATA that is really integers.

    Small integers read as IEEE floats are subnormal (1000 -> 1.4e-42); no cytometer
    records most of its values there, so a majority of subnormal non-zero values in
    the first events means the writer labelled integer DATA as $DATATYPE F/D.
    """
    sample = np.asarray(data.events[: _PLAUSIBILITY_EVENTS * data.channel_count])
    values = np.abs(sample[np.isfinite(sample) & (sample != 0)])
    if values.size < 100:
        return
    share = np.count_nonzero(values < np.finfo(sample.dtype).tiny) / values.size
    if share > 0.5:
        raise InputError(
            f"$DATATYPE {text['$DATATYPE']} values that are ordinary floating-point numbers",
            f"{share:.0%} of the non-zero values in the first events are subnormal (< 1e-37) in {name}: "
            "the DATA looks like integers labelled as floating point",
            _ACTION_REEXPORT,
        )


def _check_integer_values(data, path: Path, text: dict[str, str], offset: int, name: str) -> None:
    """Refuse 32-bit integer DATA that is really IEEE floats, where that can be seen.

    flowio masks integer values to the next power of two of $PnR (FCS 3.1, 3.2.20),
    which hides floats labelled $DATATYPE I behind plausible small numbers, so the raw
    words are read again and viewed as float32: measured floats give ordinary
    magnitudes (1e-6..1e9) on nearly every non-zero word, while instrument integers
    (< 2^24) view as subnormals and uniformly random words as ordinary only ~20% of
    the time. Only 32-bit data is checked: floats labelled 8/16-bit I would not match
    $TOT and are refused by validate_structure already.
    """
    n_par = data.channel_count
    segment = _flowio_data_segment(data)
    if segment is None or any(text.get(f"$P{i}B") != "32" for i in range(1, n_par + 1)):
        return
    order = _FLOWIO_ORDER.get(text["$BYTEORD"], "=")
    count = min(int(text["$TOT"] or 0), _PLAUSIBILITY_EVENTS) * n_par
    words = np.fromfile(str(path), dtype=f"{order}f4", count=count, offset=offset + segment[0])
    magnitudes = np.abs(words[words.view(f"{order}u4") != 0])
    if magnitudes.size < 100:
        return
    share = np.count_nonzero((magnitudes >= 1e-6) & (magnitudes <= 1e9)) / magnitudes.size
    if share > 0.9:
        raise InputError(
            "$DATATYPE I (integer) values",
            f"{share:.0%} of the non-zero 32-bit values in the first events read as ordinary floating-point "
            f"numbers in {name}: the DATA looks like floats labelled $DATATYPE I (flowkit would read "
            "garbage)",
            _ACTION_REEXPORT,
        )


def read_fcs(path: Path, source_sha256: str | None = None, source_name: str | None = None) -> FcsSample:
    """Validate and read the first data set of an FCS file.

    Events are returned as flowio preprocesses them for flowkit (gain, log
    amplification and $TIMESTEP applied), float64, so gates evaluate exactly as
    in flowkit. Float and double DATA is read with numpy (:func:`_load_float_events`)
    and handed to flowio's own ``as_array``: same bits, about half the time.
    """
    import flowio  # deferred: keeps `graftwatch --help` fast

    path = Path(path)
    name = source_name or path.name
    version, text = validate_structure(path)
    flowio_text = _flowio_text(path, name)
    if flowio_text is not None:
        _check_flowio_reads_text(flowio_text, text, name)
    n_datasets = 1
    nextdata = text.get("$NEXTDATA", "0").strip() or "0"
    try:
        with warnings.catch_warnings():
            # flowio warns on the off-by-one DATA end that validate_structure already accepted.
            warnings.simplefilter("ignore")
            # validate_structure checked that HEADER and TEXT DATA offsets agree wherever
            # the HEADER gives them; flowio's own check would also refuse HEADER zeros on
            # files under 99,999,999 bytes, which FCS 3.1 (3.1) reads as "see TEXT".
            options: dict = {"ignore_offset_error": True, "ignore_offset_discrepancy": True}
            if nextdata != "0" and int(nextdata) > 0:
                n_datasets = 2  # at least; the rest are noted, not read
                options["nextdata_offset"] = 0
            data = None
            if text.get("$DATATYPE", "").upper() in ("F", "D"):
                # Fast path: flowio parses HEADER/TEXT/channels, numpy reads DATA.
                data = flowio.FlowData(str(path), only_text=True, **options)
                if not _load_float_events(data, path, options.get("nextdata_offset") or 0):
                    data = None
            if data is None:
                data = flowio.FlowData(str(path), **options)
            if flowio_text is None:
                _check_flowio_reads_text(data.text, text, name)
            if text["$DATATYPE"].upper() == "I":
                _check_integer_values(data, path, text, options.get("nextdata_offset") or 0, name)
            else:
                _check_float_values(data, text, name)
            events = data.as_array(preprocess=True)
    except InputError:
        raise
    except Exception as exc:  # flowio raises bare exceptions for many malformations
        raise InputError(
            "an FCS file flowio can read",
            f"{type(exc).__name__}: {exc} in {name}",
            _ACTION_REEXPORT,
        ) from None
    channels = [
        Channel(index=i, pnn=data.pnn_labels[i], pns=(data.pns_labels[i] or None))
        for i in range(data.channel_count)
    ]
    spill = None
    for key in ("$SPILLOVER", "$SPILL", "SPILL", "SPILLOVER"):
        if text.get(key, "").strip():
            spill = parse_spillover(text[key], key)
            break
    return FcsSample(
        sample_id=sample_id_from(text, name),
        source_name=name,
        source_sha256=source_sha256 or sha256_of(path),
        version=version,
        channels=channels,
        events=events,
        keywords=text,
        spillover=spill,
        acquired_at=_acquired_at(text),
        instrument=(text.get("$CYT") or None),
        n_datasets=n_datasets,
        path=path,
    )
