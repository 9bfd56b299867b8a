"""Attributions of any PyTorch model: Integrated Gradients, SHAP expected gradients, DeepLIFT-SHAP.

``attribute(ds, model, method=...)`` maps the method over sample chunks (one task per chunk, on
the workers) and returns lazy, registered variables. The input follows the spec's ``input_kind``:

=============  =========================================  ===============================================
input_kind     input variable                             attribution
=============  =========================================  ===============================================
``dense``      ``features`` (sample, feature)             ``attribution`` (sample, feature, target)
``image``      ``image`` (sample, channel, height, width) ``image_attribution`` (sample, channel, height,
                                                          width, target)
``onehot``     ``sequence_code`` (sequence, position)     ``sequence_attribution`` (sequence, position,
                                                          base, target); NaN past ``sequence_length``
``kmer``       ``sequence_code`` (sequence, position)     ``sequence_attribution``: captum
                                                          LayerIntegratedGradients at the embedding,
                                                          summed per token, each token's score spread
                                                          evenly over its k bases (at the observed base)
=============  =========================================  ===============================================

Per sample (prefix ``attribution_`` for dense/image, ``sequence_attribution_`` for DNA):
``*_delta`` (sample, target) = sum of attributions - (f(x) - f(reference)) (captum's convergence
delta for IG; the completeness gap for SHAP), ``*_output`` f(x), ``*_reference`` f(baseline) or
the background mean of f, ``*_target_index`` the model output explained, and
``attribution_predicted`` / ``sequence_attribution_predicted`` (sample,) the predicted class name
(argmax over the selected targets). Here f is the model followed by the spec's activation.

Targets: ``"predicted"`` (each sample's argmax; target coordinate ``["predicted"]``), ``"all"``
(every selected target), a name, an index, or a list of them.

Methods (one class each in ``engine.attribution``, looked up by name or alias with
``method_for``): ``integrated_gradients`` (equal to captum's ``IntegratedGradients``; for ``kmer``
specs captum's ``LayerIntegratedGradients``, stored as ``layer_integrated_gradients``; baselines ``zero``, ``mean`` (feature mean over all samples, one lazy
reduction shared by every task) or an array), ``gradient_shap`` (shap ``GradientExplainer``:
background of ``background`` samples drawn with ``seed``, indices stored in
``attribution_background_index``; ``nsamples``; ``local_smoothing``), ``deep_shap`` (shap
``DeepExplainer``). The background and the mean baseline are single-chunk dask arrays: one graph
key, sent to each worker once, not embedded in every task.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..engine.attribution import IG_METHODS, METHOD_NAMES, METHODS, canonical_method, method_for
from ..engine.blocks import independent, merge_result, require_vars
from ..engine.heads import item_name, outputs_of
from ..engine.runtime import get_runtime
from ..engine.spec import ModelSpec, load_spec
from ..errors import InputError, NonFiniteOutputError
from ..storage.alphabet import one_hot
from ..storage.anndata_io import CHANNEL, HEIGHT, WIDTH
from ..storage.schema import BACKGROUND, BASE, BASES, FEATURE, POSITION, SAMPLE, SEQUENCE, TARGET, validate
from .covariates import check_feature_names, covariate_matrix
from .perturb import item_labels

__all__ = ["IG_METHODS", "METHOD_NAMES", "METHODS", "attribute", "canonical_method"]

N_EXTRA = 5  # packed columns after the attributions: delta, output, reference, target index, predicted index


# --- the block functions (on the workers) -----------------------------------------------------------

def _require_finite_packed(res: np.ndarray, p: int, spec: ModelSpec) -> None:
    """Raise ``NonFiniteOutputError`` (batch row, explained target) for a NaN/inf in a packed block.

    ``res`` (N, P + N_EXTRA, T): attributions, delta, f(x), f(reference) are checked; the target
    named is the model output each column explains.
    """
    bad = ~np.isfinite(res[:, :p + 3]).all(axis=1)  # (N, T)
    if spec.allow_nonfinite or not bad.any():
        return
    r, j = np.argwhere(bad)[0]
    vals = res[r, :p + 3, j]
    raise NonFiniteOutputError(int(r), spec.output_name(int(res[r, p + 3, j])), str(vals[~np.isfinite(vals)][0]),
                               what="attribution (or f(x), f(reference))")


def _explain(x, index, baseline, background, *, spec, method, targets, params, covs=None):
    """Return ``(N, P + N_EXTRA, T)`` float32: the attributions flattened, then the extras, per target.

    ``x``: model-space inputs ``(N, *shape)`` (numpy), or base codes ``(S, L)`` for a ``kmer``
    spec, whose per-token scores are spread over the bases (``_spread_tokens``; P = 4 L).
    ``method`` is the canonical name of an ``engine.attribution`` class. ``covs`` ``(N, C)``:
    per-sample covariates, passed to the model as C ``(N, 1)`` tensors after the input.
    """
    import torch

    rt = get_runtime(spec)
    explainer = method_for(method, spec.input_kind)(rt, **params)
    kmer = spec.input_kind == "kmer"
    xt = rt.encode(x) if kmer else torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(rt.device)
    extra = () if covs is None else tuple(
        torch.from_numpy(np.ascontiguousarray(covs[:, j:j + 1], np.float32)).to(rt.device) for j in range(covs.shape[1]))
    n = x.shape[0]
    p = 4 * x.shape[1] if kmer else int(np.prod(x.shape[1:]))
    sel = rt.output.target_indices(params["n_out"])
    out0 = explainer.outputs(xt, extra)
    rt.output.require_finite_selected(out0, sel)
    pred = sel[out0[:, torch.as_tensor(sel, device=out0.device)].argmax(1).cpu().numpy()]
    n_t = 1 if targets is None else len(targets)
    res = np.zeros((n, p + N_EXTRA, n_t), np.float32)
    for j in range(n_t):
        tgt = pred if targets is None else np.full(n, targets[j], np.int64)
        a = explainer.attribute(xt, tgt, baseline=baseline, background=background, index=index, out=out0,
                                extra=extra)
        attr = _spread_tokens(x, a.attribution, spec.kmer) if kmer else a.attribution
        res[:, :p, j] = attr.reshape(n, p)
        res[:, p, j] = a.delta
        res[:, p + 1, j] = a.fx
        res[:, p + 2, j] = a.fb
        res[:, p + 3, j] = tgt
        res[:, p + 4, j] = pred
    _require_finite_packed(res, p, spec)
    return res


def _spread_tokens(codes, scores, tok) -> np.ndarray:
    """Return ``(S, 4, L)``: each token's score spread evenly over its k bases, at the observed base's channel."""
    s, length = codes.shape
    starts = tok.token_starts(length)
    off = 1 if tok.bos is not None else 0
    scores = scores[:, off:off + len(starts)]  # (S, T_tokens)
    per_base = np.zeros((s, length), np.float32)
    for kk in range(tok.k):
        np.add.at(per_base, (slice(None), starts + kk), scores / tok.k)
    return one_hot(codes) * per_base[:, None, :]


def _check_finite(x, index, what):
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if bad.any():
        rows = index[bad][:5].tolist()
        raise ValueError(f"{what} of samples {rows} (0-based) contain NaN or infinite values: impute or drop "
                         f"those samples before attributing")


def _dense_block(x, index, names, covs, baseline, background, *, spec, method, targets, params):
    _check_finite(x, index, "input values")
    with outputs_of(lambda r: item_name("sample", names[r], index[r])):
        return _explain(x, index, baseline, background, spec=spec, method=method, targets=targets, params=params,
                        covs=covs)


def _dna_block(codes, lengths, index, names, baseline, background, *, spec, method, targets, params):
    """Return ``(S, L*4 + N_EXTRA, T)``: attributions as (position, base) flattened, then the extras."""
    s, length = codes.shape
    with outputs_of(lambda r: item_name("sequence", names[r], index[r])):
        if spec.input_kind == "kmer":
            packed = _explain(codes, index, None, None, spec=spec, method=method, targets=targets, params=params)
        else:
            bg = None if background is None else one_hot(background)
            packed = _explain(one_hot(codes), index, baseline, bg, spec=spec, method=method, targets=targets,
                              params=params)
    n_t = packed.shape[2]
    attr = packed[:, :4 * length].reshape(s, 4, length, n_t).transpose(0, 2, 1, 3)  # (S, L, 4, T)
    past = np.arange(length)[None, :] >= np.asarray(lengths)[:, None]
    attr = attr.copy()
    attr[past] = np.nan
    return np.concatenate([attr.reshape(s, length * 4, n_t), packed[:, 4 * length:]], axis=1)


# --- the task ---------------------------------------------------------------------------------------

def _single_chunk(arr) -> da.Array:
    arr = arr if isinstance(arr, da.Array) else da.from_array(np.asarray(arr, np.float32))
    return arr.rechunk(arr.shape)


def attribute(
    ds: xr.Dataset,
    model: ModelSpec | str | dict,
    *,
    method: str = "integrated_gradients",
    target="predicted",
    baseline="zero",
    n_steps: int = 50,
    ig_method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    background: int = 100,
    seed: int = 0,
    nsamples: int = 200,
    local_smoothing: float = 0.0,
    layer: str | None = None,
    pad_token: str = "xxpad",
    sample_chunk: int | None = None,
    merge: bool = True,
) -> xr.Dataset:
    """Return lazy attributions of ``model`` for every sample of ``ds`` (see the module doc).

    ``ds`` holds the input variable of the spec's ``input_kind``. ``baseline``: ``"zero"``,
    ``"mean"`` (over all samples), or an array of one sample's model-input shape (dense ``(F,)``,
    image ``(C, H, W)``, one-hot ``(4, L)``). ``internal_batch_size``: (sample, step) rows per
    model call (default the spec's batch size; at least 2048 for dense models). ``background``, ``seed``, ``nsamples``,
    ``local_smoothing``: SHAP options. ``layer``, ``pad_token``: k-mer models (the embedding
    layer's attribute path, the baseline token). ``sample_chunk`` rechunks the samples (one task
    per chunk). Nothing is computed; the model is run once on zeros to check that it accepts
    the inputs.

    Parameters
    ----------
    ds : xarray.Dataset
        The input: ``features`` (sample, feature) for a dense model (``read_h5ad``), ``image``
        (sample, channel, y, x) (``read_images``), or ``sequence_code`` (sequence, position)
        (``read_fasta``) for one-hot / k-mer DNA models.
    model : ModelSpec, str or dict
        How workers build the model (a spec, a ``.json`` spec file, or its fields).
    method : str, default "integrated_gradients"
        ``integrated_gradients`` (alias ``ig``), ``gradient_shap`` or ``deep_shap``; aliases are
        stored under their canonical name.
    target : "predicted", "all", a class name / index, or a list of them
        The outputs explained (the ``target`` dim).
    baseline, n_steps, ig_method, internal_batch_size, background, seed, nsamples, local_smoothing, layer, pad_token, sample_chunk
        See above.
    merge : bool, default True
        Return the input variables too (False: the attributions alone).

    Returns
    -------
    xarray.Dataset
        Lazy. Dense: ``attribution`` (sample, feature, target), ``attribution_delta`` and
        ``attribution_output`` (sample, target), ``attribution_predicted`` (sample,); DNA:
        ``sequence_attribution`` (sequence, position, base, target) and the same per-sequence
        variables prefixed ``sequence_attribution_``; images: ``image_attribution``.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import demo_model_spec, promoter_sequences
    >>> ds = it.sequences_to_dataset(promoter_sequences(2))
    >>> res = it.attribute(ds, demo_model_spec(), method="ig", n_steps=8, merge=False)
    >>> res["sequence_attribution"].dims
    ('sequence', 'position', 'base', 'target')
    >>> res["sequence_attribution"].shape
    (2, 200, 4, 1)
    >>> res["sequence_attribution_delta"].dims               # IG's convergence delta per sequence
    ('sequence', 'target')
    """
    spec = load_spec(model)
    kind = spec.input_kind
    cls = method_for(method, kind)  # aliases resolved: the graph and the stored attrs name the class
    method = cls.name
    if ig_method not in IG_METHODS:
        raise ValueError(f"ig_method {ig_method!r} is not one of {IG_METHODS}")
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    default_rows = max(int(spec.batch_size), 2048) if kind == "dense" else int(spec.batch_size)
    params = dict(n_steps=int(n_steps), ig_method=ig_method, batch_size=int(internal_batch_size or default_rows),
                  nsamples=int(nsamples), local_smoothing=float(local_smoothing), seed=int(seed), layer=layer,
                  pad_token=pad_token)

    if spec.covariates and method != "integrated_gradients":
        raise InputError(f"the model takes per-sample covariates {list(spec.covariates)}; they are supported with "
                         f"method='integrated_gradients', not {method!r}")
    if kind in ("dense", "image"):
        var = "features" if kind == "dense" else "image"
        require_vars(ds, (var,), "interpretome.storage.anndata_io.read_h5ad / read_images")
        x = ds[var].data if isinstance(ds[var].data, da.Array) else da.from_array(ds[var].values)
        if not isinstance(ds[var].data, da.Array):
            _check_finite(np.asarray(ds[var].values), np.arange(ds[var].shape[0]), "input values")
        shape = tuple(x.shape[1:])
        what = (f"{shape[0]} input features" if kind == "dense" else f"images of shape {shape}")
        dims = ds[var].dims
        sample_dim = dims[0]
    else:
        require_vars(ds, ("sequence_code", "sequence_length"), "interpretome.storage.readers.read_fasta")
        x = ds["sequence_code"].data
        x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x))
        length = x.shape[1]
        shape = (length,) if kind == "kmer" else (4, length)
        what = f"DNA of {length} bp as {kind}"
        sample_dim = SEQUENCE
    rt = get_runtime(spec)
    n_out = rt.probe_shape(spec.kmer.encode(np.zeros((1, shape[0]), np.uint8)).shape[1:] if kind == "kmer"
                           else shape, what)
    params["n_out"] = n_out
    names, idx = rt.output.resolve(target, n_out)
    n = x.shape[0]
    if sample_chunk:
        x = x.rechunk((int(sample_chunk),) + (-1,) * (x.ndim - 1))
    else:
        x = x.rechunk((x.chunks[0],) + (-1,) * (x.ndim - 1))
    index = da.arange(n, chunks=(x.chunks[0],), dtype=np.int64)

    # baseline in model space (IG) and background in input space (SHAP): one graph key each
    base_arr = bg_arr = bg_index = None
    if cls.uses_baseline:
        model_shape = shape
        if isinstance(baseline, str):
            if baseline == "zero":
                base_arr = _single_chunk(np.zeros((1,) + model_shape, np.float32))
            elif baseline == "mean":
                if kind == "onehot":
                    xi = independent(x)  # not x: the mean would keep every chunk of x until its own block runs
                    onehot = da.stack([(xi == b) for b in range(len(BASES))], axis=1).astype(np.float32)
                    base_arr = _single_chunk(onehot.mean(axis=0, keepdims=True))
                else:
                    base_arr = _single_chunk(independent(x).astype(np.float32).mean(axis=0, keepdims=True))
            else:
                raise ValueError(f"baseline {baseline!r} is not 'zero', 'mean' or an array of shape {model_shape}")
        else:
            b = np.asarray(baseline, np.float32)
            if b.shape == (1,) + model_shape:
                b = b[0]
            if b.shape != model_shape:
                raise ValueError(f"baseline of shape {b.shape} does not match one sample's model input {model_shape}: "
                                 f"pass an array of shape {model_shape}")
            base_arr = _single_chunk(b[None])
    if cls.uses_background:
        m = min(int(background), n)
        if m < 1:
            raise ValueError(f"background must be >= 1 sample, got {background}")
        bg_index = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)).astype(np.int64)
        bg_arr = _single_chunk(independent(x)[bg_index])

    letters = "abcdefgh"
    nd = x.ndim - 1
    args = []
    names_arr = item_labels(ds, sample_dim, x.chunks[0])
    if kind in ("dense", "image"):
        fn = _dense_block
        args += [x, "s" + letters[:nd], index, "s", names_arr, "s"]
        check_feature_names(spec, ds)
        covs = covariate_matrix(spec, ds, sample_dim)
        args += [None, None] if covs is None else [da.from_array(covs, chunks=(x.chunks[0], -1)), "sw"]
        p = int(np.prod(shape))
    else:
        fn = _dna_block
        lengths = ds["sequence_length"].data
        lengths = lengths if isinstance(lengths, da.Array) else da.from_array(np.asarray(lengths))
        args += [x, "sa", lengths.rechunk((x.chunks[0],)), "s", index, "s", names_arr, "s"]
        p = 4 * x.shape[1]
    for arr, tag in ((base_arr, "u"), (bg_arr, "v")):
        if arr is None:
            args += [None, None]
        else:
            args += [arr, tag + "ijkl"[:arr.ndim - 1]]
    n_t = len(names)
    packed = da.blockwise(fn, "sqt", *args, new_axes={"q": p + N_EXTRA, "t": n_t}, concatenate=True,
                          dtype=np.float32, meta=np.empty((0, 0, 0), np.float32), spec=spec, method=method,
                          targets=None if idx is None else tuple(int(i) for i in idx), params=params)
    prefix = "attribution" if kind in ("dense", "image") else "sequence_attribution"
    sel_names = np.asarray(spec.target_names)
    sel_idx = rt.output.target_indices(n_out)
    lut = np.full(max(int(sel_idx.max()) + 1, n_out), "", dtype=sel_names.dtype)
    lut[sel_idx] = sel_names
    pred_idx = packed[:, p + 4, 0].astype(np.int64)
    predicted = pred_idx.map_blocks(lambda b, lut=lut: lut[b], dtype=lut.dtype)
    per = {
        f"{prefix}_predicted": xr.Variable((sample_dim,), predicted, attrs={"categories": list(spec.target_names)}),
        f"{prefix}_delta": ((sample_dim, TARGET), packed[:, p]),
        f"{prefix}_output": ((sample_dim, TARGET), packed[:, p + 1]),
        f"{prefix}_reference": ((sample_dim, TARGET), packed[:, p + 2]),
        f"{prefix}_target_index": ((sample_dim, TARGET), packed[:, p + 3].astype(np.int64)),
    }
    coords = {TARGET: names}
    if kind == "dense":
        data = {"attribution": ((SAMPLE, FEATURE, TARGET), packed[:, :p])}
    elif kind == "image":
        data = {"image_attribution": ((SAMPLE, CHANNEL, HEIGHT, WIDTH, TARGET),
                                      packed[:, :p].reshape((n,) + shape + (n_t,)))}
    else:
        data = {"sequence_attribution": ((SEQUENCE, POSITION, BASE, TARGET),
                                         packed[:, :p].reshape(n, x.shape[1], 4, n_t))}
        coords[BASE] = list(BASES)
    data.update(per)
    if bg_index is not None:
        data["attribution_background_index"] = ((BACKGROUND,), bg_index)
    new = xr.Dataset(data, coords=coords)
    for dim in new.dims:
        if dim in ds.coords and dim not in coords:
            new = new.assign_coords({dim: ds[dim].values})
    if sample_dim in ds.coords:
        extra = {c: ds[c].variable for c in ds.coords if ds[c].dims == (sample_dim,) and c != sample_dim}
        new = new.assign_coords(extra)
    if kind == "dense" and "feature_idx" in ds.coords:
        new = new.assign_coords(feature_idx=ds["feature_idx"].variable)
    new.attrs["attribution_method"] = method
    validate(new)
    return merge_result(ds, new, merge)
