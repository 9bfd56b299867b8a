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

Methods: ``integrated_gradients`` (``engine.gradients.integrated_gradients``, equal to captum's
``IntegratedGradients``; baselines ``zero``, ``mean`` (feature mean over all samples, one lazy
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

from ..engine.blocks import merge_result, require_vars
from ..engine.models import ModelSpec, get_runtime, load_spec
from ..storage.anndata_io import CHANNEL, HEIGHT, WIDTH
from ..storage.schema import BASE, BASES, CODE_N, FEATURE, POSITION, SAMPLE, SEQUENCE, TARGET, register, validate

BACKGROUND = "background"
METHODS = ("integrated_gradients", "gradient_shap", "deep_shap")
ALIASES = {"ig": "integrated_gradients", "integrated_gradients": "integrated_gradients",
           "gradient": "gradient_shap", "gradient_shap": "gradient_shap", "expected_gradients": "gradient_shap",
           "deep": "deep_shap", "deep_shap": "deep_shap", "deeplift": "deep_shap"}
IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")

register("attribution", (SAMPLE, FEATURE, TARGET), "f", "attribution of each input feature to each target output")
register("image_attribution", (SAMPLE, CHANNEL, HEIGHT, WIDTH, TARGET), "f",
         "attribution of each image pixel and channel to each target output")
register("sequence_attribution", (SEQUENCE, POSITION, BASE, TARGET), "f",
         "attribution of each base (at its observed one-hot channel) to each target; NaN past the sequence length")
register("attribution_background_index", (BACKGROUND,), "i", "indices of the samples drawn as SHAP background")
for _p, _d in (("attribution", SAMPLE), ("sequence_attribution", SEQUENCE)):
    register(f"{_p}_delta", (_d, TARGET), "f", "sum of attributions minus (f(x) - f(reference)): completeness gap")
    register(f"{_p}_output", (_d, TARGET), "f", "f(x): the explained model output (after the activation)")
    register(f"{_p}_reference", (_d, TARGET), "f", "f(baseline) for IG, mean f over the background for SHAP")
    register(f"{_p}_target_index", (_d, TARGET), "i", "index of the model output explained")
    register(f"{_p}_predicted", (_d,), "U", "predicted class: name of the largest selected output")

N_EXTRA = 5  # packed columns after the attributions: delta, output, reference, target index, predicted index


# --- model probing (graph-build time, no dask compute) ---------------------------------------------

def _probe(spec: ModelSpec, shape: tuple[int, ...], what: str) -> int:
    """Run the model once on zeros of ``(1, *shape)`` and return its number of outputs."""
    import torch

    rt = get_runtime(spec)
    dtype = torch.long if spec.input_kind == "kmer" else torch.float32
    covs = [torch.zeros((1, 1), device=rt.device) for _ in spec.covariates]
    try:
        with torch.no_grad():
            out = rt.model(torch.zeros((1,) + tuple(shape), dtype=dtype, device=rt.device), *covs)
    except (RuntimeError, ValueError, IndexError) as e:
        raise ValueError(f"the model does not accept {what} (a batch of shape {(1,) + tuple(shape)}): {e}. "
                         f"Check that the model was trained on these inputs (same features, same order)") from e
    if isinstance(out, (tuple, list)):
        out = out[0]
    n_out = 1 if out.ndim == 1 else int(out.shape[1])
    declared = spec.targets
    if declared is not None and len(declared) != n_out:
        raise ValueError(f"the model returns {n_out} outputs but the spec declares {len(declared)} targets "
                         f"{list(declared)}: fix targets=")
    if declared is None and spec.select is None and n_out != 1:
        raise ValueError(f"the model returns {n_out} outputs but the spec declares no targets: pass targets= "
                         f"(the {n_out} class names)")
    return n_out


def resolve_targets(spec: ModelSpec, target, n_out: int) -> tuple[list[str], np.ndarray | None]:
    """Return ``(coordinate names, output indices)``; indices None means "each sample's predicted class"."""
    names = spec.target_names
    sel = get_runtime(spec).target_indices(n_out)
    if isinstance(target, str) and target == "predicted":
        return ["predicted"], None
    if isinstance(target, str) and target == "all":
        return list(names), np.asarray(sel, np.int64)
    items = list(target) if isinstance(target, (list, tuple, np.ndarray)) else [target]
    out_names, out_idx = [], []
    for t in items:
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            if not 0 <= int(t) < len(names):
                raise ValueError(f"target index {t} is outside the model's {len(names)} targets {names}: "
                                 f"pass 0..{len(names) - 1}, a name, 'predicted' or 'all'")
            i = int(t)
        else:
            if str(t) not in names:
                raise ValueError(f"class {t!r} is not one of the model's targets {names}: pass one of them, "
                                 f"'predicted' or 'all'")
            i = names.index(str(t))
        out_names.append(names[i])
        out_idx.append(int(sel[i]))
    return out_names, np.asarray(out_idx, np.int64)


# --- per-worker caches --------------------------------------------------------------------------------

_GRAD_MODELS: dict[str, tuple] = {}


def _grad_parts(spec: ModelSpec):
    """Return this process's ``(first, rest)`` gradient model parts for ``spec`` (first may be None)."""
    from ..engine.gradients import gradient_model, split_affine

    parts = _GRAD_MODELS.get(spec.token)
    if parts is None:
        g = gradient_model(get_runtime(spec).model)
        split = split_affine(g)
        parts = _GRAD_MODELS[spec.token] = split if split is not None else (None, g)
    return parts


# --- the block function ---------------------------------------------------------------------------

def _explain(x, index, baseline, background, *, spec, method, targets, params, covs=None):
    """Return ``(N, P + N_EXTRA, T)`` float32 for model-space inputs ``x`` (numpy ``(N, *shape)``).

    ``covs`` ``(N, C)``: per-sample covariates, passed to the model as C ``(N, 1)`` tensors after the input.
    """
    import torch

    from ..engine import gradients as G

    rt = get_runtime(spec)
    dev = rt.device
    act = spec.activation
    model = rt.model
    n = x.shape[0]
    p = int(np.prod(x.shape[1:]))
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
    extra = () if covs is None else tuple(torch.from_numpy(np.ascontiguousarray(covs[:, j:j + 1], np.float32)).to(dev)
                                          for j in range(covs.shape[1]))
    sel = rt.target_indices(params["n_out"])
    with torch.no_grad():
        out0 = G.activate(model(xt, *extra), act)
    pred = sel[out0[:, torch.as_tensor(sel, device=dev)].argmax(1).cpu().numpy()]
    n_t = 1 if targets is None else len(targets)
    res = np.zeros((n, p + N_EXTRA, n_t), np.float32)
    for j in range(n_t):
        tgt = pred if targets is None else np.full(n, targets[j], np.int64)
        if method == "integrated_gradients":
            first, rest = _grad_parts(spec)
            base = torch.from_numpy(np.asarray(baseline, np.float32)).to(dev)
            attr, delta, fx, fb = G.integrated_gradients(
                G.Head(rest, act), xt, base, tgt, n_steps=params["n_steps"], method=params["ig_method"],
                batch_size=params["batch_size"], first=first, extra=extra)
            attr, delta, fx, fb = (t.cpu().numpy() for t in (attr, delta, fx, fb))
        else:
            bg = torch.from_numpy(np.ascontiguousarray(background, np.float32)).to(dev)
            with torch.no_grad():
                fb_all = G.activate(model(bg), act).mean(0).cpu().numpy()
            if method == "gradient_shap":
                attr = G.shap_gradient(model, xt, bg, tgt, index, activation=act, nsamples=params["nsamples"],
                                       local_smoothing=params["local_smoothing"], seed=params["seed"],
                                       batch_size=params["batch_size"])
            else:
                attr = G.shap_deep(model, xt, bg, tgt, activation=act)
            fx = out0.cpu().numpy()[np.arange(n), tgt]
            fb = fb_all[tgt]
            delta = attr.reshape(n, -1).sum(1) - (fx - fb)
        res[:, :p, j] = attr.reshape(n, p)
        res[:, p, j] = delta
        res[:, p + 1, j] = fx
        res[:, p + 2, j] = fb
        res[:, p + 3, j] = tgt
        res[:, p + 4, j] = pred
    return res


def _check_finite(x, index, what):
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if bad.any():
        rows = index[bad][:5].tolist()
        raise ValueError(f"{what} of samples {rows} (0-based) contain NaN or infinite values: impute or drop "
                         f"those samples before attributing")


def _dense_block(x, index, covs, baseline, background, *, spec, method, targets, params):
    _check_finite(x, index, "input values")
    return _explain(x, index, baseline, background, spec=spec, method=method, targets=targets, params=params,
                    covs=covs)


def covariate_matrix(spec: ModelSpec, ds: xr.Dataset, sample_dim: str = SAMPLE) -> np.ndarray | None:
    """Return the spec's per-sample covariates ``(N, C)`` float32 from ``ds``'s obs coordinates, or None.

    Columns are taken by name (``spec.covariates``); a column with ``spec.covariate_categories``
    becomes the code of each value in that list, any other must be numeric.
    """
    if not spec.covariates:
        return None
    cols = []
    have = [c for c in ds.coords if ds[c].dims == (sample_dim,) and c != sample_dim]
    for name in spec.covariates:
        if name not in have:
            raise ValueError(f"the model takes covariate {name!r} per sample but the input has no such obs column "
                             f"(it has {have}): add it to the AnnData's obs")
        values = np.asarray(ds[name].values)
        cats = spec.covariate_categories.get(name)
        if cats is not None:
            lut = {str(c): i for i, c in enumerate(cats)}
            bad = sorted({str(v) for v in values} - set(lut))
            if bad:
                raise ValueError(f"covariate {name!r} has values {bad[:5]} the model was not trained with (it knows "
                                 f"{list(cats)[:10]}): map them to known categories or drop those samples")
            cols.append(np.array([lut[str(v)] for v in values], np.float32))
        elif values.dtype.kind in "fiub":
            cols.append(values.astype(np.float32))
        else:
            raise ValueError(f"covariate {name!r} is not numeric ({values.dtype}): declare its categories in the "
                             f"spec (covariate_categories={{{name!r}: [...]}})")
    return np.stack(cols, axis=1)


def check_feature_names(spec: ModelSpec, ds: xr.Dataset) -> None:
    """Raise ``ValueError`` when the spec declares ``feature_names`` and the input's features differ."""
    if spec.feature_names is None or FEATURE not in ds.coords:
        return
    got = [str(v) for v in ds[FEATURE].values]
    want = list(spec.feature_names)
    if got != want:
        missing = [g for g in want if g not in set(got)][:5]
        extra = [g for g in got if g not in set(want)][:5]
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise ValueError(f"the input's {len(got)} features differ from the model's {len(want)} saved var_names "
                         f"(first difference at column {first}; missing {missing}, unknown {extra}): subset and "
                         f"order the AnnData as the model's genes (adata[:, var_names])")


def _onehot(codes: np.ndarray) -> np.ndarray:
    lut = np.eye(CODE_N + 1, 4, dtype=np.float32)
    return lut[codes].transpose(0, 2, 1).copy()


def _dna_block(codes, lengths, index, baseline, background, *, spec, method, targets, params):
    """Return ``(S, L*4 + N_EXTRA, T)``: attributions as (position, base) flattened, then the extras."""
    s, length = codes.shape
    if spec.input_kind == "kmer":
        packed = _kmer_block(codes, spec=spec, targets=targets, params=params)
    else:
        bg = None if background is None else _onehot(background)
        packed = _explain(_onehot(codes), index, baseline, bg, spec=spec, method=method, targets=targets,
                          params=params)
    n_t = packed.shape[2]
    attr = packed[:, :4 * length].reshape(s, 4, length, n_t).transpose(0, 2, 1, 3)  # (S, L, 4, T)
    past = np.arange(length)[None, :] >= np.asarray(lengths)[:, None]
    attr = attr.copy()
    attr[past] = np.nan
    return np.concatenate([attr.reshape(s, length * 4, n_t), packed[:, 4 * length:]], axis=1)


def _kmer_block(codes, *, spec, targets, params):
    """Layer IG at the embedding of a k-mer token model; scores spread back to bases (see module doc)."""
    import torch

    from ..engine import gradients as G

    rt = get_runtime(spec)
    tok = spec.kmer
    s, length = codes.shape
    ids = rt.encode(codes)
    pad_id = tok.vocab.index(params["pad_token"])
    base_ids = torch.full_like(ids, pad_id)
    if tok.bos is not None:
        base_ids[:, 0] = ids[:, 0]
    sel = rt.target_indices(params["n_out"])
    with torch.no_grad():
        out0 = G.activate(rt.model(ids), spec.activation)
    pred = sel[out0[:, torch.as_tensor(sel)].argmax(1).cpu().numpy()]
    layer = G.find_embedding(rt.model, params.get("layer"))
    starts = tok.token_starts(length)
    off = 1 if tok.bos is not None else 0
    n_t = 1 if targets is None else len(targets)
    res = np.zeros((s, 4 * length + N_EXTRA, n_t), np.float32)
    f = G.Head(rt.model, spec.activation)
    for j in range(n_t):
        tgt = pred if targets is None else np.full(s, targets[j], np.int64)
        scores, delta = G.layer_integrated_gradients(f, layer, ids, base_ids, tgt, n_steps=params["n_steps"],
                                                     method=params["ig_method"], batch_size=params["batch_size"])
        scores = scores.cpu().numpy()[:, off:off + len(starts)]  # (S, T_tokens)
        per_base = np.zeros((s, length), np.float32)
        for kk in range(tok.k):
            np.add.at(per_base, (slice(None), starts + kk), scores / tok.k)
        onehot = _onehot(codes)  # (S, 4, L): the observed base's channel
        attr = onehot * per_base[:, None, :]
        with torch.no_grad():
            fx = out0.cpu().numpy()[np.arange(s), tgt]
            fb = G.activate(rt.model(base_ids), spec.activation).cpu().numpy()[np.arange(s), tgt]
        res[:, :4 * length, j] = attr.reshape(s, -1)
        res[:, 4 * length, j] = delta.cpu().numpy()
        res[:, 4 * length + 1, j] = fx
        res[:, 4 * length + 2, j] = fb
        res[:, 4 * length + 3, j] = tgt
        res[:, 4 * length + 4, j] = pred
    return res


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
    """
    spec = load_spec(model)
    if str(method) not in ALIASES:
        raise ValueError(f"method {method!r} is not one of {METHODS} (or ig, gradient, deep)")
    method = ALIASES[str(method)]
    if ig_method not in IG_METHODS:
        raise ValueError(f"ig_method {ig_method!r} is not one of {IG_METHODS}")
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    kind = spec.input_kind
    if kind == "kmer" and method != "integrated_gradients":
        raise ValueError(f"k-mer token models are attributed with layer Integrated Gradients at the embedding; "
                         f"method {method!r} needs a differentiable input: use method='integrated_gradients'")
    default_rows = max(int(spec.batch_size), 2048) if kind == "dense" else int(spec.batch_size)
    params = dict(n_steps=int(n_steps), ig_method=ig_method, batch_size=int(internal_batch_size or default_rows),
                  nsamples=int(nsamples), local_smoothing=float(local_smoothing), seed=int(seed), layer=layer,
                  pad_token=pad_token)

    if spec.covariates and method != "integrated_gradients":
        raise ValueError(f"the model takes per-sample covariates {list(spec.covariates)}; they are supported with "
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
    n_out = _probe(spec, tuple(spec.kmer.encode(np.zeros((1, shape[0]), np.uint8)).shape[1:]) if kind == "kmer"
                   else shape, what)
    params["n_out"] = n_out
    names, idx = resolve_targets(spec, target, n_out)
    n = x.shape[0]
    if sample_chunk:
        x = x.rechunk((int(sample_chunk),) + (-1,) * (x.ndim - 1))
    else:
        x = x.rechunk((x.chunks[0],) + (-1,) * (x.ndim - 1))
    index = da.arange(n, chunks=(x.chunks[0],), dtype=np.int64)

    # baseline in model space (IG) and background in input space (SHAP): one graph key each
    base_arr = bg_arr = bg_index = None
    if kind != "kmer" and method == "integrated_gradients":
        model_shape = shape
        if isinstance(baseline, str):
            if baseline == "zero":
                base_arr = _single_chunk(np.zeros((1,) + model_shape, np.float32))
            elif baseline == "mean":
                if kind == "onehot":
                    onehot = da.stack([(x == b) for b in range(4)], axis=1).astype(np.float32)
                    base_arr = _single_chunk(onehot.mean(axis=0, keepdims=True))
                else:
                    base_arr = _single_chunk(x.astype(np.float32).mean(axis=0, keepdims=True))
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
    if method in ("gradient_shap", "deep_shap"):
        m = min(int(background), n)
        if m < 1:
            raise ValueError(f"background must be >= 1 sample, got {background}")
        bg_index = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)).astype(np.int64)
        bg_arr = _single_chunk(x[bg_index])

    letters = "abcdefgh"
    nd = x.ndim - 1
    args = []
    if kind in ("dense", "image"):
        fn = _dense_block
        args += [x, "s" + letters[:nd], index, "s"]
        check_feature_names(spec, ds)
        covs = covariate_matrix(spec, ds, sample_dim)
        args += [None, None] if covs is None else [da.from_array(covs, chunks=(x.chunks[0], -1)), "sw"]
        p = int(np.prod(shape))
    else:
        fn = _dna_block
        lengths = ds["sequence_length"].data
        lengths = lengths if isinstance(lengths, da.Array) else da.from_array(np.asarray(lengths))
        args += [x, "sa", lengths.rechunk((x.chunks[0],)), "s", index, "s"]
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
    sel_idx = get_runtime(spec).target_indices(n_out)
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
