"""FastSHAP: an amortised Shapley-value explainer for dense-input models (Jethani et al., 2022).

Two small networks are trained on one worker, inside the task graph (one graph node):

1. a **surrogate** ``g(x ⊙ m, m)`` that predicts the model's output f(x) (after the spec's
   activation) from a masked input (masked features set to 0, i.e. the feature mean of scaled
   data), with masks whose size is uniform over 0..F — the value function of the game is then
   ``v_x(S) = g(x ⊙ 1_S, 1_S)``;
2. an **explainer** ``φ(x)`` (F x targets) trained with FastSHAP's weighted least-squares loss:
   subsets drawn from the Shapley kernel (with their complements, "paired sampling"),
   ``(v_x(S) - v_x(∅) - Σ_{i∈S} φ_i(x))²``, and additive efficient normalisation so that
   ``Σ_i φ_i(x) = v_x(all) - v_x(∅)`` exactly.

Before it is trusted the explainer is **validated**: for models with at most ``EXACT_MAX``
features the exact Shapley values of the surrogate game are enumerated (2^F surrogate calls per
sample) for ``n_validate`` held-out samples, and the Pearson correlation with FastSHAP's values
is stored as ``fastshap_fidelity``; below ``min_fidelity`` the task raises. With more features
there is no exact reference: ``fastshap_fidelity`` is NaN and the result's attrs say so — validate
the same settings on a small model first (``validate_fastshap``).

Explaining is then one explainer forward pass per sample batch (``fastshap_attribution``
(sample, feature, target)), mapped over sample chunks.
"""

from __future__ import annotations

import io
import math

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..engine.blocks import merge_result, require_vars
from ..engine.models import ModelSpec, get_runtime, item_name, load_spec, outputs_of, require_finite
from ..storage.schema import FEATURE, SAMPLE, TARGET, register, validate

EXACT_MAX = 12

register("fastshap_attribution", (SAMPLE, FEATURE, TARGET), "f", "FastSHAP Shapley-value estimate of each feature per target")
register("fastshap_fidelity", (), "f", "Pearson correlation of FastSHAP with exact Shapley values of the surrogate game (NaN: not validated)")


def _mlp(n_in: int, n_out: int, hidden: int, depth: int = 2):
    import torch.nn as nn

    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def _shapley_kernel_sizes(f: int) -> np.ndarray:
    s = np.arange(1, f)
    w = (f - 1) / (s * (f - s))
    return w / w.sum()


def _draw_masks(gen, n: int, f: int, kernel: bool):
    """Return ``(n, f)`` float masks: sizes uniform on 0..f (surrogate) or from the Shapley kernel (explainer)."""
    import torch

    if kernel:
        p = torch.as_tensor(_shapley_kernel_sizes(f), dtype=torch.float64)
        sizes = torch.multinomial(p, n, replacement=True, generator=gen) + 1
    else:
        sizes = torch.randint(0, f + 1, (n,), generator=gen)
    ranks = torch.rand(n, f, generator=gen).argsort(1).argsort(1)
    return (ranks < sizes[:, None]).float()


def _surrogate_value(sur, x, m):
    import torch

    return sur(torch.cat([x * m, m], dim=1))


def train_fastshap(x, spec: ModelSpec, *, targets: tuple[int, ...], epochs: int = 60, hidden: int = 128,
                   batch_size: int = 64, lr: float = 1e-3, seed: int = 0, n_validate: int = 64,
                   min_fidelity: float | None = None) -> dict:
    """Train surrogate and explainer on ``x`` ``(N, F)`` float32 for model outputs ``targets``; return a state dict.

    The state holds the two networks' state_dicts (bytes), sizes, and ``fidelity`` (NaN when
    F > ``EXACT_MAX``). Raises ``ValueError`` when the fidelity is below ``min_fidelity``, and
    ``NonFiniteOutputError`` (row of ``x``) when the model's output for ``x`` is NaN or infinite
    (unless the spec allows it).
    """
    import torch

    from ..engine.gradients import activate

    rt = get_runtime(spec)
    x = np.asarray(x, np.float32)
    n, f = x.shape
    t = len(targets)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        sur = _mlp(2 * f, t, hidden)
        expl = _mlp(f, f * t, hidden)
    n_val = min(int(n_validate), max(1, n // 5)) if f <= EXACT_MAX else 0
    perm = torch.randperm(n, generator=gen).numpy()
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = activate(rt.model(xt.to(rt.device)), spec.activation)[:, list(targets)].float().cpu()
    if not spec.allow_nonfinite:
        require_finite(y.numpy(), [spec.output_name(i) for i in targets])
    xtr, ytr = xt[tr_idx], y[tr_idx]
    # 1. surrogate
    opt = torch.optim.Adam(sur.parameters(), lr=lr)
    for _ in range(int(epochs)):
        for idx in torch.randperm(len(xtr), generator=gen).split(batch_size):
            m = _draw_masks(gen, len(idx), f, kernel=False)
            loss = ((_surrogate_value(sur, xtr[idx], m) - ytr[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    sur.eval()
    for p in sur.parameters():
        p.requires_grad_(False)
    # 2. explainer
    opt = torch.optim.Adam(expl.parameters(), lr=lr)
    ones, zeros = torch.ones(1, f), torch.zeros(1, f)
    for _ in range(int(epochs)):
        for idx in torch.randperm(len(xtr), generator=gen).split(batch_size):
            xb = xtr[idx]
            b = len(idx)
            with torch.no_grad():
                v1 = _surrogate_value(sur, xb, ones.expand(b, -1))
                v0 = _surrogate_value(sur, xb, zeros.expand(b, -1))
                m = _draw_masks(gen, b, f, kernel=True)
                m = torch.cat([m, 1 - m])  # paired sampling
                xx = torch.cat([xb, xb])
                vs = _surrogate_value(sur, xx, m)
            phi = _normalise(expl(xb).view(b, f, t), v1, v0)
            phi2 = torch.cat([phi, phi])
            pred = (m[:, :, None] * phi2).sum(1)
            loss = ((vs - torch.cat([v0, v0]) - pred) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    expl.eval()
    fidelity = float("nan")
    if n_val:
        xv = xt[val_idx]
        with torch.no_grad():
            phi = explain_with(expl, sur, xv, f, t)
        exact = exact_shapley(lambda xx, mm: _surrogate_value(sur, xx, mm), xv, t)
        fidelity = float(np.corrcoef(phi.reshape(-1), exact.reshape(-1))[0, 1])
        if min_fidelity is not None and not fidelity >= min_fidelity:
            raise ValueError(f"FastSHAP fidelity {fidelity:.3f} (correlation with exact Shapley values on {n_val} "
                             f"held-out samples) is below min_fidelity={min_fidelity}: train longer (epochs=), on "
                             f"more samples, or with a larger hidden size")
    return {"surrogate": _to_bytes(sur), "explainer": _to_bytes(expl), "n_features": f, "n_targets": t,
            "hidden": hidden, "fidelity": fidelity, "n_validate": int(n_val)}


def _normalise(phi, v1, v0):
    """Additive efficient normalisation: shift φ so Σφ = v(all) - v(∅) (per sample and target)."""
    f = phi.shape[1]
    gap = (v1 - v0) - phi.sum(1)
    return phi + gap[:, None, :] / f


def explain_with(expl, sur, x, f: int, t: int) -> np.ndarray:
    """Return ``(N, F, T)`` normalised FastSHAP values of ``x`` (torch ``(N, F)``)."""
    import torch

    b = x.shape[0]
    with torch.no_grad():
        v1 = _surrogate_value(sur, x, torch.ones(b, f))
        v0 = _surrogate_value(sur, x, torch.zeros(b, f))
        return _normalise(expl(x).view(b, f, t), v1, v0).numpy()


def exact_shapley(value, x, t: int) -> np.ndarray:
    """Return exact Shapley values ``(N, F, T)`` of the game ``value(x, mask) -> (N, T)`` by enumerating 2^F subsets."""
    import torch

    n, f = x.shape
    if f > 20:
        raise ValueError(f"exact Shapley values enumerate 2^F subsets; F = {f} is too many (at most 20)")
    masks = torch.tensor([[(s >> i) & 1 for i in range(f)] for s in range(2 ** f)], dtype=torch.float32)
    sizes = masks.sum(1).long()
    with torch.no_grad():
        vals = torch.stack([value(x, masks[s].expand(n, -1)) for s in range(2 ** f)], dim=1)  # (N, 2^F, T)
    phi = torch.zeros(n, f, t, dtype=torch.float64)
    w = torch.tensor([math.factorial(k) * math.factorial(f - k - 1) / math.factorial(f) for k in range(f)],
                     dtype=torch.float64)
    for i in range(f):
        without = torch.nonzero(masks[:, i] == 0)[:, 0]
        with_i = without + (1 << i)
        phi[:, i] = ((vals[:, with_i] - vals[:, without]).double() * w[sizes[without]][None, :, None]).sum(1)
    return phi.numpy()


def _to_bytes(module) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def _load(state: dict):
    import torch

    f, t, h = state["n_features"], state["n_targets"], state["hidden"]
    sur, expl = _mlp(2 * f, t, h), _mlp(f, f * t, h)
    sur.load_state_dict(torch.load(io.BytesIO(state["surrogate"]), weights_only=True))
    expl.load_state_dict(torch.load(io.BytesIO(state["explainer"]), weights_only=True))
    return sur.eval(), expl.eval()


_LOADED: dict[int, tuple] = {}


def _explain_block(x, index, state, *, allow_nonfinite: bool = False):
    """Return ``(N, F, T)`` FastSHAP values of one block; NaN/inf ones raise (the explainer diverged)."""
    import torch

    state = state.reshape(-1)[0]
    key = hash(state["explainer"])
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _load(state)
    sur, expl = _LOADED[key]
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError("input features contain NaN or infinite values: impute or drop those samples")
    phi = explain_with(expl, sur, torch.from_numpy(x), state["n_features"], state["n_targets"]).astype(np.float32)
    if not allow_nonfinite and not np.isfinite(phi).all():
        r = int(np.flatnonzero(~np.isfinite(phi).reshape(len(phi), -1).all(1))[0])
        raise ValueError(f"FastSHAP values of sample {int(index[r])} (0-based) are not finite: the explainer's "
                         f"training diverged; lower lr= or train with other settings (epochs=, hidden=)")
    return phi


def _train_node(xtrain, *, spec, targets, params, index, names):
    """Train FastSHAP on ``xtrain`` (rows ``index`` of the input, named ``names``): one object array entry."""
    with outputs_of(lambda r: item_name("sample", names[r], index[r])):
        return np.array([train_fastshap(xtrain, spec, targets=targets, **params)], dtype=object)


def fastshap(ds: xr.Dataset, model: ModelSpec | str | dict, *, target="all", n_train: int = 2000, epochs: int = 60,
             hidden: int = 128, batch_size: int = 64, lr: float = 1e-3, seed: int = 0, n_validate: int = 64,
             min_fidelity: float | None = 0.8, merge: bool = True) -> xr.Dataset:
    """Return lazy FastSHAP values of a dense-input model for every sample of ``ds``.

    ``features`` (sample, feature) is the input. Up to ``n_train`` samples (drawn with ``seed``)
    train the surrogate and the explainer in one graph node (on one worker); every sample chunk is
    then explained by the trained explainer. Output: ``fastshap_attribution`` (sample, feature,
    target) and ``fastshap_fidelity`` (see the module doc); ``min_fidelity=None`` skips the check.
    """
    from .attribute import _probe, resolve_targets

    spec = load_spec(model)
    if spec.input_kind != "dense":
        raise ValueError(f"FastSHAP here explains dense-feature models; the spec's input_kind is {spec.input_kind!r}")
    require_vars(ds, ("features",), "interpretome.storage.anndata_io.read_h5ad")
    x = ds["features"].data
    x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x, np.float32))
    n, f = x.shape
    n_out = _probe(spec, (f,), f"{f} input features")
    names, idx = resolve_targets(spec, target, n_out)
    if idx is None:
        raise ValueError("FastSHAP explains fixed targets: pass target='all', a class name or a list of them")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(int(n_train), n), replace=False))
    xtrain = x[rows].rechunk((len(rows), f))
    params = dict(epochs=epochs, hidden=hidden, batch_size=batch_size, lr=lr, seed=seed, n_validate=n_validate,
                  min_fidelity=min_fidelity)
    labels = np.asarray(ds[SAMPLE].values if SAMPLE in ds.coords else np.arange(n)).astype(str)
    state = da.blockwise(_train_node, "z", xtrain, "ab", new_axes={"z": 1}, concatenate=True, dtype=object,
                         meta=np.empty((0,), object), spec=spec, targets=tuple(int(i) for i in idx), params=params,
                         index=rows, names=labels[rows])
    x = x.rechunk((x.chunks[0], -1))
    index = da.arange(n, chunks=(x.chunks[0],), dtype=np.int64)
    attr = da.blockwise(_explain_block, "sft", x, "sf", index, "s", state, "z", new_axes={"t": len(names)},
                        concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
                        allow_nonfinite=spec.allow_nonfinite)
    fid = state.map_blocks(lambda s: np.array(s.reshape(-1)[0]["fidelity"], np.float32), drop_axis=0,
                           dtype=np.float32, meta=np.empty((), np.float32))
    new = xr.Dataset({"fastshap_attribution": ((SAMPLE, FEATURE, TARGET), attr), "fastshap_fidelity": ((), fid)},
                     coords={TARGET: names})
    for dim in (SAMPLE, FEATURE):
        if dim in ds.coords:
            new = new.assign_coords({dim: ds[dim].values})
    new.attrs["fastshap_validation"] = (f"exact Shapley values of the surrogate game on up to {n_validate} held-out "
                                        f"samples" if f <= EXACT_MAX else
                                        f"not validated: {f} features > {EXACT_MAX} (no exact reference)")
    validate(new)
    return merge_result(ds, new, merge)


def validate_fastshap(model: ModelSpec | str | dict, x, *, target="all", **options) -> dict:
    """Train FastSHAP on ``x`` ``(N, F)`` (F <= EXACT_MAX) in this process and return its state with ``fidelity``."""
    from .attribute import _probe, resolve_targets

    spec = load_spec(model)
    x = np.asarray(x, np.float32)
    if x.shape[1] > EXACT_MAX:
        raise ValueError(f"validation enumerates 2^F subsets: use a model with at most {EXACT_MAX} features "
                         f"(got {x.shape[1]})")
    n_out = _probe(spec, (x.shape[1],), f"{x.shape[1]} input features")
    _, idx = resolve_targets(spec, target, n_out)
    with dask.config.set(scheduler="sync"), outputs_of(lambda r: f"row {r} of x"):
        return train_fastshap(x, spec, targets=tuple(int(i) for i in idx), **options)
