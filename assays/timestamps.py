"""Acquisition timestamps as instrument exports write them."""

from __future__ import annotations

import datetime as dt
import re

from assays.locale_numbers import MISSING_TOKENS


def parse_timestamp(text: str | None) -> dt.datetime | None:
    """Best-effort instrument time stamp (naive, instrument-local); ``None`` when unreadable.

    Handles ``2010-10-21 00:51:26 AM EDT``, ``2024-02-12 11:30:22 PM UTC``, ISO with
    offsets, ``5/19/2023`` and ``10-20-2010``. Zone abbreviations are dropped because
    EST/EDT/IST are ambiguous; exports of one lab share one zone.
    """
    if not text or text.strip().casefold() in MISSING_TOKENS:
        return None
    s = text.strip()
    try:
        parsed = dt.datetime.fromisoformat(s)
        return parsed.replace(tzinfo=None)
    except ValueError:
        pass
    s = re.sub(r"\s+[A-Z]{2,5}$", "", s)  # trailing zone abbreviation
    ampm = None
    m = re.search(r"\s+(AM|PM)$", s, flags=re.IGNORECASE)
    if m:
        ampm = m.group(1).upper()
        s = s[: m.start()]
    for fmt in (
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
        "%m-%d-%Y %H:%M:%S",
        "%m-%d-%Y",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y",
    ):
        try:
            parsed = dt.datetime.strptime(s, fmt)
        except ValueError:
            continue
        # Some exports write 24-hour times followed by PM ("13:07:52 PM"); trust the hour then.
        if ampm == "PM" and parsed.hour < 12:
            parsed = parsed.replace(hour=parsed.hour + 12)
        elif ampm == "AM" and parsed.hour == 12:
            parsed = parsed.replace(hour=0)
        return parsed
    return None
