"""Overlapping tiles at the cost of one pass: a convolutional trunk run once along the contig.

A model ``trunk -> global pool over length -> head`` (e.g. the reference CNN: convolutions and
ReLUs, ``AdaptiveMaxPool1d(1)``, ``Flatten``, ``Linear``; or a residual dilated tower whose counts
head is ``Linear(h.mean(dim=-1))``) is split by ``split_trunk`` from its ``torch.fx`` trace (the
op tables of ``engine.fx_locality``). The trunk must keep the length and be position-aligned with
the input: stride-1 zero-padded ``Conv1d`` whose padding keeps the length (int or ``'same'``),
pointwise modules / functions / methods, eval ``BatchNorm1d`` and dropout, residual adds and other
elementwise ops between trunk values and constants; its receptive field reaches ``left`` bases
upstream and ``right`` downstream of each output position. The pool is one global max or mean
over length (``AdaptiveMaxPool1d(1)`` / ``AdaptiveAvgPool1d(1)``, ``F.adaptive_*_pool1d(x, 1)``,
``amax`` / ``mean`` over the last dim); nothing after it may read the trunk.

``trunk_window_outputs`` then computes every window's pooled trunk without a per-window
forward: a window ``[i, i + W)`` run alone sees zeros past its ends, so its trunk values within
``left`` / ``right`` bases of its edges differ from those of the contig; the interior
``[i + a, i + b)`` (``a >= left``, ``b <= W - right``, multiples of a block of ``B`` bases) equals
the contig run's, computed once for all windows (in chunks with a halo of one receptive field),
reduced per block and combined per window by a sparse table (max) or prefix sums in float64
(mean); the two edge strips ``[0, a)`` and ``[b, W)`` are recomputed per window from inputs of
``a + right`` and ``W - b + left`` bases (their zero padding is the window's own). Values equal
per-window forwards up to float32 summation order (the convolutions run on other lengths).
"""

from __future__ import annotations

import math
import operator
import threading
from dataclasses import dataclass

import numpy as np

from .fx_locality import tables, warn_once

_PLANS: dict = {}
_LOCK = threading.Lock()


class NotSplittable(Exception):
    """The model is not ``trunk -> global pool -> head`` (the message says where)."""


@dataclass
class TrunkSplit:
    """A model split at its global pool (module doc).

    ``trunk``: ``(N, 4, L) -> (N, C, L)``; ``head``: pooled ``(N, C[, 1])`` -> the raw model output;
    ``pool``: ``"max"`` or ``"mean"``; ``keepdim``: whether the pooled value keeps a length dim of 1;
    ``left`` / ``right``: the trunk's receptive-field reach (bases).
    """

    trunk: object
    head: object
    pool: str
    keepdim: bool
    left: int
    right: int


def _conv_reach(m) -> tuple[int, int]:
    """Return ``(left, right)`` reach of a length-keeping stride-1 zero-padded ``Conv1d``; raise NotSplittable."""
    k, d = m.kernel_size[0], m.dilation[0]
    span = d * (k - 1)
    if m.stride[0] != 1 or m.padding_mode != "zeros":
        raise NotSplittable(f"Conv1d {m} has stride {m.stride[0]} / padding_mode {m.padding_mode!r}")
    if m.padding == "same":
        return span // 2, span - span // 2
    p = m.padding[0] if isinstance(m.padding, tuple) else int(m.padding)
    if 2 * p != span:
        raise NotSplittable(f"Conv1d {m} does not keep the length (padding {p}, dilated span {span})")
    return p, p


def _dim_of(node):
    """Return the ``dim`` and ``keepdim`` arguments of a reduction node."""
    args, kw = node.args, node.kwargs
    dim = kw.get("dim", args[1] if len(args) > 1 else None)
    keep = bool(kw.get("keepdim", args[2] if len(args) > 2 else False))
    return dim, keep


def _pool_kind(node, modules):
    """Return ``(kind, keepdim)`` when ``node`` is a global max / mean over the last of 3 dims, else None."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d)) and m.output_size in (1, (1,)):
            if isinstance(m, nn.AdaptiveMaxPool1d) and m.return_indices:
                return None
            return ("max" if isinstance(m, nn.AdaptiveMaxPool1d) else "mean"), True
        return None
    if node.op == "call_function" and node.target in (F.adaptive_max_pool1d, F.adaptive_avg_pool1d):
        size = node.kwargs.get("output_size", node.args[1] if len(node.args) > 1 else None)
        if size in (1, (1,)) and not node.kwargs.get("return_indices", False):
            return ("max" if node.target is F.adaptive_max_pool1d else "mean"), True
        return None
    red = None
    if node.op == "call_function" and node.target in (torch.amax, torch.mean):
        red = "max" if node.target is torch.amax else "mean"
    if node.op == "call_method" and node.target in ("amax", "mean"):
        red = "max" if node.target == "amax" else "mean"
    if red is None:
        return None
    dim, keep = _dim_of(node)
    if dim in (-1, 2, (-1,), (2,), [-1], [2]):
        return red, keep
    return None


def split_trunk(model) -> TrunkSplit:
    """Return the ``TrunkSplit`` of ``model`` (module doc); raise ``NotSplittable`` naming the op that prevents it.

    ``model``: a module, traced here with ``torch.fx.symbolic_trace`` — which patches
    ``torch.nn.Module.__call__`` process-wide, so never while other threads run forwards — or an
    ``fx.GraphModule`` already traced (a Runtime's ``locality.gm``, traced while it was built).
    """
    import torch.fx as fx
    import torch.nn as nn

    t = tables()
    if isinstance(model, fx.GraphModule):
        gm = model
    else:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 - any tracing failure means: no split
            raise NotSplittable(f"it cannot be traced ({type(e).__name__}: {str(e)[:120]})") from None
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    out_node = next(n for n in nodes if n.op == "output")
    first = out_node.args[0]
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    if isinstance(first, dict):
        first = next(iter(first.values()))
    if not isinstance(first, fx.Node):
        raise NotSplittable("its output is not one tensor")
    live, todo = set(), [first]
    while todo:
        n = todo.pop()
        if n not in live:
            live.add(n)
            todo.extend(n.all_input_nodes)
    places = [n for n in nodes if n.op == "placeholder"]
    if not places or any(p in live for p in places[1:]):
        raise NotSplittable("it takes more than one input")
    x = places[0]
    reach: dict = {x: (0, 0)}  # trunk nodes -> (left, right)
    const: set = set()
    pool = None
    head: set = set()

    def kind(a):
        if not isinstance(a, fx.Node):
            return "plain"
        if a in reach:
            return "trunk"
        if a in const:
            return "const"
        return "head"
    for n in nodes:
        if n not in live or n is x:
            continue
        ins = n.all_input_nodes
        kinds = {kind(a) for a in ins}
        if "trunk" not in kinds:
            if "head" in kinds or (pool is not None and any(a is pool for a in ins)):
                head.add(n)
            elif n.op == "get_attr" or not ins or kinds <= {"const", "plain"}:
                const.add(n)
            else:
                head.add(n)
            continue
        if pool is not None:
            raise NotSplittable(f"{n.name} reads the trunk besides the global pool")
        tr = [reach[a] for a in ins if a in reach]
        lr = (max(r[0] for r in tr), max(r[1] for r in tr))
        first_trunk = bool(n.args) and isinstance(n.args[0], fx.Node) and n.args[0] in reach
        pk = _pool_kind(n, modules)
        if pk is not None and len(tr) == 1 and first_trunk:
            pool, pool_kind, keepdim, pool_in = n, pk[0], pk[1], n.args[0]
            continue
        if n.op == "call_module":
            m = modules[n.target]
            if len(ins) != 1 or not first_trunk:
                raise NotSplittable(f"module {n.target} takes more than the trunk")
            if isinstance(m, nn.Conv1d):
                cl, cr = _conv_reach(m)
                reach[n] = (lr[0] + cl, lr[1] + cr)
                continue
            if isinstance(m, t["pointwise_mod"]) or (isinstance(m, (nn.BatchNorm1d, nn.Dropout, nn.Dropout1d))
                                                     and not m.training):
                reach[n] = lr
                continue
            raise NotSplittable(f"module {n.target} ({type(m).__name__}) is not a known length-keeping op")
        if n.op == "call_function":
            if n.target in t["unary_f"] and first_trunk and len(tr) == 1 and n.target is not _torch_where():
                reach[n] = lr
                continue
            if n.target in t["binary_f"] and n.target is not _torch_where() and len(n.args) == 2:
                if all(_elementwise_operand(a, reach, gm) for a in n.args):
                    reach[n] = lr
                    continue
        if n.op == "call_method":
            if n.target in t["unary_m"] and first_trunk and len(tr) == 1:
                reach[n] = lr
                continue
            if n.target in t["binary_m"] and len(n.args) == 2 and all(_elementwise_operand(a, reach, gm)
                                                                       for a in n.args):
                reach[n] = lr
                continue
        what = (f"reads its .{n.args[1]} (a crop or a profile head)" if n.target is getattr
                else "is not a known length-keeping op")
        raise NotSplittable(f"{n.op} {getattr(n.target, '__name__', n.target)} on the trunk {what}")
    if pool is None:
        raise NotSplittable("it has no global max / mean pool over length")
    if first in reach:
        raise NotSplittable("its output is the trunk itself (a profile)")
    left, right = reach[pool_in]
    return TrunkSplit(_subgraph(gm, x, [n for n in nodes if n in reach or n in const], pool_in),
                      _subgraph(gm, pool, [n for n in nodes if n in head or n in const], first),
                      pool_kind, keepdim, int(left), int(right))


def _torch_where():
    """Return ``torch.where`` (three operands: not an elementwise op of two trunk values here)."""
    import torch
    return torch.where


def _elementwise_operand(a, reach, gm) -> bool:
    """Return whether operand ``a`` of an elementwise op keeps trunk positions aligned (a trunk value or a scalar)."""
    import torch.fx as fx

    if not isinstance(a, fx.Node):
        return isinstance(a, (int, float, bool))
    if a in reach:
        return True
    if a.op == "get_attr":
        v = operator.attrgetter(a.target)(gm)
        return getattr(v, "dim", lambda: 0)() < 3  # no length axis of its own
    return False


def _subgraph(gm, inp, nodes, out):
    """Return a GraphModule taking ``inp``'s value as its one input and returning ``out``, made of ``nodes``."""
    import torch.fx as fx

    g = fx.Graph()
    env = {inp: g.placeholder("x")}
    for n in nodes:
        if n is inp or n.op == "placeholder":
            continue
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(env[out])
    return fx.GraphModule(gm, g)


def trunk_plan(rt):
    """Return the ``TrunkSplit`` of runtime ``rt``'s model (cached per spec token), or None with one warning.

    The split reads the graph the Runtime traced while it was built (``rt.locality.gm``): tracing
    here would patch module calls under the forwards of this worker's other threads.
    """
    token = rt.spec.token
    why = None
    with _LOCK:
        if token in _PLANS:
            return _PLANS[token]
        gm = getattr(rt.locality, "gm", None)
        if rt.spec.input_kind != "onehot" or rt.spec.covariates:
            plan, why = None, "it does not take one-hot DNA alone"
        elif gm is None:
            plan, why = None, "torch.fx cannot trace it"
        else:
            try:
                plan = split_trunk(gm)
            except NotSplittable as e:
                plan, why = None, str(e)
        _PLANS[token] = plan
    if plan is None:
        warn_once(("tiles-trunk", token),
                  f"interpretome: overlapping tiles of {type(rt.model).__name__} run one forward per window "
                  f"(its trunk cannot be shared between windows: {why}); results are exact, only slower")
    return plan


def block_size(split: TrunkSplit, window: int, stride: int) -> int | None:
    """Return the block ``B`` (a divisor of ``stride``) for windows ``window`` every ``stride``, or None when the
    shared trunk would not save work (windows overlapping less than half, or edges wider than the window)."""
    if 2 * stride > window:
        return None
    reach = max(split.left, split.right, 1)
    b = max(d for d in range(1, stride + 1) if stride % d == 0 and d <= reach)
    a = -(-split.left // b) * b
    hi = (window - split.right) // b * b
    if hi - a < b or (a + split.right) + (window - hi + split.left) > window // 2:
        return None
    return b


def _reduce_blocks(h, kind: str, b: int):
    """Return ``h`` (N, C, n b) reduced per block of ``b`` positions: (N, C, n) max (float32) or sum (float64)."""
    n, c, ln = h.shape
    h = h.reshape(n, c, ln // b, b)
    return h.amax(dim=-1) if kind == "max" else h.double().sum(dim=-1)


def _contig_blocks(rt, split, span, p0: int, p1: int, b: int, chunk: int):
    """Return the trunk of the contig over ``[p0, p1)`` (multiples of ``b`` apart) reduced per block: (C, n)."""
    import torch

    lft, rgt = split.left, split.right
    q = max(b, chunk // b * b)
    parts = []
    s = p0
    while s < p1:
        e = min(p1, s + 8 * q)  # 8 chunks a batch: activations under glibc's 32 MiB mmap threshold
        n_full = (e - s) // q
        if n_full:  # full chunks of q outputs as one batch (inputs overlap by the halo)
            x = np.lib.stride_tricks.sliding_window_view(span[s - lft:s + n_full * q + rgt], q + lft + rgt)[::q]
            h = split.trunk(rt.encode(np.ascontiguousarray(x)))[:, :, lft:lft + q]
            r = _reduce_blocks(h, split.pool, b)
            parts.append(r.permute(1, 0, 2).reshape(r.shape[1], -1))
        s0 = s + n_full * q
        if s0 < e:
            h = split.trunk(rt.encode(span[None, s0 - lft:e + rgt]))[:, :, lft:lft + e - s0]
            parts.append(_reduce_blocks(h, split.pool, b)[0])
        s = e
    return torch.cat(parts, dim=1)


def _range_reduce(blocks, starts, m: int, kind: str):
    """Return the reduction of ``blocks`` (C, n) over ``[k, k + m)`` for each ``k`` of ``starts``: (len(starts), C)."""
    import torch

    k = torch.from_numpy(np.asarray(starts, np.int64)).to(blocks.device)
    if kind == "mean":
        cs = torch.zeros((blocks.shape[0], blocks.shape[1] + 1), dtype=torch.float64, device=blocks.device)
        torch.cumsum(blocks, dim=1, out=cs[:, 1:])
        return (cs[:, k + m] - cs[:, k]).T
    level, width = blocks, 1
    while 2 * width <= m:  # sparse table: level[j] = max of blocks [j, j + width)
        level = torch.maximum(level[:, :-width], level[:, width:])
        width *= 2
    return torch.maximum(level[:, k], level[:, k + m - width]).T


def _edge_reduce(rt, split, span, idx, lo: int, hi: int, keep0: int, keep1: int):
    """Return the trunk of inputs ``span[i + lo : i + hi]`` for each ``i`` of ``idx``, positions ``[keep0, keep1)``
    of it reduced (max float32 or sum float64): (len(idx), C)."""
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(span, hi - lo)
    h = split.trunk(rt.encode(np.ascontiguousarray(win[np.asarray(idx) + lo])))[:, :, keep0:keep1]
    return h.amax(dim=-1) if split.pool == "max" else h.double().sum(dim=-1)


def trunk_window_outputs(rt, split: TrunkSplit, span: np.ndarray, idx: np.ndarray, window: int, b: int,
                         row0: int = 0, chunk: int = 8192) -> np.ndarray:
    """Return the model outputs ``(N, T)`` of the windows ``span[i:i + window]`` for ``i`` in ``idx`` (module doc).

    ``span`` (L,) uint8 base codes; ``idx`` (N,) window starts, increasing, all congruent modulo the
    block ``b`` (``block_size``); ``row0`` numbers the first window in a non-finite-output error.
    Equal to ``rt.predict`` of the windows up to float32 summation order.
    """
    import torch

    idx = np.asarray(idx, np.int64)
    a = -(-split.left // b) * b
    hi = (window - split.right) // b * b
    m = (hi - a) // b
    with torch.inference_mode():
        p0, p1 = int(idx[0]) + a, int(idx[-1]) + hi
        blocks = _contig_blocks(rt, split, span, p0, p1, b, chunk)
        inner = _range_reduce(blocks, (idx + a - p0) // b, m, split.pool)
        outs = []
        step = 1024
        for i in range(0, len(idx), step):
            sl = idx[i:i + step]
            lft = _edge_reduce(rt, split, span, sl, 0, a + split.right, 0, a)
            rgt = _edge_reduce(rt, split, span, sl, hi - split.left, window, split.left, split.left + window - hi)
            mid = inner[i:i + step]
            if split.pool == "max":
                pooled = torch.maximum(torch.maximum(lft, mid), rgt)
            else:
                pooled = ((lft + mid + rgt) / window).float()
            if split.keepdim:
                pooled = pooled[:, :, None]
            outs.append(rt.output(split.head(pooled.contiguous()), row0=row0 + i))
    return np.concatenate(outs)
