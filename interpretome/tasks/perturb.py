"""Perturbation sweeps: randomise, shuffle, mask or replace a sliding window of k bases.

For every sequence, window size k, window start ``position`` (every ``stride`` bases) and
replicate, the bases ``[position, position + k)`` are perturbed and the model's prediction is
compared with the unperturbed one (``sweep_reference``). Windows that do not fit a sequence
(``position + k > sequence_length``) are NaN. Modes:

* ``random``  — uniform random bases A,C,G,T (counter-based draws keyed by seed, sequence index,
  k, position, replicate and offset in the window: identical whatever the chunking);
* ``shuffle`` — a random permutation of the window's own bases (same keys);
* ``insert``  — the given k-mers (Genomic-ULMFiT's ``inserts=``), one ``window`` entry per insert;
* ``mask``    — N (all-zero one-hot columns; the unknown token for k-mer models).

``random`` and ``shuffle`` take ``replicates`` draws; ``insert`` and ``mask`` are deterministic.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..engine import rng
from ..engine.blocks import as_dask, chunk_size, index_array, merge_result, sequence_codes
from ..engine.models import ModelSpec, get_runtime, item_name, load_spec, outputs_of
from ..storage.alphabet import CODE_N, encode_bases
from ..storage.schema import POSITION, REPLICATE, SEQUENCE, TARGET, WINDOW, validate

MODES = ("random", "shuffle", "insert", "mask")
DEFAULT_WINDOWS = (1, 3, 5, 7, 9, 11, 13, 15)


def window_edits(mode: str, ref: np.ndarray, starts: np.ndarray, k: int, replicates: int, seed: int,
                 sequence: int, insert: np.ndarray | None = None) -> np.ndarray:
    """Return the replacement codes ``(P, R, k)`` uint8 for windows of ``k`` at ``starts`` (P,).

    ``ref`` (L,) uint8 is the sequence; ``sequence`` its global index (a random-draw key). For
    ``random``/``shuffle`` the draws depend only on (seed, sequence, k, start, replicate, offset).
    """
    starts = np.asarray(starts, np.int64)
    p = starts[:, None, None]
    r = np.arange(replicates, dtype=np.int64)[None, :, None]
    o = np.arange(k, dtype=np.int64)[None, None, :]
    if mode == "random":
        return rng.random_bases(seed, sequence, k, p, r, o)
    if mode == "shuffle":
        order = rng.shuffle_order(seed, sequence, k, p, r, o)  # (P, R, k)
        own = ref[starts[:, None] + np.arange(k)[None, :]]  # (P, k)
        return np.take_along_axis(np.broadcast_to(own[:, None, :], order.shape), order, axis=-1).astype(np.uint8)
    if mode == "mask":
        return np.full((len(starts), 1, k), CODE_N, np.uint8)
    if mode == "insert":
        return np.broadcast_to(insert[None, None, :], (len(starts), 1, k)).copy()
    raise ValueError(f"mode {mode!r} is not one of {MODES}")


def resolve_windows(mode: str, windows, inserts, replicates: int):
    """Return ``(window lengths, window labels, insert codes or None)`` after checking the sweep options.

    ``insert`` mode takes its windows from ``inserts`` (labels are the k-mers); other modes take
    ``windows`` (default 1, 3, ..., 15; labels are the lengths). Raises ``ValueError`` naming the
    bad option and the fix. Shared by the short-sequence and the genome sweeps.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if int(replicates) < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if mode in ("insert", "mask") and int(replicates) != 1:
        raise ValueError(f"mode {mode!r} is deterministic: replicates must be 1, got {replicates} "
                         f"(use mode='random' or 'shuffle' for replicated draws)")
    insert_codes = None
    if mode == "insert":
        if not inserts:
            raise ValueError("mode 'insert' needs inserts=[k-mers], e.g. inserts=['TATAAT', 'TTGACA']")
        if windows is not None:
            raise ValueError("mode 'insert' takes its window lengths from inserts=; drop windows=")
        labels = [str(s).upper() for s in inserts]
        insert_codes = [encode_bases(s, "inserts") for s in labels]
        windows = [len(s) for s in labels]
    else:
        if inserts:
            raise ValueError(f"inserts= is only used by mode='insert', not mode={mode!r}")
        windows = list(DEFAULT_WINDOWS if windows is None else windows)
        labels = windows
    if not windows or any(int(k) != k or int(k) < 1 for k in windows):
        raise ValueError(f"windows must be positive integers, got {windows}")
    return [int(k) for k in windows], labels, insert_codes


def _sweep_block(codes, lengths, seq_ids, names, positions, *, spec: ModelSpec, windows, inserts, mode,
                 replicates, seed, keep) -> np.ndarray:
    """Return ``(S, W, P, T, Q)`` float32: Q = [delta mean, delta std, replicate predictions...]."""
    rt = get_runtime(spec)
    n_t = len(spec.target_names)
    q = 2 + (replicates if keep else 0)
    out = np.full((codes.shape[0], len(windows), len(positions), n_t, q), np.nan, np.float32)
    for i in range(codes.shape[0]):
        n = int(lengths[i])
        ref = np.ascontiguousarray(codes[i, :n])
        with outputs_of(item_name("sequence", names[i], seq_ids[i])):
            ref_pred = rt.predict(ref[None, :])[0]
            for w, k in enumerate(windows):
                fit = positions + k <= n
                starts = positions[fit]
                if not starts.size:
                    continue
                new = window_edits(mode, ref, starts, k, replicates, seed, int(seq_ids[i]),
                                   inserts[w] if inserts is not None else None)
                r = new.shape[1]
                pred = rt.predict_edits(ref, np.repeat(starts, r), new.reshape(-1, k)).reshape(len(starts), r, n_t)
                delta = pred - ref_pred[None, None, :]
                out[i, w, fit, :, 0] = delta.mean(axis=1)
                out[i, w, fit, :, 1] = delta.std(axis=1)
                if keep:
                    out[i, w, fit, :, 2:] = np.moveaxis(pred, 1, -1)
    return out


def _reference_block(codes, lengths, seq_ids, names, *, spec: ModelSpec) -> np.ndarray:
    """Return ``(S, T)`` float32 predictions of the unperturbed sequences."""
    rt = get_runtime(spec)
    out = np.empty((codes.shape[0], len(spec.target_names)), np.float32)
    for i in range(codes.shape[0]):
        with outputs_of(item_name("sequence", names[i], seq_ids[i])):
            out[i] = rt.predict(np.ascontiguousarray(codes[i, :int(lengths[i])])[None, :])[0]
    return out


def reference_predictions(codes: da.Array, lengths: da.Array, spec: ModelSpec, seq_ids: da.Array,
                          names: da.Array) -> da.Array:
    """Return the lazy ``(sequence, target)`` predictions of whole sequences (one task per sequence chunk).

    ``seq_ids`` and ``names`` (sequence,) are the global indices and names errors cite.
    """
    return da.blockwise(_reference_block, "st", codes, "sx", lengths, "s", seq_ids, "s", names, "s",
                        new_axes={"t": len(spec.target_names)}, concatenate=True, dtype=np.float32,
                        meta=np.empty((0, 0), np.float32), spec=spec)


def item_labels(ds: xr.Dataset, dim: str, chunks) -> da.Array:
    """Return the names of the items along ``dim`` (its coordinate, else the indices) as a dask array.

    Blocks get the names of their items, so an error (a non-finite model output) can cite them.
    ASCII names travel as bytes (``S``: 1 byte a character instead of numpy's 4; the graph of
    1 M cells named ``cell123456`` carries 10 MB of names, not 40 MB); ``engine.heads.item_name``
    decodes them.
    """
    n = ds.sizes[dim]
    values = np.asarray(ds[dim].values) if dim in ds.coords else np.arange(n)
    labels = values.astype(str)
    try:
        labels = np.char.encode(labels, "ascii")
    except UnicodeEncodeError:
        pass  # non-ASCII names stay str
    return as_dask(labels, (chunks,))


def sequence_input(ds: xr.Dataset, sequence_var: str = "sequence_code", length_var: str = "sequence_length"):
    """Return ``(codes, lengths, known lengths or None, sequence indices, sequence names)``, the last
    four as dask arrays chunked like the codes' sequences.

    ``ds[sequence_var]`` must fit the registered ``sequence_code`` (sequence, position) uint8 and
    ``ds[length_var]`` ``sequence_length`` (sequence) int (checked on metadata, nothing computed).
    """
    codes = sequence_codes(ds, sequence_var, length_var, "interpretome.read_fasta or sequences_to_dataset", (64, -1))
    lengths = as_dask(ds[length_var].data, (codes.chunks[0],))
    known = None if isinstance(ds[length_var].data, da.Array) else np.asarray(ds[length_var].values)
    seq_ids = index_array(codes.shape[0], codes.chunks[0])
    return codes, lengths, known, seq_ids, item_labels(ds, SEQUENCE, codes.chunks[0])


def perturbation_sweep(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    windows=None,
    stride: int = 1,
    replicates: int = 1,
    mode: str = "random",
    seed: int = 0,
    inserts=None,
    keep_replicates: bool = False,
    position_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = True,
) -> xr.Dataset:
    """Return the lazy sweep of ``model`` over the sequences of ``ds`` (see the module doc).

    Input: ``ds[sequence_var]`` (a ``sequence_code``: (sequence, position) uint8) and
    ``ds[length_var]`` (a ``sequence_length``: (sequence,)).
    Output variables: ``sweep_reference`` (sequence, target); ``sweep_delta_mean`` and
    ``sweep_delta_std`` (sequence, window, position, target) — position is the window's first
    base; with ``keep_replicates`` also ``sweep_prediction`` (sequence, window, position,
    replicate, target). ``window`` holds k (or the insert k-mers in ``insert`` mode), with a
    ``window_length`` coordinate. Output chunks follow the input's sequence chunks and
    ``position_chunk`` window starts (default: the input's position chunk / stride).
    Nothing is computed.

    Parameters
    ----------
    ds : xarray.Dataset
        DNA records (``read_fasta``, ``sequences_to_dataset``).
    model : ModelSpec, str or dict
    windows : list of int, optional
        Window sizes k (default 1, 3, ..., 15).
    stride : int, default 1
        Positions between window starts.
    replicates : int, default 1
        Random draws per window (``random`` / ``shuffle``).
    mode : {"random", "shuffle", "insert", "mask"}, default "random"
    seed : int, default 0
        Seed of the counter-based draws (independent of chunking and workers).
    inserts : list of str, optional
        The k-mers of ``insert`` mode.
    keep_replicates : bool, default False
    position_chunk, sequence_var, length_var
        See above.
    merge : bool, default True
        Return the input variables too (their position axis differs with a stride: pass False).

    Returns
    -------
    xarray.Dataset
        Lazy; see above for the variables and their dims.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import demo_model_spec, promoter_sequences
    >>> ds = it.sequences_to_dataset(promoter_sequences(2))
    >>> res = it.perturbation_sweep(ds, demo_model_spec(), windows=[6], stride=10, replicates=2, merge=False)
    >>> res["sweep_delta_mean"].dims, res["sweep_delta_mean"].shape
    (('sequence', 'window', 'position', 'target'), (2, 1, 20, 1))
    """
    spec = load_spec(model)
    stride, replicates, seed = int(stride), int(replicates), int(seed)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    windows, labels, insert_codes = resolve_windows(mode, windows, inserts, replicates)
    codes, lengths, known, seq_ids, names = sequence_input(ds, sequence_var, length_var)
    lmax = codes.shape[1]
    if known is not None:
        for k in windows:
            if k > known.max():
                raise ValueError(f"window {k} is longer than every sequence (the longest is {int(known.max())} bp): "
                                 f"drop it or pass longer sequences")
    positions = np.arange(0, lmax, stride, dtype=np.int64)
    pc = position_chunk or max(1, chunk_size(codes.chunks[1]) // stride)
    pos = da.from_array(positions, chunks=int(pc))
    n_q = 2 + (replicates if keep_replicates else 0)
    out = da.blockwise(
        _sweep_block, "swptq", codes, "sx", lengths, "s", seq_ids, "s", names, "s", pos, "p",
        new_axes={"w": len(windows), "t": len(spec.target_names), "q": n_q}, concatenate=True,
        dtype=np.float32, meta=np.empty((0,) * 5, np.float32),
        spec=spec, windows=tuple(windows), inserts=insert_codes, mode=mode, replicates=replicates,
        seed=seed, keep=keep_replicates,
    )
    dims4 = (SEQUENCE, WINDOW, POSITION, TARGET)
    data = {
        "sweep_reference": ((SEQUENCE, TARGET), reference_predictions(codes, lengths, spec, seq_ids, names)),
        "sweep_delta_mean": (dims4, out[..., 0]),
        "sweep_delta_std": (dims4, out[..., 1]),
    }
    coords = {SEQUENCE: ds[SEQUENCE].values if SEQUENCE in ds.coords else np.arange(codes.shape[0]),
              WINDOW: labels, "window_length": (WINDOW, windows), POSITION: positions,
              TARGET: spec.target_names}
    if keep_replicates:
        data["sweep_prediction"] = ((SEQUENCE, WINDOW, POSITION, REPLICATE, TARGET), da.moveaxis(out[..., 2:], -1, 3))
        coords[REPLICATE] = np.arange(replicates)
    new = xr.Dataset(data, coords=coords, attrs={
        "sweep_mode": mode, "sweep_stride": stride, "sweep_replicates": replicates, "sweep_seed": seed})
    validate(new)
    return merge_result(ds, new, merge)

