"""Gradient attributions on a worker: batched Integrated Gradients, SHAP explainers, layer IG.

Everything here works on one block of samples already on the worker (numpy in, numpy out) and
never touches dask; ``interpretome.tasks.attribute`` maps it over sample chunks.

Integrated Gradients (``integrated_gradients``) computes exactly what captum's
``IntegratedGradients.attribute`` computes (same integration points and weights as
captum's ``approximation_parameters``, see ``path_parameters``) but faster on CPU:

* several samples' integration steps go through the model in one batch (``batch_size`` rows of
  (sample, step) pairs, sample-major), so batches stay full whatever the number of samples;
* the model's parameters are frozen (no weight gradients) and the gradient model is a copy whose
  ``Conv1d`` layers use a **sparse input-gradient**: when the gradient arriving at a convolution's
  output is mostly zeros — after a global max pool it has at most one non-zero per channel — the
  input gradient is accumulated from the non-zero entries only (``index_add`` of weight slices)
  instead of a dense transposed convolution. The values are the same gradient up to float
  summation order; dense gradients take the ordinary path (``torch.nn.grad.conv1d_input``);
* on a cluster, one single-threaded process per core (``engine.cluster``) instead of intra-op
  threads, with glibc's allocator kept from unmapping each batch's tensors (``tune_malloc``:
  dask's worker default ``MALLOC_TRIM_THRESHOLD_`` otherwise doubles the CPU time).

``shap_gradient`` / ``shap_deep`` call shap's ``GradientExplainer`` / ``DeepExplainer`` with one
seed per sample (keyed by the sample's global index), so results do not depend on chunking.
``layer_integrated_gradients`` wraps captum's ``LayerIntegratedGradients`` for token models.
"""

from __future__ import annotations

import copy
import types

import numpy as np

SPARSE_DENSITY = 0.02
"""Use the sparse input-gradient of a Conv1d when at most this fraction of its output gradient is non-zero."""


# --- process memory allocator ----------------------------------------------------------------------

_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Keep glibc from unmapping large freed blocks in this process; return True when applied.

    Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which (like any fixed
    threshold) also freezes glibc's mmap threshold at 128 KiB: every batch's activation tensors
    (megabytes) are then mmapped and unmapped again, and the page faults double the CPU time of
    gradient loops. ``mallopt`` restores the behaviour of an untuned process: blocks up to 32 MiB
    come from the heap and are reused; the heap is trimmed above 256 MiB of free top memory.
    A no-op off glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1 and libc.mallopt(m_trim_threshold, 256 * 2**20) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


# --- sparse conv1d input gradient ----------------------------------------------------------------

def _conv1d_sparse_input_grad(grad_out, weight, in_length: int, padding: int, dilation: int):
    """Return ``(B, C_in, L_in)``: the input gradient of a stride-1, groups-1 conv1d from its sparse output gradient."""
    b, c, p = grad_out.nonzero(as_tuple=True)
    return _scatter_input_grad(b, c, p, grad_out[b, c, p], grad_out.shape[0], grad_out.shape[2], weight,
                               in_length, padding, dilation)


def _scatter_input_grad(b, c, p, vals, n: int, out_length: int, weight, in_length: int, padding: int, dilation: int):
    """Return ``(n, C_in, L_in)``: conv1d input gradient from output-gradient entries ``vals`` at (b, c, p)."""
    import torch

    c_in, k = weight.shape[1], weight.shape[2]
    dev = vals.device
    grad_out = vals
    # positions p - padding + dilation*j may fall outside [0, L): write into a wider buffer and crop
    lo = padding
    width = lo + max(in_length, out_length - padding + dilation * (k - 1)) + 1
    contrib = vals[:, None, None] * weight[c]  # (nnz, C_in, K)
    pos = (p - padding + lo)[:, None] + dilation * torch.arange(k, device=dev)[None, :]  # (nnz, K), >= 0
    flat = (b[:, None, None] * c_in + torch.arange(c_in, device=dev)[None, :, None]) * width + pos[:, None, :]
    out = torch.zeros(n * c_in * width, dtype=vals.dtype, device=dev)
    out.index_add_(0, flat.reshape(-1), contrib.reshape(-1))
    return out.view(n, c_in, width)[:, :, lo:lo + in_length].contiguous()


def _make_sparse_conv_fn():
    import torch
    import torch.nn.functional as F

    class SparseGradConv1d(torch.autograd.Function):
        """conv1d whose input gradient uses the non-zeros of a sparse output gradient."""

        @staticmethod
        def forward(ctx, x, weight, bias, padding, dilation):
            ctx.save_for_backward(weight)
            ctx.meta = (x.shape, padding, dilation)
            return F.conv1d(x, weight, bias, 1, padding, dilation, 1)

        @staticmethod
        def backward(ctx, grad_out):
            (weight,) = ctx.saved_tensors
            shape, padding, dilation = ctx.meta
            density = float((grad_out != 0).sum()) / max(1, grad_out.numel())
            if density <= SPARSE_DENSITY:
                gx = _conv1d_sparse_input_grad(grad_out, weight, shape[2], padding, dilation)
            else:
                gx = torch.nn.grad.conv1d_input(shape, weight, grad_out, 1, padding, dilation, 1)
            return gx, None, None, None, None

    return SparseGradConv1d


def _make_conv_relu_max_fn():
    import torch
    import torch.nn.functional as F

    class ConvReluGlobalMax(torch.autograd.Function):
        """max over positions of relu(conv1d(x)): (B, C, 1); the input gradient touches only the argmax positions."""

        @staticmethod
        def forward(ctx, x, weight, bias, padding, dilation):
            h = torch.relu_(F.conv1d(x, weight, bias, 1, padding, dilation, 1))
            vals, idx = h.max(dim=2, keepdim=True)
            ctx.save_for_backward(weight, idx, vals)
            ctx.meta = (x.shape, h.shape[2], padding, dilation)
            return vals

        @staticmethod
        def backward(ctx, grad_out):
            weight, idx, vals = ctx.saved_tensors
            shape, out_length, padding, dilation = ctx.meta
            g = (grad_out * (vals > 0))[:, :, 0]  # relu passes the gradient where the max is positive
            n, c = g.shape
            c_in, k = weight.shape[1], weight.shape[2]
            lo = padding
            width = lo + max(shape[2], out_length - padding + dilation * (k - 1)) + 1
            # every (sample, channel) has exactly one entry: broadcast instead of gathering weight rows
            contrib = g[:, :, None, None] * weight[None]  # (n, C, C_in, K)
            pos = (idx[:, :, 0] + (lo - padding))[:, :, None] + dilation * torch.arange(k, device=g.device)  # (n, C, K)
            base = (torch.arange(n, device=g.device)[:, None] * c_in + torch.arange(c_in, device=g.device)) * width
            flat = base[:, None, :, None] + pos[:, :, None, :]  # (n, C, C_in, K)
            out = torch.zeros(n * c_in * width, dtype=g.dtype, device=g.device)
            out.index_add_(0, flat.reshape(-1), contrib.reshape(-1))
            gx = out.view(n, c_in, width)[:, :, lo:lo + shape[2]].contiguous()
            return gx, None, None, None, None

    return ConvReluGlobalMax


_SPARSE_FN = None
_MAX_FN = None


def _sparse_forward(self, x):
    return _SPARSE_FN.apply(x, self.weight, self.bias, self._interp_padding, self.dilation[0])


def _conv_pad(m) -> int | None:
    """Return the symmetric zero padding of a qualifying Conv1d (stride 1, groups 1), else None."""
    import torch.nn as nn

    if type(m) is not nn.Conv1d or m.stride != (1,) or m.groups != 1 or m.padding_mode != "zeros":
        return None
    total = m.dilation[0] * (m.kernel_size[0] - 1)
    if m.padding == "same":
        return None if total % 2 else total // 2
    return int(m.padding[0])


def _fuse_global_max(seq):
    """Replace ``Conv1d, ReLU, AdaptiveMaxPool1d(1)`` runs inside ``nn.Sequential`` modules by one fused module."""
    import torch.nn as nn

    class ConvReluGlobalMax(nn.Module):
        def __init__(self, conv, pad):
            super().__init__()
            self.conv = conv
            self.pad = pad

        def forward(self, x):
            return _MAX_FN.apply(x, self.conv.weight, self.conv.bias, self.pad, self.conv.dilation[0])

    for module in list(seq.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module.children())
        out, i, changed = [], 0, False
        while i < len(layers):
            a = layers[i]
            if (i + 2 < len(layers) and _conv_pad(a) is not None and type(layers[i + 1]) is nn.ReLU
                    and type(layers[i + 2]) is nn.AdaptiveMaxPool1d and layers[i + 2].output_size in (1, (1,))
                    and not layers[i + 2].return_indices):
                out.append(ConvReluGlobalMax(a, _conv_pad(a)))
                i += 3
                changed = True
            else:
                out.append(a)
                i += 1
        if changed:
            for name in list(module._modules):
                del module._modules[name]
            for j, layer in enumerate(out):
                module.add_module(str(j), layer)
    return seq


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


def gradient_model(model):
    """Return a frozen copy of ``model`` for input gradients (sparse-aware ``Conv1d`` where it applies).

    A ``Conv1d`` qualifies when it has stride 1, groups 1, zero padding given as an int or 'same'
    (symmetric). A run ``Conv1d, ReLU, AdaptiveMaxPool1d(1)`` inside an ``nn.Sequential`` becomes
    one fused module whose input gradient is scattered from the argmax positions only (no dense
    intermediate at all). TorchScript models and other layers are used as they are. Weight gradients are
    never computed (parameters are frozen in the copy).
    """
    import torch
    import torch.nn as nn

    global _SPARSE_FN, _MAX_FN
    tune_malloc()
    if _SPARSE_FN is None:
        _SPARSE_FN = _make_sparse_conv_fn()
        _MAX_FN = _make_conv_relu_max_fn()
    if isinstance(model, torch.jit.ScriptModule):
        return model
    g = copy.deepcopy(model).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    _fuse_global_max(g)
    for m in g.modules():
        pad = _conv_pad(m)
        if pad is not None and type(m) is nn.Conv1d:
            m._interp_padding = pad
            m.forward = types.MethodType(_sparse_forward, m)
    return g


# --- output function -------------------------------------------------------------------------------

def activate(out, activation: str):
    """Return the model output ``(N, n_out)`` after the spec's activation (none / sigmoid / softmax)."""
    import torch

    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 1:
        out = out[:, None]
    if activation == "sigmoid":
        return torch.sigmoid(out)
    if activation == "softmax":
        return torch.softmax(out, dim=1)
    return out


class Head:
    """Callable ``x -> activation(model(x))`` of shape (N, n_out) (an nn.Module-free forward function)."""

    def __init__(self, model, activation: str = "none"):
        self.model = model
        self.activation = activation

    def __call__(self, x, *extra):
        return activate(self.model(x, *extra), self.activation)


def head_module(model, activation: str = "none", select=None):
    """Return an ``nn.Sequential``: ``model``, the activation as a module, then output columns ``select``.

    The activation is an ``nn.Sigmoid`` / ``nn.Softmax`` module (not a functional call) so shap's
    DeepExplainer sees it; ``select`` (output indices) keeps only those columns.
    """
    import torch
    import torch.nn as nn

    class _Columns(nn.Module):
        def __init__(self, cols):
            super().__init__()
            self.register_buffer("cols", torch.as_tensor(np.asarray(cols, np.int64)))

        def forward(self, out):
            if out.ndim == 1:
                out = out[:, None]
            return out[:, self.cols]

    layers = [model]
    if activation == "sigmoid":
        layers.append(nn.Sigmoid())
    elif activation == "softmax":
        layers.append(nn.Softmax(dim=1))
    if select is not None:
        layers.append(_Columns(select))
    return nn.Sequential(*layers).eval() if len(layers) > 1 else model


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


def integrated_gradients(f, x, baseline, target, *, n_steps: int = 50, method: str = "gausslegendre",
                         batch_size: int = 256, first=None, extra=()):
    """Return ``(attribution, delta, f_x, f_baseline)`` of Integrated Gradients for one block.

    ``f`` maps a batch ``(B, *shape)`` to outputs ``(B, n_out)``; ``x`` ``(N, *shape)`` torch float;
    ``baseline`` broadcastable to ``x``; ``target`` ``(N,)`` int64 output index per sample.
    ``attribution`` ``(N, *shape)``; ``delta`` ``(N,)`` = sum(attribution) - (f(x) - f(baseline)),
    captum's convergence delta; ``f_x``, ``f_baseline`` ``(N,)``. ``batch_size`` counts
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
        fb = f(torch.broadcast_to(path0, path1.shape), *extra).gather(1, target[:, None])[:, 0]
    delta = attr.reshape(n, -1).sum(1) - (fx - fb)
    return attr.detach(), delta.detach(), fx, fb


# --- shap ------------------------------------------------------------------------------------------

def _sample_seed(seed: int, index: int) -> int:
    from . import rng

    return int(rng.hash_keys(seed, index) % np.uint64(2**31 - 1))


def shap_gradient(model, x, background, target, sample_index, *, activation: str = "none", nsamples: int = 200,
                  local_smoothing: float = 0.0, seed: int = 0, batch_size: int = 50):
    """Return ``(N, *shape)`` expected gradients from shap's ``GradientExplainer``, one seed per sample.

    ``model`` maps ``(B, *shape)`` to ``(B, n_out)`` (before ``activation``); ``target`` ``(N,)`` output index per sample;
    ``sample_index`` ``(N,)`` global indices (the per-sample seeds). The explainer is built once per
    target value with the background ``(M, *shape)``.
    """
    import shap
    import torch

    out = np.zeros(tuple(x.shape), np.float32)
    explainers = {}
    for j in range(x.shape[0]):
        t = int(target[j])
        if t not in explainers:
            explainers[t] = shap.GradientExplainer(head_module(model, activation, [t]), background,
                                                   batch_size=batch_size, local_smoothing=local_smoothing)
        s = _sample_seed(seed, int(sample_index[j]))
        torch.manual_seed(s)
        vals = explainers[t].shap_values(x[j:j + 1], nsamples=nsamples, rseed=s)
        out[j] = np.asarray(vals, np.float32).reshape(out[j].shape)
    return out


def shap_deep(model, x, background, target, *, activation: str = "none"):
    """Return ``(N, *shape)`` DeepLIFT-SHAP values from shap's ``DeepExplainer`` for output ``target`` ``(N,)``.

    shap explains every output of ``model`` (after ``activation``) at once; the requested column is
    kept per sample.
    """
    import shap

    explainer = shap.DeepExplainer(head_module(model, activation), background)
    vals = np.asarray(explainer.shap_values(x, check_additivity=False), np.float32)
    if vals.ndim == x.ndim:  # a single output
        vals = vals[..., None]
    t = np.asarray(target, np.int64)
    return np.take_along_axis(vals, t.reshape((-1,) + (1,) * (vals.ndim - 1)), axis=-1)[..., 0]


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


def layer_integrated_gradients(f, layer, ids, baseline_ids, target, *, n_steps: int = 50,
                               method: str = "gausslegendre", batch_size: int = 256):
    """Return ``(scores (N, T), delta (N,))``: captum LayerIntegratedGradients at ``layer``, summed per token."""
    import torch
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(f, layer)
    n = ids.shape[0]
    ibs = max(n, int(batch_size))
    attr, delta = lig.attribute(ids, baselines=baseline_ids, target=torch.as_tensor(target, dtype=torch.long),
                                n_steps=n_steps, method=method, internal_batch_size=ibs,
                                return_convergence_delta=True)
    return attr.sum(-1).detach(), delta.detach()
