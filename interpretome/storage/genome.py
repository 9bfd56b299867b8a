"""Genomes: multi-contig FASTA read lazily with indexed random access, regions, and track geometry.

``read_genome`` returns a Dataset like ``read_fasta``'s but shaped for long contigs: one contig per
row chunk (so a task never touches two contigs), position chunks of ``position_chunk`` bases read
through the pyfaidx index (a gzipped FASTA is decompressed once into the cache, see
``readers``), and no ``position`` index coordinate (a 250 Mb contig would need a 2 GB one). A task
that needs a window plus a halo reads only the chunks that window touches.

Regions: ``chr:start-end`` strings use the samtools/UCSC convention, **1-based, end inclusive**
(``chrI:1-100`` is the first 100 bases; commas are allowed, ``chrI`` alone is the whole contig);
BED files are 0-based, end exclusive. Internally a ``Region`` is 0-based, end exclusive.

``TrackGeometry`` says where each bin of a tiled track lies on the genome (it is stored in the
track group's attrs, so exporters and renderers need no model):

* scalar models (``bin_size=None``): one bin per window; windows start every ``stride`` bases
  and, when the last regular window stops short of the region end, one more window ends exactly
  at the region end (the tail is never dropped). A bin's value sits at its window centre
  (``start + window // 2``, the Genomic-ULMFiT recipe); for interval exports each bin spans from
  the midpoint with its left neighbour's centre to the midpoint with its right neighbour's
  (the first from the region start, the last to the region end).
* profile models (``bin_size=B``): the model maps a window to ``L_out`` bins of ``B`` bases
  covering ``[crop, window - crop_right)`` of the window. Windows start at multiples of ``stride``
  (a multiple of ``B``) plus one tail window at the largest multiple of ``B`` that still fits, so
  bin ``g`` of a region is ``[crop + g*B, crop + (g+1)*B)`` for every window; overlapping windows
  are averaged (mean) per bin. The first ``crop`` bases, the last ``crop_right`` bases and the
  final partial bin (fewer than ``B`` bases) are not predicted.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import InputError
from .bed import bed_name, open_text, parse_bed_line, skip_line
from .readers import fasta_code_array
from .schema import POSITION, SEQUENCE


@dataclass(frozen=True)
class Region:
    """A genomic interval: ``contig``, 0-based ``start``, exclusive ``end`` (None: the contig end).

    ``strand``: '+' / '-' when known (a BED strand column), else None; read by ``strand="auto"``.

    Parameters
    ----------
    contig : str
        The contig (sequence) name.
    start : int
        0-based first base.
    end : int, optional
        0-based end, exclusive (None: the contig end).
    name : str, optional
        The region's label.
    strand : {'+', '-'}, optional
        The region's strand.

    Examples
    --------
    >>> import interpretome as it
    >>> r = it.Region("NC_001133.9", 1000, 2000, name="promoter")
    >>> r.contig, r.end - r.start, r.strand
    ('NC_001133.9', 1000, None)
    """

    contig: str
    start: int = 0
    end: int | None = None
    name: str | None = None
    strand: str | None = None

    @property
    def label(self) -> str:
        """Return the region's label: its name, else ``contig:start+1-end`` (1-based inclusive)."""
        if self.name:
            return self.name
        return f"{self.contig}:{self.start + 1}-{self.end}" if self.end is not None else self.contig


_REGION_RE = re.compile(r"^(?P<contig>[^:\s]+)(?::(?P<start>[\d,]+)-(?P<end>[\d,]+))?$")


def parse_region(text: str) -> Region:
    """Return the ``Region`` of ``chr:start-end`` (1-based inclusive; commas allowed) or ``chr``."""
    m = _REGION_RE.match(str(text).strip())
    if not m:
        raise InputError(f"region {text!r} is not 'contig:start-end' (1-based, inclusive, e.g. 'chrI:1001-2000') "
                         f"nor a contig name")
    if m.group("start") is None:
        return Region(m.group("contig"))
    start, end = int(m.group("start").replace(",", "")), int(m.group("end").replace(",", ""))
    if start < 1 or end < start:
        raise InputError(f"region {text!r} has start {start} and end {end}: need 1 <= start <= end (1-based, inclusive)")
    return Region(m.group("contig"), start - 1, end)


def read_bed(path: str | os.PathLike) -> list[Region]:
    """Return the regions of a BED file (0-based, end exclusive; column 4, when present, names them;
    column 6, when '+' or '-', is the region's ``strand``).

    ``track``, ``browser`` and ``#`` lines are skipped; a malformed line raises ``InputError``
    naming the file and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"BED file {str(path)!r} does not exist: check the path")
    out = []
    with open_text(path) as fh:
        for i, line in enumerate(fh, 1):
            if skip_line(line):
                continue
            try:
                f, start, end = parse_bed_line(line)
            except ValueError as e:
                raise InputError(f"{path}:{i}: malformed BED line ({e}): {line.strip()[:80]!r}") from e
            strand = f[5] if len(f) > 5 and f[5] in ("+", "-") else None
            out.append(Region(f[0], start, end, bed_name(f), strand))
    if not out:
        raise InputError(f"BED file {str(path)!r} holds no regions")
    return out


def as_regions(regions) -> list[Region]:
    """Return a list of Regions from Regions, ``chr:start-end`` strings, (contig, start, end) tuples or a BED path.

    A BED path may be BED3+ or BED12 (``.bed``, ``.bed12``, optionally ``.gz``): each line is one
    region (its whole span).
    """
    if regions is None:
        return []
    if isinstance(regions, (str, os.PathLike)) and (
            str(regions).endswith((".bed", ".bed.gz", ".bed12", ".bed12.gz")) or os.path.isfile(regions)):
        return read_bed(regions)
    if isinstance(regions, (str, Region)):
        regions = [regions]
    out = []
    for r in regions:
        if isinstance(r, Region):
            out.append(r)
        elif isinstance(r, str):
            out.append(parse_region(r))
        elif isinstance(r, (tuple, list)) and len(r) in (3, 4):
            out.append(Region(str(r[0]), int(r[1]), int(r[2]), *(r[3:] or ())))
        else:
            raise InputError(f"region {r!r} is neither a Region, a 'contig:start-end' string nor (contig, start, end)")
    return out


def resolve_regions(regions, names, lengths) -> list[Region]:
    """Return ``regions`` checked against the contigs ``names`` with ``lengths`` (ends filled in).

    ``None`` gives one region per contig. Raises ``InputError`` for an unknown contig (naming
    a few known ones) or a region outside its contig.
    """
    names = [str(n) for n in names]
    size = dict(zip(names, (int(x) for x in lengths)))
    if regions is None:
        return [Region(n, 0, size[n], n) for n in names]
    out = []
    for r in as_regions(regions):
        if r.contig not in size:
            known = ", ".join(repr(n) for n in names[:8]) + (" ..." if len(names) > 8 else "")
            raise InputError(f"region {r.label!r} names contig {r.contig!r}, which the genome does not have "
                             f"(it has {known}): fix the contig name")
        end = size[r.contig] if r.end is None else int(r.end)
        if r.start < 0 or end > size[r.contig] or end <= r.start:
            raise InputError(f"region {r.label!r} ({r.start}-{end}, 0-based) lies outside contig {r.contig!r} "
                             f"(0-{size[r.contig]}): clip it to the contig")
        out.append(Region(r.contig, int(r.start), end, r.name or (r.label if r.end is not None else r.contig),
                          r.strand))
    labels = [r.label for r in out]
    if len(set(labels)) != len(labels):
        raise InputError("two regions have the same label; name them (BED column 4) or drop duplicates")
    return out


def read_genome(path: str | os.PathLike, *, position_chunk: int = 1 << 20, validate: bool = True) -> xr.Dataset:
    """Return a lazy Dataset of a (multi-contig, plain or gzipped) genome FASTA.

    Variables: ``sequence_code`` (sequence, position) uint8 chunked ``(1, position_chunk)`` and
    read through the FASTA index by the tasks (never a whole contig at once unless it is shorter
    than a chunk); ``sequence_length`` (sequence) int64. Coordinates: ``sequence`` = record names
    (no ``position`` index coordinate, see the module doc). Attrs: ``source`` (the path).
    ``validate`` scans the file once for bad characters before any work starts.

    Parameters
    ----------
    path : str or PathLike
        The genome FASTA (plain or gzipped).
    position_chunk : int
        Bases per chunk.
    validate : bool
        Scan the file for bad characters before returning.

    Returns
    -------
    Dataset
        ``sequence_code`` (sequence, position) uint8 and ``sequence_length`` (sequence,) int64. Lazy.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> genome = it.read_genome(data_path("yeast_chrI.fna.gz"))
    >>> genome["sequence"].values.tolist(), genome["sequence_length"].values.tolist()
    (['NC_001133.9'], [230218])
    >>> genome["sequence_code"].dims, genome["sequence_code"].chunks[1][0]
    (('sequence', 'position'), 230218)
    """
    names, lengths, codes = fasta_code_array(path, sequence_chunk=1, position_chunk=position_chunk,
                                             validate=validate)
    return xr.Dataset(
        {"sequence_code": ((SEQUENCE, POSITION), codes), "sequence_length": ((SEQUENCE,), lengths)},
        coords={SEQUENCE: list(names)}, attrs={"source": str(path)},
    )


# --- track geometry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackGeometry:
    """Where the windows and bins of a tiled track lie within a region (see the module doc)."""

    window: int
    stride: int
    bin_size: int | None = None
    crop: int = 0
    crop_right: int = 0

    def __post_init__(self):
        w, s = int(self.window), int(self.stride)
        if w < 1 or s < 1:
            raise ValueError(f"window ({w}) and stride ({s}) must be >= 1")
        if self.bin_size is not None:
            b = int(self.bin_size)
            span = w - self.crop - self.crop_right
            if b < 1 or self.crop < 0 or self.crop_right < 0 or span < b:
                raise ValueError(f"bin_size {b} with crop {self.crop}/{self.crop_right} leaves no output bins in a "
                                 f"{w} bp window: need window - crop - crop_right >= bin_size >= 1")
            if span % b:
                raise ValueError(f"window {w} minus crops {self.crop}+{self.crop_right} = {span} bp is not a multiple "
                                 f"of bin_size {b}: the model's output bins must tile the cropped window exactly")
            if s % b:
                raise ValueError(f"stride {s} is not a multiple of bin_size {b}: windows must start on the bin grid "
                                 f"(use stride {max(b, s // b * b)})")
            if s > span:
                raise ValueError(f"stride {s} is longer than the {span} bp a window predicts, which leaves gaps: "
                                 f"use stride <= {span}")

    @property
    def profile(self) -> bool:
        """True for a profile model (bins of ``bin_size``), False for one value per window."""
        return self.bin_size is not None

    @property
    def out_length(self) -> int:
        """Return the bins a window yields (1 for scalar models)."""
        if not self.profile:
            return 1
        return (self.window - self.crop - self.crop_right) // self.bin_size

    def to_attrs(self) -> dict:
        """Return the geometry as JSON attrs (``track_*`` keys)."""
        return {f"track_{k}": (-1 if v is None else int(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: dict) -> "TrackGeometry":
        """Return the geometry stored by ``to_attrs``."""
        b = int(attrs["track_bin_size"])
        return cls(int(attrs["track_window"]), int(attrs["track_stride"]), None if b < 0 else b,
                   int(attrs["track_crop"]), int(attrs["track_crop_right"]))

    # windows --------------------------------------------------------------------------------------
    def check_length(self, length: int, label: str) -> None:
        """Raise ``InputError`` when a region of ``length`` bp cannot hold one window."""
        if length < self.window:
            raise InputError(f"window {self.window} is longer than {label!r} ({length} bp): use a shorter window "
                             f"or drop that contig/region")

    def regular_windows(self, length: int) -> int:
        """Return the number of windows starting at multiples of ``stride`` in a region of ``length``."""
        return 0 if length < self.window else (length - self.window) // self.stride + 1

    def tail_start(self, length: int) -> int | None:
        """Return the start of the extra tail window, or None when the regular windows reach the end."""
        n = self.regular_windows(length)
        if n == 0:
            return None
        last_end = (n - 1) * self.stride + self.window
        if not self.profile:
            return length - self.window if last_end < length else None
        t = (length - self.window) // self.bin_size * self.bin_size
        return t if t > (n - 1) * self.stride else None

    def n_windows(self, length: int) -> int:
        """Return the number of windows tiling a region of ``length`` bp."""
        return self.regular_windows(length) + (self.tail_start(length) is not None)

    def window_starts(self, length: int, first: int = 0, last: int | None = None) -> np.ndarray:
        """Return the starts (region offsets) of windows ``first .. last-1`` in tiling order."""
        n_reg = self.regular_windows(length)
        last = self.n_windows(length) if last is None else min(last, self.n_windows(length))
        idx = np.arange(max(0, first), max(0, last), dtype=np.int64)
        starts = idx * self.stride
        tail = self.tail_start(length)
        if tail is not None:
            starts[idx == n_reg] = tail
        return starts

    def n_bins(self, length: int) -> int:
        """Return the number of bins of a region of ``length`` bp."""
        if not self.profile:
            return self.n_windows(length)
        n = self.n_windows(length)
        if n == 0:
            return 0
        return int(self.window_starts(length, n - 1, n)[0]) // self.bin_size + self.out_length

    def windows_for_bins(self, length: int, b0: int, b1: int) -> np.ndarray:
        """Return the starts of every window contributing to bins ``[b0, b1)``, in tiling order."""
        n_reg = self.regular_windows(length)
        if not self.profile:
            return self.window_starts(length, b0, b1)
        per = self.stride // self.bin_size
        lo = max(0, -(-(b0 - self.out_length + 1) // per))
        hi = min(n_reg, (b1 - 1) // per + 1)
        starts = np.arange(lo, max(lo, hi), dtype=np.int64) * self.stride
        tail = self.tail_start(length)
        if tail is not None and tail // self.bin_size <= b1 - 1 and tail // self.bin_size + self.out_length > b0:
            starts = np.append(starts, tail)
        return starts

    # bins ------------------------------------------------------------------------------------------
    def bin_intervals(self, length: int, b0: int = 0, b1: int | None = None):
        """Return ``(start, end, centre)`` int64 arrays (region offsets) of bins ``[b0, b1)``."""
        n = self.n_bins(length)
        b1 = n if b1 is None else min(int(b1), n)
        b0 = max(0, min(int(b0), b1))
        if self.profile:
            g = np.arange(b0, b1, dtype=np.int64)
            start = self.crop + g * self.bin_size
            return start, start + self.bin_size, start + self.bin_size // 2
        lo, hi = max(0, b0 - 1), min(n, b1 + 1)
        centre_all = self.window_starts(length, lo, hi) + self.window // 2
        idx = np.arange(lo, hi)
        mids = (centre_all[:-1] + centre_all[1:] + 1) // 2  # boundary between bins idx[i] and idx[i+1]
        bounds = np.concatenate([[0 if lo == 0 else -1], mids, [length if hi == n else -1]])
        sel = (idx >= b0) & (idx < b1)
        pos = np.flatnonzero(sel)
        return bounds[pos], bounds[pos + 1], centre_all[pos]

    def centres(self, length: int, bins) -> np.ndarray:
        """Return the centre (region offset) of each bin index in ``bins`` (any int array)."""
        bins = np.asarray(bins, np.int64)
        if self.profile:
            return self.crop + bins * self.bin_size + self.bin_size // 2
        starts = bins * self.stride
        tail = self.tail_start(length)
        if tail is not None:
            starts = np.where(bins >= self.regular_windows(length), tail, starts)
        return starts + self.window // 2

    def bin_of(self, length: int, offset: int) -> int:
        """Return the index of the bin holding region offset ``offset`` (clipped to the valid bins)."""
        n = self.n_bins(length)
        if n == 0:
            return 0
        if self.profile:
            return int(np.clip((offset - self.crop) // self.bin_size, 0, n - 1))
        guess = int(np.clip((offset - self.window // 2 + self.stride // 2) // self.stride, 0, n - 1))
        lo, hi = max(0, guess - 2), min(n, guess + 3)
        s, e, _ = self.bin_intervals(length, lo, hi)
        hit = np.flatnonzero((s <= offset) & (offset < e))
        return int(lo + hit[0]) if hit.size else guess


def track_bins(track: xr.Dataset, row: int, b0: int = 0, b1: int | None = None) -> dict[str, np.ndarray]:
    """Return the genome coordinates of bins ``[b0, b1)`` of row ``row`` of a tiled track.

    ``track`` holds the geometry attrs and the ``contig_name`` / ``region_start`` / ``region_end``
    coordinates written by ``predict_tiles``. Returns ``{"contig", "start", "end", "centre"}``:
    the contig name and int64 arrays, 0-based, end exclusive (``centre`` is where a scalar
    model's window centre lies).
    """
    geom = TrackGeometry.from_attrs(track.attrs)
    rstart = int(track["region_start"].values[row])
    length = int(track["region_end"].values[row]) - rstart
    s, e, c = geom.bin_intervals(length, b0, b1)
    return {"contig": str(track["contig_name"].values[row]), "start": rstart + s, "end": rstart + e,
            "centre": rstart + c}
