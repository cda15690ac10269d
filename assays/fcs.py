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
  2.0), HEADER and TEXT agreeing where both are given, and
  ``$TOT x bytes-per-event`` equal to the DATA segment length.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from assays.errors import InputError
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


def sha256_of(path: Path, chunk: int = 2**20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (files can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    if len(tokens) % 2:
        # Some writers leave a stray trailing token; drop it rather than refuse the file.
        tokens = tokens[:-1]
    return {tokens[i].strip().upper(): tokens[i + 1].strip() for i in range(0, len(tokens), 2)}


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
        return None  # ASCII data has variable width: no size check possible
    raise InputError(
        "$DATATYPE F, D, I or A",
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
    byteord = text.get("$BYTEORD", "").replace(" ", "")
    if byteord not in ("1,2,3,4", "4,3,2,1", "1,2", "2,1", "1,2,3,4,5,6,7,8", "8,7,6,5,4,3,2,1"):
        raise InputError("$BYTEORD 1,2,3,4 or 4,3,2,1", f"{text.get('$BYTEORD')!r} in {name}", _ACTION_REEXPORT)
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


# flowio's own byte-order strings (flowdata.FlowData.__parse_data): anything else makes
# flowio warn and read in native order, which stays on flowio's path.
_FLOWIO_ORDER = {"1,2,3,4": "<", "1,2": "<", "4,3,2,1": ">", "2,1": ">"}
_FLOAT_WIDTH = {"f": 4, "d": 8}


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
    try:
        if data.version == "2.0":
            start, stop = int(data.header["data_start"]), int(data.header["data_stop"])
        else:
            start, stop = int(text["begindata"]), int(text["enddata"])
    except (KeyError, TypeError, ValueError):
        return False
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
    n_datasets = 1
    nextdata = text.get("$NEXTDATA", "0").strip() or "0"
    try:
        with warnings.catch_warnings():
            # flowio warns on the off-by-one DATA end that validate_structure already accepted.
            warnings.simplefilter("ignore")
            options: dict = {"ignore_offset_error": True}
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
