"""Attribution methods on a worker: one class per method on a shared base (captum's shape).

* ``IntegratedGradients`` (``integrated_gradients``, alias ``ig``): exactly captum's
  ``IntegratedGradients`` (same integration points and weights, ``path_parameters``);
* ``GradientShap`` (``gradient_shap``, aliases ``gradient``, ``expected_gradients``): shap's
  ``GradientExplainer``, one seed per sample keyed by its global index (chunking-independent);
* ``DeepShap`` (``deep_shap``, aliases ``deep``, ``deeplift``): shap's ``DeepExplainer``;
* ``LayerIntegratedGradients`` (``layer_integrated_gradients``, alias ``layer_ig``): captum's
  ``LayerIntegratedGradients`` at the embedding of a token model, scores summed per token
  (``method_for`` gives it for ``integrated_gradients`` on a ``kmer`` spec).

Every method is built from the worker's ``Runtime`` and its options
(``cls(runtime, **options)``; options a method does not use are ignored, so one options dict
serves all) and called as ``attribute(x, target, ...)`` on one block already on the worker (torch
in, numpy out, never dask). Each method returns its attributions with f(x) and f(reference) of the
activated model (``outputs``); the base class computes the completeness gap the same way for all,
``delta = sum(attribution) - (f(x) - f(reference))`` (``Attribution.completeness_delta``: captum's
convergence delta for IG and layer IG, the gap to the background mean of f for SHAP). ``method_class(name)`` looks a class up by canonical name or alias;
``canonical_method`` normalises an alias (do it before anything is fingerprinted).

Integrated Gradients is faster on CPU than captum's, with the same values:

* several samples' integration steps go through the model in one batch (``batch_size`` rows of
  (sample, step) pairs, sample-major), so batches stay full whatever the number of samples;
* the model's parameters are frozen and the gradient model's ``Conv1d`` layers use their sparse
  input gradient (``engine.sparse_conv.gradient_model``); an affine first layer runs twice per
  sample instead of once per step (``split_affine``).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .heads import ActivatedModel, head_module


@dataclass
class Attributed:
    """One block's attributions ``(N, *shape)`` and per-sample ``delta``, ``fx``, ``fb`` ``(N,)`` (numpy)."""

    attribution: np.ndarray
    delta: np.ndarray
    fx: np.ndarray
    fb: np.ndarray


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


class Attribution:
    """Base of the attribution methods: options, the activated model, completeness (see module doc).

    Subclasses set ``name`` / ``aliases`` (and ``input_kinds``, ``uses_baseline``,
    ``uses_background``) and implement ``_attribute(x, target, **inputs) -> (attr, fx, fb)``
    (torch tensors or numpy arrays); ``reduce`` maps the attributions after the delta is taken.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    input_kinds: ClassVar[tuple[str, ...]] = ("dense", "image", "onehot")
    uses_baseline: ClassVar[bool] = False
    uses_background: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, runtime, **options):
        self.rt = runtime
        self.model = runtime.model
        self.activation = runtime.spec.activation
        self.f = ActivatedModel(self.model, self.activation)
        for k in self.options:
            setattr(self, k, options[k])

    @staticmethod
    def completeness_delta(attr, fx, fb):
        """Return ``sum(attr) - (fx - fb)`` per sample (torch or numpy, in the inputs' own dtype)."""
        return attr.reshape(attr.shape[0], -1).sum(1) - (fx - fb)

    def outputs(self, x, extra=()):
        """Return the activated outputs ``(N, n_out)`` of ``x`` (and per-sample ``extra`` tensors) without gradients."""
        import torch

        with torch.no_grad():
            return self.f(x, *extra)

    def reduce(self, attr):
        """Return the reported attributions from the raw ones (identity)."""
        return attr

    def attribute(self, x, target, **inputs) -> Attributed:
        """Return ``Attributed`` for model inputs ``x`` ``(N, *shape)`` and output index ``target`` ``(N,)``."""
        attr, fx, fb = self._attribute(x, target, **inputs)
        delta = self.completeness_delta(attr, fx, fb)
        return Attributed(_numpy(self.reduce(attr)), _numpy(delta), _numpy(fx), _numpy(fb))

    def _attribute(self, x, target, **inputs):
        raise NotImplementedError


# --- integrated gradients --------------------------------------------------------------------------

def path_parameters(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(step weights, alphas)`` of captum's integration rules (same values, without importing captum).

    ``gausslegendre``: Gauss-Legendre nodes and weights mapped to [0, 1]; ``riemann_left``,
    ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``: equal steps as captum lays them out.
    """
    n = int(n_steps)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * w, 0.5 * (x + 1)
    if method.startswith("riemann_"):
        if n < 2:
            raise ValueError(f"{method} needs n_steps > 1, got {n}")
        w = np.full(n, 1.0 / n)
        kind = method.split("_", 1)[1]
        import torch

        if kind == "trapezoid":
            w[0] /= 2
            w[-1] /= 2
            a = torch.linspace(0, 1, n)
        elif kind == "left":
            a = torch.linspace(0, 1 - 1 / n, n)
        elif kind == "middle":
            a = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
        elif kind == "right":
            a = torch.linspace(1 / n, 1, n)
        else:
            raise ValueError(f"unknown Riemann rule {method!r}")
        return w, np.asarray(a.tolist())
    raise ValueError(f"integration method {method!r} is not gausslegendre or riemann_left/right/middle/trapezoid")


IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def split_affine(model):
    """Return ``(first, rest)`` when ``model`` is an ``nn.Sequential`` starting with an affine layer, else None.

    The first layer (``Conv1d``, ``Conv2d`` or ``Linear``) is affine in its input, so along an IG
    path ``first(b + a (x - b)) = first(b) + a (first(x) - first(b))``: it is run twice per sample
    instead of once per step, and its input gradient (a constant Jacobian) is applied once to the
    step-weighted sum of the gradients at its output.
    """
    import torch.nn as nn

    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    layers = list(model.children())
    if type(layers[0]) not in (nn.Conv1d, nn.Conv2d, nn.Linear):
        return None
    return layers[0], nn.Sequential(*layers[1:])


def gradient_parts(runtime):
    """Return this process's ``(first, rest)`` gradient model parts of ``runtime`` (first may be None).

    Kept on the Runtime, so they are always made from the model this process runs (and go with
    it in ``clear_runtimes``).
    """
    from .sparse_conv import gradient_model

    parts = getattr(runtime, "grad_parts", None)
    if parts is None:
        g = gradient_model(runtime.model)
        split = split_affine(g)
        parts = runtime.grad_parts = split if split is not None else (None, g)
    return parts


def integrated_gradients(f, x, baseline, target, *, n_steps: int = 50, method: str = "gausslegendre",
                         batch_size: int = 256, first=None, extra=()):
    """Return ``(attribution, f_x, f_baseline)`` of Integrated Gradients for one block (torch).

    ``f`` maps a batch ``(B, *shape)`` to outputs ``(B, n_out)``; ``x`` ``(N, *shape)`` torch float;
    ``baseline`` broadcastable to ``x``; ``target`` ``(N,)`` int64 output index per sample.
    ``attribution`` ``(N, *shape)``; ``f_x``, ``f_baseline`` ``(N,)``. ``batch_size`` counts
    (sample, step) rows per model call. With ``first`` (an affine module, see ``split_affine``),
    ``f`` is the rest of the model and the path runs through ``first``'s output. ``extra``: per-sample
    tensors ``(N, ...)`` passed to ``f`` after the input, unchanged along the path (covariates such as
    a batch code, as captum's ``additional_forward_args``).
    """
    import torch

    w_np, a_np = path_parameters(method, n_steps)
    w = torch.tensor(w_np, dtype=x.dtype, device=x.device)
    a = torch.tensor(a_np, dtype=x.dtype, device=x.device)
    n = x.shape[0]
    base = torch.broadcast_to(baseline, x.shape)
    diff = x - base
    target = torch.as_tensor(target, dtype=torch.long, device=x.device)
    if first is not None:
        with torch.no_grad():
            path0, path1 = first(base), first(x)
    else:
        path0, path1 = base, x
    path_diff = path1 - path0
    total = torch.zeros_like(path0)
    tail = (1,) * (path0.ndim - 1)
    rows = n * n_steps
    for r0 in range(0, rows, batch_size):
        idx = torch.arange(r0, min(rows, r0 + batch_size), device=x.device)
        si, ki = idx // n_steps, idx % n_steps
        inp = torch.addcmul(path0[si], a[ki].view(-1, *tail), path_diff[si]).requires_grad_(True)
        out = f(inp, *(e[si] for e in extra))
        sel = out.gather(1, target[si][:, None]).sum()
        (g,) = torch.autograd.grad(sel, inp)
        total.index_add_(0, si, g * w[ki].view(-1, *tail))
    if first is not None:
        z = x.detach().clone().requires_grad_(True)
        (total,) = torch.autograd.grad(first(z), z, total)
    attr = diff * total
    with torch.no_grad():
        fx = f(path1, *extra).gather(1, target[:, None])[:, 0]
        fb = f(path0, *extra).gather(1, target[:, None])[:, 0]
    return attr.detach(), fx, fb


class IntegratedGradients(Attribution):
    """Integrated Gradients from ``baseline`` (equal to captum's ``IntegratedGradients.attribute``)."""

    name = "integrated_gradients"
    aliases = ("ig",)
    uses_baseline = True
    options = ("n_steps", "ig_method", "batch_size")

    def _attribute(self, x, target, *, baseline, extra=(), **_):
        import torch

        first, rest = gradient_parts(self.rt)
        base = torch.from_numpy(np.asarray(baseline, np.float32)).to(x.device)
        return integrated_gradients(ActivatedModel(rest, self.activation), x, base, target, n_steps=self.n_steps,
                                    method=self.ig_method, batch_size=self.batch_size, first=first, extra=extra)


# --- shap ------------------------------------------------------------------------------------------

def sample_seed(seed: int, index: int) -> int:
    """Return the shap / torch seed of the sample with global index ``index`` (chunking-independent)."""
    from . import rng

    return int(rng.hash_keys(seed, index) % np.uint64(2**31 - 1))


SHAP_LOCK = threading.Lock()
"""Held while shap's ``DeepExplainer`` explains: it is not thread-safe. It keeps each layer's input
on the module by forward hooks, so it explains a private copy of the model (any other forward of the
shared, per-process model in another thread would fire those hooks and overwrite the inputs it
keeps), and its calls in one process run one at a time, each as it would alone. ``GradientShap``
draws from private generators and needs no lock."""


class _Shap(Attribution):
    """shap's explainers: the reference is the mean activated output over the ``background`` samples."""

    uses_background = True

    def _attribute(self, x, target, *, background, out=None, **inputs):
        import torch

        bg = torch.from_numpy(np.ascontiguousarray(background, np.float32)).to(x.device)
        fb_all = self.outputs(bg).mean(0).cpu().numpy()
        attr = self._shap(x, bg, target, **inputs)
        out = (self.outputs(x) if out is None else out).cpu().numpy()
        return attr, out[np.arange(x.shape[0]), target], fb_all[target]


class GradientShap(_Shap):
    """Expected gradients as shap's ``GradientExplainer`` computes them, one seed per sample (``sample_seed``).

    Per sample, the draws are shap's own: ``np.random.seed(s)``, then for each of the ``nsamples``
    points a background row (``np.random.choice``) and an interpolation ``t`` (``np.random.uniform``),
    and with ``local_smoothing`` a torch normal draw from ``torch.manual_seed(s)``; the value is the
    mean of ``grad f(t x + (1 - t) b) * (x - b)``. shap runs a Python loop over the points and one
    small gradient batch per sample; here only the draws loop, and groups of samples go through the
    model in batches of about ``batch_size`` rows (tests/test_attribute.py checks the values against
    shap's explainer).
    """

    name = "gradient_shap"
    aliases = ("gradient", "expected_gradients")
    options = ("nsamples", "local_smoothing", "seed", "batch_size")

    def _draws(self, x, background, index):
        """Return ``(points, delta)`` ``(N * nsamples, *shape)`` torch float32: shap's interpolation points and x - b."""
        import torch

        n, k, m = x.shape[0], int(self.nsamples), background.shape[0]
        rind = np.empty((n, k), np.int64)
        tt = np.empty((n, k), np.float64)
        rs = np.random.RandomState()
        for j in range(n):
            rs.seed(sample_seed(self.seed, int(index[j])))  # np.random.seed(s): reseeding, not a new generator
            for i in range(k):  # np.random.choice(m) is randint(0, m) on the same stream
                rind[j, i] = rs.randint(0, m)
                tt[j, i] = rs.uniform()
        xs = x.detach().unsqueeze(1)
        if self.local_smoothing > 0:
            noise = torch.empty((n, k) + tuple(x.shape[1:]))
            for j in range(n):
                gen = torch.Generator(device="cpu").manual_seed(sample_seed(self.seed, int(index[j])))
                for i in range(k):
                    noise[j, i].normal_(generator=gen)
            xs = xs + noise.to(x.device) * self.local_smoothing
        b = background[torch.from_numpy(rind.reshape(-1)).to(x.device)].reshape((n, k) + tuple(x.shape[1:]))
        t = torch.from_numpy(tt.astype(np.float32)).to(x.device).reshape((n, k) + (1,) * (x.dim() - 1))
        points = t * xs + (1 - t) * b
        return points.reshape((n * k,) + tuple(x.shape[1:])), (xs - b).reshape((n * k,) + tuple(x.shape[1:]))

    def _shap(self, x, background, target, *, index, **_):
        """Return ``(N, *shape)`` expected gradients of output ``target`` ``(N,)`` with the background ``(M, *shape)``.

        Samples go in groups of ``batch_size // nsamples`` (at least one), so a group's points are
        one model batch of about ``batch_size`` rows and memory stays bounded whatever ``N``.
        """
        import torch

        n, k = x.shape[0], int(self.nsamples)
        group = max(1, int(self.batch_size) // k)
        target = np.asarray(target, np.int64)
        out = np.empty(tuple(x.shape), np.float32)
        for j0 in range(0, n, group):
            j1 = min(n, j0 + group)
            points, delta = self._draws(x[j0:j1], background, index[j0:j1])
            points.requires_grad_(True)
            tgt = torch.as_tensor(np.repeat(target[j0:j1], k), device=x.device)
            sel = self.f(points).gather(1, tgt[:, None]).sum()
            grads = torch.autograd.grad(sel, points)[0]
            vals = (grads.double() * delta.double()).reshape((j1 - j0, k) + tuple(x.shape[1:])).mean(1)
            out[j0:j1] = vals.float().cpu().numpy()
        return out


class DeepShap(_Shap):
    """DeepLIFT-SHAP values from shap's ``DeepExplainer`` (every output at once, the target's column kept)."""

    name = "deep_shap"
    aliases = ("deep", "deeplift")

    def _shap(self, x, background, target, **_):
        import shap

        # a private copy: DeepExplainer's hooks must not see other threads' forwards of the shared model
        with SHAP_LOCK:
            explainer = shap.DeepExplainer(copy.deepcopy(head_module(self.model, self.activation)), background)
            vals = np.asarray(explainer.shap_values(x, check_additivity=False), np.float32)
        if vals.ndim == x.ndim:  # a single output
            vals = vals[..., None]
        t = np.asarray(target, np.int64)
        return np.take_along_axis(vals, t.reshape((-1,) + (1,) * (vals.ndim - 1)), axis=-1)[..., 0]


# --- token models ----------------------------------------------------------------------------------

def find_embedding(model, layer: str | None = None):
    """Return the embedding layer of a token model: ``layer`` (a dotted attribute path) or the first ``nn.Embedding``."""
    import torch.nn as nn

    if layer:
        obj = model
        for part in layer.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"model has no layer {layer!r}: pass the attribute path of its embedding "
                                 f"(e.g. 'embedding' or 'encoder.embed')")
            obj = getattr(obj, part)
        return obj
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return m
    raise ValueError("the token model has no nn.Embedding layer: pass layer='<attribute path>' of the layer to attribute")


class LayerIntegratedGradients(Attribution):
    """captum's ``LayerIntegratedGradients`` at the embedding ``layer`` of a token model; scores ``(N, T)`` per token.

    The baseline is every token replaced by ``pad_token`` (the ``bos`` token kept).
    """

    name = "layer_integrated_gradients"
    aliases = ("layer_ig",)
    input_kinds = ("kmer",)
    options = ("n_steps", "ig_method", "batch_size", "layer", "pad_token")

    def token_baseline(self, ids):
        """Return the baseline ids: ``pad_token`` everywhere but the leading ``bos`` token (when the tokenizer has one)."""
        import torch

        tok = self.rt.spec.kmer
        base = torch.full_like(ids, tok.vocab.index(self.pad_token))
        if tok.bos is not None:
            base[:, 0] = ids[:, 0]
        return base

    def _attribute(self, ids, target, *, out=None, **_):
        import torch
        from captum.attr import LayerIntegratedGradients as CaptumLIG

        base = self.token_baseline(ids)
        lig = CaptumLIG(self.f, find_embedding(self.model, self.layer))
        ibs = max(ids.shape[0], int(self.batch_size))
        tgt = torch.as_tensor(target, dtype=torch.long)
        attr = lig.attribute(ids, baselines=base, target=tgt, n_steps=self.n_steps, method=self.ig_method,
                             internal_batch_size=ibs)
        rows = torch.arange(ids.shape[0])
        out = self.outputs(ids) if out is None else out
        return attr.detach(), out[rows, tgt], self.outputs(base)[rows, tgt]

    def reduce(self, attr):
        return attr.sum(-1)


def method_for(name, input_kind: str) -> type[Attribution]:
    """Return the class attributing a model of ``input_kind`` with method ``name`` (canonical or alias).

    Token models (``kmer``) are attributed with layer IG at the embedding, so
    ``integrated_gradients`` means ``LayerIntegratedGradients`` for them. Raises ``ValueError`` for a
    method that does not fit the input kind.
    """
    cls = method_class(name)
    if input_kind == "kmer" and cls is IntegratedGradients:
        cls = LayerIntegratedGradients
    if input_kind not in cls.input_kinds:
        if input_kind == "kmer":
            raise ValueError(f"k-mer token models are attributed with layer Integrated Gradients at the embedding; "
                             f"method {cls.name!r} needs a differentiable input: use method='integrated_gradients'")
        raise ValueError(f"method {cls.name!r} attributes models of input_kind {cls.input_kinds}, not {input_kind!r}")
    return cls


# --- lookup ----------------------------------------------------------------------------------------

METHOD_CLASSES: dict[str, type[Attribution]] = {
    c.name: c for c in (IntegratedGradients, GradientShap, DeepShap, LayerIntegratedGradients)}
METHODS = tuple(METHOD_CLASSES)
_ALIASES = {a: c.name for c in METHOD_CLASSES.values() for a in (c.name, *c.aliases)}
METHOD_NAMES = tuple(_ALIASES)
"""Every accepted method name: the canonical names and their aliases (``ig``, ``layer_ig`` ...)."""


def canonical_method(name: Any) -> str:
    """Return the canonical name of an attribution method or alias (``"ig"`` -> ``"integrated_gradients"``).

    Raises ``ValueError`` naming the methods for anything else.
    """
    key = str(name)
    if key not in _ALIASES:
        aliases = sorted(a for a in _ALIASES if a not in METHOD_CLASSES)
        raise ValueError(f"method {name!r} is not one of {METHODS} (or {', '.join(aliases)})")
    return _ALIASES[key]


def method_class(name: str) -> type[Attribution]:
    """Return the class of attribution method ``name`` (canonical or alias)."""
    return METHOD_CLASSES[canonical_method(name)]
