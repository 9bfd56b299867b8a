"""Genome results selected by contig name and 0-based genome position, whatever the region layout.

Genome results keep one row per region along ``contig`` (the region label, e.g. ``chr1:101-120``,
or the contig name for whole contigs) so that overlapping regions, several regions on one contig
and regions with different starts all fit one rectangular array. Selecting **by genome
coordinate** is the job of ``genome_view``: it turns the (contig, position) rows of
``genome_ism`` / ``genome_sweep`` and the (contig, bin) rows of ``predict_tiles`` into one
``site`` dimension indexed by a pandas MultiIndex (``contig``, ``position``) where

* ``contig`` is the **contig name** (the FASTA record), never the region label (that is kept as
  the ``region`` coordinate along ``site``);
* ``position`` is the **0-based genome position**: the edited base (ISM), the start of the
  edited span (sweeps), the bin centre (tiles: ``storage.genome.TrackGeometry.centres`` — a
  scalar model's window centre, ``window_start + window // 2``; a profile bin
  ``[s, s + bin_size)``'s ``s + bin_size // 2``, with ``bin_start`` / ``bin_end`` along ``site``).

so that plain ``view.sel(contig="chr1", position=1049)`` is the effect of editing FASTA base
1049 (0-based, i.e. samtools' ``chr1:1050``) or the track value of the bin centred there.
``ds.genome.sel(contig=..., position=...)`` is the same as an xarray accessor.

Only positions inside their region are kept (ISM/sweep rows past a shorter region's end, and
tile bins whose centre lies outside the region — in N padding or past the last window — are
dropped). A base covered by several regions appears once, from the region that extends farthest
past it (ties: the one starting first). ISM values are the same in every region (an edit's
context depends only on its genome position); so are sweep values, except that a span must fit
in its region (NaN near a region's end), hence that choice; tile values may differ where two
regions tile differently. Sites are sorted by (contig order in the FASTA, position).

Nothing is computed: the view is built from the numpy region coordinates (``region_start``,
``region_end``, ``contig_name``, ``contig_index``, and the track geometry attrs for tiles) by
slicing each row and one take along ``site``; the data stay dask arrays with their chunks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..storage.genome import TrackGeometry
from ..storage.schema import BIN, CONTIG, POSITION, SITE
_ROW_COORDS = ("contig_name", "contig_index", "region_start", "region_end", "region_pad_left", "region_pad_right")


def _need(ds, names, what):
    missing = [n for n in names if n not in ds.coords]
    if missing:
        raise ValueError(f"genome_view needs the region coordinates {missing} of a {what} result "
                         f"(genome_ism / genome_sweep / predict_tiles, or a store group they wrote)")


def _axis_sites(ds: xr.Dataset):
    """Return ``(axis, [(row, first, last)], genome positions per row, extra site coords)`` of a result."""
    starts = np.asarray(ds["region_start"].values, np.int64)
    ends = np.asarray(ds["region_end"].values, np.int64)
    rows, gpos, extra = [], [], {}
    if POSITION in ds.dims and CONTIG in ds.dims and BIN not in ds.dims:
        _need(ds, ("contig_name", "region_start", "region_end"), "genome perturbation")
        pos = np.asarray(ds[POSITION].values, np.int64)
        origin = ds.attrs.get("position_origin", "region_start" if "genome_position" in ds.coords else "genome")
        for i in range(len(starts)):
            g = pos if origin == "genome" else starts[i] + pos
            ok = np.flatnonzero((g >= starts[i]) & (g < ends[i]))  # contiguous: g ascends along position
            a, b = (int(ok[0]), int(ok[-1]) + 1) if ok.size else (0, 0)
            rows.append((i, a, b))
            gpos.append(g[a:b])
        return POSITION, rows, gpos, extra
    if BIN in ds.dims and CONTIG in ds.dims:
        _need(ds, ("contig_name", "region_start", "region_end"), "tiles")
        attrs = next((a for a in [ds.attrs] + [ds[v].attrs for v in ds.data_vars] if "track_window" in a), None)
        if attrs is None:
            raise ValueError("genome_view of a track needs its geometry attrs (track_window, ...): pass the Dataset "
                             "predict_tiles returned (or open_group's)")
        geom = TrackGeometry.from_attrs(attrs)
        left = np.asarray(ds["region_pad_left"].values, np.int64) if "region_pad_left" in ds.coords else 0 * starts
        right = np.asarray(ds["region_pad_right"].values, np.int64) if "region_pad_right" in ds.coords else 0 * starts
        bstart, bend = [], []
        for i in range(len(starts)):
            length = int(ends[i] - starts[i])
            n = min(geom.n_bins(length), ds.sizes[BIN])
            s, e, c = geom.bin_intervals(length, 0, n)
            g = starts[i] + c
            ok = np.flatnonzero((g >= starts[i] + left[i]) & (g < ends[i] - right[i]))
            a, b = (int(ok[0]), int(ok[-1]) + 1) if ok.size else (0, 0)
            rows.append((i, a, b))
            gpos.append(g[a:b])
            bstart.append(starts[i] + s[a:b])
            bend.append(starts[i] + e[a:b])
        extra = {"bin_start": bstart, "bin_end": bend}
        return BIN, rows, gpos, extra
    if any(str(d).startswith("bin_l") for d in ds.dims):
        raise ValueError("genome_view takes a track (contig, bin), not a pyramid: a pyramid level's bins carry "
                         "genome_position_lK (and bin_lK when shared by every row), or view the track itself")
    raise ValueError(f"genome_view takes a genome result with dims (contig, position) or (contig, bin); "
                     f"got dims {dict(ds.sizes)}")


def genome_view(ds: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Return ``ds`` with its region rows stacked into ``site`` = MultiIndex (contig name, 0-based position).

    ``ds`` is a ``genome_ism`` / ``genome_sweep`` result (dims contig, position) or a
    ``predict_tiles`` Dataset (contig, bin; a DataArray of a track lacks the geometry attrs),
    fresh or opened from a store; variables without both axes (e.g. a merged genome's
    ``sequence_code``) are dropped. Along ``site``: the MultiIndex levels ``contig`` (contig
    name) and ``position`` (0-based genome position, see the module doc), and ``region`` (the
    row's region label), ``contig_index``, and ``offset`` (ISM/sweep: position minus the region
    start) or ``bin`` (tiles: the bin index) with ``bin_start`` / ``bin_end`` (0-based, end exclusive). Then
    ``view.sel(contig="chr1", position=p)`` selects base ``p`` of chr1. Lazy (module doc).

    Parameters
    ----------
    ds : Dataset or DataArray
        A ``genome_ism``, ``genome_sweep`` or ``predict_tiles`` result.

    Returns
    -------
    Dataset or DataArray
        The same variables with (contig, position) or (contig, bin) stacked into ``site``. Lazy.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> from interpretome.zoo import zoo_spec
    >>> genome = it.read_genome(data_path("yeast_chrI.fna.gz"))
    >>> track = it.predict_tiles(genome, zoo_spec("bpnet_like"), window=128, bin_size=1, crop=16,
    ...                          regions=["NC_001133.9:1001-1512"])
    >>> view = it.genome_view(track)
    >>> view["track_prediction"].dims, view["track_prediction"].shape
    (('site', 'target'), (512, 1))
    >>> view.sel(contig="NC_001133.9", position=1000)["track_prediction"].shape
    (1,)
    """
    if isinstance(ds, xr.DataArray):
        name = ds.name if ds.name is not None else "value"
        return genome_view(ds.to_dataset(name=name))[name]
    axis, rows, gpos, extra = _axis_sites(ds)
    keep = [v for v in ds.data_vars if CONTIG in ds[v].dims and axis in ds[v].dims]
    sub = ds[keep]
    drop = [c for c in sub.coords if CONTIG in sub[c].dims or axis in sub[c].dims or c in (CONTIG, axis)]
    labels = [str(x) for x in ds[CONTIG].values]
    names = np.asarray(ds["contig_name"].values).astype(str)
    cindex = (np.asarray(ds["contig_index"].values, np.int64) if "contig_index" in ds.coords
              else pd.factorize(names)[0].astype(np.int64))
    starts = np.asarray(ds["region_start"].values, np.int64)
    ends = np.asarray(ds["region_end"].values, np.int64) - (
        np.asarray(ds["region_pad_right"].values, np.int64) if "region_pad_right" in ds.coords else 0)
    order = sorted(range(len(rows)), key=lambda k: (cindex[k], starts[k], k))
    along = BIN if axis == BIN else "offset"
    parts, site = [], {"contig": [], "position": [], "region": [], along: [], "contig_index": []}
    site |= {k: [] for k in extra}
    for k in order:
        i, a, b = rows[k]
        if b <= a:
            continue
        parts.append(sub.isel({CONTIG: i, axis: slice(a, b)}).drop_vars(drop, errors="ignore").rename({axis: SITE}))
        site["contig"].append(np.full(b - a, names[i], dtype=object))
        site["position"].append(gpos[k])
        site["region"].append(np.full(b - a, labels[i], dtype=object))
        site[along].append(np.arange(a, b) if axis == BIN else gpos[k] - starts[i])
        site["contig_index"].append(np.full(b - a, cindex[i], np.int64))
        for key, vals in extra.items():
            site[key].append(vals[k])
    if not parts:
        raise ValueError("genome_view: no position of the result lies inside its region")
    out = xr.concat(parts, dim=SITE, coords="minimal", compat="override", join="exact") if len(parts) > 1 else parts[0]
    site = {k: np.concatenate(v) for k, v in site.items()}
    # one site per (contig, position): sorted by FASTA contig order then position; of several regions the one
    # reaching farthest past the position (a sweep span fits there if anywhere), then the first by start
    room = np.concatenate([np.full(b - a, ends[i], np.int64) for k in order for i, a, b in [rows[k]] if b > a])
    room = room - site["position"]
    key = np.lexsort((np.arange(len(site["position"])), -room, site["position"], site["contig_index"]))
    ci, p = site["contig_index"][key], site["position"][key]
    first = np.ones(len(key), bool)
    first[1:] = (ci[1:] != ci[:-1]) | (p[1:] != p[:-1])
    take = key[first]
    if len(take) != len(site["position"]) or (take != np.arange(len(take))).any():
        out = out.isel({SITE: take})
        site = {k: v[take] for k, v in site.items()}
    mi = pd.MultiIndex.from_arrays([site["contig"].astype(str), site["position"]], names=["contig", "position"])
    out = out.assign_coords(xr.Coordinates.from_pandas_multiindex(mi, SITE))
    out = out.assign_coords({k: (SITE, v if k != "region" else v.astype(str)) for k, v in site.items()
                             if k not in ("contig", "position")})
    out["position"].attrs.update(description="0-based genome position (ISM: edited base; sweep: span start; "
                                             "tiles: bin centre)")
    out["contig"].attrs.update(description="contig name (FASTA record)")
    return out


@xr.register_dataset_accessor("genome")
class GenomeAccessor:
    """``ds.genome.view()`` = ``genome_view(ds)``; ``ds.genome.sel(contig=, position=, ...)`` selects on it."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def view(self) -> xr.Dataset:
        """Return ``genome_view`` of the Dataset."""
        return genome_view(self._ds)

    def sel(self, indexers=None, **kw) -> xr.Dataset:
        """Return ``genome_view(ds).sel(...)``: ``contig`` = contig name, ``position`` = 0-based genome position."""
        return genome_view(self._ds).sel(indexers, **kw)
