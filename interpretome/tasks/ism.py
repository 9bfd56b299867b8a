"""In-silico saturation mutagenesis: every single-base substitution and its effect.

``ism_delta`` (sequence, position, base, target) = prediction with ``base`` at ``position`` minus
the unperturbed prediction. The identity edit is skipped (3 L + 1 forward passes per sequence,
the +1 being the reference) and its entry is exactly 0. At an N all four bases are substitutions.
Positions past a sequence's length are NaN. For convolutional models the engine recomputes only
the span a substitution can change (see ``engine.models.Runtime.predict_edits``).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..engine.blocks import chunk_size, merge_result
from ..engine.models import ModelSpec, get_runtime, item_name, load_spec, outputs_of
from ..storage.schema import BASE, BASES, POSITION, SEQUENCE, TARGET, validate
from .perturb import reference_predictions, sequence_input


def _ism_block(codes, lengths, seq_ids, names, positions, *, spec: ModelSpec) -> np.ndarray:
    """Return ``(S, P, 4, T)`` float32 deltas for the sequences and positions of one block."""
    rt = get_runtime(spec)
    n_t = len(spec.target_names)
    out = np.full((codes.shape[0], len(positions), 4, n_t), np.nan, np.float32)
    for i in range(codes.shape[0]):
        n = int(lengths[i])
        ref = np.ascontiguousarray(codes[i, :n])
        inside = positions < n
        pos = positions[inside]
        if not pos.size:
            continue
        alt = np.tile(np.arange(4, dtype=np.uint8), pos.size)
        starts = np.repeat(pos, 4)
        keep = alt != ref[starts]
        with outputs_of(item_name("sequence", names[i], seq_ids[i])):
            ref_pred = rt.predict(ref[None, :])[0]
            pred = rt.predict_edits(ref, starts[keep], alt[keep][:, None])
        delta = np.zeros((pos.size * 4, n_t), np.float32)
        delta[keep] = pred - ref_pred[None, :]
        out[i, inside] = delta.reshape(pos.size, 4, n_t)
    return out


def saturation_mutagenesis(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    start: int | None = None,
    end: int | None = None,
    position_chunk: int | None = None,
    sequence_var: str = "sequence_code",
    length_var: str = "sequence_length",
    merge: bool = True,
) -> xr.Dataset:
    """Return the lazy ISM of ``model`` over positions ``[start, end)`` of every sequence in ``ds``.

    Input: ``ds[sequence_var]`` (a ``sequence_code``: (sequence, position) uint8) and
    ``ds[length_var]`` (a ``sequence_length``: (sequence,)).
    Output: ``ism_delta`` (sequence, position, base, target) and ``ism_reference`` (sequence,
    target); position chunks follow the input's (or ``position_chunk``). Nothing is computed.

    Parameters
    ----------
    ds : xarray.Dataset
        DNA records (``read_fasta``, ``sequences_to_dataset``).
    model : ModelSpec, str or dict
    start, end : int, optional
        The mutated positions ``[start, end)`` (default: whole sequences).
    position_chunk, sequence_var, length_var
        See above.
    merge : bool, default True
        Return the input variables too (False when only a region is mutated).

    Returns
    -------
    xarray.Dataset
        Lazy ``ism_delta`` (sequence, position, base, target), 0 at the reference base, and
        ``ism_reference`` (sequence, target).

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import demo_model_spec, promoter_sequences
    >>> ds = it.sequences_to_dataset(promoter_sequences(1))
    >>> ism = it.saturation_mutagenesis(ds, demo_model_spec(), start=100, end=110, merge=False).compute()
    >>> ism["ism_delta"].shape
    (1, 10, 4, 1)
    >>> ref = ds["sequence_code"].values[0, 100:110]          # the reference base of each position
    >>> float(abs(ism["ism_delta"].values[0, range(10), ref, 0]).max())
    0.0
    """
    spec = load_spec(model)
    codes, lengths, _, seq_ids, names = sequence_input(ds, sequence_var, length_var)
    lmax = codes.shape[1]
    start = 0 if start is None else int(start)
    end = lmax if end is None else int(end)
    if not 0 <= start < end:
        raise ValueError(f"ISM region start={start} end={end} is empty or negative: need 0 <= start < end")
    if end > lmax:
        raise ValueError(f"ISM region end={end} is past the longest sequence ({lmax} bp): lower end=")
    positions = np.arange(start, end, dtype=np.int64)
    pc = int(position_chunk or chunk_size(codes.chunks[1]))
    pos = da.from_array(positions, chunks=pc)
    n_t = len(spec.target_names)
    delta = da.blockwise(_ism_block, "spbt", codes, "sx", lengths, "s", seq_ids, "s", names, "s", pos, "p",
                         new_axes={"b": 4, "t": n_t}, concatenate=True, dtype=np.float32,
                         meta=np.empty((0,) * 4, np.float32), spec=spec)
    new = xr.Dataset(
        {"ism_delta": ((SEQUENCE, POSITION, BASE, TARGET), delta),
         "ism_reference": ((SEQUENCE, TARGET), reference_predictions(codes, lengths, spec, seq_ids, names))},
        coords={SEQUENCE: ds[SEQUENCE].values if SEQUENCE in ds.coords else np.arange(codes.shape[0]),
                POSITION: positions, BASE: list(BASES), TARGET: spec.target_names},
    )
    validate(new)
    return merge_result(ds, new, merge)
