"""FCS structure validation before any event is allocated (FCS 3.1 standard, Spidlen et al.
2010, sections 3.1-3.2), plus the keyword values the decoder (flowio) needs.

Validation happens on the HEADER and TEXT segments only, so a truncated, mislabelled or
hostile file costs a few kilobytes of reading and becomes an
:class:`~assays.errors.InputError` (quarantine), never a traceback or a multi-gigabyte
allocation.

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
"""

from __future__ import annotations

import sys
from pathlib import Path

from assays.errors import InputError

FCS_VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1")
HEADER_LEN = 58
# A sane upper bound on the TEXT segment: real files carry < 1 MB of keywords.
_MAX_TEXT_BYTES = 16 * 2**20
ACTION_REEXPORT = (
    "re-export the file from the acquisition software (or copy it again from the "
    "instrument PC), then drop the new copy into the inbox"
)
# The lab's words for the structural faults below (offsets, keywords, byte counts): what a
# technician can act on is that the copy is damaged, not which keyword is off.
MISCOUNTED = "This FCS file holds a different number of events than it declares (cut short, or its header is wrong)."
DAMAGED = "This FCS file is damaged or incomplete (cut short while copying, or changed by another program)."
BAD_SETTING = "This FCS file has a malformed channel setting (range, amplification or gain)."
BAD_RANGE = "This FCS file's channel ranges do not fit its integer event data."
CUT_SHORT = "This FCS file is cut short: its event data end beyond the end of the file."


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
            ACTION_REEXPORT,
            problem=DAMAGED,
        )
    return int(text)


def parse_text_segment(raw: bytes) -> dict[str, str]:
    """Split an FCS TEXT segment into keywords (upper-cased) and values.

    The first byte is the delimiter; a doubled delimiter inside a key or value
    stands for one literal delimiter (FCS 3.1, section 3.2.7).
    """
    if len(raw) < 2:
        raise InputError("a TEXT segment with keywords", "an empty TEXT segment", ACTION_REEXPORT, problem=DAMAGED)
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
                problem="This FCS file has an empty keyword value, which the FCS standard does not allow.",
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
                    ACTION_REEXPORT,
                    problem=DAMAGED,
                )
            bits += int(pnb)
        return bits // 8
    if datatype == "A":
        # flowio (and so flowkit) cannot decode ASCII DATA; FCS 3.1 deprecates it.
        raise InputError(
            "binary event data ($DATATYPE F, D or I)",
            f"$DATATYPE A (ASCII numbers, deprecated in FCS 3.1) in {name}",
            "export the file again as FCS 3.0/3.1 with float (F) data",
            problem="This FCS file stores its events as text numbers, an old format graftwatch does not read.",
        )
    raise InputError(
        "$DATATYPE F, D or I",
        f"{datatype or 'no $DATATYPE'} in {name}",
        ACTION_REEXPORT,
        problem="This FCS file declares an event data type graftwatch does not read.",
    )


def validate_structure(path: Path) -> tuple[str, dict[str, str]]:
    """Check HEADER, TEXT and DATA geometry of an FCS file without reading events.

    Returns the version tag and the TEXT keywords; raises ``InputError`` naming the
    first problem found.
    """
    name = path.name
    size = path.stat().st_size
    if size < HEADER_LEN:
        raise InputError(
            f"an FCS file of at least {HEADER_LEN} bytes (HEADER)",
            f"{size} bytes in {name}" + (" (the file is empty)" if size == 0 else ""),
            "check that the instrument finished writing the file, then copy it again",
            problem="This FCS file is empty or cut short.",
        )
    with open(path, "rb") as fh:
        header = fh.read(HEADER_LEN)
        version = header[:6].decode("ascii", "replace")
        if version not in FCS_VERSIONS:
            raise InputError(
                "an FCS file starting with FCS2.0, FCS3.0 or FCS3.1",
                f"{header[:6]!r} at the start of {name}",
                "drop only FCS files exported by the cytometer software",
                problem="This file does not start like an FCS file.",
            )
        text_start = _int_field(header[10:18], "TEXT start", name)
        text_end = _int_field(header[18:26], "TEXT end", name)
        hdr_data_start = _int_field(header[26:34], "DATA start", name)
        hdr_data_end = _int_field(header[34:42], "DATA end", name)
        if not (HEADER_LEN <= text_start < text_end < size):
            raise InputError(
                f"TEXT segment offsets inside the file (file size {size} bytes)",
                f"TEXT at bytes {text_start}-{text_end} in {name}",
                "the file is truncated or damaged; " + ACTION_REEXPORT,
                problem=CUT_SHORT,
            )
        if text_end - text_start > _MAX_TEXT_BYTES:
            raise InputError(
                f"a TEXT segment under {_MAX_TEXT_BYTES // 2**20} MB",
                f"{(text_end - text_start) // 2**20} MB in {name}",
                ACTION_REEXPORT,
                problem="This FCS file's keyword section is implausibly large: the file is probably damaged.",
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
            ACTION_REEXPORT,
            problem="This FCS file lacks keywords every FCS file must have.",
        )
    n_par_s = text["$PAR"]
    if not n_par_s.isdigit() or not (1 <= int(n_par_s) <= 10_000):
        raise InputError("$PAR (number of parameters) between 1 and 10000", f"{n_par_s!r} in {name}", ACTION_REEXPORT,
                         problem=DAMAGED)
    n_par = int(n_par_s)
    absent = [f"$P{i}N" for i in range(1, n_par + 1) if f"$P{i}N" not in text]
    if absent:
        raise InputError(
            f"a name ($PnN) for each of the {n_par} parameters",
            f"{', '.join(absent[:5])} missing in {name}",
            ACTION_REEXPORT,
            problem="This FCS file does not name all its channels.",
        )
    _check_mode(text, name)
    byteord = _check_byteord(text, n_par, name)
    width = {"F": 4, "D": 8}.get(text.get("$DATATYPE", "").upper())
    if width and len(byteord.split(",")) not in (width, 4 if width == 8 else width):
        # Some writers keep a 4-byte $BYTEORD for doubles; a 2-byte order for floats is never right.
        raise InputError(
            f"a $BYTEORD of {width} bytes for $DATATYPE {text['$DATATYPE']}",
            f"{text.get('$BYTEORD')!r} in {name}",
            ACTION_REEXPORT,
            problem=DAMAGED,
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
                ACTION_REEXPORT,
                problem=DAMAGED,
            )
        try:
            data_start = int(text.get("$BEGINDATA", hdr_data_start) or 0)
            data_end = int(text.get("$ENDDATA", hdr_data_end) or 0)
        except ValueError:
            raise InputError(
                "$BEGINDATA/$ENDDATA as byte offsets",
                f"{text.get('$BEGINDATA')!r}/{text.get('$ENDDATA')!r} in {name}",
                ACTION_REEXPORT,
                problem=DAMAGED,
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
                    problem=DAMAGED,
                )
    if not (0 < data_start <= data_end < size + 1):
        raise InputError(
            f"a DATA segment inside the file (file size {size} bytes)",
            f"DATA at bytes {data_start}-{data_end} in {name}",
            "the file is truncated or damaged; " + ACTION_REEXPORT,
            problem=CUT_SHORT,
        )
    if data_end >= size:
        raise InputError(
            f"a DATA segment ending inside the file (file size {size} bytes)",
            f"DATA ending at byte {data_end} in {name}: the file is truncated",
            "check that the copy finished, then " + ACTION_REEXPORT,
            problem=CUT_SHORT,
        )
    tot_s = text.get("$TOT")
    bpe = _bytes_per_event(text, n_par, name)
    _check_channel_keywords(text, n_par, name)
    if tot_s is not None and bpe is not None:
        if not tot_s.isdigit():
            raise InputError("$TOT (number of events) as a whole number", f"{tot_s!r} in {name}", ACTION_REEXPORT,
                             problem=MISCOUNTED)
        expected = int(tot_s) * bpe
        actual = data_end - data_start + 1
        # One byte over is a common writer bug (end offset exclusive); flowio tolerates it too.
        if actual not in (expected, expected + 1):
            raise InputError(
                f"$TOT x bytes per event = {tot_s} x {bpe} = {expected} bytes of DATA",
                f"{actual} bytes in {name}"
                + (" (the file is truncated or $TOT is wrong)" if actual < expected else ""),
                ACTION_REEXPORT,
                problem=MISCOUNTED,
            )
    return version, text


# $BYTEORD values flowio maps to a byte order (flowdata.FlowData.__parse_data); it reads
# any other value in the machine's native order, with only a warning.
FLOWIO_ORDER = {"1,2,3,4": "<", "1,2": "<", "4,3,2,1": ">", "2,1": ">"}


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
    if byteord in FLOWIO_ORDER or byteord == native or one_byte:
        return byteord
    hint = " (spaces inside the value)" if " " in byteord else ""
    raise InputError(
        "$BYTEORD 1,2,3,4 or 4,3,2,1",
        f"{byteord!r}{hint} in {name}: flowkit would read these bytes in the wrong order",
        ACTION_REEXPORT,
        problem="This FCS file declares a byte order graftwatch cannot read safely.",
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
            problem="This FCS file holds histograms, not one row per cell (list mode).",
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
                             f"{pnr or 'no $P%dR' % i!r} in {name}", ACTION_REEXPORT,
                             problem=BAD_SETTING)
        pne = text.get(f"$P{i}E")
        if pne is not None and (len(pne.split(",")) != 2 or not all(map(_is_number, pne.split(",")))):
            raise InputError(f"$P{i}E (amplification of {label}) as two numbers 'decades,offset'",
                             f"{pne!r} in {name}", ACTION_REEXPORT,
                             problem=BAD_SETTING)
        png = text.get(f"$P{i}G")
        if png is not None and not _is_number(png):
            raise InputError(f"$P{i}G (gain of {label}) as a number", f"{png!r} in {name}", ACTION_REEXPORT,
                             problem=BAD_SETTING)
    timestep = text.get("$TIMESTEP", "")
    # flowio reads $TIMESTEP only for a channel named "Time"; other files may carry junk there.
    has_time = any(text[f"$P{i}N"].lower() == "time" for i in range(1, n_par + 1))
    if has_time and timestep and not _is_number(timestep):
        raise InputError("$TIMESTEP as a number (seconds per time unit)", f"{timestep!r} in {name}",
                         ACTION_REEXPORT,
                         problem="This FCS file has a malformed time step, so its time channel cannot be read.")
    nextdata = text.get("$NEXTDATA", "0") or "0"
    if not nextdata.isdigit():
        raise InputError("$NEXTDATA as a byte offset (digits)", f"{nextdata!r} in {name}", ACTION_REEXPORT,
                         problem=DAMAGED)
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
                             f"{text[f'$P{i}R']!r} in {name}", ACTION_REEXPORT,
                             problem=BAD_RANGE)
    bits = widths[0]
    ranges = [_next_power_of_2(int(text[f"$P{i}R"])) for i in range(1, n_par + 1)]
    if not any(r < 2**bits for r in ranges):
        return  # nothing is masked
    for i, r in enumerate(ranges, 1):
        if r > 2**bits:
            raise InputError(
                f"$P{i}R (range of {text[f'$P{i}N']}) at most 2^{bits} = {2**bits} for {bits}-bit integer data",
                f"$P{i}R = {text[f'$P{i}R']} in {name}",
                ACTION_REEXPORT,
                problem=BAD_RANGE,
            )
