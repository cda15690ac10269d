"""FCS 2.0 / 3.0 / 3.1 reader: validate the file's structure (:mod:`assays.fcs_validate`),
read it with flowio (with the checks of :mod:`assays.fcs_flowio`), and interpret the
keywords graftwatch uses (sample id, spillover, acquisition time).
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path

import numpy as np

from assays.errors import InputError
from assays.fcs_flowio import (check_float_values, check_flowio_reads_text, check_integer_values, load_float_events,
                               read_flowio_text)
from assays.fcs_validate import ACTION_REEXPORT, DAMAGED, FCS_VERSIONS, sniff, validate_structure
from assays.hashing import sha256_of
from assays.records import Channel, FcsSample, Spillover

__all__ = ["FCS_VERSIONS", "sniff", "validate_structure", "parse_spillover", "sample_id_from", "read_fcs"]


def parse_spillover(value: str, source: str) -> Spillover:
    """Parse a $SPILLOVER / $SPILL / SPILL keyword value.

    Format (FCS 3.1, 3.2.19): ``n,name_1,...,name_n,v_11,...,v_nn`` row-major.
    """
    parts = [p.strip() for p in value.split(",")]
    try:
        n = int(parts[0])
    except (ValueError, IndexError):
        raise InputError(f"{source} starting with the number of detectors", f"{value[:40]!r}", ACTION_REEXPORT,
                         problem="The compensation (spillover) matrix stored in this FCS file is malformed.") from None
    if len(parts) != 1 + n + n * n:
        raise InputError(
            f"{source} with 1 + n + n² = {1 + n + n * n} values for n = {n}",
            f"{len(parts)} values",
            "fix the compensation in the acquisition software and re-export",
            problem="The compensation (spillover) matrix stored in this FCS file is malformed.",
        )
    try:
        matrix = np.array([float(v) for v in parts[1 + n:]], dtype=np.float64).reshape(n, n)
    except ValueError:
        raise InputError(f"numeric values in {source}", f"{value[:60]!r}", ACTION_REEXPORT,
                         problem="The compensation (spillover) matrix stored in this FCS file is malformed.") from None
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


def read_fcs(path: Path, source_sha256: str | None = None, source_name: str | None = None,
             content: bytes | None = None) -> FcsSample:
    """Validate and read the first data set of an FCS file.

    Events are returned as flowio preprocesses them for flowkit (gain, log
    amplification and $TIMESTEP applied), float64, so gates evaluate exactly as
    in flowkit. Float and double DATA is read with numpy (:func:`load_float_events`)
    and handed to flowio's own ``as_array``: same bits, about half the time.
    ``content``: the file's bytes, already read (``assays.hashing.read_hashed``): float
    DATA is taken from them instead of read again (HEADER and TEXT are still read and
    validated from the file).
    """
    import flowio  # deferred: keeps `graftwatch --help` fast

    path = Path(path)
    name = source_name or path.name
    version, text = validate_structure(path)
    flowio_text = read_flowio_text(path, name)
    if flowio_text is not None:
        check_flowio_reads_text(flowio_text, text, name)
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
                if not load_float_events(data, path, options.get("nextdata_offset") or 0, content):
                    data = None
            if data is None:
                data = flowio.FlowData(str(path), **options)
            if flowio_text is None:
                check_flowio_reads_text(data.text, text, name)
            if text["$DATATYPE"].upper() == "I":
                check_integer_values(data, path, text, options.get("nextdata_offset") or 0, name)
            else:
                check_float_values(data, text, name)
            events = data.as_array(preprocess=True)
    except InputError:
        raise
    except Exception as exc:  # flowio raises bare exceptions for many malformations
        raise InputError(
            "an FCS file flowio can read",
            f"{type(exc).__name__}: {exc} in {name}",
            ACTION_REEXPORT,
            problem=DAMAGED,
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
