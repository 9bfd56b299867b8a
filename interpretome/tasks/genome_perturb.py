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
block plus a halo of half a window on each side, clipped to the contig).

Positions are offsets from each region's start (``position`` coordinate; genome coordinate =
``region_start`` + position; for whole contigs they are genome coordinates). Spans that do not
fit in their region are NaN, as are positions past a region's end. ``merge`` defaults to False
here: the result's ``position`` axis (offsets within regions) is not the genome's.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from ..engine.blocks import merge_result
from ..engine.process import tune_malloc
from ..engine.models import ModelSpec, get_runtime, load_spec, outputs_of
from ..engine.regions import apply_kwargs, genome_input, graph_token, join_span, region_coords, span_keys
from ..errors import InputError
from ..storage.schema import BASE, BASES, CONTIG, POSITION, TARGET, WINDOW, validate
from .perturb import resolve_windows, window_edits


class _Shifted:
    """Index genome positions into a span of codes that starts at genome position ``offset``."""

    def __init__(self, codes: np.ndarray, offset: int):
        self.codes, self.offset = codes, offset

    def __getitem__(self, idx):
        return self.codes[np.asarray(idx) - self.offset]


def context_starts(positions: np.ndarray, contig_length: int, input_length: int, span: int, step: int) -> np.ndarray:
    """Return the genome start of the context window of each genome position (see the module doc).

    ``span`` is the longest edit (max k); ``step`` the context step.
    """
    g = np.asarray(positions, np.int64) // step
    centre = g * step + (step - 1 + span) // 2
    return np.clip(centre - input_length // 2, 0, contig_length - input_length)


def _plan(ds, model, regions, input_length, span, context_step, position_chunk, stride, sequence_var, length_var):
    spec = load_spec(model)
    w, step, stride = int(input_length), int(context_step), int(stride)
    if w < 1 or step < 1 or stride < 1:
        raise ValueError(f"input_length ({w}), context_step ({step}) and stride ({stride}) must be >= 1")
    if step - 1 + span > w:
        raise ValueError(f"context_step {step} with edits of {span} bp needs {step - 1 + span} bp of context, more "
                         f"than input_length {w}: lower context_step")
    codes, lengths, names, regs, rows = genome_input(ds, regions, sequence_var, length_var)
    for r, row in zip(regs, rows):
        if lengths[row] < w:
            raise InputError(f"input_length {w} is longer than contig {r.contig!r} ({int(lengths[row])} bp): "
                             f"use a shorter input or drop that contig")
    n_pos = -(-max(r.end - r.start for r in regs) // stride)
    positions = np.arange(n_pos, dtype=np.int64) * stride
    pc = int(position_chunk or max(1, codes.chunks[1][0] // stride))
    pchunks = tuple(min(pc, n_pos - s) for s in range(0, n_pos, pc))
    return spec, w, step, stride, codes, lengths, regs, rows, positions, pchunks


def _graph(name, fn, codes, regs, rows, lengths, positions, pchunks, w, span, step, shape_tail, empty, **kw):
    dsk = {}
    for i, (r, row) in enumerate(zip(regs, rows)):
        p = 0
        for j, c in enumerate(pchunks):
            q = positions[p:p + c]
            gp = r.start + q[q < r.end - r.start]
            if not gp.size:
                dsk[(name, i, j) + (0,) * len(shape_tail)] = (empty, (1, c) + shape_tail)
            else:
                cs = context_starts(gp[[0, -1]], int(lengths[row]), w, span, step)
                p0, p1 = int(cs[0]), int(cs[1]) + w
                keys, c0 = span_keys(codes, row, p0, p1)
                dsk[(name, i, j) + (0,) * len(shape_tail)] = (apply_kwargs, fn, [keys, c0, p0, p1], dict(
                    q=q, rstart=r.start, rlen=r.end - r.start, contig_length=int(lengths[row]), contig_index=row,
                    w=w, span=span, step=step, label=r.label, **kw))
            p += c
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[codes])
    return da.Array(graph, name, chunks=((1,) * len(regs), pchunks) + tuple((s,) for s in shape_tail),
                    dtype=np.float32, meta=np.empty((0,) * (2 + len(shape_tail)), np.float32))


def _nan(shape):
    return np.full(shape, np.nan, np.float32)


def _context(label: str, cs: int, w: int) -> str:
    """Return how an error names a context window: region label and genome span."""
    return f"region {label!r}, context window [{cs}, {cs + w})"


def _groups(gp: np.ndarray, step: int):
    g = gp // step
    cuts = np.flatnonzero(np.diff(g)) + 1
    return np.split(np.arange(len(gp)), cuts)


def _sweep_block(blocks, c0, p0, p1, *, q, rstart, rlen, contig_length, contig_index, w, span, step, label, spec,
                 windows, inserts, mode, replicates, seed) -> np.ndarray:
    """Return ``(1, P, T, 1 + 2 W)`` float32: reference, then delta means, then delta stds per window."""
    tune_malloc()  # see tiles._tile_block
    rt = get_runtime(spec)
    codes = join_span(blocks, c0, p0, p1)
    n_t, n_w = len(spec.target_names), len(windows)
    out = np.full((1, len(q), n_t, 1 + 2 * n_w), np.nan, np.float32)
    inside = np.flatnonzero(q < rlen)
    gp = rstart + q[inside]
    cs_all = context_starts(gp, contig_length, w, span, step)
    shifted = _Shifted(codes, p0)
    for grp in _groups(gp, step):
        cs = int(cs_all[grp[0]])
        ctx = codes[cs - p0:cs - p0 + w]
        with outputs_of(_context(label, cs, w)):
            ref_pred = rt.predict(ctx[None, :])[0]
            out[0, inside[grp], :, 0] = ref_pred
            for wi, k in enumerate(windows):
                fit = grp[q[inside[grp]] + k <= rlen]
                if not fit.size:
                    continue
                starts = gp[fit]
                new = window_edits(mode, shifted, starts, k, replicates, seed, contig_index,
                                   inserts[wi] if inserts is not None else None)
                r = new.shape[1]
                pred = rt.predict_edits(ctx, np.repeat(starts - cs, r), new.reshape(-1, k)).reshape(len(starts), r, n_t)
                delta = pred - ref_pred[None, None, :]
                out[0, inside[fit], :, 1 + wi] = delta.mean(axis=1)
                out[0, inside[fit], :, 1 + n_w + wi] = delta.std(axis=1)
    return out


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
    position_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = False,
) -> xr.Dataset:
    """Return the lazy perturbation sweep of ``model`` along the contigs (or ``regions``) of ``ds``.

    Input: ``ds[sequence_var]`` / ``ds[length_var]`` (a ``sequence_code`` / ``sequence_length``,
    e.g. from ``read_genome``). ``input_length`` is the
    model's input window; ``windows``/``stride``/``replicates``/``mode``/``seed``/``inserts`` as in
    ``perturbation_sweep``; ``context_step`` groups positions sharing a context (module doc).
    Output: ``genome_sweep_delta_mean`` / ``genome_sweep_delta_std`` (contig, window, position,
    target), ``genome_sweep_reference`` (contig, position, target), one row per region (region
    coordinates as in ``predict_tiles``); ``position`` = offset of the span start from the region
    start, every ``stride``. Nothing is computed.
    """
    windows, labels, insert_codes = resolve_windows(mode, windows, inserts, replicates)
    spec, w, step, stride, codes, lengths, regs, rows, positions, pchunks = _plan(
        ds, model, regions, input_length, max(windows), context_step, position_chunk, stride, sequence_var, length_var)
    n_t, n_w = len(spec.target_names), len(windows)
    name = "genome-sweep-" + graph_token(spec, w, step, stride, codes.name, regs, pchunks, windows, labels, mode,
                                    replicates, seed)
    out = _graph(name, _sweep_block, codes, regs, rows, lengths, positions, pchunks, w, max(windows), step,
                 (n_t, 1 + 2 * n_w), _nan, spec=spec, windows=tuple(windows), inserts=insert_codes, mode=mode,
                 replicates=int(replicates), seed=int(seed))
    dims4 = (CONTIG, WINDOW, POSITION, TARGET)
    new = xr.Dataset(
        {"genome_sweep_reference": ((CONTIG, POSITION, TARGET), out[..., 0]),
         "genome_sweep_delta_mean": (dims4, da.moveaxis(out[..., 1:1 + n_w], -1, 1)),
         "genome_sweep_delta_std": (dims4, da.moveaxis(out[..., 1 + n_w:], -1, 1))},
        coords=region_coords(regs, rows) | {WINDOW: labels, "window_length": (WINDOW, windows),
                                            POSITION: positions, TARGET: spec.target_names},
        attrs={"sweep_mode": mode, "sweep_stride": stride, "sweep_replicates": int(replicates), "sweep_seed": int(seed),
               "input_length": w, "context_step": step, "position_origin": "region_start"},
    )
    validate(new)
    return merge_result(ds, new, merge)


def _ism_block(blocks, c0, p0, p1, *, q, rstart, rlen, contig_length, contig_index, w, span, step, label,
               spec) -> np.ndarray:
    """Return ``(1, P, T, 5)`` float32: the reference, then the delta for bases A, C, G, T."""
    tune_malloc()  # see tiles._tile_block
    rt = get_runtime(spec)
    codes = join_span(blocks, c0, p0, p1)
    n_t = len(spec.target_names)
    out = np.full((1, len(q), n_t, 5), np.nan, np.float32)
    inside = np.flatnonzero(q < rlen)
    gp = rstart + q[inside]
    cs_all = context_starts(gp, contig_length, w, span, step)
    for grp in _groups(gp, step):
        cs = int(cs_all[grp[0]])
        ctx = codes[cs - p0:cs - p0 + w]
        local = gp[grp] - cs
        alt = np.tile(np.arange(4, dtype=np.uint8), len(grp))
        starts = np.repeat(local, 4)
        keep = alt != ctx[starts]
        delta = np.zeros((len(grp) * 4, n_t), np.float32)
        with outputs_of(_context(label, cs, w)):
            ref_pred = rt.predict(ctx[None, :])[0]
            if keep.any():
                delta[keep] = rt.predict_edits(ctx, starts[keep], alt[keep][:, None]) - ref_pred[None, :]
        out[0, inside[grp], :, 0] = ref_pred
        out[0, inside[grp], :, 1:] = delta.reshape(len(grp), 4, n_t).transpose(0, 2, 1)
    return out


def genome_ism(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    input_length: int,
    regions=None,
    context_step: int = 1,
    position_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = False,
) -> xr.Dataset:
    """Return the lazy saturation mutagenesis of ``model`` along the contigs (or ``regions``) of ``ds``.

    Every base of every region is substituted by A, C, G and T inside its genomic context window
    (module doc). Output: ``genome_ism_delta`` (contig, position, base, target) — 0 at the
    reference base — and ``genome_ism_reference`` (contig, position, target). Nothing is computed.
    """
    spec, w, step, stride, codes, lengths, regs, rows, positions, pchunks = _plan(
        ds, model, regions, input_length, 1, context_step, position_chunk, 1, sequence_var, length_var)
    n_t = len(spec.target_names)
    name = "genome-ism-" + graph_token(spec, w, step, codes.name, regs, pchunks)
    out = _graph(name, _ism_block, codes, regs, rows, lengths, positions, pchunks, w, 1, step, (n_t, 5), _nan,
                 spec=spec)
    new = xr.Dataset(
        {"genome_ism_delta": ((CONTIG, POSITION, BASE, TARGET), da.moveaxis(out[..., 1:], -1, 2)),
         "genome_ism_reference": ((CONTIG, POSITION, TARGET), out[..., 0])},
        coords=region_coords(regs, rows) | {POSITION: positions, BASE: list(BASES), TARGET: spec.target_names},
        attrs={"input_length": w, "context_step": step, "position_origin": "region_start"},
    )
    validate(new)
    return merge_result(ds, new, merge)
