"""Edits at the locality bound: the Runtime's fast path for ``predict_edits`` (the idea of fastISM, generalised).

``plan_for(model, spec)`` traces the model (``engine.fx_locality.LocalityPlan``, torch.fx) for DNA
inputs (one-hot or k-mer tokens, no covariates); ``predict_edits_local`` then evaluates a batch of
span edits of one reference sequence on the cone each edit touches: receptive-field windows
through convolutions, pooling, residual adds, concatenations, crops and elementwise ops, prefix
states of recurrent layers, and heads on the cached reference activations (see that module).
The reference's activations are cached per thread (one reference sequence at a time). Edits are
sorted by start (recurrent layers then recompute from the batch's first changed token) and run
in batches of ``LOCAL_BATCH_FACTOR`` x the spec's batch size (each edit costs a fraction of a
forward pass). A model that cannot be traced gets no plan (one warning; batched full forwards).

``local_split(model)`` describes the leading length-preserving convolutional prefix of an
``nn.Sequential`` and its context ``(left, right)`` (kept as a description of such models).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .fx_locality import LocalityPlan, Win, warn_once

LOCAL_BATCH_FACTOR = 8
"""Edits per local batch, as a multiple of the spec's batch size (an edit costs a fraction of a forward).

8 x 64 = 512 edits a call: in two interleaved A/B series (one thread, every substitution of 1 kb,
2026-12-04; ``python -m benchmarks.ab_settings batch``) against 16 the reference CNN ran 7-8 % faster,
the BPNet-like towers 7-26 %, the SpliceAI-like stack 33-34 %, the Basenji-like stack -5 % to +3 %;
4 was within a few per cent of 8 (the k-mer LSTM batches by ``batch_size`` alone). A GPU wants far larger calls: there pass a larger batch size (``--batch-size 4096``)."""

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


def plan_for(model, spec) -> tuple[LocalityPlan | None, tuple | None]:
    """Return ``(the LocalityPlan of model for spec's DNA edits, None)`` or ``(None, why)``.

    No plan (and no reason) for inputs other than one-hot / k-mer DNA and for specs with
    covariates; no plan with a reason ``(key, message)`` for models torch.fx cannot trace
    (TorchScript, data-dependent control flow): ``say_no_plan`` warns it once, at the first edits.

    Tracing patches ``torch.nn.Module.__call__`` process-wide while it runs, so it must not overlap
    forward passes in other threads: the Runtime traces while it is built (``get_runtime`` holds
    its build lock, so the threads of a worker asking for this model wait).
    """
    import torch

    if spec.input_kind not in ("onehot", "kmer") or spec.covariates:
        return None, None
    name = type(model).__name__
    if isinstance(model, torch.jit.ScriptModule):
        return None, ((name, "script"), f"interpretome: {name} is TorchScript and cannot be traced: edits run as "
                      f"batched full forward passes")
    try:
        return LocalityPlan(model), None
    except Exception as e:  # noqa: BLE001 - any tracing failure means: no plan, full forwards (said once)
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        return None, ((name, "trace"), f"interpretome: {name} cannot be traced by torch.fx ({type(e).__name__}: "
                      f"{msg}): edits run as batched full forward passes")


def say_no_plan(reason) -> None:
    """Warn once (per model class and reason) that edits of a model run as full forward passes."""
    if reason is not None:
        warn_once(*reason)


def reference_cache(rt, plan: LocalityPlan, ref: np.ndarray) -> dict:
    """Return the plan's node values for reference codes ``ref`` (L,), cached per thread on ``rt.thread_cache``."""
    key = (id(plan), ref.shape[0], hash(ref.tobytes()))
    cache = getattr(rt.thread_cache, "locality", None)
    if cache is None or cache[0] != key:
        cache = rt.thread_cache.locality = (key, plan.reference(rt.encode(ref[None, :])))
    return cache[1]


def _edited_windows(ref: np.ndarray, starts: np.ndarray, new: np.ndarray, wstart: np.ndarray, width: int) -> np.ndarray:
    """Return codes ``(E, width)``: ``ref`` at ``[wstart_e, wstart_e + width)`` with edit ``e`` written in."""
    pos = wstart[:, None] + np.arange(width)[None, :]
    codes = ref[pos]
    k = new.shape[1]
    rel = (starts - wstart)[:, None] + np.arange(k)[None, :]
    ok = (rel >= 0) & (rel < width)
    rows = np.broadcast_to(np.arange(len(starts))[:, None], rel.shape)
    codes[rows[ok], rel[ok]] = new[ok]
    return codes


def input_window(rt, cache: dict, plan: LocalityPlan, ref: np.ndarray, starts: np.ndarray, new: np.ndarray) -> Win:
    """Return the model input of edits ``[s, s + k) <- new`` as a ``Win`` over the reference's input.

    One-hot: the edited columns. k-mer tokens: every token whose k-mer overlaps an edit, re-encoded.
    """
    torch = rt.torch
    x_ref = cache[plan.input]
    dev = x_ref.device
    if rt.spec.input_kind == "onehot":
        return Win(rt.encode(new), torch.from_numpy(starts).to(dev), 2, x_ref)
    tok = rt.spec.kmer
    k, stride, kk = tok.k, tok.stride, new.shape[1]
    bos = 1 if tok.bos is not None else 0
    n_tok = (ref.shape[0] - k) // stride + 1
    lo = np.maximum(0, -((-(starts - k + 1)) // stride))
    hi = np.minimum(n_tok - 1, (starts + kk - 1) // stride)
    width = int(min(n_tok, max(1, (hi - lo + 1).max())))
    t0 = np.clip(lo, 0, n_tok - width)
    codes = _edited_windows(ref, starts, new, t0 * stride, (width - 1) * stride + k)
    plain = dataclasses.replace(tok, bos=None)
    ids = torch.from_numpy(plain.encode(codes, rt.kmer_table)).to(dev)
    return Win(ids, torch.from_numpy(t0 + bos).to(dev), 1, x_ref)


def predict_edits_local(rt, plan: LocalityPlan, ref: np.ndarray, starts: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Return head outputs ``(E, T[, L_out])`` of ``E`` edits of ``ref`` evaluated on their cones (module doc).

    ``ref`` (L,) uint8 codes; ``starts`` (E,) int64 span starts; ``new`` (E, k) uint8 codes. Error
    rows (non-finite outputs) are edit indices.
    """
    from .heads import outputs_of

    cache = reference_cache(rt, plan, ref)
    order = np.argsort(starts, kind="stable")
    bs = int(rt.spec.batch_size) * (1 if rt.spec.input_kind == "kmer" else LOCAL_BATCH_FACTOR)
    outs = []
    with outputs_of(rows=order):
        for i in range(0, len(order), bs):
            sel = order[i:i + bs]
            win = input_window(rt, cache, plan, ref, starts[sel], new[sel])
            outs.append(rt.output(plan.run(cache, win, len(sel)), row0=i))
    res = np.concatenate(outs)
    out = np.empty_like(res)
    out[order] = res
    return out
