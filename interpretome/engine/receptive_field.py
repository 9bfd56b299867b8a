"""The receptive-field fast path for convolutional models (the idea of fastISM).

``local_split(model)`` cuts an ``nn.Sequential`` after its leading length-preserving local layers
(stride-1 ``Conv1d`` with zero padding that keeps the length, and elementwise layers): output
position ``i`` of that prefix depends only on inputs ``[i - left, i + right]``. An edit of
``[s, s + k)`` then changes only prefix outputs ``[s - right, s + k - 1 + left]``, so
``predict_edits_fast`` runs the prefix on ``[s - left - right, s + k + left + right)`` only and

* splices the result into the cached activations of the reference sequence before the head, or,
* when the head starts with a global ``AdaptiveMaxPool1d(1)`` (``after_global_max``), takes the
  pooled value exactly as ``max(running max left of the span, running max right of it, max
  inside it)`` — no copy of the activations at all.

The ``Runtime`` (``engine.runtime``) decides which edits qualify (``fits``) and runs the others as
full forward passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_ELEMENTWISE = ("ReLU", "GELU", "ELU", "LeakyReLU", "Sigmoid", "Tanh", "SiLU", "Softplus", "Mish",
                "Identity", "Dropout", "BatchNorm1d", "ReLU6", "Hardtanh", "PReLU")


def local_split(model) -> tuple[Any, Any, int, int] | None:
    """Return ``(prefix, head, left, right)`` when ``model`` starts with length-preserving local layers.

    ``model`` must be an ``nn.Sequential`` whose first layers are stride-1 ``Conv1d`` layers with
    zero padding that keeps the length, and elementwise layers (activations, eval BatchNorm,
    dropout). Output position ``i`` of ``prefix`` then depends only on inputs
    ``[i - left, i + right]``; ``head`` is the rest. Returns None when no such prefix exists.
    """
    import torch.nn as nn

    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model.children())
    left = right = n_conv = 0
    cut = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv1d):
            if layer.stride != (1,) or layer.padding_mode != "zeros":
                break
            total = layer.dilation[0] * (layer.kernel_size[0] - 1)
            if layer.padding == "same":
                lp = total // 2
            elif isinstance(layer.padding, tuple) and 2 * layer.padding[0] == total:
                lp = layer.padding[0]
            else:
                break
            left += lp
            right += total - lp
            n_conv += 1
            cut = i + 1
        elif type(layer).__name__ in _ELEMENTWISE:
            cut = i + 1
        else:
            break
    if n_conv == 0 or cut >= len(layers):
        return None
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:]), left, right


def after_global_max(head):
    """Return the layers after a leading global ``AdaptiveMaxPool1d(1)`` of ``head``, else None."""
    import torch.nn as nn

    layers = list(head.children())
    if layers and isinstance(layers[0], nn.AdaptiveMaxPool1d) and layers[0].output_size in (1, (1,)):
        return nn.Sequential(*layers[1:])
    return None


def fits(split, starts: np.ndarray, k: int, length: int) -> np.ndarray:
    """Return which edits ``[s, s + k)`` of a ``length`` bp sequence the fast path can take (bool, per start).

    An edit qualifies when its slice (the span plus ``left + right`` context on each side) stays
    inside the sequence; ``split`` None (no local prefix) qualifies none.
    """
    if split is None:
        return np.zeros(len(starts), bool)
    _, _, left, right = split
    ctx = left + right
    return (starts - ctx >= 0) & (starts + k + ctx <= length)


def reference_activations(rt, ref):
    """Return the prefix activations ``(1, C, L)`` of ``ref`` and their running maxima (or None).

    Cached per thread on ``rt.thread_cache`` (one reference sequence): a worker's threads share
    the ``Runtime``.
    """
    key = (ref.shape[0], hash(ref.tobytes()))
    cache = getattr(rt.thread_cache, "ref", None)
    if cache is None or cache[0] != key:
        torch = rt.torch
        with torch.inference_mode():
            act = rt.split[0](rt.encode(ref[None, :]))
            pre = suf = None
            if rt.max_head is not None:  # running maxima from the left and the right, (1, C, L + 1)
                pad = torch.full_like(act[:, :, :1], -torch.inf)
                pre = torch.cat([pad, torch.cummax(act, dim=2).values], dim=2)
                suf = torch.cat([torch.cummax(act.flip(2), dim=2).values.flip(2), pad], dim=2)
        cache = rt.thread_cache.ref = (key, act, pre, suf)
    return cache[1:]


def predict_edits_fast(rt, ref, starts, new) -> np.ndarray:
    """Return head outputs ``(E, T)`` of edits that ``fits``: the prefix runs on each edit's slice only.

    ``rt`` is the ``Runtime`` (its ``split``, ``max_head``, ``encode``, ``output`` and batch size).
    """
    torch = rt.torch
    prefix, head, left, right = rt.split
    ctx = left + right
    k = new.shape[1]
    width = k + 2 * ctx
    bs = int(rt.spec.batch_size)
    ref_act, pre, suf = reference_activations(rt, ref)  # (1, C, L); running maxima (1, C, L + 1) or None
    ref_t = torch.from_numpy(np.ascontiguousarray(ref))
    changed = k + left + right
    outs = []
    with torch.inference_mode():
        for i in range(0, len(starts), bs):
            s = torch.from_numpy(starts[i:i + bs])
            b = len(s)
            cols = (s - ctx)[:, None] + torch.arange(width)[None, :]
            sl = ref_t[cols]  # (b, width)
            sl[:, ctx:ctx + k] = torch.from_numpy(new[i:i + bs])
            act_new = prefix(rt.encode(sl))[:, :, left:left + changed]  # positions s-right .. s+k-1+left
            if rt.max_head is not None:
                # global max pool: max(outside the changed span, inside it) — exact, no (C, L) copy
                a = (s - right).to(pre.device)
                outside = torch.maximum(pre[0][:, a].T, suf[0][:, a + changed].T)  # (b, C)
                pooled = torch.maximum(outside, act_new.amax(dim=2)).unsqueeze(-1)
                outs.append(rt.output(rt.max_head(pooled), row0=i))
                continue
            act = ref_act.expand(b, -1, -1).clone()
            pos = ((s - right)[:, None] + torch.arange(changed)[None, :]).to(act.device)
            act.scatter_(2, pos[:, None, :].expand(-1, act.shape[1], -1), act_new)
            outs.append(rt.output(head(act), row0=i))
    return np.concatenate(outs)
