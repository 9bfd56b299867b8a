"""Reference Shapley values of FastSHAP's surrogate game, and how close an explainer comes to them.

``Game`` is the value function FastSHAP explains (``tasks.fastshap``'s module doc: standardised
inputs, absent features at their training mean, the mask a surrogate input). Its reference
values are exact (``exact_shapley``, 2^F surrogate calls) up to ``EXACT_MAX`` features, otherwise
a seeded antithetic permutation-sampling estimate (``permutation_shapley``) refined until its own
standard error is below a stated bound (``reference_shapley``); ``fidelity_figures`` compares an
explainer's values with them (per-sample correlation, top-k agreement).
"""

from __future__ import annotations

import math

import numpy as np

EXACT_MAX = 12
"""Up to this many features the reference Shapley values are enumerated exactly."""


TRANSFORMS = (None, "log1p")
"""How inputs are transformed before they are standardised: as they are, or ``log1p`` (counts)."""


class Game:
    """The surrogate game ``v_x(S)``: standardised inputs, masked features at 0 (their mean), mask as input.

    ``net`` is the surrogate MLP on ``[z ⊙ m, m]`` (2F inputs) predicting standardised outputs;
    ``x_mean``, ``x_std`` (F,) and ``y_mean``, ``y_std`` (T,) are torch tensors. ``transform``
    (``TRANSFORMS``): ``"log1p"`` standardises ``log1p(x)`` (count inputs; ``x_mean`` and ``x_std``
    are then those of ``log1p(x)``, and an absent gene is at its training mean of ``log1p``).
    """

    def __init__(self, net, x_mean, x_std, y_mean, y_std, transform: str | None = None):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.net, self.x_mean, self.x_std, self.y_mean, self.y_std = net, x_mean, x_std, y_mean, y_std
        self.transform = transform

    @staticmethod
    def transformed(x, transform: str | None):
        """Return ``x`` ``(N, F)`` (torch) as the game standardises it (``log1p`` or unchanged)."""
        import torch

        return torch.log1p(x) if transform == "log1p" else x

    def z(self, x):
        """Return standardised inputs ``(N, F)``."""
        return (self.transformed(x, self.transform) - self.x_mean) / self.x_std

    def raw(self, z, m):
        """Return standardised outputs ``(M, T)`` of standardised inputs ``z`` ``(N, F)`` under masks ``m`` ``(M, F)``.

        ``M`` is ``N``, or a multiple ``k N``: then mask row ``r`` masks ``z[r mod N]`` (k masks per
        input, without k copies of ``z``).
        """
        import torch

        zm = z * m if len(m) == len(z) else (z[None] * m.view(-1, *z.shape)).view(m.shape)
        return self.net(torch.cat([zm, m], dim=1))

    def paired(self, z, m):
        """Return standardised outputs ``(2 M, T)`` under masks ``m`` ``(M, F)`` and then under their complements.

        ``M = k N``: mask row ``r`` masks ``z[r mod N]`` (``z`` ``(N, F)``), as in ``raw``; rows
        ``M + r`` are ``1 - m[r]``. Equal to ``raw(z, cat([m, 1 - m]))`` to float32 rounding at
        half its first-layer cost: that layer is linear in ``[z ⊙ m, m]``, so a complement's
        pre-activation is the full input's (mask of ones) less the mask's.
        """
        import torch

        first, rest = self.net[0], self.net[1:]
        n = z.shape[0]
        k = len(m) // n
        zm = (z[None] * m.view(k, *z.shape)).view(m.shape)
        pm = torch.cat([zm, m], dim=1) @ first.weight.T  # (M, H), without the bias
        full = torch.cat([z, torch.ones_like(z)], dim=1) @ first.weight.T  # (N, H)
        pc = full.repeat(k, 1) - pm
        return rest(torch.cat([pm, pc]) + first.bias)

    def __call__(self, x, m):
        """Return ``v_x(S)`` ``(N, T)`` for inputs ``x`` ``(N, F)`` and 0/1 masks ``m`` ``(N, F)``."""
        return self.raw(self.z(x), m) * self.y_std + self.y_mean

    def walk(self, x1, perms):
        """Return ``(P, F + 1, T)``: ``v_x`` of the first 0..F features of each permutation ``perms`` ``(P, F)``.

        The first layer is affine in ``[z ⊙ m, m]``, so adding feature i adds the column
        ``W[:, i] z_i + W[:, F + i]`` to its pre-activation: a cumulative sum along each
        permutation instead of F + 1 full first-layer products.
        """
        import torch

        first, rest = self.net[0], self.net[1:]
        f = x1.shape[0]
        z = self.z(x1[None])[0]
        cols = first.weight[:, :f] * z[None, :] + first.weight[:, f:]  # (H, F)
        steps = cols.T[perms]  # (P, F, H)
        pre = torch.cat([torch.zeros_like(steps[:, :1]), steps.cumsum(1)], dim=1) + first.bias
        return rest(pre) * self.y_std + self.y_mean


def permutation_shapley(game: Game, x, *, n_permutations: int, seed: int = 0, chunk: int = 16):
    """Return ``(phi, se)``, each ``(N, F, T)``: antithetic permutation-sampling Shapley values of ``game``.

    For every sample, ``n_permutations`` (rounded up to even) uniformly random feature orders are
    drawn from ``seed`` (each with its reverse); a feature's value is its mean marginal
    contribution ``v(pre ∪ {i}) - v(pre)``. ``se`` is the standard error of that mean over the
    ``n_permutations / 2`` independent antithetic pairs (zero when there is one pair).
    """
    import torch

    n, f = x.shape
    pairs = max(1, (int(n_permutations) + 1) // 2)
    gen = torch.Generator().manual_seed(int(seed))
    out_phi, out_se = [], []
    with torch.no_grad():
        for j in range(n):
            perms = torch.rand(pairs, f, generator=gen).argsort(1)
            total = None
            sq = None
            for p0 in range(0, pairs, chunk):
                p = perms[p0:p0 + chunk]
                both = torch.cat([p, p.flip(1)])
                vals = game.walk(x[j], both).double()  # (2b, F + 1, T)
                marg = vals[:, 1:] - vals[:, :-1]  # (2b, F, T), by position in the permutation
                per = torch.zeros_like(marg)
                per.scatter_(1, both[:, :, None].expand_as(marg), marg)  # by feature
                draw = 0.5 * (per[:len(p)] + per[len(p):])  # one value per antithetic pair
                total = draw.sum(0) if total is None else total + draw.sum(0)
                sq = (draw ** 2).sum(0) if sq is None else sq + (draw ** 2).sum(0)
            mean = total / pairs
            var = (sq / pairs - mean ** 2).clamp_min(0) * pairs / max(1, pairs - 1)
            out_phi.append(mean)
            out_se.append((var / pairs).sqrt() if pairs > 1 else torch.zeros_like(mean))
    return torch.stack(out_phi).numpy(), torch.stack(out_se).numpy()


def reference_shapley(game: Game, x, *, se_bound: float = 0.15, seed: int = 0, start: int = 32,
                      max_permutations: int = 4096) -> tuple[np.ndarray, float, int]:
    """Return ``(phi (N, F, T), noise, permutations)``: the reference Shapley values of ``game`` at ``x``.

    Exact enumeration when F <= ``EXACT_MAX`` (noise 0, permutations 0); otherwise
    ``permutation_shapley`` with ``start`` permutations, repeated with more (the standard error
    falls as 1 / sqrt(permutations): the count its estimate needs, at least twice as many) until
    ``noise`` — the largest over samples of sqrt(mean squared standard error) / std of the
    sample's values — is at most ``se_bound``. Raises ``ValueError`` when ``max_permutations`` do
    not reach the bound.
    """
    n, f = x.shape
    t = game.y_mean.shape[0]
    if f <= EXACT_MAX:
        return exact_shapley(game, x, t), 0.0, 0
    p = int(start)
    while True:
        phi, se = permutation_shapley(game, x, n_permutations=p, seed=seed)
        spread = phi.reshape(n, -1).std(1)
        noise = float(np.max(np.sqrt((se.reshape(n, -1) ** 2).mean(1)) / np.maximum(spread, 1e-12)))
        if noise <= se_bound:
            return phi, noise, p
        if p >= max_permutations:
            raise ValueError(f"the permutation-sampling reference did not reach standard error <= {se_bound} x the "
                             f"spread of its values with {p} permutations (noise {noise:.3f}): raise "
                             f"max_permutations or se_bound")
        need = p * (noise / se_bound) ** 2 * 1.2
        p = min(int(max_permutations), max(2 * p, int(math.ceil(need / start)) * int(start)))


def fidelity_figures(phi: np.ndarray, ref: np.ndarray, top_k: int = 15) -> dict:
    """Return ``fidelity`` (mean per-sample Pearson r), ``fidelity_min`` and ``topk_agreement`` of ``phi`` vs ``ref``.

    ``phi``, ``ref`` ``(N, F, T)``. Per sample, r is taken over all its (feature, target) values;
    top-k agreement is |top-k(phi) ∩ top-k(ref)| / k by absolute value, per sample and target.
    """
    n, f, t = ref.shape
    a, b = phi.reshape(n, -1).astype(np.float64), ref.reshape(n, -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    r = (a * b).sum(1) / np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1)).clip(1e-300)
    k = min(int(top_k), f)
    top_a = np.argsort(-np.abs(phi), axis=1)[:, :k]  # (N, k, T)
    top_b = np.argsort(-np.abs(ref), axis=1)[:, :k]
    agree = [len(set(top_a[i, :, j]) & set(top_b[i, :, j])) / k for i in range(n) for j in range(t)]
    return {"fidelity": float(r.mean()), "fidelity_min": float(r.min()), "topk_agreement": float(np.mean(agree))}


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
