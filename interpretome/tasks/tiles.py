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
  With ``pad="N"`` (the default when there is a crop) each region is first extended by
  ``padded_region`` — N past the contig ends — so that bin 0 starts at the region start and the
  last bin reaches its end: every base gets a prediction.

``strand``: ``"+"`` predicts the windows as they are, ``"-"`` their reverse complements (a
profile then read back in forward orientation), ``"both"`` keeps the two as a trailing ``strand``
dim (``["+", "-"]``) and ``"mean"`` stores their mean (note: averaging a stranded model — one that
scores a site on one strand only — halves its scores; keep ``"both"`` for such models).
``"auto"`` (with ``annotation=``) runs each region on one strand, its own (a BED strand column) or that of the genes it overlaps
(``storage.annotation.region_strands``; a region overlapping genes of both strands or none is an
``InputError`` before any work); the coordinate ``region_strand`` (contig) says which.

Overlapping windows of a scalar model (stride <= window / 2) whose trunk is convolutional and whose
head pools globally (``engine.tile_trunk``: e.g. convolutions, then a global max and a linear layer)
share one trunk pass along the task's span; only each window's two edge strips (where its own zero
padding differs from the contig) are recomputed per window, so stride 50 costs little more than
stride = window. Values equal per-window forwards at float32 rounding; other models, and a tail
window off the stride grid, run one forward per window (one warning per model spec).

Each task predicts one block of bins of one region: it depends only on the ``sequence_code``
chunks that the block's windows touch (the block plus a halo of one window), so a 250 Mb contig
is never held whole in one task, and block boundaries leave no seam. ``track_coverage``
(contig, bin) counts the windows averaged into each bin (0 = not predicted, NaN).

``track_pyramid`` reduces a track into M4-style min/max levels (each level groups ``factor``
bins of the previous), level ``K`` as its own variables ``track_min_lK`` / ``track_max_lK`` over
its own ``bin_lK`` axis with genome positions, so that drawing a whole chromosome reads a few
thousand values of one level instead of every bin.
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
from ..engine.fx_locality import warn_once
from ..engine.tile_trunk import block_size, trunk_plan, trunk_window_outputs
from ..engine.models import ModelOutputError, ModelSpec, get_runtime, load_spec, outputs_of
from ..engine.regions import (apply_kwargs, genome_input, graph_token, padded_span, region_coords, span_keys,
                              validate_regional)
from ..storage.alphabet import reverse_complement
from ..storage.annotation import auto_strands
from ..storage.genome import Region, TrackGeometry
from ..storage.schema import BIN, CONTIG, MAX_LEVEL, STRAND, TARGET, level_dim, level_vars, require, validate

STRANDS = ("+", "-", "both", "mean", "auto")


def _flip_back(out: np.ndarray) -> np.ndarray:
    """Return a reverse-complement prediction in forward orientation (a profile's length axis reversed)."""
    return np.ascontiguousarray(out[..., ::-1]) if out.ndim == 3 else out


def predict_on_strand(rt, x: np.ndarray, strand: str) -> np.ndarray:
    """Return the model outputs of windows ``x`` (N, W) read on ``strand`` ('+' or '-'), forward-oriented.

    ``-``: the windows are reverse-complemented, predicted, and a profile output ``(N, T, L_out)``
    is reversed along its length so that bin ``k`` lies where the forward bin ``k`` does.
    """
    if strand == "+":
        return rt.predict(x)
    return _flip_back(rt.predict(np.ascontiguousarray(reverse_complement(x))))


def edits_on_strand(rt, ref: np.ndarray, starts: np.ndarray, new: np.ndarray, strand: str) -> np.ndarray:
    """Return ``rt.predict_edits(ref, starts, new)`` with the edited windows read on ``strand``.

    Edits are given in forward coordinates (``starts`` (E,), ``new`` (E, k) codes); on ``-`` the
    window is reverse-complemented and each edit becomes the reverse complement of ``new`` at
    ``len(ref) - start - k`` (a substitution by A is one by T there), and the output is turned
    back as in ``predict_on_strand``.
    """
    if strand == "+":
        return rt.predict_edits(ref, starts, new)
    k = new.shape[1]
    rc = np.ascontiguousarray(reverse_complement(ref))
    return _flip_back(rt.predict_edits(rc, len(ref) - np.asarray(starts, np.int64) - k,
                                       np.ascontiguousarray(reverse_complement(new))))


def check_output(o: np.ndarray, geom: TrackGeometry, what: str = "the track") -> np.ndarray:
    """Return ``o`` after checking that it is a profile ``(N, T, L_out)`` of ``geom`` or ``(N, T)``.

    Raises ``ModelOutputError`` naming the parameter to fix.
    """
    if geom.profile and (o.ndim != 3 or o.shape[-1] != geom.out_length):
        raise ModelOutputError(
            f"{what} expects a profile model output (N, T, {geom.out_length}) for window {geom.window}, "
            f"bin_size {geom.bin_size}, crop {geom.crop}/{geom.crop_right}, but the model returned "
            f"{tuple(o.shape)}: fix bin_size=/crop= (or drop bin_size= for a scalar model)")
    if not geom.profile and o.ndim != 2:
        raise ModelOutputError(
            f"the model returned a profile {tuple(o.shape)} but no bin_size= was given: pass bin_size= "
            f"and crop= for a profile model (output bins of bin_size bases after cropping)")
    return o


def _strand_predict(rt, x: np.ndarray, strand: str, geom: TrackGeometry) -> list[np.ndarray]:
    """Return the stored predictions of windows ``x`` (N, W): one ``(N, T[, L_out])`` per stored strand.

    ``both``: the forward and the reverse-complement predictions; ``mean``: their mean.
    """
    outs = [check_output(predict_on_strand(rt, x, s), geom) for s in ("+", "-") if strand in (s, "both", "mean")]
    return [(outs[0].astype(np.float64) + outs[1]) / 2] if strand == "mean" else outs


def _window_predict(rt, win, idx, i, step, strand, geom, where) -> list[np.ndarray]:
    """Return ``_strand_predict`` of windows ``idx[i:i + step]``; a non-finite output names its window (``where(j)``)."""
    with outputs_of(lambda r: where(i + r)):
        return _strand_predict(rt, win[idx[i:i + step]], strand, geom)


def _shared_predict(rt, split, span, idx, shared, b, strand, geom, where) -> list[np.ndarray]:
    """Return the ``(n, T)`` predictions of the windows ``idx[shared]`` per stored strand, the model's trunk run once
    along ``span`` (``engine.tile_trunk.trunk_window_outputs``); a reverse strand runs on the reverse complement."""
    rows = np.flatnonzero(shared)
    sel = idx[rows]
    outs = []
    for s in ("+", "-"):
        if strand not in (s, "both", "mean"):
            continue
        if s == "+":
            with outputs_of(lambda r: where(int(rows[r]))):
                o = trunk_window_outputs(rt, split, span, sel, geom.window, b)
        else:  # window [i, i + W) read backwards is window [L - W - i, L - i) of the reverse complement
            rc = np.ascontiguousarray(reverse_complement(span))
            with outputs_of(lambda r: where(int(rows[len(rows) - 1 - r]))):
                o = trunk_window_outputs(rt, split, rc, (len(span) - geom.window - sel)[::-1], geom.window, b)
            o = np.ascontiguousarray(o[::-1])
        outs.append(check_output(o, geom))
    return [(outs[0].astype(np.float64) + outs[1]) / 2] if strand == "mean" else outs


def _tile_block(blocks, c0, p0, p1, *, spec: ModelSpec, geom: TrackGeometry, length: int, rstart: int,
                b0: int, b1: int, strand: str, n_t: int, contig_length: int, label: str = "") -> np.ndarray:
    """Return ``(1, b1 - b0, T S + 1)`` float32: mean prediction per bin (target-major, S strands), then the count.

    ``label`` (the region's) names the window of a non-finite model output."""
    tune_malloc()  # dask workers' fixed malloc trim threshold otherwise doubles the forward's CPU time
    rt = get_runtime(spec)
    span = padded_span(blocks, c0, p0, p1, contig_length)
    nb = b1 - b0
    n_s = 2 if strand == "both" else 1
    n_ts = n_t * n_s
    out = np.full((1, nb, n_ts + 1), np.nan, np.float32)
    out[0, :, n_ts] = 0
    starts = geom.windows_for_bins(length, b0, b1)
    if not starts.size:
        return out
    idx = rstart + starts - p0
    win = sliding_window_view(span, geom.window)
    step = max(1, int(spec.batch_size)) * 8

    def where(j):
        return f"region {label!r}, window [{rstart + int(starts[j])}, {rstart + int(starts[j]) + geom.window}) ({strand})"

    if not geom.profile:
        split = trunk_plan(rt) if 2 * geom.stride <= geom.window else None
        b = block_size(split, geom.window, geom.stride) if split is not None else None
        shared = np.zeros(len(idx), bool)
        if b is not None:  # windows on the stride grid share one trunk pass; the tail window runs alone
            shared = (idx - idx[0]) % b == 0
            for si, pred in enumerate(_shared_predict(rt, split, span, idx, shared, b, strand, geom, where)):
                out[0, np.flatnonzero(shared), si:n_ts:n_s] = pred
        alone = np.flatnonzero(~shared)
        for i in range(0, len(alone), step):
            for si, pred in enumerate(_window_predict(rt, win, idx[alone], i, step, strand, geom,
                                                      lambda j: where(int(alone[j])))):
                out[0, alone[i:i + len(pred)], si:n_ts:n_s] = pred
        out[0, :len(idx), n_ts] = 1
        return out
    if 2 * geom.stride <= geom.out_length * geom.bin_size:  # each bin predicted by two windows or more
        warn_once(("tiles-profile", spec.token),
                  f"interpretome: overlapping tiles of the profile model {spec.factory or spec.torchscript} run one "
                  f"forward per window (a shared trunk, engine.tile_trunk, covers global-pool scalar heads only); "
                  f"results are exact, only slower")
    total = np.zeros((nb, n_t, n_s), np.float64)
    count = np.zeros(nb, np.int64)
    for i in range(0, len(idx), step):
        preds = _window_predict(rt, win, idx, i, step, strand, geom, where)  # per strand (n, T, L_out)
        _accumulate(total, count, np.stack(preds, axis=-1), starts[i:i + step] // geom.bin_size - b0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[0, :, :n_ts] = (total / np.where(count > 0, count, np.nan)[:, None, None]).reshape(nb, n_ts)
    out[0, :, n_ts] = count
    return out


def _accumulate(total: np.ndarray, count: np.ndarray, pred: np.ndarray, first: np.ndarray) -> None:
    """Add window predictions into the block's bin sums, in window order (the same float64 sums in any chunking).

    ``total`` (nb, T, S) float64 and ``count`` (nb,) int64 are updated in place; ``pred`` (n, T, L_out, S)
    holds the windows' profiles (S stored strands), ``first`` (n,) the block bin of each window's output bin 0
    (negative or past ``nb`` where a window reaches outside the block: those bins are dropped). Windows whose
    bins do not overlap (stride >= output length) are written by one vectorised add; otherwise window by window.
    """
    nb, n_out = len(count), pred.shape[2]
    pred = pred.transpose(0, 2, 1, 3)  # (n, L_out, T, S): bins first, as total
    if (np.diff(first) >= n_out).all():  # each bin gets at most one window: no order to keep
        bins = first[:, None] + np.arange(n_out)
        keep = (bins >= 0) & (bins < nb)
        total[bins[keep]] += pred[keep]
        count[bins[keep]] += 1
        return
    for f, p in zip(first, pred):
        lo, hi = max(0, -f), min(n_out, nb - f)
        if hi > lo:
            total[f + lo:f + hi] += p[lo:hi]
            count[f + lo:f + hi] += 1


def _tile_pad(pad, geom: TrackGeometry) -> bool:
    """Return whether to pad the regions with N (``pad`` None: profile models with a crop)."""
    if pad is None:
        return geom.profile and (geom.crop > 0 or geom.crop_right > 0)
    if pad not in ("N", "none"):
        raise ValueError(f"pad {pad!r} is not 'N' (regions padded with N) or 'none'")
    if pad == "N" and not geom.profile:
        raise ValueError("pad='N' applies to profile models (bin_size=): a scalar model's windows already cover "
                         "the region, the last one ending at its end")
    return pad == "N"


def padded_region(r: Region, geom: TrackGeometry) -> Region:
    """Return region ``r`` extended with N so that the bins of a profile ``geom`` cover every base.

    ``crop`` bases are added before the start (bin 0 then starts at the region start) and
    ``crop_right`` plus up to ``bin_size - 1`` after the end (the last bin ends at or past the
    end), more if needed to hold one window. The extension lies outside the contig only at its
    ends (read as N there); the label stays the region's.
    """
    length = r.end - r.start
    ext = max(length + geom.crop + geom.crop_right + (-length) % geom.bin_size, geom.window)
    start = r.start - geom.crop
    return Region(r.contig, start, start + ext, r.label)


def _bin_centres(block_info=None, *, geom: TrackGeometry, starts, lengths) -> np.ndarray:
    """Return the int64 genome position (0-based) of each bin centre of one (contig, bin) block; -1 past the bins."""
    (r0, r1), (b0, b1) = block_info[None]["array-location"]
    out = np.full((r1 - r0, b1 - b0), -1, np.int64)
    for i in range(r0, r1):
        hi = min(b1, geom.n_bins(lengths[i]))
        if hi > b0:
            out[i - r0, :hi - b0] = starts[i] + geom.centres(lengths[i], np.arange(b0, hi))
    return out


def _shared_centres(geom: TrackGeometry, regs, n_bins, g_max: int):
    """Return the int64 genome bin centres shared by every row (bin k centred on one base in all rows), or None.

    E.g. whole contigs of a profile model padded with N (all bins ``[k b, (k + 1) b)``); a scalar
    model's tail window, or regions with different starts, usually break it.
    """
    out = np.full(g_max, -1, np.int64)
    for r, nb in zip(regs, n_bins):
        c = r.start + geom.centres(r.end - r.start, np.arange(nb))
        seen = out[:nb] >= 0
        if (out[:nb][seen] != c[seen]).any():
            return None
        out[:nb] = c
    return out if (out >= 0).all() and (np.diff(out) > 0).all() else None


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
    annotation=None,
    pad: str | None = None,
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
    (default ``crop``) describe a profile model's output; ``strand`` is ``+``, ``-``, ``both`` (a
    trailing ``strand`` dim), ``mean`` or ``auto`` (each region on its gene's strand from
    ``annotation``, a ``read_annotation`` table or path: module doc); ``pad`` ``"N"`` (default for profile models
    with a crop) pads each region with N so that every base gets a prediction (``padded_region``),
    ``"none"`` leaves the cropped ends and the final partial bin unpredicted;
    ``bin_chunk`` bins per task (default: the input's position chunk in bins).

    Output: ``track_prediction`` (contig, bin, target[, strand]) float32 and ``track_coverage`` (contig, bin)
    int32, one row per region (``contig`` = region label, with coordinates ``contig_name``,
    ``contig_index``, ``region_start``, ``region_end`` — of the N-padded region with ``pad="N"``,
    ``region_pad_left/right`` its padding — and ``genome_position`` (contig, bin), the 0-based
    genome position of each bin's centre, -1 past a row's bins; when every row's bin ``k`` is
    centred on the same base — whole contigs of a profile model padded with N — ``bin`` itself
    holds those positions, so ``res.sel(contig=name, bin=p)`` is the bin centred at base ``p``;
    in any layout ``genome_view(res)`` selects by contig name and bin-centre position), rows
    padded with NaN / 0 past their last bin; the geometry in the attrs (``track_window`` ...; ``storage.genome.track_bins`` turns bin
    indices into genome coordinates). Nothing is computed. Raises
    ``InputError`` for an unknown contig, a region outside its contig or a window longer than a
    region, ``ValueError`` for inconsistent tiling parameters — before any work.

    Parameters
    ----------
    ds : Dataset
        The genome (``read_genome``).
    model : ModelSpec, str or dict
        The model (``load_spec``).
    window, stride : int
        Input length and step between windows (bp).
    regions : sequence of str or Region, or path, optional
        The regions to predict (default: every contig).
    bin_size, crop, crop_right : int
        A profile model's output geometry (``bin_size=None``: a scalar model).
    strand : {'+', '-', 'both', 'mean', 'auto'}
        The strand(s) read.
    annotation : DataFrame or path, optional
        Genes for ``strand="auto"``.
    pad : {'N', 'none'}, optional
        How region ends are handled.
    bin_chunk : int, optional
        Bins per task.
    sequence_var, length_var : str
        The input variables.
    merge : bool
        Return the input's variables too.

    Returns
    -------
    Dataset
        ``track_prediction`` (contig, bin, target[, strand]) float32, ``track_coverage`` (contig,
        bin) int32 and ``genome_position`` (contig, bin). Lazy.

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> from interpretome.zoo import zoo_spec
    >>> genome = it.read_genome(data_path("yeast_chrI.fna.gz"))
    >>> res = it.predict_tiles(genome, zoo_spec("bpnet_like"), window=128, bin_size=1, crop=16,
    ...                        regions=["NC_001133.9:1001-1512"])
    >>> res["track_prediction"].dims, res["track_prediction"].shape
    (('contig', 'bin', 'target'), (1, 512, 1))
    >>> bool(np.isfinite(res["track_prediction"].compute()).all())
    True
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
    codes, lengths, names, regs, rows = genome_input(ds, regions, sequence_var, length_var)
    per = auto_strands(strand, regs, annotation)  # one strand per region, or None
    if geom.profile and geom.crop != geom.crop_right and (strand not in ("+", "auto") or "-" in (per or ())):
        raise ValueError(f"strand {strand!r} maps reverse-complement profiles back by mirroring, which needs "
                         f"crop == crop_right (got {geom.crop} and {geom.crop_right})")
    pad = _tile_pad(pad, geom)
    real = regs
    if pad:
        regs = [padded_region(r, geom) for r in regs]
    for r in regs:
        geom.check_length(r.end - r.start, r.label)
    n_bins = [geom.n_bins(r.end - r.start) for r in regs]
    g_max = max(n_bins)
    per_bin = geom.bin_size if geom.profile else stride
    bc = int(bin_chunk or max(1, codes.chunks[1][0] // per_bin))
    bchunks = tuple(min(bc, g_max - s) for s in range(0, g_max, bc))
    n_t = len(spec.target_names)
    n_ts = n_t * (2 if strand == "both" else 1)
    name = "tiles-" + graph_token(spec, geom, strand, per, codes.name, regs, bchunks, pad)
    dsk = {}
    for i, (r, row, nb_r) in enumerate(zip(regs, rows, n_bins)):
        length = r.end - r.start
        b0 = 0
        for j, c in enumerate(bchunks):
            b1 = b0 + c
            starts = geom.windows_for_bins(length, b0, b1) if b0 < nb_r else np.zeros(0, np.int64)
            if not starts.size:
                dsk[(name, i, j, 0)] = (_nan_block, (1, c, n_ts + 1))
            else:
                p0, p1 = r.start + int(starts.min()), r.start + int(starts.max()) + window
                keys, c0 = span_keys(codes, row, max(p0, 0), min(p1, int(lengths[row])))
                dsk[(name, i, j, 0)] = (apply_kwargs, _tile_block, [keys, c0, p0, p1], dict(
                    spec=spec, geom=geom, length=length, rstart=r.start, b0=b0, b1=b1,
                    strand=per[i] if per else strand, n_t=n_t,
                    contig_length=int(lengths[row]), label=r.label))
            b0 = b1
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[codes])
    out = da.Array(graph, name, chunks=((1,) * len(regs), bchunks, (n_ts + 1,)), dtype=np.float32,
                   meta=np.empty((0, 0, 0), np.float32))
    pred = out[..., :n_ts]
    if strand == "both":
        pred = pred.reshape(pred.shape[:2] + (n_t, 2))
        pred_var, strand_coord = ((CONTIG, BIN, TARGET, STRAND), pred), {STRAND: ["+", "-"]}
    else:
        pred_var, strand_coord = ((CONTIG, BIN, TARGET), pred), {}
    if per:
        strand_coord = {"region_strand": (CONTIG, np.asarray(per, dtype=object))}
    new = xr.Dataset(
        {"track_prediction": pred_var, "track_coverage": ((CONTIG, BIN), out[..., n_ts].astype(np.int32))},
        coords=region_coords(regs, rows) | {TARGET: spec.target_names} | strand_coord | {
            "region_pad_left": (CONTIG, np.asarray([r.start - v.start for r, v in zip(real, regs)], np.int64)),
            "region_pad_right": (CONTIG, np.asarray([v.end - r.end for r, v in zip(real, regs)], np.int64)),
            "genome_position": ((CONTIG, BIN), da.map_blocks(
                _bin_centres, chunks=((1,) * len(regs), bchunks), dtype=np.int64, meta=np.empty((0, 0), np.int64),
                geom=geom, starts=tuple(r.start for r in regs), lengths=tuple(r.end - r.start for r in regs)))},
        attrs={**geom.to_attrs(), "track_strand": strand, "track_model": spec.factory or spec.torchscript,
               "track_pad": "N" if pad else "none"},
    )
    shared = _shared_centres(geom, regs, n_bins, g_max)
    if shared is not None:  # every row's bin k is centred on the same base: bin = that genome position
        new = new.assign_coords({BIN: shared})
        new[BIN].attrs["description"] = ("0-based genome position of the bin centre, the same in every row "
                                         "(sel(contig=..., bin=p)); otherwise use genome_view")
    new["track_prediction"].attrs.update(geom.to_attrs())  # survives merge=True (which keeps ds's attrs)
    new["genome_position"].attrs.update(description="0-based genome position of each bin centre (-1 past a row's "
                                                    "bins); genome_view(ds) selects by (contig name, position)")
    validate_regional(new, per)
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
        x = da.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2), constant_values=np.nan)
    c = max(factor, x.chunks[1][0] // factor * factor)
    x = x.rechunk({1: c})
    return da.coarsen(reduce, x, {1: factor})


def _group_centres(block_info=None, *, geom: TrackGeometry, starts, lengths, group: int) -> np.ndarray:
    """Return the int64 genome position (0-based) of each level-bin centre of one (contig, bin_lK) block.

    A level bin groups track bins ``[g group, (g + 1) group)``; its centre lies midway between the
    centres of its first and last bin of that row (floor); -1 past the row's bins.
    """
    (r0, r1), (g0, g1) = block_info[None]["array-location"]
    out = np.full((r1 - r0, g1 - g0), -1, np.int64)
    for i in range(r0, r1):
        nb = geom.n_bins(lengths[i])
        hi = min(g1, -(-nb // group))
        if hi > g0:
            g = np.arange(g0, hi)
            first, last = g * group, np.minimum((g + 1) * group, nb) - 1
            out[i - r0, :hi - g0] = starts[i] + (geom.centres(lengths[i], first) + geom.centres(lengths[i], last)) // 2
    return out


def _track_rows(ds: xr.Dataset, var: str = "track_prediction"):
    """Return ``(geometry, region starts, region lengths)`` of a track, or None when it lacks them."""
    attrs = ds.attrs if "track_bin_size" in ds.attrs else ds[var].attrs  # merge=True: on the variable
    if "track_bin_size" not in attrs or "region_start" not in ds.coords or "region_end" not in ds.coords:
        return None
    starts = np.asarray(ds["region_start"].values, np.int64)
    return TrackGeometry.from_attrs(attrs), starts, np.asarray(ds["region_end"].values, np.int64) - starts


def _shared_track_centres(ds: xr.Dataset, rows) -> np.ndarray | None:
    """Return the track's ``bin`` coordinate when it holds the genome bin centres shared by every row, else None."""
    if rows is None or BIN not in ds.coords or np.dtype(ds[BIN].dtype).kind not in "iu":
        return None
    c = np.asarray(ds[BIN].values, np.int64)
    geom, starts, lengths = rows
    i = int(np.argmax([geom.n_bins(int(n)) for n in lengths]))  # the longest row holds every shared bin
    nb = geom.n_bins(int(lengths[i]))
    if nb != len(c) or not np.array_equal(c, starts[i] + geom.centres(int(lengths[i]), np.arange(nb))):
        return None
    return c


def track_pyramid(ds: xr.Dataset, *, factor: int = 4, min_groups: int = 256, chunk: int = 1 << 16,
                  var: str = "track_prediction") -> xr.Dataset:
    """Return the lazy min/max pyramid of ``ds[var]`` (a ``track_prediction``: contig, bin, target[, strand]).

    Level ``K`` (1, 2, ...) holds the NaN-ignoring min and max over ``factor**K`` consecutive bins
    (groups start at bin 0; a group of only NaN is NaN), each level computed from the previous
    one; levels stop once a level has at most ``min_groups`` groups. Each level is its own pair of
    variables ``track_min_lK`` / ``track_max_lK`` (contig, bin_lK, target[, strand]) in
    ``chunk``-sized chunks (names: ``storage.schema.level_vars`` / ``level_dim``), so one level is
    read without touching the others (``pyramid_level(pyr, K)``).

    Genome coordinates (when the track has its geometry attrs and region coords, as every
    ``predict_tiles`` result does): ``genome_position_lK`` (contig, bin_lK) is the 0-based genome
    position of each level bin's centre in its row — midway (floor) between the centres of its
    first and last track bin — and -1 past the row's bins. When the track's ``bin`` axis itself
    holds genome positions shared by every row, ``bin_lK`` holds them too (the centres over the
    full bin axis; a shorter row's last, partial group is centred as ``genome_position_lK`` says),
    so ``pyr.sel(contig=c).sel(bin_l3=p, method="nearest")`` is the level-3 bin around base ``p``.

    Attrs: ``pyramid_factor``, ``pyramid_levels`` (the level numbers), ``track_bins`` and the
    track's own ``track_*`` attrs; each variable has ``pyramid_level`` and ``pyramid_group_bins``.
    Nothing is computed.

    Parameters
    ----------
    ds : Dataset
        A ``predict_tiles`` result (fresh or opened from a store).
    factor : int
        Bins per group from one level to the next.
    min_groups : int
        Stop once a level has at most this many groups.
    chunk : int
        Bins per chunk of each level.
    var : str
        The track variable.

    Returns
    -------
    Dataset
        ``track_min_lK`` / ``track_max_lK`` (contig, bin_lK, target[, strand]) [and
        ``genome_position_lK`` (contig, bin_lK)] for each level ``K``. Lazy.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> from interpretome.zoo import zoo_spec
    >>> genome = it.read_genome(data_path("yeast_chrI.fna.gz"))
    >>> track = it.predict_tiles(genome, zoo_spec("bpnet_like"), window=128, bin_size=1, crop=16,
    ...                          regions=["NC_001133.9:1001-1512"])
    >>> pyr = it.track_pyramid(track, factor=4, min_groups=8)
    >>> pyr.attrs["pyramid_levels"], pyr["track_max_l1"].shape
    ([1, 2, 3], (1, 128, 1))
    >>> lv1 = pyr["track_max_l1"].compute()
    >>> bool(lv1[0, 0, 0] == track["track_prediction"][0, :4, 0].max().compute())
    True
    """
    require_vars(ds, (var,), "interpretome.tasks.tiles.predict_tiles")
    require(ds, var, "track_prediction", "interpretome.tasks.tiles.predict_tiles")
    factor = int(factor)
    if factor < 2:
        raise ValueError(f"pyramid factor must be >= 2, got {factor}")
    x = ds[var].data
    if not isinstance(x, da.Array):
        x = da.from_array(np.asarray(x), chunks=(1, chunk) + (-1,) * (x.ndim - 2))
    rows = _track_rows(ds, var)
    shared = _shared_track_centres(ds, rows)
    coords = {k: v for k, v in ds.coords.items() if CONTIG in v.dims and BIN not in v.dims}
    for c in (TARGET, STRAND):
        if c in ds.coords:
            coords[c] = ds[c]
    attrs = {k: v for k, v in ds.attrs.items() if k.startswith("track_")}
    extra = tuple(ds[var].dims[2:])
    rechunk = {0: 1, 1: chunk, **{d: -1 for d in range(2, x.ndim)}}
    data, levels = {}, []
    lo = hi = x.astype(np.float32)
    n_rows, level = x.shape[0], 0
    while True:
        level += 1
        if level > MAX_LEVEL:
            raise ValueError(f"the pyramid would need more than {MAX_LEVEL} levels: raise min_groups or factor")
        lo, hi = _coarsen(lo, factor, _nanmin), _coarsen(hi, factor, _nanmax)
        n, group, dim = lo.shape[1], factor ** level, level_dim(level)
        vmin, vmax = level_vars(level)
        mn, mx = lo.rechunk(rechunk), hi.rechunk(rechunk)
        for name, arr in ((vmin, mn), (vmax, mx)):
            data[name] = xr.Variable((CONTIG, dim) + extra, arr, attrs={"pyramid_level": level,
                                                                        "pyramid_group_bins": group})
        if rows is not None:
            geom, starts, lengths = rows
            coords[f"genome_position_l{level}"] = xr.Variable((CONTIG, dim), da.map_blocks(
                _group_centres, chunks=((1,) * n_rows, mn.chunks[1]), dtype=np.int64,
                meta=np.empty((0, 0), np.int64), geom=geom, starts=tuple(int(s) for s in starts),
                lengths=tuple(int(v) for v in lengths), group=group), attrs={"description": (
                    f"0-based genome position of each level-{level} bin's centre in its row (midway between the "
                    f"centres of its first and last track bins, floor); -1 past the row's bins")})
        if shared is not None:
            g = np.arange(n)
            first, last = g * group, np.minimum((g + 1) * group, len(shared)) - 1
            coords[dim] = xr.Variable(dim, (shared[first] + shared[last]) // 2, attrs={"description": (
                f"0-based genome position of each level-{level} bin's centre (midway between the centres of its "
                f"first and last track bins), the same in every row: sel({dim}=p, method='nearest')")})
        levels.append(level)
        if n <= min_groups:
            break
    new = xr.Dataset(data, coords=coords, attrs={
        **attrs, "pyramid_factor": factor, "pyramid_levels": levels, "track_bins": int(x.shape[1]),
        "pyramid_position": "level bin centre, 0-based: midway between the centres of its first and last track bins"})
    validate(new)
    return new


def pyramid_level(pyr: xr.Dataset, level: int) -> xr.Dataset:
    """Return level ``level`` of a pyramid: ``track_min_lK`` / ``track_max_lK`` with the ``bin_lK`` coords only."""
    names = level_vars(level)
    if not all(v in pyr.data_vars for v in names):
        raise ValueError(f"the pyramid has levels {list(pyr.attrs.get('pyramid_levels', []))}, not {level}")
    return pyr[list(names)]
