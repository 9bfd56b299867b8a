"""The gradient model: a frozen copy of a model whose ``Conv1d`` input gradients use their sparsity.

``gradient_model(model)`` returns a copy with frozen parameters (no weight gradients) in which

* every qualifying ``Conv1d`` (stride 1, groups 1, symmetric zero padding) runs through
  ``SparseGradConv1d``: when the gradient arriving at its output is mostly zeros (at most
  ``SPARSE_DENSITY`` non-zero — after a global max pool there is at most one per channel) the
  input gradient is accumulated from the non-zero entries only (``index_add`` of weight slices)
  instead of a dense transposed convolution; dense gradients take ``torch.nn.grad.conv1d_input``;
* every run ``Conv1d, ReLU, AdaptiveMaxPool1d(1)`` inside an ``nn.Sequential`` becomes one
  ``FusedConvReluGlobalMax`` module, whose autograd function ``ConvReluGlobalMaxFunction`` keeps
  only the argmax positions and scatters the input gradient from them (no dense intermediate).

The values are the same gradient up to float summation order. torch is imported on first use (the
autograd classes are made once per process by ``_autograd``), so importing this module is cheap.
"""

from __future__ import annotations

import copy
import types

from .process import tune_malloc

SPARSE_DENSITY = 0.02
"""Use the sparse input-gradient of a Conv1d when at most this fraction of its output gradient is non-zero."""


def conv1d_sparse_input_grad(grad_out, weight, in_length: int, padding: int, dilation: int):
    """Return ``(B, C_in, L_in)``: the input gradient of a stride-1, groups-1 conv1d from its sparse output gradient."""
    import torch

    b, c, p = grad_out.nonzero(as_tuple=True)
    vals = grad_out[b, c, p]
    n, out_length = grad_out.shape[0], grad_out.shape[2]
    c_in, k = weight.shape[1], weight.shape[2]
    dev = vals.device
    # positions p - padding + dilation*j may fall outside [0, L): write into a wider buffer and crop
    lo = padding
    width = lo + max(in_length, out_length - padding + dilation * (k - 1)) + 1
    contrib = vals[:, None, None] * weight[c]  # (nnz, C_in, K)
    pos = (p - padding + lo)[:, None] + dilation * torch.arange(k, device=dev)[None, :]  # (nnz, K), >= 0
    flat = (b[:, None, None] * c_in + torch.arange(c_in, device=dev)[None, :, None]) * width + pos[:, None, :]
    out = torch.zeros(n * c_in * width, dtype=vals.dtype, device=dev)
    out.index_add_(0, flat.reshape(-1), contrib.reshape(-1))
    return out.view(n, c_in, width)[:, :, lo:lo + in_length].contiguous()


def _make_autograd():
    import torch
    import torch.nn as nn
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
                gx = conv1d_sparse_input_grad(grad_out, weight, shape[2], padding, dilation)
            else:
                gx = torch.nn.grad.conv1d_input(shape, weight, grad_out, 1, padding, dilation, 1)
            return gx, None, None, None, None

    class ConvReluGlobalMaxFunction(torch.autograd.Function):
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

    class FusedConvReluGlobalMax(nn.Module):
        """The module replacing ``Conv1d, ReLU, AdaptiveMaxPool1d(1)``: ``ConvReluGlobalMaxFunction`` of the conv."""

        def __init__(self, conv, pad):
            super().__init__()
            self.conv = conv
            self.pad = pad

        def forward(self, x):
            return ConvReluGlobalMaxFunction.apply(x, self.conv.weight, self.conv.bias, self.pad, self.conv.dilation[0])

    return types.SimpleNamespace(SparseGradConv1d=SparseGradConv1d, ConvReluGlobalMaxFunction=ConvReluGlobalMaxFunction,
                                 FusedConvReluGlobalMax=FusedConvReluGlobalMax)


_AUTOGRAD = None


def _autograd():
    """Return the autograd classes (made once per process, on first use)."""
    global _AUTOGRAD
    if _AUTOGRAD is None:
        _AUTOGRAD = _make_autograd()
    return _AUTOGRAD


def _sparse_forward(self, x):
    return _autograd().SparseGradConv1d.apply(x, self.weight, self.bias, self._interp_padding, self.dilation[0])


def conv_padding(m) -> int | None:
    """Return the symmetric zero padding of a qualifying Conv1d (stride 1, groups 1), else None."""
    import torch.nn as nn

    if type(m) is not nn.Conv1d or m.stride != (1,) or m.groups != 1 or m.padding_mode != "zeros":
        return None
    total = m.dilation[0] * (m.kernel_size[0] - 1)
    if m.padding == "same":
        return None if total % 2 else total // 2
    return int(m.padding[0])


def fuse_global_max(seq):
    """Replace ``Conv1d, ReLU, AdaptiveMaxPool1d(1)`` runs inside ``nn.Sequential`` modules by one fused module."""
    import torch.nn as nn

    fused = _autograd().FusedConvReluGlobalMax
    for module in list(seq.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module.children())
        out, i, changed = [], 0, False
        while i < len(layers):
            a = layers[i]
            if (i + 2 < len(layers) and conv_padding(a) is not None and type(layers[i + 1]) is nn.ReLU
                    and type(layers[i + 2]) is nn.AdaptiveMaxPool1d and layers[i + 2].output_size in (1, (1,))
                    and not layers[i + 2].return_indices):
                out.append(fused(a, conv_padding(a)))
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


def gradient_model(model):
    """Return a frozen copy of ``model`` for input gradients (sparse-aware ``Conv1d`` where it applies).

    A ``Conv1d`` qualifies when it has stride 1, groups 1, zero padding given as an int or 'same'
    (symmetric). A run ``Conv1d, ReLU, AdaptiveMaxPool1d(1)`` inside an ``nn.Sequential`` becomes
    one fused module (see the module doc). TorchScript models and other layers are used as they
    are. Weight gradients are never computed (parameters are frozen in the copy). Also applies
    ``tune_malloc`` (gradient loops allocate megabytes per batch).
    """
    import torch
    import torch.nn as nn

    tune_malloc()
    if isinstance(model, torch.jit.ScriptModule):
        return model
    g = copy.deepcopy(model).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    fuse_global_max(g)
    for m in g.modules():
        pad = conv_padding(m)
        if pad is not None and type(m) is nn.Conv1d:
            m._interp_padding = pad
            m.forward = types.MethodType(_sparse_forward, m)
    return g
