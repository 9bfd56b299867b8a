"""Perturbation sweeps and saturation mutagenesis along contigs, each edit in its genomic context.

The foundation's sweep (``tasks.perturb``) and ISM (``tasks.ism``) perturb short sequences that
are each one model input. Along a genome the model sees a window of ``input_length`` bases, so
every perturbed position is evaluated in **the genomic window around it**: positions are grouped
by ``context_step`` (group ``g`` holds genome positions ``[g*step, (g+1)*step)``) and a group's
context is the ``input_length`` window centred on the span its edits can touch
(``[g*step, g*step + step - 1 + max k)``), shifted inward at the contig ends. With the default
``context_step=1`` every position has its own centred window. The delta is the prediction of
the edited context minus that of the unedited context (``*_reference``, per position).

Edits are made by the foundation's own code: ``perturb.window_edits`` (random / shuffle / insert /
mask, random draws keyed by (seed, contig index in the FASTA, k, **genome position**, replicate,
offset) — so a position gets the same draws whatever the region, chunking or worker) and
``Runtime.predict_edits`` (with its receptive-field fast path). Each task handles one block of
positions of one region and reads only the ``sequence_code`` chunks its contexts touch (the
block plus a halo of half a window on each side, clipped to the contig), each chunk read from the
FASTA by its own task. A task carries scalars only (its first position, length and stride; its
positions and contexts are derived inside it), so the graph grows with the number of chunks, not
positions (a 250 Mb contig ISM: ~0.2 MB), and ``position`` is a lazy range. By default a block is
one sequence chunk's worth of positions, but at least 16 blocks per region (of >= 1000
positions; ``default_position_chunk``), so every worker gets several tasks.

Profile models (``bin_size=`` given, with ``crop``/``crop_right`` as in ``predict_tiles``; output
``(N, T, L_out)``, bin ``k`` = window bases ``[crop + k*bin_size, crop + (k+1)*bin_size)``): each
edit's profile change is reduced on the workers, one model batch at a time (never more than
batch x T x L_out values held), to what users read — ``reductions``:

* ``at_edit``: the change at the output bin covering the edited base (a span: its middle base
  ``s + (k - 1) // 2``); NaN when no bin covers it (a cropped end, without padding);
* ``total``: the change of the profile summed over the output window (counts-like);
* ``delta_score``: the SpliceAI delta score, two values: the max gain ``max(edited - reference)``
  and the max loss ``max(reference - edited)`` over the bins overlapping the edited span
  +/- ``delta_distance`` bases (not clipped at 0: both are 0 at the reference base).

(The readouts — ``ScalarReadout``, ``ProfileReadout``, ``make_readout`` — live in
``tasks.genome_readout``.)

Strands: ``"-"`` reverse-complements each context, predicts, and flips a profile back along its
length; an edit is made in forward coordinates (substituting A reads as T on the reverse
strand), so ``base`` is always the forward base. ``"both"`` keeps the two as a trailing
``strand`` dim (``["+", "-"]``). ``pad="N"`` (default for profile models) keeps every context
centred on its edit and reads N (all-zero one-hot columns) past the contig ends, so every base
is evaluated; ``pad="none"`` shifts the contexts inward at the ends.

Positions: ``position`` holds 0-based genome coordinates whenever every region starts at the
same base (whole contigs, one region; ``attrs["position_origin"] = "genome"``), so
``res.sel(contig=..., position=p)`` is the edit of FASTA base ``p``. Regions with different
starts share the axis as offsets from each region start (``"region_start"``), with the genome
coordinate in the 2-D ``genome_position`` (contig, position) coordinate. Spans that do not fit
in their region are NaN, as are positions past a region's end. ``merge`` defaults to False here.
In every layout ``tasks.genome_view.genome_view(res)`` (``res.genome.sel(contig=name,
position=p)``) selects by contig name and 0-based genome position (a MultiIndex ``site`` dim).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from ..engine.blocks import merge_result
from ..engine.process import tune_malloc
from ..engine.models import ModelSpec, get_runtime, load_spec, outputs_of
from ..engine.regions import (apply_kwargs, genome_input, graph_token, padded_span, region_coords, span_keys,
                              validate_regional)
from ..errors import InputError
from ..storage.annotation import auto_strands
from ..storage.schema import BASE, BASES, CONTIG, POSITION, STRAND, TARGET, WINDOW
from .genome_readout import REDUCTIONS, ProfileReadout, make_readout
from .perturb import resolve_windows, window_edits
from .tiles import edits_on_strand, predict_on_strand

__all__ = ["REDUCTIONS", "STRANDS", "PADS", "genome_sweep", "genome_ism", "context_starts"]

STRANDS = ("+", "-", "both", "auto")
PADS = ("N", "none")

_ISM_DIMS = (CONTIG, POSITION, BASE, TARGET, STRAND)
_SWEEP_DIMS = (CONTIG, WINDOW, POSITION, TARGET, STRAND)
_REF_DIMS = (CONTIG, POSITION, TARGET, STRAND)


def _edit_values(rt, readout, ctx, ref, starts, new, lo, hi, strand) -> np.ndarray:
    """Return ``(E, T, V)`` values of edits ``new`` at ``starts`` of ``ctx``, one model batch at a time.

    Edits go to the model ``readout.edits_per_call`` at a time: a profile model's one batch of
    outputs (batch x T x L_out) at once, a scalar model's all at once (the Runtime batches them).
    """
    bs = readout.edits_per_call(max(1, int(rt.spec.batch_size))) or max(1, len(starts))
    out = np.empty((len(starts), len(ref), len(readout.names)), np.float32)
    for i in range(0, len(starts), bs):
        sl = slice(i, i + bs)
        pred = readout.check(edits_on_strand(rt, ctx, starts[sl], new[sl], strand))
        out[sl] = readout.reduce(pred, ref, lo[sl], hi[sl])
    return out


def _strands(strand: str) -> tuple[str, ...]:
    if strand not in STRANDS:
        raise ValueError(f"strand {strand!r} is not one of {STRANDS}")
    return ("+", "-") if strand == "both" else ("auto",) if strand == "auto" else (strand,)


def _pad(pad, readout) -> bool:
    if pad is None:
        return isinstance(readout, ProfileReadout)
    if pad not in PADS:
        raise ValueError(f"pad {pad!r} is not one of {PADS} ('N': contig ends padded with N, 'none': contexts "
                         f"shifted inward)")
    return pad == "N"


class _Shifted:
    """Index genome positions into a span of codes that starts at genome position ``offset``."""

    def __init__(self, codes: np.ndarray, offset: int):
        self.codes, self.offset = codes, offset

    def __getitem__(self, idx):
        return self.codes[np.asarray(idx) - self.offset]


def context_starts(positions: np.ndarray, contig_length: int, input_length: int, span: int, step: int,
                   pad: bool = False) -> np.ndarray:
    """Return the genome start of the context window of each genome position (see the module doc).

    ``span`` is the longest edit (max k); ``step`` the context step. ``pad``: windows stay centred
    and may reach past the contig ends (read as N); otherwise they are shifted inward.
    """
    g = np.asarray(positions, np.int64) // step
    centre = g * step + (step - 1 + span) // 2
    if pad:
        return centre - input_length // 2
    return np.clip(centre - input_length // 2, 0, contig_length - input_length)


MIN_BLOCKS, MIN_BLOCK_POSITIONS = 16, 1000


def default_position_chunk(n_pos: int, per_code_chunk: int) -> int:
    """Return the default positions per task: one ``sequence_code`` chunk's worth, but small enough
    that a region of ``n_pos`` positions splits into at least ``MIN_BLOCKS`` tasks (never below
    ``MIN_BLOCK_POSITIONS``), so every worker gets several tasks whatever the region size. It
    depends on the sizes only (not the machine), so a rerun elsewhere resumes the same chunks.
    """
    return max(1, min(int(per_code_chunk), max(MIN_BLOCK_POSITIONS, -(-int(n_pos) // MIN_BLOCKS))))


def _plan(ds, model, regions, input_length, span, context_step, position_chunk, stride, pad, sequence_var,
          length_var):
    spec = load_spec(model)
    w, step, stride = int(input_length), int(context_step), int(stride)
    if w < 1 or step < 1 or stride < 1:
        raise ValueError(f"input_length ({w}), context_step ({step}) and stride ({stride}) must be >= 1")
    if step - 1 + span > w:
        raise ValueError(f"context_step {step} with edits of {span} bp needs {step - 1 + span} bp of context, more "
                         f"than input_length {w}: lower context_step")
    codes, lengths, names, regs, rows = genome_input(ds, regions, sequence_var, length_var)
    for r, row in zip(regs, rows):
        if lengths[row] < w and not pad:
            raise InputError(f"input_length {w} is longer than contig {r.contig!r} ({int(lengths[row])} bp): "
                             f"use a shorter input, pad='N', or drop that contig")
    n_pos = -(-max(r.end - r.start for r in regs) // stride)
    positions = pd.RangeIndex(0, n_pos * stride, stride)  # lazy: no 8 bytes per position in the client
    pc = int(position_chunk or default_position_chunk(n_pos, codes.chunks[1][0] // stride))
    pchunks = tuple(min(pc, n_pos - s) for s in range(0, n_pos, pc))
    return spec, w, step, stride, codes, lengths, regs, rows, positions, pchunks


def _graph(name, fn, codes, regs, rows, lengths, pchunks, stride, w, span, step, pad, shape_tail, per=None, **kw):
    """Return the dask array of ``fn`` over the (region, position chunk) blocks.

    A block's task carries only scalars: its first position index ``i0``, its length ``n`` and
    ``stride`` (offsets ``(i0 + arange(n)) * stride`` are derived in the task), the region, and the
    keys of the ``sequence_code`` chunks its contexts read (each read from the FASTA by its own
    task), so the graph grows with the number of chunks, never with the number of positions.
    ``per``: one strand per region (``strand="auto"``), passed to that region's blocks as ``strands``.
    """
    dsk = {}
    for i, (r, row) in enumerate(zip(regs, rows)):
        kw_i = kw | ({"strands": (per[i],)} if per else {})
        rlen, clen = r.end - r.start, int(lengths[row])
        p = 0
        for j, c in enumerate(pchunks):
            key = (name, i, j) + (0,) * len(shape_tail)
            n_in = min(c, max(0, -(-(rlen - p * stride) // stride)))  # positions of the block inside the region
            if n_in <= 0:
                dsk[key] = (_nan, (1, c) + shape_tail)
            else:
                gp = r.start + np.array([p, p + n_in - 1], np.int64) * stride
                cs = context_starts(gp, clen, w, span, step, pad)
                p0, p1 = int(cs[0]), int(cs[1]) + w
                keys, c0 = span_keys(codes, row, max(p0, 0), min(p1, clen))
                dsk[key] = (apply_kwargs, fn, [keys, c0, p0, p1], dict(
                    i0=p, n=c, stride=stride, rstart=r.start, rlen=rlen, contig_length=clen, contig_index=row,
                    w=w, span=span, step=step, pad=pad, label=r.label, **kw_i))
            p += c
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[codes])
    return da.Array(graph, name, chunks=((1,) * len(regs), pchunks) + tuple((s,) for s in shape_tail),
                    dtype=np.float32, meta=np.empty((0,) * (2 + len(shape_tail)), np.float32))


def _nan(shape):
    return np.full(shape, np.nan, np.float32)


def _context(label: str, cs: int, w: int, strand: str = "+") -> str:
    """Return how an error names a context window: region label, genome span and strand."""
    return f"region {label!r}, context window [{cs}, {cs + w}) ({strand})"


def _groups(gp: np.ndarray, step: int):
    g = gp // step
    cuts = np.flatnonzero(np.diff(g)) + 1
    return np.split(np.arange(len(gp)), cuts)


def _block_setup(blocks, c0, p0, p1, i0, n, stride, rstart, rlen, contig_length, w, span, step, pad, spec):
    """Return ``(runtime, codes of [p0, p1), region offsets q, inside, genome positions, context starts)``
    of the block of positions ``i0 .. i0 + n - 1`` (offsets ``q = index * stride``)."""
    tune_malloc()  # see tiles._tile_block
    codes = padded_span(blocks, c0, p0, p1, contig_length)
    q = (int(i0) + np.arange(int(n), dtype=np.int64)) * int(stride)
    inside = np.flatnonzero(q < rlen)
    gp = rstart + q[inside]
    return get_runtime(spec), codes, q, inside, gp, context_starts(gp, contig_length, w, span, step, pad)


def _sweep_block(blocks, c0, p0, p1, *, i0, n, stride, rstart, rlen, contig_length, contig_index, w, span, step, pad, label,
                 spec, readout, strands, windows, inserts, mode, replicates, seed) -> np.ndarray:
    """Return ``(1, P, T, S, 1 + 2 V W)`` float32: reference, then means (V, W), then stds (V, W).

    ``label`` (the region's) names the context window of a non-finite model output."""
    rt, codes, q, inside, gp, cs_all = _block_setup(blocks, c0, p0, p1, i0, n, stride, rstart, rlen, contig_length,
                                                    w, span, step, pad, spec)
    n_t, n_w, n_v = len(spec.target_names), len(windows), len(readout.names)
    out = np.full((1, len(q), n_t, len(strands), 1 + 2 * n_v * n_w), np.nan, np.float32)
    shifted = _Shifted(codes, p0)
    for grp in _groups(gp, step):
        cs = int(cs_all[grp[0]])
        ctx = codes[cs - p0:cs - p0 + w]
        for si, strand in enumerate(strands):
            with outputs_of(_context(label, cs, w, strand)):
                ref = readout.check(predict_on_strand(rt, ctx[None, :], strand))[0]
            out[0, inside[grp], :, si, 0] = readout.reference(ref, gp[grp] - cs)
            for wi, k in enumerate(windows):
                fit = grp[q[inside[grp]] + k <= rlen]
                if not fit.size:
                    continue
                starts = gp[fit]
                new = window_edits(mode, shifted, starts, k, replicates, seed, contig_index,
                                   inserts[wi] if inserts is not None else None)
                r = new.shape[1]
                lo = np.repeat(starts - cs, r)
                with outputs_of(_context(label, cs, w, strand)):
                    vals = _edit_values(rt, readout, ctx, ref, lo, new.reshape(-1, k), lo, lo + k - 1, strand)
                vals = vals.reshape(len(starts), r, n_t, n_v)
                out[0, inside[fit], :, si, 1 + wi:1 + n_v * n_w:n_w] = vals.mean(axis=1)
                out[0, inside[fit], :, si, 1 + n_v * n_w + wi::n_w] = vals.std(axis=1)
    return out


def _region_axis(regs, rows, positions, pchunks):
    """Return the coordinates of a (contig, position) result: region rows and genome positions.

    When every region starts at the same base (whole contigs, one region), ``position`` holds
    0-based genome coordinates; otherwise it holds offsets from each region start and the 2-D
    ``genome_position`` (contig, position) coordinate the genome coordinates.
    """
    starts = np.asarray([r.start for r in regs], np.int64)
    coords = region_coords(regs, rows)
    if (starts == starts[0]).all():
        return coords | {POSITION: positions + int(starts[0])}, "genome"
    stride = int(positions.step)
    offsets = da.arange(len(positions), chunks=(pchunks,), dtype=np.int64) * stride  # derived in the tasks
    gpos = da.from_array(starts[:, None], chunks=1) + offsets[None, :]
    return coords | {POSITION: positions, "genome_position": ((CONTIG, POSITION), gpos)}, "region_start"


def _describe_coords(new: xr.Dataset, origin) -> None:
    """State the coordinate convention in the attrs of ``position`` / ``genome_position`` / ``contig``."""
    sel = "; select by contig name and genome position with interpretome.genome_view(ds)"
    if origin == "genome":
        new[POSITION].attrs["description"] = ("0-based genome position (ISM: the edited base; sweep: the span start)"
                                              + sel)
    else:
        new[POSITION].attrs["description"] = "offset from each region start (region_start)" + sel
        new["genome_position"].attrs["description"] = ("0-based genome position = region_start + position (ISM: the "
                                                       "edited base; sweep: the span start)")
    new[CONTIG].attrs["description"] = "region label (the contig name for whole contigs; see contig_name)"


def _prepare(ds, model, regions, input_length, span, context_step, position_chunk, stride, sequence_var, length_var,
             *, bin_size, crop, crop_right, reductions, delta_distance, strand, pad, annotation=None):
    """Return ``(readout, strands, pad, plan, per)`` of a genome sweep / ISM: its options checked, its graph
    planned; ``per`` the strand of each region under ``strand="auto"`` (else None)."""
    strands = _strands(strand)
    readout = make_readout(input_length, bin_size, crop, crop_right, reductions, delta_distance,
                           "+" if strand == "auto" else strand)
    pad = _pad(pad, readout)
    plan = _plan(ds, model, regions, input_length, span, context_step, position_chunk, stride, pad, sequence_var,
                 length_var)
    per = auto_strands(strand, plan[6], annotation)
    if per and "-" in per:
        make_readout(input_length, bin_size, crop, crop_right, reductions, delta_distance, "-")  # the mirror check
    return readout, strands, pad, plan, per


def _finish(ds, variables, axis, coords, strands, attrs, profile, merge, per=None):
    """Return the result Dataset: ``variables`` name -> (dims with strand last, array), strand dropped if single.

    ``axis``: ``(regions, rows, positions, position chunks)`` of the region axis (``_region_axis``);
    ``profile``: ``(readout, strand, pad)``, stated in the attrs with the position origin.
    """
    axis_coords, origin = _region_axis(*axis)
    coords = axis_coords | coords
    attrs = attrs | {"position_origin": origin, **_profile_attrs(*profile)}
    out = {}
    for name, (dims, arr) in variables.items():
        if len(strands) == 1:
            out[name] = (dims[:-1], arr[..., 0])
        else:
            out[name] = (dims, arr)
    if len(strands) > 1:
        coords = coords | {STRAND: list(strands)}
    if per:
        coords = coords | {"region_strand": (CONTIG, np.asarray(per, dtype=object))}
    new = xr.Dataset(out, coords=coords, attrs=attrs)
    _describe_coords(new, attrs.get("position_origin"))
    validate_regional(new, per)
    return merge_result(ds, new, merge)


def _profile_attrs(readout, strand, pad) -> dict:
    attrs = {"strand": strand, "pad": "N" if pad else "none"}
    if isinstance(readout, ProfileReadout):
        attrs |= {"bin_size": readout.geom.bin_size, "crop": readout.geom.crop, "crop_right": readout.geom.crop_right,
                  "reductions": list(readout.reductions), "delta_distance": readout.distance}
    return attrs


def genome_sweep(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    input_length: int,
    regions=None,
    windows=None,
    stride: int = 1,
    replicates: int = 1,
    mode: str = "random",
    seed: int = 0,
    inserts=None,
    context_step: int = 1,
    bin_size: int | None = None,
    crop: int = 0,
    crop_right: int | None = None,
    reductions=None,
    delta_distance: int = 50,
    strand: str = "+",
    annotation=None,
    pad: str | None = None,
    position_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = False,
) -> xr.Dataset:
    """Return the lazy perturbation sweep of ``model`` along the contigs (or ``regions``) of ``ds``.

    Parameters
    ----------
    ds : Dataset
        ``ds[sequence_var]`` (a ``sequence_code``: (sequence, position)) and ``ds[length_var]`` (a
        ``sequence_length``: (sequence,)), e.g. ``read_genome``.
    model : ModelSpec, str or dict
        The model; ``input_length`` is its input window (bp).
    regions, windows, stride, replicates, mode, seed, inserts
        As in ``perturbation_sweep``; regions as in ``predict_tiles``.
    context_step : int
        Positions sharing one context window (module doc).
    bin_size, crop, crop_right : int
        A profile model's output geometry (as in ``predict_tiles``); ``bin_size=None``: a scalar model.
    reductions : sequence of str
        Profile models: which of ``REDUCTIONS`` to store (default all); a span ``[s, s + k)`` is read
        at the bin covering base ``s + (k - 1) // 2`` and within ``delta_distance`` bases of the span.
    strand : {'+', '-', 'both', 'auto'}
        Read the contexts forward, reverse-complemented (outputs flipped back), both (a
        trailing ``strand`` dim), or each region on its gene's strand (``auto``, module doc).
    annotation : DataFrame or path
        ``strand="auto"``: the genes (a ``read_annotation`` table, or a GTF / GFF3 / BED / BED12 path).
    pad : {'N', 'none'}
        'N' (default for profile models): contexts stay centred at contig ends, past which they
        read N; 'none' (default for scalar models): they shift inward.

    Returns
    -------
    Dataset
        Scalar models: ``genome_sweep_delta_mean`` / ``genome_sweep_delta_std`` (contig, window,
        position, target[, strand]); profile models: ``genome_sweep_<value>_mean`` / ``_std`` for
        the values of ``reductions`` (``profile_at_edit``, ``profile_total``, ``delta_gain``,
        ``delta_loss``); both: ``genome_sweep_reference`` (contig, position, target[, strand]).
        One row per region (region coordinates as in ``predict_tiles``); ``position`` = span start
        (see ``_region_axis``), every ``stride``. Nothing is computed.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path, demo_model_spec
    >>> genome = it.read_genome(data_path("yeast_chrI.fna.gz"))
    >>> res = it.genome_sweep(genome, demo_model_spec(), input_length=200, regions=["NC_001133.9:1001-1020"],
    ...                       windows=[4], stride=10, replicates=2)
    >>> res["genome_sweep_delta_mean"].dims, res["genome_sweep_delta_mean"].shape
    (('contig', 'window', 'position', 'target'), (1, 1, 2, 1))
    >>> res["position"].values.tolist(), res["genome_sweep_delta_std"].chunks is not None
    ([1000, 1010], True)
    """
    windows, labels, insert_codes = resolve_windows(mode, windows, inserts, replicates)
    readout, strands, pad, plan, per = _prepare(
        ds, model, regions, input_length, max(windows), context_step, position_chunk, stride, sequence_var, length_var,
        bin_size=bin_size, crop=crop, crop_right=crop_right, reductions=reductions, delta_distance=delta_distance,
        strand=strand, pad=pad, annotation=annotation)
    spec, w, step, stride, codes, lengths, regs, rows, positions, pchunks = plan
    n_t, n_w, n_v = len(spec.target_names), len(windows), len(readout.names)
    name = "genome-sweep-" + graph_token(spec, w, step, stride, codes.name, regs, pchunks, windows, labels, mode,
                                    replicates, seed, readout, strands, per, pad)
    out = _graph(name, _sweep_block, codes, regs, rows, lengths, pchunks, stride, w, max(windows), step, pad,
                 (n_t, len(strands), 1 + 2 * n_v * n_w), spec=spec, readout=readout, strands=strands,
                 per=per, windows=tuple(windows), inserts=insert_codes, mode=mode, replicates=int(replicates),
                 seed=int(seed))
    variables = {"genome_sweep_reference": (_REF_DIMS, out[..., 0])}
    for v, value in enumerate(readout.names):
        for stat, off in (("mean", 1), ("std", 1 + n_v * n_w)):
            arr = out[..., off + v * n_w:off + (v + 1) * n_w]  # (contig, position, target, strand, window)
            variables[f"genome_sweep_{value}_{stat}"] = (_SWEEP_DIMS, da.moveaxis(arr, -1, 1))
    attrs = {"sweep_mode": mode, "sweep_stride": stride, "sweep_replicates": int(replicates), "sweep_seed": int(seed),
             "input_length": w, "context_step": step}
    return _finish(ds, variables, (regs, rows, positions, pchunks),
                   {WINDOW: labels, "window_length": (WINDOW, windows), TARGET: spec.target_names}, strands, attrs,
                   (readout, strand, pad), merge, per)


def _ism_block(blocks, c0, p0, p1, *, i0, n, stride, rstart, rlen, contig_length, contig_index, w, span, step, pad, label,
               spec, readout, strands) -> np.ndarray:
    """Return ``(1, P, T, S, 1 + 4 V)`` float32: the reference, then per value the bases A, C, G, T.

    ``label`` (the region's) names the context window of a non-finite model output."""
    rt, codes, q, inside, gp, cs_all = _block_setup(blocks, c0, p0, p1, i0, n, stride, rstart, rlen, contig_length,
                                                    w, span, step, pad, spec)
    n_t, n_v = len(spec.target_names), len(readout.names)
    out = np.full((1, len(q), n_t, len(strands), 1 + 4 * n_v), np.nan, np.float32)
    for grp in _groups(gp, step):
        cs = int(cs_all[grp[0]])
        ctx = codes[cs - p0:cs - p0 + w]
        local = gp[grp] - cs
        alt = np.tile(np.arange(4, dtype=np.uint8), len(grp))
        starts = np.repeat(local, 4)
        keep = alt != ctx[starts]
        for si, strand in enumerate(strands):
            vals = np.where(readout.valid(starts, starts)[:, None, :], 0.0, np.nan).astype(np.float32)
            vals = np.broadcast_to(vals, (len(starts), n_t, n_v)).copy()
            with outputs_of(_context(label, cs, w, strand)):
                ref = readout.check(predict_on_strand(rt, ctx[None, :], strand))[0]
                if keep.any():
                    vals[keep] = _edit_values(rt, readout, ctx, ref, starts[keep], alt[keep][:, None], starts[keep],
                                              starts[keep], strand)
            out[0, inside[grp], :, si, 0] = readout.reference(ref, local)
            out[0, inside[grp], :, si, 1:] = vals.reshape(len(grp), 4, n_t, n_v).transpose(0, 2, 3, 1).reshape(
                len(grp), n_t, 4 * n_v)
    return out


def genome_ism(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    input_length: int,
    regions=None,
    context_step: int = 1,
    bin_size: int | None = None,
    crop: int = 0,
    crop_right: int | None = None,
    reductions=None,
    delta_distance: int = 50,
    strand: str = "+",
    annotation=None,
    pad: str | None = None,
    position_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = False,
) -> xr.Dataset:
    """Return the lazy saturation mutagenesis of ``model`` along the contigs (or ``regions``) of ``ds``.

    Every base of every region is substituted by A, C, G and T inside its genomic context window
    (module doc); the ``base`` coordinate is the forward-strand base, whatever ``strand``.

    Parameters
    ----------
    ds, model, input_length, regions, context_step
        As in ``genome_sweep``.
    bin_size, crop, crop_right, reductions, delta_distance, strand, annotation, pad
        As in ``genome_sweep``; an edit of base ``p`` is read at the bin covering ``p`` and over
        the bins within ``delta_distance`` bases of it.

    Returns
    -------
    Dataset
        Scalar models: ``genome_ism_delta`` (contig, position, base, target[, strand]); profile
        models: ``genome_ism_<value>`` for the values of ``reductions`` (``profile_at_edit``,
        ``profile_total``, ``delta_gain``, ``delta_loss``), same dims; all 0 at the reference base.
        ``genome_ism_reference`` (contig, position, target[, strand]). ``position``: the edited
        base (see ``_region_axis``). Nothing is computed.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path, demo_model_spec
    >>> genome = it.read_genome(data_path("yeast_chrI.fna.gz"))
    >>> res = it.genome_ism(genome, demo_model_spec(), input_length=200, regions=["NC_001133.9:1001-1010"])
    >>> res["genome_ism_delta"].dims, res["genome_ism_delta"].shape
    (('contig', 'position', 'base', 'target'), (1, 10, 4, 1))
    >>> delta = res["genome_ism_delta"].compute()
    >>> ref = genome["sequence_code"][0, 1000:1010].values
    >>> bool((delta.values[0, range(10), ref, 0] == 0).all()), float(abs(delta).max()) > 0
    (True, True)
    """
    readout, strands, pad, plan, per = _prepare(
        ds, model, regions, input_length, 1, context_step, position_chunk, 1, sequence_var, length_var,
        bin_size=bin_size, crop=crop, crop_right=crop_right, reductions=reductions, delta_distance=delta_distance,
        strand=strand, pad=pad, annotation=annotation)
    spec, w, step, stride, codes, lengths, regs, rows, positions, pchunks = plan
    n_t = len(spec.target_names)
    name = "genome-ism-" + graph_token(spec, w, step, codes.name, regs, pchunks, readout, strands, per, pad)
    out = _graph(name, _ism_block, codes, regs, rows, lengths, pchunks, 1, w, 1, step, pad,
                 (n_t, len(strands), 1 + 4 * len(readout.names)), per=per, spec=spec, readout=readout,
                 strands=strands)
    variables = {"genome_ism_reference": (_REF_DIMS, out[..., 0])}
    for v, value in enumerate(readout.names):  # (contig, position, target, strand, base) -> base third
        variables[f"genome_ism_{value}"] = (_ISM_DIMS, da.moveaxis(out[..., 1 + 4 * v:5 + 4 * v], -1, 2))
    return _finish(ds, variables, (regs, rows, positions, pchunks), {BASE: list(BASES), TARGET: spec.target_names},
                   strands, {"input_length": w, "context_step": step}, (readout, strand, pad), merge, per)
