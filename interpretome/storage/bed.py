"""BED lines, read in one place (0-based, end exclusive), for regions and for annotations.

``open_text(path)`` opens plain or gzipped text; ``skip_line(line)`` tells blank, ``#``,
``track`` and ``browser`` lines; ``parse_bed_line(line)`` returns ``(fields, start, end)`` or
raises ``ValueError`` saying what is wrong (callers add the file and line number). Fields are
tab-separated, or whitespace-separated when a line has fewer than 3 tab-separated ones.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

HEADER_PREFIXES = ("#", "track", "browser")


def open_text(path: str | os.PathLike):
    """Open a plain or ``.gz`` text file for reading (text mode)."""
    path = Path(path)
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path, "rt")


def skip_line(line: str) -> bool:
    """Whether a line is blank or a header/comment line (``#``, ``track``, ``browser``)."""
    return not line.strip() or line.startswith(HEADER_PREFIXES)


def parse_bed_line(line: str) -> tuple[list[str], int, int]:
    """Return ``(fields, start, end)`` of one BED line; raise ``ValueError`` for a malformed one."""
    f = line.rstrip("\n").split("\t")
    if len(f) < 3:
        f = line.split()
    if len(f) < 3:
        raise ValueError(f"{len(f)} columns, BED needs at least 3 (contig, start, end)")
    start, end = int(f[1]), int(f[2])
    if start < 0 or end <= start:
        raise ValueError(f"start {start} end {end}: need 0 <= start < end")
    return f, start, end


def bed_name(fields: list[str]) -> str | None:
    """Return the name column (4) of BED fields, None when absent or ``.``."""
    return fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else None
