"""FastSHAP: an amortised Shapley-value explainer for dense-input models (Jethani et al., 2022), validated.

Two small networks are trained on one worker, inside the task graph (one graph node):

1. a **surrogate** ``g`` that predicts the model's output f(x) (after the spec's activation) from a
   masked input. Features are standardised with the training set's mean and standard deviation;
   a masked feature is set to 0 there — its training mean — and the mask itself is a second
   input: ``v_x(S) = g(z ⊙ 1_S, 1_S)`` with ``z = (x - mean) / std`` (of ``log1p(x)`` with
   ``transform="log1p"``, for count inputs). This **is the value
   function explained** (the masking convention: absent features take their training-set mean,
   and the surrogate, trained on masks whose size is uniform on 0..F, estimates the model's
   expected output given the present features). Its targets are standardised per output too.
2. an **explainer** ``φ(x)`` (F x targets) trained with FastSHAP's weighted least-squares loss:
   ``n_masks`` subsets per sample drawn from the Shapley kernel together with their complements
   (paired sampling), ``(v_x(S) - v_x(∅) - Σ_{i∈S} φ_i(x))²``, and the additive efficient
   normalisation of the paper, so that ``Σ_i φ_i(x) = v_x(all) - v_x(∅)`` exactly (the efficiency
   constraint). Both networks train with Adam from ``seed``, with early stopping on a validation
   split (the best epoch's weights are kept).

Before it is trusted the explainer is **validated** (``tasks.shapley_reference``) on ``n_validate`` held-out samples (never
seen in training) against a reference for the same game: exact Shapley values (2^F surrogate
calls) when F <= ``EXACT_MAX``, otherwise a seeded antithetic **permutation-sampling** estimate
(``permutation_shapley``) whose number of permutations is doubled until its own standard error is
at most ``se_bound`` times the spread of the reference values (the reported
``reference_noise``; the correlation a perfect explainer could reach is then about
``1 / sqrt(1 + reference_noise²)``). Reported always, in ``fastshap_validation`` (metric):

* ``fidelity``: mean over held-out samples of the per-sample Pearson correlation between
  FastSHAP's and the reference's values (all features and targets of the sample);
  ``fidelity_min``: the worst sample's; also ``fastshap_fidelity``;
* ``topk_agreement``: mean over samples and targets of |top-k ∩ top-k| / k (k = ``top_k``
  features ranked by |value|);
* ``reference_noise``, ``reference_permutations`` (0: exact), ``surrogate_r2`` (R² of
  ``v_x(all)`` against f(x) on the held-out samples), ``n_validate``, ``epochs_surrogate``,
  ``epochs_explainer`` (trained before early stopping).

Below ``min_fidelity`` the task raises, whatever the number of features.

Explaining is then one explainer forward pass per sample batch (``fastshap_attribution``
(sample, feature, target)), mapped over sample chunks.
"""

from __future__ import annotations

import copy
import io
import math

import dask
import dask.array as da
import dask.local
import numpy as np
import xarray as xr

from ..engine.blocks import independent, merge_result, sample_feature_data
from ..engine.heads import activate, item_name, outputs_of, require_finite
from ..engine.runtime import get_runtime
from ..engine.scvi import FACTORY as SCVI_FACTORY
from ..engine.spec import ModelSpec, load_spec
from ..storage.schema import FEATURE, METRIC, SAMPLE, TARGET, validate
from .shapley_reference import EXACT_MAX, TRANSFORMS, Game, exact_shapley, fidelity_figures, permutation_shapley, reference_shapley

__all__ = ["EXACT_MAX", "METRICS", "TRAINING", "VALIDATION", "Game", "exact_shapley", "explain_with", "fastshap",
           "fidelity_figures", "load_fastshap", "permutation_shapley", "reference_shapley", "resolve_transform",
           "train_fastshap", "validate_fastshap"]

TRAINING = {"n_train": 2000, "epochs": 200, "hidden": 256, "experts": 8, "batch_size": 32, "lr": 1e-3,
            "n_masks": 16, "patience": 10}
"""FastSHAP's training defaults, declared once (``train_fastshap``, ``fastshap``, the CLI): ``n_train``
samples, at most ``epochs`` per network (early-stopped after ``patience``), a 2-layer surrogate of
``hidden`` units, a mixture of ``experts`` additive explanations, ``n_masks`` Shapley-kernel subsets
(and their complements) per sample. These are the settings of the fidelity figures in
``benchmarks/RESULTS.md`` (PBMC classifier and a SCANVI model at 765 genes)."""

VALIDATION = {"n_validate": 32, "se_bound": 0.15, "top_k": 15, "min_fidelity": 0.9}
"""FastSHAP's validation defaults (see the module doc); ``min_fidelity`` is ``fastshap``'s (``train_fastshap``
reports without refusing unless given one)."""

METRICS = ("fidelity", "fidelity_min", "topk_agreement", "reference_noise", "reference_permutations",
           "surrogate_r2", "n_validate", "epochs_surrogate", "epochs_explainer")


def _mlp(n_in: int, n_out: int, hidden: int, depth: int = 2):
    import torch.nn as nn

    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


_EXPLAINER_CLASS = None


def _explainer(f: int, t: int, experts: int):
    """Return the explainer network: standardised ``z`` ``(B, F)`` -> ``(B, F * T)`` values (before normalisation).

    A mixture of ``experts`` additive explanations: ``φ_{i,t}(z) = Σ_k π_k(z) (z_i W_{k,i,t} +
    b_{k,i,t})`` with gates ``π(z) = softmax(G z + c)``. Each expert is the Shapley value of an
    additive game (a slope per feature and target); the gates pick the regime of the model a
    sample is in (e.g. its cell type for a piecewise-linear classifier). Far fewer weights than
    an MLP with F x T outputs, so it generalises from the few hundred cells of a typical set.
    """
    global _EXPLAINER_CLASS
    if _EXPLAINER_CLASS is None:
        import torch
        import torch.nn as nn

        class MixtureExplainer(nn.Module):
            def __init__(self, f, t, experts):
                super().__init__()
                self.f, self.t = f, t
                self.gate = nn.Linear(f, experts)
                self.slope = nn.Parameter(torch.zeros(experts, f, t))
                self.bias = nn.Parameter(torch.zeros(experts, f, t))

            def forward(self, z):
                p = torch.softmax(self.gate(z), dim=1)
                slope = torch.einsum("bk,kft->bft", p, self.slope)
                bias = torch.einsum("bk,kft->bft", p, self.bias)
                return (z[:, :, None] * slope + bias).reshape(z.shape[0], -1)

        _EXPLAINER_CLASS = MixtureExplainer
    return _EXPLAINER_CLASS(f, t, experts)


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
    # a row keeps the features of its `size` lowest uniforms: those at or below its size-th lowest value
    # (numpy's vectorised sort of the values is an order of magnitude faster than an argsort); a row where
    # a tie at that value keeps more (float32 uniforms tie now and then) takes its ranks from an argsort
    u = torch.rand(n, f, generator=gen)
    un, sz = u.numpy(), sizes.numpy()
    thr = np.sort(un, axis=1)[np.arange(n), np.clip(sz - 1, 0, None)]
    keep = (un <= thr[:, None]) & (sz[:, None] > 0)
    tied = np.flatnonzero(keep.sum(1) != sz)
    if len(tied):
        order = u[tied].argsort(1)
        keep[tied] = torch.empty(len(tied), f).scatter_(
            1, order, (torch.arange(f)[None, :] < sizes[tied, None]).float()).numpy() > 0
    return torch.from_numpy(keep.astype(np.float32))


def _fit(net, step, val_loss, *, epochs: int, patience: int, lr: float, batches) -> int:
    """Train ``net`` with Adam, early-stopped on ``val_loss()``; keep the best epoch; return the epochs run.

    The learning rate is halved after ``max(1, patience // 3)`` epochs without a better validation
    loss; training stops after ``patience`` such epochs (or ``epochs``).
    """
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, patience // 3), threshold=1e-4)
    best, best_state, stale, done = math.inf, copy.deepcopy(net.state_dict()), 0, 0
    for done in range(1, int(epochs) + 1):
        net.train()
        for idx in batches():
            loss = step(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(val_loss())
        sched.step(v)
        if not math.isfinite(best) or v < best - 1e-6 * abs(best):
            best, best_state, stale = v, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    for p in net.parameters():
        p.requires_grad_(False)
    return done


def _game_draws(game: Game, z, gen, n_masks: int):
    """Return ``(masks, v(S) - v(∅), v(all), v(∅))`` for ``n_masks`` Shapley-kernel masks and their complements per row.

    ``z`` ``(B, F)`` standardised inputs; masks ``(2 n_masks B, F)`` (row ``r`` explains input
    ``r mod B``; the second half are the complements: paired sampling); values standardised.
    """
    import torch

    b, f = z.shape
    with torch.no_grad():
        v1 = game.raw(z, torch.ones_like(z))
        v0 = game.raw(z, torch.zeros_like(z))
        m = _draw_masks(gen, b * n_masks, f, kernel=True)
        vs = game.paired(z, m) - v0.repeat(2 * n_masks, 1)
        m = torch.cat([m, 1 - m])
    return m, vs, v1, v0


def _explainer_loss(expl, z, draws):
    """FastSHAP's loss: mean over masks of ||v(S) - v(∅) - Σ_{i∈S} φ_i(z)||² with normalised φ."""
    import torch

    m, vs, v1, v0 = draws
    b, f = z.shape
    phi = _normalise(expl(z).view(b, f, -1), v1, v0)
    pred = torch.einsum("kbf,bft->kbt", m.view(-1, b, f), phi).reshape(len(m), -1)  # mask row r: input r mod b
    return ((vs - pred) ** 2).sum(1).mean()


def train_fastshap(x, spec: ModelSpec, *, targets: tuple[int, ...], epochs: int = TRAINING["epochs"],
                   hidden: int = TRAINING["hidden"], experts: int = TRAINING["experts"],
                   batch_size: int = TRAINING["batch_size"], lr: float = TRAINING["lr"], seed: int = 0,
                   n_masks: int = TRAINING["n_masks"], patience: int = TRAINING["patience"],
                   n_validate: int = VALIDATION["n_validate"], validation_fraction: float = 0.15,
                   se_bound: float = VALIDATION["se_bound"], top_k: int = VALIDATION["top_k"],
                   min_fidelity: float | None = None, transform: str | None = None) -> dict:
    """Train surrogate and explainer on ``x`` ``(N, F)`` for model outputs ``targets``, validate; return a state.

    ``transform`` (``None`` or ``"log1p"``, for count inputs): how ``x`` is transformed before it
    is standardised for the surrogate and the explainer (see ``Game``); the model is always given
    ``x`` itself.

    ``n_validate`` samples (drawn with ``seed``) are held out as the reference set, a further
    ``validation_fraction`` of the rest is the early-stopping split, the remainder trains.
    ``epochs`` is the most epochs per network (``patience`` epochs without a better validation
    loss stop it). The state holds the networks' state_dicts (bytes), the standardisation
    constants, sizes and the validation figures (``validation``: METRICS -> value, see the module
    doc). Raises ``ValueError`` when the fidelity is below ``min_fidelity``, and
    ``NonFiniteOutputError`` (row of ``x``) when the model's output for ``x`` is NaN or infinite
    (unless the spec allows it).
    """
    import torch

    rt = get_runtime(spec)
    x = np.asarray(x, np.float32)
    n, f = x.shape
    t = len(targets)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = activate(rt.model(xt.to(rt.device)), spec.activation)[:, list(targets)].float().cpu()
    if not spec.allow_nonfinite:  # before the size check: a model returning NaN is the first thing to fix
        require_finite(y.numpy(), [spec.output_name(i) for i in targets])
    n_ref = int(n_validate)
    n_es = max(1, int(round(validation_fraction * (n - n_ref))))
    if n_ref < 1 or n - n_ref - n_es < 8:
        raise ValueError(f"FastSHAP needs n_validate >= 1 held-out samples and at least 8 training samples; "
                         f"{n} samples with n_validate={n_validate}: pass more samples (n_train=) or a smaller "
                         f"n_validate")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform == "log1p" and not (x >= 0).all():
        raise ValueError("transform='log1p' is for counts; the input has negative values: pass transform=None")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen).numpy()
    ref_idx, es_idx, tr_idx = perm[:n_ref], perm[n_ref:n_ref + n_es], perm[n_ref + n_es:]
    xs = Game.transformed(xt[tr_idx], transform)
    x_mean, x_std = xs.mean(0), xs.std(0).clamp_min(1e-6)
    y_mean, y_std = y[tr_idx].mean(0), y[tr_idx].std(0).clamp_min(1e-6)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        sur = _mlp(2 * f, t, hidden)
        expl = _explainer(f, t, experts)
    game = Game(sur, x_mean, x_std, y_mean, y_std, transform)
    z, ys = game.z(xt), (y - y_mean) / y_std
    ztr, zes = z[tr_idx], z[es_idx]

    def batches():
        return torch.randperm(len(tr_idx), generator=gen).split(int(batch_size))

    # 1. surrogate: standardised outputs from masked standardised inputs (mask sizes uniform on 0..F)
    es_masks = _draw_masks(torch.Generator().manual_seed(int(seed) + 1), 8 * len(es_idx), f, kernel=False)
    es_z, es_y = zes.repeat(8, 1), ys[es_idx].repeat(8, 1)

    def sur_step(idx):
        m = _draw_masks(gen, len(idx), f, kernel=False)
        return ((game.raw(ztr[idx], m) - ys[tr_idx][idx]) ** 2).mean()

    ep_sur = _fit(sur, sur_step, lambda: ((game.raw(es_z, es_masks) - es_y) ** 2).mean(), epochs=epochs,
                  patience=patience, lr=lr, batches=batches)
    # 2. explainer
    es_draws = _game_draws(game, zes, torch.Generator().manual_seed(int(seed) + 2), 4 * n_masks)  # fixed

    def expl_step(idx):
        return _explainer_loss(expl, ztr[idx], _game_draws(game, ztr[idx], gen, n_masks))

    ep_expl = _fit(expl, expl_step, lambda: _explainer_loss(expl, zes, es_draws), epochs=epochs, patience=patience,
                   lr=lr, batches=batches)
    # 3. validation against the reference on the held-out samples
    xv = xt[ref_idx]
    phi = explain_with(expl, game, xv, f, t)
    ref, noise, n_perm = reference_shapley(game, xv, se_bound=se_bound, seed=int(seed) + 3)
    with torch.no_grad():
        full = game(xv, torch.ones_like(xv)).numpy()
    fy = y[ref_idx].numpy()
    r2 = float(1 - ((full - fy) ** 2).sum() / max(((fy - fy.mean(0)) ** 2).sum(), 1e-12))
    figures = fidelity_figures(phi, ref, top_k)
    figures.update(reference_noise=noise, reference_permutations=float(n_perm), surrogate_r2=r2,
                   n_validate=float(n_ref), epochs_surrogate=float(ep_sur), epochs_explainer=float(ep_expl))
    if min_fidelity is not None and not figures["fidelity"] >= min_fidelity:
        raise ValueError(
            f"FastSHAP fidelity {figures['fidelity']:.3f} (mean per-sample correlation with "
            f"{'exact' if n_perm == 0 else f'permutation-sampled ({n_perm} permutations)'} Shapley values of the "
            f"surrogate game on {n_ref} held-out samples; top-{min(top_k, f)} agreement "
            f"{figures['topk_agreement']:.2f}, surrogate R² {r2:.3f}) is below min_fidelity={min_fidelity}: train "
            f"on more samples (n_train=), longer (epochs=, patience=), with more masks per sample (n_masks=), more "
            f"experts (experts=) or a larger surrogate (hidden=)")
    return {"surrogate": _to_bytes(sur), "explainer": _to_bytes(expl), "n_features": f, "n_targets": t,
            "hidden": hidden, "experts": experts, "scale": _to_bytes_tensors(x_mean, x_std, y_mean, y_std),
            "transform": transform,
            "fidelity": figures["fidelity"], "validation": figures}


def _normalise(phi, v1, v0):
    """Additive efficient normalisation: shift φ so Σφ = v(all) - v(∅) (per sample and target)."""
    f = phi.shape[1]
    gap = (v1 - v0) - phi.sum(1)
    return phi + gap[:, None, :] / f


def explain_with(expl, game: Game, x, f: int, t: int) -> np.ndarray:
    """Return ``(N, F, T)`` normalised FastSHAP values of ``x`` (torch ``(N, F)``) in the model's output units."""
    import torch

    b = x.shape[0]
    with torch.no_grad():
        z = game.z(x)
        v1 = game.raw(z, torch.ones(b, f))
        v0 = game.raw(z, torch.zeros(b, f))
        return (_normalise(expl(z).view(b, f, t), v1, v0) * game.y_std).numpy()


def _to_bytes(module) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def _to_bytes_tensors(*tensors) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({str(i): v.clone() for i, v in enumerate(tensors)}, buf)
    return buf.getvalue()


def load_fastshap(state: dict):
    """Return ``(game, explainer)`` rebuilt from a ``train_fastshap`` state (weights-only loads)."""
    import torch

    f, t, h = state["n_features"], state["n_targets"], state["hidden"]
    sur, expl = _mlp(2 * f, t, h), _explainer(f, t, state["experts"])
    sur.load_state_dict(torch.load(io.BytesIO(state["surrogate"]), weights_only=True))
    expl.load_state_dict(torch.load(io.BytesIO(state["explainer"]), weights_only=True))
    scale = torch.load(io.BytesIO(state["scale"]), weights_only=True)
    return Game(sur.eval(), *(scale[str(i)] for i in range(4)), state.get("transform")), expl.eval()


_LOADED: dict[int, tuple] = {}


def _explain_block(x, index, state, *, allow_nonfinite: bool = False):
    """Return ``(N, F, T)`` FastSHAP values of one block; NaN/inf ones raise (the explainer diverged)."""
    import torch

    state = state.reshape(-1)[0]
    key = hash(state["explainer"])
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_fastshap(state)
    game, expl = _LOADED[key]
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError("input features contain NaN or infinite values: impute or drop those samples")
    if state.get("transform") == "log1p" and not (x >= 0).all():
        raise ValueError("FastSHAP was trained with transform='log1p' (counts); this block has negative inputs: "
                         "explain the same (count) layer it was trained on")
    phi = explain_with(expl, game, torch.from_numpy(x), state["n_features"], state["n_targets"]).astype(np.float32)
    if not allow_nonfinite and not np.isfinite(phi).all():
        r = int(np.flatnonzero(~np.isfinite(phi).reshape(len(phi), -1).all(1))[0])
        raise ValueError(f"FastSHAP values of sample {int(index[r])} (0-based) are not finite: the explainer's "
                         f"training diverged; lower lr= or train with other settings (epochs=, hidden=)")
    return phi


def _train_node(xtrain, *, spec, targets, params, index, names):
    """Train FastSHAP on ``xtrain`` (rows ``index`` of the input, named ``names``): one object array entry."""
    with outputs_of(lambda r: item_name("sample", names[r], index[r])):
        return np.array([train_fastshap(xtrain, spec, targets=targets, **params)], dtype=object)


def _trained_state(trained: dict, f: int, t: int, min_fidelity: float | None):
    """Return a one-entry object dask array holding ``trained``, checked against ``f`` features and ``t`` targets
    and, like a state trained in the graph, refused when its validated fidelity is below ``min_fidelity``."""
    from dask.base import tokenize

    if not isinstance(trained, dict) or "explainer" not in trained:
        raise ValueError("trained= takes the state dict that train_fastshap / validate_fastshap return")
    if (trained["n_features"], trained["n_targets"]) != (f, t):
        raise ValueError(f"trained= was trained for {trained['n_features']} features and {trained['n_targets']} "
                         f"targets; this input has {f} features and {t} targets: train it on these (or pass the "
                         f"same target=)")
    if min_fidelity is not None and not trained["fidelity"] >= min_fidelity:
        raise ValueError(f"the trained= state's FastSHAP fidelity {trained['fidelity']:.3f} is below "
                         f"min_fidelity={min_fidelity}: train a better one (see validate_fastshap) or pass "
                         f"min_fidelity=None to use it anyway")
    holder = np.empty((1,), object)
    holder[0] = trained
    return da.from_array(holder, chunks=(1,), name=f"fastshap-trained-{tokenize(trained['explainer'], trained['scale'])}")


def _validation_block(s):
    v = s.reshape(-1)[0]["validation"]
    return np.array([v[k] for k in METRICS], np.float32)


def resolve_transform(transform: str | None, spec: ModelSpec) -> str | None:
    """Return the input transform FastSHAP uses for ``spec``: ``transform`` itself, or for ``"auto"``
    ``"log1p"`` when the model is a scvi-tools model (its input is the registered counts layer) and
    None otherwise."""
    if transform == "auto":
        return "log1p" if spec.factory == SCVI_FACTORY else None
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be 'auto' or one of {TRANSFORMS}, got {transform!r}")
    return transform


def fastshap(ds: xr.Dataset, model: ModelSpec | str | dict, *, target="all", n_train: int = TRAINING["n_train"],
             epochs: int = TRAINING["epochs"], hidden: int = TRAINING["hidden"], experts: int = TRAINING["experts"],
             batch_size: int = TRAINING["batch_size"], lr: float = TRAINING["lr"], seed: int = 0,
             n_masks: int = TRAINING["n_masks"], patience: int = TRAINING["patience"],
             n_validate: int = VALIDATION["n_validate"], se_bound: float = VALIDATION["se_bound"],
             top_k: int = VALIDATION["top_k"], min_fidelity: float | None = VALIDATION["min_fidelity"],
             var: str = "features", transform: str | None = "auto", trained: dict | None = None,
             merge: bool = True) -> xr.Dataset:
    """Return lazy FastSHAP values of a dense-input model for every sample of ``ds``.

    ``var`` (sample, feature) is the input (``features``: what ``read_h5ad`` names the matrix it
    read, ``X`` or a layer). Up to ``n_train`` samples (drawn with ``seed``)
    train and validate the surrogate and the explainer in one graph node (on one worker; see
    ``train_fastshap`` and the module doc); every sample chunk is then explained by the trained
    explainer. Output: ``fastshap_attribution`` (sample, feature, target), ``fastshap_fidelity``
    () and ``fastshap_validation`` (metric). ``min_fidelity=None`` reports without refusing.

    Parameters
    ----------
    ds : xarray.Dataset
        Holds ``features`` (sample, feature) (``read_h5ad``).
    model : ModelSpec, str or dict
        A dense-input model.
    target : "all", "predicted", a class or a list, default "all"
    n_train, epochs, hidden, experts, batch_size, lr, seed, n_masks, patience
        Training of the surrogate and the explainer (see ``train_fastshap``; defaults ``TRAINING``).
    n_validate, se_bound, top_k, min_fidelity
        The validation against Shapley values of the surrogate game (see the module doc; defaults
        ``VALIDATION``).
    transform : "auto", None or "log1p", default "auto"
        ``"log1p"`` for count inputs: the surrogate and the explainer see standardised ``log1p``
        counts (see ``train_fastshap``); ``"auto"``: ``"log1p"`` for a scvi-tools model
        (``ModelSpec.from_scvi``: counts in), None otherwise (see ``resolve_transform``).
    trained : dict, optional
        A state from ``train_fastshap`` / ``validate_fastshap`` for this model, features and
        targets: explain with it instead of training in the graph (its validation is reported and
        ``min_fidelity`` applies to it; the training options are then unused).
    merge : bool, default True

    Returns
    -------
    xarray.Dataset
        Lazy ``fastshap_attribution`` (sample, feature, target), ``fastshap_fidelity`` () and
        ``fastshap_validation`` (metric).

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.pbmc import pbmc_path
    >>> cells = it.read_h5ad(pbmc_path(), sample_chunk=20).isel(sample=slice(0, 40))
    >>> spec = it.ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_classes": 2},
    ...                     input_kind="dense", targets=("B", "T"))
    >>> fs = it.fastshap(cells, spec, n_train=40, epochs=1, hidden=16, n_validate=4, min_fidelity=None,
    ...                  merge=False)
    >>> fs["fastshap_attribution"].dims
    ('sample', 'feature', 'target')
    """
    spec = load_spec(model)
    if spec.input_kind != "dense":
        raise ValueError(f"FastSHAP here explains dense-feature models; the spec's input_kind is {spec.input_kind!r}")
    if spec.covariates:
        raise ValueError(f"FastSHAP explains models of the features alone; this one takes covariates "
                         f"{list(spec.covariates)}: use method='integrated_gradients'")
    transform = resolve_transform(transform, spec)
    x = sample_feature_data(ds, var, "FastSHAP explains a (sample, feature) input")
    n, f = x.shape
    rt = get_runtime(spec)
    n_out = rt.probe_shape((f,), f"{f} input features")
    names, idx = rt.output.resolve(target, n_out)
    if idx is None:
        raise ValueError("FastSHAP explains fixed targets: pass target='all', a class name or a list of them")
    if trained is not None:
        state = _trained_state(trained, f, len(names), min_fidelity)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=min(int(n_train), n), replace=False))
        xtrain = independent(x)[rows].rechunk((len(rows), f))
        params = dict(epochs=epochs, hidden=hidden, experts=experts, batch_size=batch_size, lr=lr, seed=seed,
                      n_masks=n_masks, patience=patience, n_validate=n_validate, se_bound=se_bound, top_k=top_k,
                      min_fidelity=min_fidelity, transform=transform)
        labels = np.asarray(ds[SAMPLE].values if SAMPLE in ds.coords else np.arange(n)).astype(str)
        state = da.blockwise(_train_node, "z", xtrain, "ab", new_axes={"z": 1}, concatenate=True, dtype=object,
                             meta=np.empty((0,), object), spec=spec, targets=tuple(int(i) for i in idx),
                             params=params, index=rows, names=labels[rows])
    x = x.rechunk((x.chunks[0], -1))
    index = da.arange(n, chunks=(x.chunks[0],), dtype=np.int64)
    attr = da.blockwise(_explain_block, "sft", x, "sf", index, "s", state, "z", new_axes={"t": len(names)},
                        concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
                        allow_nonfinite=spec.allow_nonfinite)
    figures = da.blockwise(_validation_block, "m", state, "z", new_axes={"m": len(METRICS)}, concatenate=True,
                           dtype=np.float32, meta=np.empty((0,), np.float32))
    new = xr.Dataset({"fastshap_attribution": ((SAMPLE, FEATURE, TARGET), attr),
                      "fastshap_fidelity": ((), figures[0]), "fastshap_validation": ((METRIC,), figures)},
                     coords={TARGET: names, METRIC: list(METRICS)})
    for dim in (SAMPLE, FEATURE):
        if dim in ds.coords:
            new = new.assign_coords({dim: ds[dim].values})
    new.attrs["fastshap_validation"] = (
        f"reference: {'exact' if f <= EXACT_MAX else 'antithetic permutation-sampled'} Shapley values of the "
        f"surrogate game (absent features at their training mean, the mask as a surrogate input) on {n_validate} "
        f"held-out samples; permutation standard error <= {se_bound} x the spread of the values")
    validate(new)
    return merge_result(ds, new, merge)


def validate_fastshap(model: ModelSpec | str | dict, x, *, target="all", **options) -> dict:
    """Train and validate FastSHAP on ``x`` ``(N, F)`` in this process and return its state (see ``train_fastshap``)."""
    spec = load_spec(model)
    x = np.asarray(x, np.float32)
    rt = get_runtime(spec)
    n_out = rt.probe_shape((x.shape[1],), f"{x.shape[1]} input features")
    _, idx = rt.output.resolve(target, n_out)
    with dask.config.set(scheduler=dask.local.get_sync), outputs_of(lambda r: f"row {r} of x"):
        return train_fastshap(x, spec, targets=tuple(int(i) for i in idx), **options)
