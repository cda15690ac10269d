"""Bytes of an instrument export as text: its encoding recognised (UTF-8 with or without BOM,
UTF-16 with or without BOM, else latin-1), and a read failure as an InputError."""

from __future__ import annotations

import codecs
from pathlib import Path

from assays.errors import InputError


def decode(raw: bytes, source_name: str = "file") -> str:
    """Text of an export: UTF-8 (with or without BOM), UTF-16 (BOM or NUL pattern), else latin-1.

    Latin-1 is the last resort because it never fails: Windows instrument PCs often
    write cp1252 (``µ`` as byte 0xB5), which latin-1 maps to the same character.
    """
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace")
    sample = raw[:4096]
    if sample and sample.count(b"\x00") > len(sample) // 4:
        # UTF-16 without BOM: every other byte of ASCII text is NUL.
        even_nuls = sample[0::2].count(b"\x00")
        odd_nuls = sample[1::2].count(b"\x00")
        return raw.decode("utf-16-le" if odd_nuls >= even_nuls else "utf-16-be", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or an InputError a technician can act on."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            expected="a readable export file",
            found=f"the file {Path(path).name!r} could not be opened ({exc.strerror or exc})",
            action="check that the file was copied completely and is not locked, then drop it again",
            problem="This file could not be opened.",
        ) from None
