"""Tiled prediction along genomes, and min/max pyramids of the resulting tracks.

``predict_tiles`` slides a model along every contig (or given regions) of a genome Dataset
(``storage.genome.read_genome``, or any Dataset with ``sequence_code``/``sequence_length``) and
returns ``track_prediction`` (contig, bin, target): one row per contig or region, the bins laid
out by ``storage.genome.TrackGeometry`` (stored in the attrs, see that module for the exact
placement):

* scalar-output models ``(N, T)``: one bin per window, the value placed at the window centre
  (the Genomic-ULMFiT recipe); the tail is covered by a last window ending at the region end;
* profile-output models ``(N, T, L_out)`` (``bin_size=`` given): output bin ``k`` of the window
  starting at ``s`` is bin ``s / bin_size + k`` of the region; overlapping windows are blended by
  their **mean** (each bin's sum is accumulated in window order, so the value does not depend on
  the chunking); the last window starts at the largest multiple of ``bin_size`` that fits.

``strand``: ``"+"`` predicts the windows as they are, ``"-"`` their reverse complements (a
profile then read back in forward orientation), ``"both"`` the mean of the two.

Each task predicts one block of bins of one region: it depends only on the ``sequence_code``
chunks that the block's windows touch (the block plus a halo of one window), so a 250 Mb contig
is never held whole in one task, and block boundaries leave no seam. ``track_coverage``
(contig, bin) counts the windows averaged into each bin (0 = not predicted, NaN).

``track_pyramid`` reduces a track into M4-style min/max levels (each level groups ``factor``
bins of the previous) stored along one ``pyramid_bin`` axis, so that drawing a whole chromosome
reads a few thousand values instead of every bin.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from numpy.lib.stride_tricks import sliding_window_view

from ..engine.blocks import merge_result, require_vars
from ..engine.process import tune_malloc
from ..engine.models import ModelOutputError, ModelSpec, get_runtime, load_spec, outputs_of
from ..engine.regions import apply_kwargs, genome_input, graph_token, join_span, region_coords, span_keys
from ..storage.alphabet import reverse_complement
from ..storage.genome import TrackGeometry
from ..storage.schema import BIN, CONTIG, PYRAMID_BIN, TARGET, require, validate

STRANDS = ("+", "-", "both")


def _strand_predict(rt, x: np.ndarray, strand: str, geom: TrackGeometry) -> np.ndarray:
    """Return ``(N, T)`` or ``(N, T, L_out)`` predictions of windows ``x`` (N, W) on ``strand``."""
    outs = []
    if strand in ("+", "both"):
        outs.append(rt.predict(x))
    if strand in ("-", "both"):
        r = rt.predict(np.ascontiguousarray(reverse_complement(x)))
        outs.append(r[..., ::-1] if r.ndim == 3 else r)
    for o in outs:
        if geom.profile and (o.ndim != 3 or o.shape[-1] != geom.out_length):
            raise ModelOutputError(
                f"the track expects a profile model output (N, T, {geom.out_length}) for window {geom.window}, "
                f"bin_size {geom.bin_size}, crop {geom.crop}/{geom.crop_right}, but the model returned "
                f"{tuple(o.shape)}: fix bin_size=/crop= (or drop bin_size= for a scalar model)")
        if not geom.profile and o.ndim != 2:
            raise ModelOutputError(
                f"the model returned a profile {tuple(o.shape)} but no bin_size= was given: pass bin_size= "
                f"and crop= for a profile model (output bins of bin_size bases after cropping)")
    return outs[0] if len(outs) == 1 else (outs[0].astype(np.float64) + outs[1]) / 2


def _window_predict(rt, win, idx, i, step, strand, geom, where) -> np.ndarray:
    """Return the predictions of windows ``idx[i:i + step]``; a non-finite output names its window (``where(j)``)."""
    with outputs_of(lambda r: where(i + r)):
        return _strand_predict(rt, win[idx[i:i + step]], strand, geom)


def _tile_block(blocks, c0, p0, p1, *, spec: ModelSpec, geom: TrackGeometry, length: int, rstart: int,
                b0: int, b1: int, strand: str, n_t: int, label: str = "") -> np.ndarray:
    """Return ``(1, b1 - b0, T + 1)`` float32: mean prediction per bin, then the window count.

    ``label`` (the region's) names the window of a non-finite model output."""
    tune_malloc()  # dask workers' fixed malloc trim threshold otherwise doubles the forward's CPU time
    rt = get_runtime(spec)
    span = join_span(blocks, c0, p0, p1)
    nb = b1 - b0
    out = np.full((1, nb, n_t + 1), np.nan, np.float32)
    out[0, :, n_t] = 0
    starts = geom.windows_for_bins(length, b0, b1)
    if not starts.size:
        return out
    idx = rstart + starts - p0
    win = sliding_window_view(span, geom.window)
    step = max(1, int(spec.batch_size)) * 8

    def where(j):
        return f"region {label!r}, window [{rstart + int(starts[j])}, {rstart + int(starts[j]) + geom.window}) ({strand})"

    if not geom.profile:
        for i in range(0, len(idx), step):
            pred = _window_predict(rt, win, idx, i, step, strand, geom, where)
            out[0, i:i + len(pred), :n_t] = pred
        out[0, :len(idx), n_t] = 1
        return out
    total = np.zeros((n_t, nb), np.float64)
    count = np.zeros(nb, np.int64)
    offs = np.arange(geom.out_length)
    for i in range(0, len(idx), step):
        pred = _window_predict(rt, win, idx, i, step, strand, geom, where)  # (n, T, L_out)
        bins = starts[i:i + step, None] // geom.bin_size + offs[None, :] - b0  # (n, L_out)
        keep = (bins >= 0) & (bins < nb)
        w, k = np.nonzero(keep)  # C order: window by window, as in any other chunking
        for t in range(n_t):
            np.add.at(total[t], bins[w, k], pred[w, t, k])
        np.add.at(count, bins[w, k], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[0, :, :n_t] = (total / np.where(count > 0, count, np.nan)).T
    out[0, :, n_t] = count
    return out


def _nan_block(shape) -> np.ndarray:
    out = np.full(shape, np.nan, np.float32)
    out[..., -1] = 0
    return out


def predict_tiles(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    window: int,
    stride: int | None = None,
    regions=None,
    bin_size: int | None = None,
    crop: int = 0,
    crop_right: int | None = None,
    strand: str = "+",
    bin_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = True,
) -> xr.Dataset:
    """Return the lazy tiled prediction of ``model`` along the contigs (or ``regions``) of ``ds``.

    Input: ``ds[sequence_var]`` (a ``sequence_code``: (sequence, position) uint8) and
    ``ds[length_var]`` (a ``sequence_length``: (sequence,)), e.g. from ``read_genome``. ``window``
    is the model's input length; ``stride`` (default ``window // 2``) the step between windows; ``regions`` ``chr:start-end`` strings (1-based),
    ``Region``s or a BED path (default: every contig, whole); ``bin_size``/``crop``/``crop_right``
    (default ``crop``) describe a profile model's output; ``strand`` is ``+``, ``-`` or ``both``;
    ``bin_chunk`` bins per task (default: the input's position chunk in bins).

    Output: ``track_prediction`` (contig, bin, target) float32 and ``track_coverage`` (contig, bin)
    int32, one row per region (``contig`` = region label, with coordinates ``contig_name``,
    ``contig_index``, ``region_start``, ``region_end``), rows padded with NaN / 0 past their last
    bin; the geometry in the attrs (``track_window`` ...; ``storage.genome.track_bins`` turns bin
    indices into genome coordinates). Nothing is computed. Raises
    ``InputError`` for an unknown contig, a region outside its contig or a window longer than a
    region, ``ValueError`` for inconsistent tiling parameters — before any work.
    """
    spec = load_spec(model)
    if strand not in STRANDS:
        raise ValueError(f"strand {strand!r} is not one of {STRANDS}")
    window = int(window)
    stride = int(stride) if stride is not None else max(1, window // 2)
    crop_right = int(crop) if crop_right is None else int(crop_right)
    geom = TrackGeometry(window, stride, None if bin_size is None else int(bin_size), int(crop), crop_right)
    if not geom.profile and (crop or crop_right):
        raise ValueError("crop= only applies to profile models: pass bin_size= too, or drop crop=")
    if geom.profile and strand != "+" and geom.crop != geom.crop_right:
        raise ValueError(f"strand {strand!r} maps reverse-complement profiles back by mirroring, which needs "
                         f"crop == crop_right (got {geom.crop} and {geom.crop_right})")
    codes, lengths, names, regs, rows = genome_input(ds, regions, sequence_var, length_var)
    for r in regs:
        geom.check_length(r.end - r.start, r.label)
    n_bins = [geom.n_bins(r.end - r.start) for r in regs]
    g_max = max(n_bins)
    per_bin = geom.bin_size if geom.profile else stride
    bc = int(bin_chunk or max(1, codes.chunks[1][0] // per_bin))
    bchunks = tuple(min(bc, g_max - s) for s in range(0, g_max, bc))
    n_t = len(spec.target_names)
    name = "tiles-" + graph_token(spec, geom, strand, codes.name, regs, bchunks)
    dsk = {}
    for i, (r, row, nb_r) in enumerate(zip(regs, rows, n_bins)):
        length = r.end - r.start
        b0 = 0
        for j, c in enumerate(bchunks):
            b1 = b0 + c
            starts = geom.windows_for_bins(length, b0, b1) if b0 < nb_r else np.zeros(0, np.int64)
            if not starts.size:
                dsk[(name, i, j, 0)] = (_nan_block, (1, c, n_t + 1))
            else:
                p0, p1 = r.start + int(starts.min()), r.start + int(starts.max()) + window
                keys, c0 = span_keys(codes, row, p0, p1)
                dsk[(name, i, j, 0)] = (apply_kwargs, _tile_block, [keys, c0, p0, p1], dict(
                    spec=spec, geom=geom, length=length, rstart=r.start, b0=b0, b1=b1, strand=strand, n_t=n_t,
                    label=r.label))
            b0 = b1
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[codes])
    out = da.Array(graph, name, chunks=((1,) * len(regs), bchunks, (n_t + 1,)), dtype=np.float32,
                   meta=np.empty((0, 0, 0), np.float32))
    new = xr.Dataset(
        {"track_prediction": ((CONTIG, BIN, TARGET), out[..., :n_t]),
         "track_coverage": ((CONTIG, BIN), out[..., n_t].astype(np.int32))},
        coords=region_coords(regs, rows) | {TARGET: spec.target_names},
        attrs={**geom.to_attrs(), "track_strand": strand, "track_model": spec.factory or spec.torchscript},
    )
    validate(new)
    return merge_result(ds, new, merge)


# --- pyramids ------------------------------------------------------------------------------------------

def _nanmin(x, axis=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(x, axis=axis)


def _nanmax(x, axis=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(x, axis=axis)


def _coarsen(x: da.Array, factor: int, reduce) -> da.Array:
    """Return ``reduce`` over groups of ``factor`` consecutive entries along axis 1 (NaN-padded)."""
    n = x.shape[1]
    pad = -n % factor
    if pad:
        x = da.pad(x, ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
    c = max(factor, x.chunks[1][0] // factor * factor)
    x = x.rechunk({1: c})
    return da.coarsen(reduce, x, {1: factor})


def track_pyramid(ds: xr.Dataset, *, factor: int = 4, min_groups: int = 256, chunk: int = 1 << 16,
                  var: str = "track_prediction") -> xr.Dataset:
    """Return the lazy min/max pyramid of ``ds[var]`` (a ``track_prediction``: contig, bin, target).

    Level ``l`` (1, 2, ...) holds the NaN-ignoring min and max over ``factor**l`` consecutive bins
    (groups start at bin 0; a group of only NaN is NaN), each level computed from the previous
    one; levels stop once a level has at most ``min_groups`` groups. Output:
    ``track_pyramid_min`` / ``track_pyramid_max`` (contig, pyramid_bin, target), all levels
    concatenated along ``pyramid_bin`` in ``chunk``-sized chunks; attrs ``pyramid_factor`` and
    ``pyramid_levels`` = ``[[level, offset, groups], ...]``, plus the track's own attrs.
    Nothing is computed.
    """
    require_vars(ds, (var,), "interpretome.tasks.tiles.predict_tiles")
    require(ds, var, "track_prediction", "interpretome.tasks.tiles.predict_tiles")
    factor = int(factor)
    if factor < 2:
        raise ValueError(f"pyramid factor must be >= 2, got {factor}")
    x = ds[var].data
    if not isinstance(x, da.Array):
        x = da.from_array(np.asarray(x), chunks=(1, chunk, -1))
    mins, maxs, levels = [], [], []
    lo = hi = x.astype(np.float32)
    offset, level = 0, 0
    n = x.shape[1]
    while True:
        level += 1
        lo, hi = _coarsen(lo, factor, _nanmin), _coarsen(hi, factor, _nanmax)
        n = lo.shape[1]
        mins.append(lo)
        maxs.append(hi)
        levels.append([level, offset, n])
        offset += n
        if n <= min_groups:
            break
    cat = lambda arrs: da.concatenate(arrs, axis=1).rechunk({0: 1, 1: chunk, 2: -1})  # noqa: E731
    coords = {k: v for k, v in ds.coords.items() if CONTIG in v.dims and BIN not in v.dims}
    if TARGET in ds.coords:
        coords[TARGET] = ds[TARGET]
    attrs = {k: v for k, v in ds.attrs.items() if k.startswith("track_")}
    new = xr.Dataset({"track_pyramid_min": ((CONTIG, PYRAMID_BIN, TARGET), cat(mins)),
                      "track_pyramid_max": ((CONTIG, PYRAMID_BIN, TARGET), cat(maxs))},
                     coords=coords, attrs={**attrs, "pyramid_factor": factor, "pyramid_levels": levels,
                                           "track_bins": int(x.shape[1])})
    validate(new)
    return new


def pyramid_level(pyr: xr.Dataset, level: int) -> xr.Dataset:
    """Return level ``level`` of a pyramid as ``track_pyramid_min/max`` (contig, pyramid_bin, target)."""
    for lv, off, n in pyr.attrs["pyramid_levels"]:
        if int(lv) == int(level):
            return pyr.isel({PYRAMID_BIN: slice(int(off), int(off) + int(n))})
    raise ValueError(f"the pyramid has levels {[lv for lv, _, _ in pyr.attrs['pyramid_levels']]}, not {level}")
