"""Gene annotation: GTF / GFF3 / BED readers and strand-aware gene starts (TSS).

A small documented parser rather than pyranges: pyranges 0.1.7's ``read_gtf`` stops at the
shipped NCBI yeast GTF (a quoted attribute value holding ``;``; ``ignore_bad=True`` then fails
too), and does not name the file and line of a malformed line. Gene rows are checked against
``pyranges.read_gtf(full=False)`` in the tests. Formats are told by the **content** (gzip by its
magic bytes; ``##gff-version`` or ``key=value`` attributes: GFF3; ``key "value";`` attributes:
GTF; 12 columns with block counts, sizes and starts: BED12; else 3+ columns with integer
coordinates: BED), the suffix (``.gtf``, ``.gff``, ``.gff3``, ``.bed``, ``.bed12``, each
optionally ``.gz``) only breaking a tie (e.g. a file of comment lines):

* GTF / GFF3: 9 tab-separated columns, 1-based inclusive coordinates; rows whose type (column 3)
  is ``feature`` (default ``gene``) are kept. The name is the ``gene`` / ``gene_name`` / ``Name``
  attribute, else ``gene_id`` / ``ID`` / ``locus_tag``, else ``contig:start-end``.
* BED: 0-based end-exclusive; column 4 is the name and column 6 the strand when present.
* BED12 (one transcript per line, its exons as blocks): ``feature="gene"`` gives one row per
  line (the transcript span); ``feature="exon"`` one row per block (start + blockStart, of
  blockSize bases), named by the line's name, ids ``name:exonK`` (K = 1, 2, ... in genome
  order). Blocks must be consistent (count, sizes, starts; the first starts at 0, the last
  ends at the line's end).

Coordinates are returned 0-based, end exclusive. The gene start (TSS) is strand-aware: ``start``
on the ``+`` strand (and for unstranded ``.`` rows), ``end - 1`` — the gene's last base, i.e. the
GTF end coordinate — on the ``-`` strand.

``region_strands`` is the annotation-aware strand choice (``strand="auto"`` of the genome tasks):
each region takes its own strand (a BED strand column), else the strand of the genes it overlaps.
``read_exons`` returns the exons (BED12 blocks, GTF / GFF3 ``exon`` rows) for the track figures.

``annotation_dataset`` turns the table into a Dataset for the store: ``gene_contig``,
``gene_start``, ``gene_end``, ``gene_strand``, ``gene_tss``, ``gene_name`` along ``feature``
(whose coordinate is the gene id).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError
from .bed import bed_name, open_text, parse_bed_line, skip_line
from .genome import Region
from .schema import FEATURE


COLUMNS = ["contig", "start", "end", "strand", "name", "gene_id", "tss"]
_GTF_ATTR = re.compile(r'\s*([^\s";]+)\s+(?:"([^"]*)"|([^;\s]+))\s*;?')


_SUFFIXES = (("gtf", (".gtf",)), ("gff", (".gff", ".gff3")), ("bed12", (".bed12",)), ("bed", (".bed",)))


def _sniff_line(line: str) -> str | None:
    """Return the format one data line looks like ('gtf', 'gff', 'bed12', 'bed'), or None."""
    f = line.rstrip("\n").split("\t")
    if len(f) == 9 and f[3].isdigit() and f[4].isdigit():
        if re.search(r'[^\s";]+\s+"', f[8]) or re.search(r"gene_id\s", f[8]):
            return "gtf"
        if "=" in f[8]:
            return "gff"
    g = f if len(f) >= 3 else line.split()
    if len(g) >= 3 and g[1].isdigit() and g[2].isdigit():
        if len(g) == 12 and g[9].isdigit() and g[10].rstrip(",").replace(",", "").isdigit():
            return "bed12"
        return "bed"
    return None


def _format(path: Path) -> str:
    """Return the annotation format of ``path``, told by its content (module doc)."""
    fmt = None
    with open_text(path) as fh:
        for i, line in enumerate(fh):
            if line.startswith("##gff-version"):
                return "gff"
            if skip_line(line):
                continue
            fmt = _sniff_line(line)
            if fmt is not None or i > 50:
                break
    if fmt is None:
        name = path.name.lower().removesuffix(".gz")
        fmt = next((f for f, suffixes in _SUFFIXES if name.endswith(suffixes)), None)
    if fmt is None:
        raise InputError(f"annotation {str(path)!r} is neither GTF, GFF3, BED nor BED12 by its content and has an "
                         f"unknown suffix: give a 9-column GTF/GFF3 or a BED file (.gtf, .gff, .gff3, .bed, .bed12)")
    return fmt


def _bed12_exons(f: list[str], start: int, end: int) -> list[tuple[int, int]]:
    """Return the exon ``(start, end)`` of a BED12 line's blocks (0-based, end exclusive), checked."""
    n = int(f[9])
    sizes = [int(x) for x in f[10].rstrip(",").split(",") if x != ""]
    offs = [int(x) for x in f[11].rstrip(",").split(",") if x != ""]
    if n < 1 or len(sizes) != n or len(offs) != n:
        raise ValueError(f"blockCount {n} but {len(sizes)} blockSizes and {len(offs)} blockStarts")
    exons = [(start + o, start + o + z) for o, z in zip(offs, sizes)]
    if offs[0] != 0 or exons[-1][1] != end or any(z < 1 for z in sizes) or any(
            b[0] < a[1] for a, b in zip(exons, exons[1:])):
        raise ValueError("blocks must start at 0, not overlap, keep order and end at chromEnd")
    return exons


def _gtf_attrs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _GTF_ATTR.finditer(text):
        out.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
    return out


def _gff_attrs(text: str) -> dict[str, str]:
    out = {}
    for part in text.strip().strip(";").split(";"):
        if "=" in part:
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    return out


def read_annotation(path: str | os.PathLike, *, feature: str = "gene") -> pd.DataFrame:
    """Return the annotation's ``feature`` rows as a DataFrame (columns: ``COLUMNS``).

    ``contig`` str, ``start``/``end`` int64 0-based end-exclusive, ``strand`` '+'/'-'/'.', ``name``,
    ``gene_id``, ``tss`` int64 (strand-aware gene start). Raises ``InputError`` naming the file and
    1-based line of a malformed line, or when no row has type ``feature``.

    Parameters
    ----------
    path : str or PathLike
        A GTF, GFF3, BED or BED12 file (plain or gzipped).
    feature : str
        The feature type (third GTF/GFF column) to keep.

    Returns
    -------
    DataFrame
        One row per feature, columns ``contig``, ``start``, ``end``, ``strand``, ``name``,
        ``gene_id``, ``tss``.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> genes = it.read_annotation(data_path("yeast_chrI.gtf.gz"))
    >>> genes.shape, list(genes.columns)
    ((101, 7), ['contig', 'start', 'end', 'strand', 'name', 'gene_id', 'tss'])
    >>> genes.iloc[0][["name", "start", "end", "strand", "tss"]].astype(str).tolist()
    ['PAU8', '1806', '2169', '-', '2168']
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file {str(path)!r} does not exist: check the path")
    fmt = _format(path)
    if fmt == "bed12" and feature not in ("gene", "transcript", "exon"):
        raise InputError(f"a BED12 annotation gives feature 'gene' (each line's span, also 'transcript') or 'exon' "
                         f"(its blocks), not {feature!r}")
    rows = []
    types: set[str] = set()
    with open_text(path) as fh:
        for i, line in enumerate(fh, 1):
            if skip_line(line):
                continue
            f = line.rstrip("\n").split("\t")
            try:
                if fmt in ("bed", "bed12"):
                    f, start, end = parse_bed_line(line)
                    if fmt == "bed12" and len(f) != 12:
                        raise ValueError(f"{len(f)} columns, BED12 needs 12")
                    strand = f[5] if len(f) > 5 else "."
                    name = gid = bed_name(f)
                else:
                    if len(f) != 9:
                        raise ValueError(f"{len(f)} tab-separated columns, {fmt.upper()} needs 9")
                    types.add(f[2])
                    if f[2] != feature:
                        continue
                    start, end = int(f[3]) - 1, int(f[4])
                    strand = f[6]
                    attrs = _gtf_attrs(f[8]) if fmt == "gtf" else _gff_attrs(f[8])
                    gid = attrs.get("gene_id") or attrs.get("ID") or attrs.get("locus_tag")
                    name = attrs.get("gene") or attrs.get("gene_name") or attrs.get("Name") or gid
                if start < 0 or end <= start:
                    raise ValueError(f"start {start + (fmt not in ('bed', 'bed12'))} and end {end} do not make an interval")
                if strand not in ("+", "-", "."):
                    raise ValueError(f"strand {strand!r} is not '+', '-' or '.'")
                spans = [(start, end, gid)]
                if fmt == "bed12" and feature == "exon":
                    label = name or f"{f[0]}:{start + 1}-{end}"
                    spans = [(a, b, f"{label}:exon{k}") for k, (a, b) in enumerate(_bed12_exons(f, start, end), 1)]
                elif fmt == "bed12":
                    _bed12_exons(f, start, end)  # checked all the same
            except ValueError as e:
                raise InputError(f"{path}:{i}: malformed {fmt.upper()} line ({e}): {line.strip()[:100]!r}") from e
            for a, b, sid in spans:
                label = f"{f[0]}:{a + 1}-{b}"
                rows.append((f[0], a, b, strand, name or sid or label, sid or name or label, b - 1 if strand == "-" else a))
    if not rows:
        seen = f" (types present: {sorted(types)[:10]})" if types else ""
        raise InputError(f"annotation {str(path)!r} has no {feature!r} rows{seen}: pass feature= one of them")
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("start", "end", "tss"):
        df[c] = df[c].astype(np.int64)
    return df


def gene_starts(genes: pd.DataFrame, contig: str | None = None, start: int | None = None,
                end: int | None = None) -> pd.DataFrame:
    """Return the genes whose TSS lies on ``contig`` within ``[start, end)`` (all when None)."""
    sel = np.ones(len(genes), bool)
    if contig is not None:
        sel &= (genes["contig"] == contig).to_numpy()
    if start is not None:
        sel &= (genes["tss"] >= start).to_numpy()
    if end is not None:
        sel &= (genes["tss"] < end).to_numpy()
    return genes[sel]


def annotation_dataset(genes: pd.DataFrame) -> xr.Dataset:
    """Return the gene table as a Dataset along ``feature`` (coordinate: unique gene ids)."""
    ids = pd.Series(genes["gene_id"].astype(str).to_numpy())
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():  # make ids unique by appending the occurrence number
        ids[dup] = ids[dup] + "#" + ids[dup].groupby(ids[dup]).cumcount().astype(str)
    ds = xr.Dataset(
        {"gene_contig": (FEATURE, genes["contig"].astype(str).to_numpy()),
         "gene_start": (FEATURE, genes["start"].to_numpy(np.int64)),
         "gene_end": (FEATURE, genes["end"].to_numpy(np.int64)),
         "gene_strand": (FEATURE, genes["strand"].astype(str).to_numpy()),
         "gene_tss": (FEATURE, genes["tss"].to_numpy(np.int64)),
         "gene_name": (FEATURE, genes["name"].astype(str).to_numpy())},
        coords={FEATURE: ids.to_numpy()},
    )
    return ds


def genes_from_dataset(ds: xr.Dataset) -> pd.DataFrame:
    """Return the gene table (``COLUMNS``) of a Dataset written by ``annotation_dataset``."""
    def text(name):  # zarr may hand back numpy StringDType arrays: go through Python str
        return [str(x) for x in ds[name].values]

    return pd.DataFrame({
        "contig": text("gene_contig"), "start": ds["gene_start"].values.astype(np.int64),
        "end": ds["gene_end"].values.astype(np.int64), "strand": text("gene_strand"),
        "name": text("gene_name"), "gene_id": text(FEATURE),
        "tss": ds["gene_tss"].values.astype(np.int64)})


def read_exons(path: str | os.PathLike) -> pd.DataFrame | None:
    """Return the exons of an annotation (``read_annotation(feature="exon")``), or None when it has none.

    BED12: its blocks; GTF / GFF3: its ``exon`` rows; a plain BED holds no exons (None).
    """
    path = Path(path)
    if not path.is_file() or _format(path) == "bed":
        return None
    try:
        return read_annotation(path, feature="exon")
    except InputError:
        if _format(path) == "bed12":
            raise
        return None


def region_strands(regions: list[Region], genes: pd.DataFrame | None, *, what: str = "strand='auto'") -> list[str]:
    """Return the strand ('+' or '-') each region runs on under ``strand="auto"``.

    A region with its own strand (a BED strand column) keeps it; otherwise it takes the strand of
    the ``genes`` (a ``read_annotation`` table) it overlaps — genes of one strand only; unstranded
    ('.') genes are ignored. Raises ``InputError`` naming the regions overlapping genes of both
    strands or none (and the fix) — before any work.
    """
    by_contig = {}
    if genes is not None:
        for c, g in genes[genes["strand"].isin(["+", "-"])].groupby("contig"):
            by_contig[str(c)] = (g["start"].to_numpy(np.int64), g["end"].to_numpy(np.int64),
                                 g["strand"].to_numpy(str), g["name"].astype(str).to_numpy())
    out, bad = [], []
    for r in regions:
        if r.strand in ("+", "-"):
            out.append(r.strand)
            continue
        s, e, st, names = by_contig.get(r.contig, (np.zeros(0, np.int64),) * 2 + (np.zeros(0, str),) * 2)
        hit = (s < r.end) & (e > r.start)
        seen = sorted(set(st[hit].tolist()))
        if len(seen) == 1:
            out.append(seen[0])
            continue
        if not seen:
            bad.append(f"{r.label!r} overlaps no stranded gene")
        else:
            plus, minus = names[hit & (st == "+")][:2].tolist(), names[hit & (st == "-")][:2].tolist()
            bad.append(f"{r.label!r} overlaps genes of both strands (+: {', '.join(plus)}; -: {', '.join(minus)})")
    if bad:
        src = "the annotation" if genes is not None else "no annotation given"
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise InputError(f"{what} cannot choose a strand from {src}: region {'; region '.join(bad[:3])}{more}: pass "
                         f"--strand +/-/both, or regions from a BED file with a strand column (6)"
                         + ("" if genes is not None else ", or --annotation FILE"))
    return out


def auto_strands(strand: str, regions: list[Region], annotation) -> list[str] | None:
    """Return the per-region strands of ``strand="auto"`` (``region_strands``), None for any other ``strand``.

    ``annotation``: a ``read_annotation`` table, a GTF / GFF3 / BED / BED12 path, or None.
    """
    if strand != "auto":
        return None
    genes = annotation
    if annotation is not None and not isinstance(annotation, pd.DataFrame):
        genes = read_annotation(annotation)
    return region_strands(regions, genes)
