"""Content identity of any input file: the sha256 that keys ingest_log, samples and duplicates."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path, chunk: int = 2**20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (files can be gigabytes).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"abc")
    >>> sha256_of(Path(fh.name))[:16]
    'ba7816bf8f01cfea'
    >>> os.unlink(fh.name)
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_hashed(path: Path) -> tuple[bytes, str]:
    """A file's bytes and their hex sha256, from one read (a reader that parses those
    bytes then saves reading the file a second time).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"abc")
    >>> content, sha = read_hashed(Path(fh.name))
    >>> content, sha == sha256_of(Path(fh.name))
    (b'abc', True)
    >>> os.unlink(fh.name)
    """
    with open(path, "rb") as fh:
        content = fh.read()
    return content, hashlib.sha256(content).hexdigest()
