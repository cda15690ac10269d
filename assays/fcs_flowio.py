"""Workarounds around flowio, the FCS decoder under flowkit: checks that it read what the
standard says, and a faster read of float DATA giving flowio's own bits.

flowio's TEXT splitter differs from the standard at edges (unusual delimiters, escaped
delimiters next to a separator, padded keywords, a TEXT not closed by its delimiter), and
it does not check that values look like the declared ``$DATATYPE`` (floats labelled I,
integers labelled F); in each of those cases it returns wrong events without an error, so
they are refused here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from assays.errors import InputError
from assays.fcs_validate import ACTION_REEXPORT, FLOWIO_ORDER, HEADER_LEN


_FLOAT_WIDTH = {"f": 4, "d": 8}


def _flowio_data_segment(data) -> tuple[int, int] | None:
    """(start, stop) of DATA as flowio uses them: HEADER for 2.0, TEXT for 3.x."""
    try:
        if data.version == "2.0":
            return int(data.header["data_start"]), int(data.header["data_stop"])
        return int(data.text["begindata"]), int(data.text["enddata"])
    except (KeyError, TypeError, ValueError):
        return None


def load_float_events(data, path: Path, offset: int = 0, content: bytes | None = None) -> bool:
    """Fill ``data.events`` (a flowio ``FlowData`` read with ``only_text=True``) with numpy.

    ``content``: the file's bytes when the caller has read them already (then DATA is a
    view of them instead of a second read of the file).

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
    order = FLOWIO_ORDER.get(text.get("byteord", ""))
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
    if content is None:
        events = np.fromfile(str(path), dtype=f"{order}f{width}", count=count, offset=offset + start)
    elif offset + start + size <= len(content):
        events = np.frombuffer(content, dtype=f"{order}f{width}", count=count, offset=offset + start)
    else:
        return False
    if events.size != count:  # the file shrank since flowio measured it
        return False
    data.events = events
    return True


def read_flowio_text(path: Path, name: str) -> dict[str, str] | None:
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
        header = fh.read(HEADER_LEN)
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
            ACTION_REEXPORT,
            problem="This FCS file's keyword section is written in a way that cannot be read reliably.",
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


def check_flowio_reads_text(theirs: dict[str, str], text: dict[str, str], name: str) -> None:
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
                ACTION_REEXPORT + "; flowkit would compute wrong events from this copy",
                problem="This FCS file's keyword section is written in a way that cannot be read reliably.",
            )


# At most this many events are inspected for a $DATATYPE that does not fit the values.
_PLAUSIBILITY_EVENTS = 2000


def check_float_values(data, text: dict[str, str], name: str) -> None:
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
            ACTION_REEXPORT,
            problem="This FCS file's event values do not match the data type it declares: they would be read wrong.",
        )


def check_integer_values(data, path: Path, text: dict[str, str], offset: int, name: str) -> None:
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
    order = FLOWIO_ORDER.get(text["$BYTEORD"], "=")
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
            ACTION_REEXPORT,
            problem="This FCS file's event values do not match the data type it declares: they would be read wrong.",
        )
