"""Region graphs along genomes: which chunks a span of positions reads, and hand-built dask keys.

Genome tasks (``tasks.tiles``, ``tasks.genome_perturb``) build their graphs by hand: each output
block reads only the ``sequence_code`` chunks that its span (the block plus a halo of one model
window) touches. These helpers are that shared machinery:

* ``genome_input`` — codes (one row per chunk), lengths, names, resolved regions and their rows;
* ``span_keys`` / ``join_span`` — the chunk keys covering ``[p0, p1)`` of one row, and the codes
  of that span from the chunks' blocks inside a task; ``padded_span`` the same, read as N past
  the contig ends (contexts of N-padded regions);
* ``apply_kwargs`` — a graph task calling ``func(*args, **kwargs)`` (keys in ``args`` resolved);
* ``region_coords`` — the per-row coordinates of a region axis;
* ``graph_token`` — a deterministic dask name token of the parts of a graph (a ``ModelSpec``
  by its own ``token``).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from ..storage.genome import Region, resolve_regions
from ..storage.schema import CODE_N, CONTIG, SEQUENCE, validate
from .blocks import sequence_codes
from .spec import ModelSpec


def genome_input(ds: xr.Dataset, regions, sequence_var: str = "sequence_code", length_var: str = "sequence_length"):
    """Return ``(codes, lengths, names, regions, rows)`` for a genome Dataset and optional regions.

    ``codes`` is ``ds[sequence_var]`` as a dask array with one row per chunk; ``lengths`` the numpy
    record lengths (``ds[length_var]``); ``regions`` the resolved ``Region`` list; ``rows`` each
    region's record index.
    """
    codes = sequence_codes(ds, sequence_var, length_var, "interpretome.storage.genome.read_genome", (1, -1))
    if any(c != 1 for c in codes.chunks[0]):
        codes = codes.rechunk({0: 1})
    if isinstance(ds[length_var].data, da.Array):
        raise ValueError(f"{length_var} must be known (numpy) to plan the tiles: load it with "
                         f"ds[{length_var!r}] = ds[{length_var!r}].compute()")
    lengths = np.asarray(ds[length_var].values, np.int64)
    names = [str(n) for n in (ds[SEQUENCE].values if SEQUENCE in ds.coords else range(codes.shape[0]))]
    regs = resolve_regions(regions, names, lengths)
    index = {n: i for i, n in enumerate(names)}
    rows = [index[r.contig] for r in regs]
    return codes, lengths, names, regs, rows


def span_keys(codes: da.Array, row: int, p0: int, p1: int) -> tuple[list, int]:
    """Return the keys of the chunks of ``codes`` row ``row`` covering ``[p0, p1)`` and the first one's start."""
    bounds = np.concatenate([[0], np.cumsum(codes.chunks[1])])
    first = int(np.searchsorted(bounds, p0, side="right") - 1)
    last = int(np.searchsorted(bounds, p1, side="left"))
    return [(codes.name, row, k) for k in range(first, last)], int(bounds[first])


def join_span(blocks, c0: int, p0: int, p1: int) -> np.ndarray:
    """Return codes ``[p0, p1)`` from the consecutive row blocks that start at ``c0``."""
    flat = np.concatenate([np.asarray(b).reshape(-1) for b in blocks]) if len(blocks) > 1 else np.asarray(blocks[0]).reshape(-1)
    return np.ascontiguousarray(flat[p0 - c0:p1 - c0])


def padded_span(blocks, c0: int, p0: int, p1: int, length: int) -> np.ndarray:
    """Return codes ``[p0, p1)`` of a contig of ``length`` bp, N (code 4) outside ``[0, length)``.

    ``blocks`` are the consecutive row blocks starting at ``c0`` that cover the part of
    ``[p0, p1)`` inside the contig.
    """
    a, b = max(int(p0), 0), min(int(p1), int(length))
    core = join_span(blocks, c0, a, b) if b > a else np.zeros(0, np.uint8)
    if a == p0 and b == p1:
        return core
    return np.concatenate([np.full(a - p0, CODE_N, np.uint8), core, np.full(p1 - b, CODE_N, np.uint8)])


def apply_kwargs(func, args, kwargs):
    """Call ``func(*args, **kwargs)``: the task of a hand-built graph (dask resolves keys in ``args``)."""
    return func(*args, **kwargs)


def region_coords(regs: list[Region], rows: list[int]) -> dict:
    """Return the per-row coordinates of a region axis (``contig`` labels and where each lies)."""
    return {CONTIG: [r.label for r in regs],
            "contig_name": (CONTIG, [r.contig for r in regs]),
            "contig_index": (CONTIG, np.asarray(rows, np.int64)),
            "region_start": (CONTIG, np.asarray([r.start for r in regs], np.int64)),
            "region_end": (CONTIG, np.asarray([r.end for r in regs], np.int64))}


def graph_token(*parts) -> str:
    """Return a deterministic token of ``parts`` for a graph name (a ``ModelSpec`` by its ``token``)."""
    return tokenize(*[p.token if isinstance(p, ModelSpec) else repr(p) for p in parts])


def validate_regional(result: xr.Dataset, per_region_strands) -> None:
    """Validate a genome result against the registry; describe its ``region_strand`` when it has one.

    ``per_region_strands`` is the list of strands the regions ran on (``strand="auto"``), empty
    otherwise. Raises ``ValueError`` (from ``storage.schema.validate``) on a spec mismatch.
    """
    if per_region_strands:
        result["region_strand"].attrs["description"] = ("the strand each region ran on (strand='auto': its BED strand "
                                                        "or that of the genes it overlaps)")
        validate(result, ["region_strand"])
    validate(result)
