"""Gene annotation: GTF / GFF3 / BED readers and strand-aware gene starts (TSS).

A small documented parser rather than pyranges: pyranges 0.1.7's ``read_gtf`` stops at the
shipped NCBI yeast GTF (a quoted attribute value holding ``;``; ``ignore_bad=True`` then fails
too), and does not name the file and line of a malformed line. Gene rows are checked against
``pyranges.read_gtf(full=False)`` in the tests. Formats are told by the suffix (``.gtf``, ``.gff``, ``.gff3``, ``.bed``, each
optionally ``.gz``):

* GTF / GFF3: 9 tab-separated columns, 1-based inclusive coordinates; rows whose type (column 3)
  is ``feature`` (default ``gene``) are kept. The name is the ``gene`` / ``gene_name`` / ``Name``
  attribute, else ``gene_id`` / ``ID`` / ``locus_tag``, else ``contig:start-end``.
* BED: 0-based end-exclusive; column 4 is the name and column 6 the strand when present.

Coordinates are returned 0-based, end exclusive. The gene start (TSS) is strand-aware: ``start``
on the ``+`` strand (and for unstranded ``.`` rows), ``end - 1`` — the gene's last base, i.e. the
GTF end coordinate — on the ``-`` strand.

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
from .schema import FEATURE


COLUMNS = ["contig", "start", "end", "strand", "name", "gene_id", "tss"]
_GTF_ATTR = re.compile(r'\s*([^\s";]+)\s+(?:"([^"]*)"|([^;\s]+))\s*;?')


def _format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for fmt, suffixes in (("gtf", (".gtf",)), ("gff", (".gff", ".gff3")), ("bed", (".bed",))):
        if name.endswith(suffixes):
            return fmt
    raise InputError(f"annotation {str(path)!r} has an unknown suffix: name it .gtf, .gff, .gff3 or .bed (optionally .gz)")


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
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file {str(path)!r} does not exist: check the path")
    fmt = _format(path)
    rows = []
    types: set[str] = set()
    with open_text(path) as fh:
        for i, line in enumerate(fh, 1):
            if skip_line(line):
                continue
            f = line.rstrip("\n").split("\t")
            try:
                if fmt == "bed":
                    f, start, end = parse_bed_line(line)
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
                    raise ValueError(f"start {start + (fmt != 'bed')} and end {end} do not make an interval")
                if strand not in ("+", "-", "."):
                    raise ValueError(f"strand {strand!r} is not '+', '-' or '.'")
            except ValueError as e:
                raise InputError(f"{path}:{i}: malformed {fmt.upper()} line ({e}): {line.strip()[:100]!r}") from e
            label = f"{f[0]}:{start + 1}-{end}"
            rows.append((f[0], start, end, strand, name or gid or label, gid or name or label,
                         end - 1 if strand == "-" else start))
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
