"""Edits at the locality bound for any traceable model: receptive-field cones and recurrent prefixes.

``LocalityPlan(model)`` traces the model with ``torch.fx.symbolic_trace`` and evaluates a batch of
``E`` edits of one reference sequence node by node, each node's value being one of

* ``SAME`` — equal to the reference for every edit (the cached reference value is used);
* ``Win`` — equal to the reference except on a window of ``W`` positions along a length axis,
  starting at a per-edit offset (``data`` holds the ``(E, ..., W, ...)`` window);
* a full tensor of batch ``E`` (or a plain value: shapes, ints, parameters).

Windows propagate through the ops whose output position depends on a bounded input interval:
``Conv1d`` / ``F.conv1d`` (kernel, dilation, padding incl. 'same', stride, groups), ``MaxPool1d`` /
``AvgPool1d`` (stride), ``F.pad`` along length, crops (slices along length), concatenation along
channels, residual adds and other broadcasting elementwise ops, activations, eval ``BatchNorm1d``,
softmax over channels, ``Embedding`` and per-position ``Linear`` / ``LayerNorm``, transposes.
For each such node only the output interval an edit can change is recomputed, from the window
of its input materialised over the cached reference (zero padding outside the sequence exactly as
the layer pads); a stride-1, ungrouped convolution instead adds the convolved change of its input
to the reference's output (one matrix product per tap over the changed columns: ``W k`` column
products per edit instead of ``(W + span) k``), unless the reference's input or output there is
not finite. Global max / mean / sum over length take the reference's running maxima /
prefix sums outside the window (no full copy). Unidirectional, ``batch_first`` ``nn.LSTM`` /
``nn.GRU`` layers reuse the reference's per-layer hidden (and cell) state before the first
changed token and recompute from there (prefix-state reuse). Any other op receiving a window
gets its inputs materialised in full (``E`` copies of the reference with the window written in)
and runs as it is — exact, only slower; heads (flatten, a ``Linear`` over length, reshapes) are
expected there; an op outside the known lists is named in one warning per model class and op.
A model that cannot be traced is not given a plan (``receptive_field.plan_for``; one warning at
its first edits): the Runtime then runs batched full forward passes.

Values equal full forward passes up to float32 summation order (the convolutions run on shorter
inputs or on the change alone; cell states of recurrent layers are stepped once per reference).
"""

from __future__ import annotations

import logging
import operator
import threading
import warnings
from dataclasses import dataclass
from typing import Any


LOG = logging.getLogger("interpretome.locality")
_WARNED: set = set()
_WARN_LOCK = threading.Lock()


def warn_once(key, message: str) -> None:
    """Emit ``message`` as a ``RuntimeWarning`` (and a log line) once per ``key`` in this process."""
    with _WARN_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    LOG.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class _Same:
    def __repr__(self):
        return "SAME"


SAME = _Same()


@dataclass
class Win:
    """A tensor equal to ``ref`` except on ``[off, off + W)`` along ``axis`` (``data`` holds that window)."""

    data: Any  # (E, ..., W, ...)
    off: Any  # (E,) int64 tensor, 0 <= off <= length - W
    axis: int
    ref: Any  # (1, ..., length, ...) the reference value

    @property
    def width(self) -> int:
        return int(self.data.shape[self.axis])

    @property
    def length(self) -> int:
        return int(self.ref.shape[self.axis])

    @property
    def n(self) -> int:
        return int(self.data.shape[0])


DELTA_MIN_SAVING = 1.5
"""A stride-1 convolution runs on the change alone when that saves this factor of column products ..."""

DELTA_MIN_CHANNELS = 64 * 64
"""... and its ``C_in x C_out`` is at least this (narrower GEMMs run far below the convolution's rate:
interleaved A/B, zoo.basenji_like at 32 channels 6,499 edits/s as a cone, 5,123 as a change), or a single
input column changed (the one-hot column of a base: either form costs little there)."""


def _delta_pays(width: int, span: int, lout: int, cin: int, cout: int) -> bool:
    """Return whether a window of ``width`` columns into a ``cin -> cout`` conv of reach ``span`` is cheaper as a change."""
    if width + span > lout or width + span < DELTA_MIN_SAVING * width:
        return False
    return cin * cout >= DELTA_MIN_CHANNELS or width == 1


def _torch():
    import torch

    return torch


def gather_ref(ref, axis: int, start, width: int, fill=0.0):
    """Return ``(E, ..., width, ...)``: ``ref`` (1, ..., L, ...) at ``[start_e, start_e + width)`` along ``axis``, ``fill`` outside."""
    import torch.nn.functional as F

    L = ref.shape[axis]
    r = ref[0].movedim(axis - 1, -1)  # (*rest, L)
    lo = min(0, int(start.min()))
    hi = max(L, int(start.max()) + width)
    if lo < 0 or hi > L:
        r = F.pad(r.unsqueeze(0) if r.dim() == 1 else r, (-lo, hi - L), value=fill)
        r = r[0] if ref.dim() == 2 else r
    view = r.unfold(-1, width, 1).movedim(-2, 0)  # (L' - width + 1, *rest, width): the sliding windows
    return view.index_select(0, start - lo).movedim(-1, axis)  # (E, *rest, width) -> width at ``axis``


def materialize(w: Win, start, width: int, fill=0.0):
    """Return the true values ``(E, ..., width, ...)`` of ``w`` on ``[start_e, start_e + width)``, ``fill`` outside ``[0, L)``."""
    torch = _torch()
    if width == w.width and bool((start == w.off).all()):
        return w.data
    rel0 = w.off - start
    if bool((rel0 >= 0).all()) and bool((rel0 + w.width <= width).all()):  # the range holds every window
        if bool((start == start[0]).all()) and int(start[0]) >= 0 and int(start[0]) + width <= w.length:
            s0 = int(start[0])
            base = w.ref.narrow(w.axis, s0, width).expand(w.n, *w.ref.shape[1:w.axis], width, *w.ref.shape[w.axis + 1:])
            base = base.movedim(w.axis, -1).clone()
        else:
            base = gather_ref(w.ref, w.axis, start, width, fill).movedim(w.axis, -1).contiguous()
        data = w.data.movedim(w.axis, -1)
        pos = rel0[:, None] + torch.arange(w.width, device=start.device)[None, :]
        shape = (pos.shape[0],) + (1,) * (data.dim() - 2) + (w.width,)
        base.scatter_(-1, pos.view(shape).expand_as(data), data)
        return base.movedim(-1, w.axis)
    vals = gather_ref(w.ref, w.axis, start, width, fill)
    rel = start[:, None] - w.off[:, None] + torch.arange(width, device=start.device)[None, :]  # (E, width)
    inside = (rel >= 0) & (rel < w.width)
    if not bool(inside.any()):
        return vals
    data = w.data.movedim(w.axis, -1)  # (E, *rest, W)
    shape = (rel.shape[0],) + (1,) * (data.dim() - 2) + (width,)
    picked = torch.gather(data, -1, rel.clamp(0, w.width - 1).view(shape).expand(*data.shape[:-1], width))
    return torch.where(inside.view(shape), picked, vals.movedim(w.axis, -1)).movedim(-1, w.axis)


def to_full(w: Win):
    """Return the full ``(E, ...)`` tensor of ``w``: copies of the reference with each window written in."""
    torch = _torch()
    r = w.ref.movedim(w.axis, -1)
    full = r.expand(w.n, *r.shape[1:]).clone()
    data = w.data.movedim(w.axis, -1)
    pos = w.off[:, None] + torch.arange(w.width, device=w.off.device)[None, :]
    shape = (pos.shape[0],) + (1,) * (data.dim() - 2) + (w.width,)
    full.scatter_(-1, pos.view(shape).expand_as(data), data)
    return full.movedim(-1, w.axis)


def union(wins: list[Win]):
    """Return ``(start (E,), width)`` of one window per edit covering every window of ``wins`` (same axis, length)."""
    torch = _torch()
    lo = torch.stack([w.off for w in wins]).min(0).values
    hi = torch.stack([w.off + w.width for w in wins]).max(0).values
    L = wins[0].length
    width = min(L, int((hi - lo).max()))
    return lo.clamp(0, L - width), width


# --- op tables ---------------------------------------------------------------------------------------

def _op_tables():
    torch = _torch()
    import torch.nn as nn
    import torch.nn.functional as F

    unary_f = {torch.relu, F.relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.exp, torch.log, torch.log1p,
               torch.abs, torch.square, torch.sqrt, torch.neg, operator.neg, F.gelu, F.silu, F.elu, F.leaky_relu,
               F.softplus, F.relu6, F.hardtanh, F.mish, torch.clamp, torch.nn.functional.celu, torch.erf,
               torch.expm1, torch.sin, torch.cos, F.softsign, F.logsigmoid}
    unary_m = {"relu", "sigmoid", "tanh", "exp", "log", "log1p", "abs", "neg", "clamp", "clamp_min", "clamp_max",
               "contiguous", "float", "double", "clone", "square", "sqrt", "detach", "to", "type_as", "exp_", "relu_",
               "sigmoid_", "tanh_", "expm1", "erf"}
    binary_f = {operator.add, operator.sub, operator.mul, operator.truediv, operator.pow, torch.add, torch.sub,
                torch.mul, torch.div, torch.maximum, torch.minimum, torch.true_divide, torch.pow, operator.iadd,
                operator.imul, torch.where}
    binary_m = {"add", "sub", "mul", "div", "maximum", "minimum", "pow", "add_", "mul_", "sub_", "div_", "true_divide"}
    pointwise_mod = (nn.ReLU, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Softplus, nn.Mish,
                     nn.Identity, nn.ReLU6, nn.Hardtanh, nn.CELU, nn.Softsign, nn.LogSigmoid, nn.Hardswish,
                     nn.Hardsigmoid, nn.SELU)
    # ops that are expected to see a window materialised in full (heads): no warning
    head_f = {torch.flatten, F.linear, torch.matmul, operator.matmul, torch.bmm, F.adaptive_avg_pool1d,
              F.adaptive_max_pool1d, torch.mean, torch.sum, torch.amax, torch.max, torch.min, torch.amin,
              torch.logsumexp, torch.cat, torch.stack, torch.squeeze, torch.unsqueeze, torch.reshape,
              torch.einsum, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, operator.getitem,
              torch.transpose, torch.permute}
    head_m = {"view", "reshape", "flatten", "mean", "sum", "max", "min", "amax", "amin", "squeeze", "unsqueeze",
              "permute", "transpose", "softmax", "log_softmax", "logsumexp", "matmul", "expand", "repeat",
              "__getitem__", "size", "dim", "std", "var", "norm"}
    head_mod = (nn.Flatten, nn.Linear, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.Softmax, nn.LogSoftmax,
                nn.Unflatten, nn.LayerNorm, nn.LSTM, nn.GRU, nn.Bilinear)
    return dict(unary_f=unary_f, unary_m=unary_m, binary_f=binary_f, binary_m=binary_m, pointwise_mod=pointwise_mod,
                head_f=head_f, head_m=head_m, head_mod=head_mod)


_TABLES = None


def tables():
    global _TABLES
    if _TABLES is None:
        _TABLES = _op_tables()
    return _TABLES


def _op_name(node) -> str:
    if node.op == "call_module":
        return f"module {node.target} ({type(node.graph.owning_module.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"function {getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', node.target)}"


# --- the plan ----------------------------------------------------------------------------------------

class LocalityPlan:
    """A traced model whose edits are evaluated on the cone they touch (module doc).

    Parameters
    ----------
    model : torch.nn.Module
        The model (eval mode); traced with ``torch.fx.symbolic_trace``. Raises whatever tracing
        raises (``plan_for`` turns that into a warning and no plan).
    """

    def __init__(self, model):
        import torch.fx as fx

        self.model = model
        self.name = type(model).__name__
        self.gm = fx.symbolic_trace(model)
        self.nodes = list(self.gm.graph.nodes)
        self.modules = dict(self.gm.named_modules())
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if not placeholders:
            raise TypeError("the traced model has no input")
        self.input = placeholders[0]
        self.extra_inputs = placeholders[1:]
        dynamic = {self.input}
        for n in self.nodes:
            if n is not self.input and any(a in dynamic for a in n.all_input_nodes):
                dynamic.add(n)
        self.dynamic = dynamic
        self._layers: dict = {}  # recurrent node -> single-layer modules
        self._taps: dict = {}  # convolution node -> (weight, its taps (C_in, C_out) each)
        self.full_nodes: set[str] = set()  # nodes that received a window and ran in full (heads, unknown ops)

    # reference ------------------------------------------------------------------------------------
    def reference(self, x) -> dict:
        """Return every node's value for the reference input ``x`` (batch 1), and a dict for derived caches."""
        import torch.fx as fx

        env: dict = {}

        class Recorder(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                env[n] = out
                return out

        torch = _torch()
        with torch.inference_mode():
            Recorder(self.gm).run(x)  # further inputs take their defaults
        env["__derived__"] = {}
        return env

    # evaluation -----------------------------------------------------------------------------------
    def run(self, cache: dict, inp: Win, n_edit: int):
        """Return the model output for ``n_edit`` edits whose input differs from the reference as ``inp``."""
        torch = _torch()
        env: dict = {}
        with torch.inference_mode():
            for node in self.nodes:
                if node.op == "placeholder":
                    env[node] = inp if node is self.input else cache[node]
                    continue
                if node.op == "output":
                    return self._output(node.args[0], env, cache, n_edit)
                if node not in self.dynamic:
                    env[node] = cache[node]
                    continue
                env[node] = self._eval(node, env, cache, n_edit)
        raise RuntimeError("traced graph has no output")

    def _output(self, arg, env, cache, n):
        import torch.fx as fx

        def conv(a):
            if isinstance(a, fx.Node):
                return self._full(env[a], cache[a], n)
            return a
        first = arg
        while isinstance(first, (tuple, list)) and first:
            first = first[0]
        if isinstance(arg, (tuple, list)):  # interpretome reads the first output: materialise that one only
            return conv(first)
        if isinstance(arg, dict):
            return conv(next(iter(arg.values())))
        return conv(arg)

    def _full(self, v, refv, n):
        """Return the full value (batch ``n``) of node value ``v`` whose reference value is ``refv``."""
        torch = _torch()
        if v is SAME:
            if isinstance(refv, torch.Tensor) and refv.dim() > 0:
                return refv.expand(n, *refv.shape[1:])
            if isinstance(refv, tuple):
                return tuple(self._full(SAME, r, n) for r in refv)
            return refv
        if isinstance(v, Win):
            return to_full(v)
        if isinstance(v, tuple) and not isinstance(v, torch.Size):
            return tuple(self._full(a, r, n) for a, r in zip(v, refv)) if isinstance(refv, tuple) else v
        return v

    def _eval(self, node, env, cache, n):
        import torch.fx as fx

        torch = _torch()
        args, kwargs = node.args, node.kwargs
        shape = self._virtual_shape(node, env, cache, n)
        if shape is not None:
            return shape
        if node.op == "call_function" and node.target is getattr and args[1] in ("values", "indices"):
            v = env[args[0]]
            if type(v) is tuple:  # a max over length computed here: (values, None)
                return v[0 if args[1] == "values" else 1]

        def resolve(a):  # plain reference values (shapes, ints) stand for themselves
            v = env[a]
            return cache[a] if v is SAME and not _holds_tensor(cache[a]) else v
        vals = fx.node.map_arg((args, kwargs), resolve)
        # plain arguments that differ from the reference's (a batch size read from a shape) force a full evaluation
        flat = []
        fx.node.map_arg((args, kwargs), lambda a: flat.append(a))
        kinds = [env[a] for a in flat]
        if all(v is SAME or not _is_dyn_value(v) for v in kinds):
            same_plain = all(v is SAME or a not in self.dynamic or _plain_equal(v, cache[a]) for a, v in zip(flat, kinds))
            if same_plain:
                return SAME
        if any(isinstance(v, Win) or _has_win(v) for v in kinds):
            out = self._local(node, vals[0], vals[1], env, cache, n)
            if out is not NotImplemented:
                return out
            self.full_nodes.add(node.name)
            if not self._is_head(node):
                warn_once((self.name, _op_name(node)),
                          f"interpretome: edits of {self.name} are recomputed in full from {_op_name(node)} on "
                          f"(locality is not known for this op); results are exact, only slower")
        fa, fk = fx.node.map_arg((args, kwargs), lambda a: self._full(env[a], cache[a], n))
        return self._call(node, fa, fk)

    def _virtual_shape(self, node, env, cache, n):
        """Return the shape (batch ``n``) a ``.shape`` / ``.size()`` / ``.dim()`` node reads of a window or reference value."""
        torch = _torch()
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            what = "shape"
        elif node.op == "call_method" and node.target in ("size", "dim"):
            what = node.target
        else:
            return None
        src = node.args[0]
        v = env[src]
        if not (v is SAME or isinstance(v, Win)) or not isinstance(cache[src], torch.Tensor):
            return None
        shape = torch.Size((n,) + tuple(cache[src].shape[1:]))
        if what == "dim":
            return len(shape)
        if what == "size" and (len(node.args) > 1 or "dim" in node.kwargs):
            d = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
            return shape[d]
        return shape

    def _call(self, node, args, kwargs):
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def _is_head(self, node) -> bool:
        t = tables()
        if node.op == "call_module":
            return isinstance(self.modules[node.target], t["head_mod"])
        if node.op == "call_method":
            return node.target in t["head_m"]
        return node.target in t["head_f"]

    # the local rules ------------------------------------------------------------------------------
    def _local(self, node, args, kwargs, env, cache, n):
        """Return the value of ``node`` computed on windows, or NotImplemented (then it runs in full)."""
        torch = _torch()
        import torch.nn as nn
        import torch.nn.functional as F

        t = tables()
        ref_out = cache[node]
        if node.op == "call_module":
            m = self.modules[node.target]
            x = args[0] if args else None
            if isinstance(m, nn.Conv1d) and isinstance(x, Win) and len(args) == 1 and not kwargs:
                if m.padding_mode != "zeros":
                    return NotImplemented
                return self._conv(node, x, m.weight, m.bias, m.stride[0], m.padding, m.dilation[0], m.groups, cache)
            if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)) and isinstance(x, Win) and len(args) == 1:
                return self._pool(m, x, ref_out)
            if isinstance(m, t["pointwise_mod"]) and isinstance(x, Win) and len(args) == 1:
                return Win(m(x.data), x.off, x.axis, ref_out)
            if isinstance(m, nn.PReLU) and isinstance(x, Win) and (m.num_parameters == 1 or x.axis != 1):
                return Win(m(x.data), x.off, x.axis, ref_out)
            if isinstance(m, (nn.Dropout, nn.Dropout1d)) and isinstance(x, Win) and not m.training:
                return Win(x.data, x.off, x.axis, ref_out)
            if isinstance(m, nn.BatchNorm1d) and isinstance(x, Win) and not m.training and x.data.dim() == 3 and x.axis == 2:
                return Win(m(x.data), x.off, x.axis, ref_out)
            if isinstance(m, (nn.Softmax, nn.LogSoftmax)) and isinstance(x, Win):
                d = (m.dim if m.dim is not None else 1) % x.data.dim()
                if d not in (0, x.axis):
                    return Win(m(x.data), x.off, x.axis, ref_out)
                return NotImplemented
            if isinstance(m, nn.Embedding) and isinstance(x, Win) and len(args) == 1:
                return Win(m(x.data), x.off, x.axis, ref_out)
            if isinstance(m, nn.Linear) and isinstance(x, Win) and x.axis != x.data.dim() - 1:
                return Win(m(x.data), x.off, x.axis, ref_out)
            if isinstance(m, nn.LayerNorm) and isinstance(x, Win) and x.axis < x.data.dim() - len(m.normalized_shape):
                return Win(m(x.data), x.off, x.axis, ref_out)
            if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d)) and isinstance(x, Win):
                if m.output_size in (1, (1,)) and x.axis == x.data.dim() - 1 and not getattr(m, "return_indices", False):
                    kind = "max" if isinstance(m, nn.AdaptiveMaxPool1d) else "mean"
                    return self._reduce(node.args[0], x, kind, True, cache, n)
                return NotImplemented
            if isinstance(m, (nn.LSTM, nn.GRU)) and isinstance(x, Win):
                return self._recurrent(node, m, x, args[1] if len(args) > 1 else kwargs.get("hx"), cache, n)
            return NotImplemented
        if node.op == "call_method":
            name = node.target
            x = args[0]
            if name in t["unary_m"] and isinstance(x, Win) and not any(_is_dyn_value(a) for a in args[1:]):
                return Win(getattr(x.data, name)(*args[1:], **kwargs), x.off, x.axis, ref_out)
            if name in t["binary_m"]:
                return self._pointwise(node, lambda *a: getattr(a[0], name)(*a[1:], **kwargs), list(args), cache, n)
            if name in ("softmax", "log_softmax") and isinstance(x, Win):
                d = _dim_arg(args[1:], kwargs)
                if d is not None and d % x.data.dim() not in (0, x.axis):
                    return Win(getattr(x.data, name)(*args[1:], **kwargs), x.off, x.axis, ref_out)
                return NotImplemented
            if name in ("transpose", "permute", "unsqueeze", "squeeze"):
                return self._layout(name, x, args[1:], kwargs, ref_out)
            if name in ("sum", "mean", "amax", "max"):
                return self._reduction_call(node, name, x, args[1:], kwargs, cache, n)
            if name == "__getitem__":
                return self._getitem(node, x, args[1], ref_out)
            return NotImplemented
        f = node.target
        x = args[0] if args else None
        if f is getattr and isinstance(x, Win) and args[1] in ("dtype", "device"):
            return getattr(x.data, args[1])
        if f is getattr and isinstance(x, tuple) and args[1] in ("values", "indices"):
            return x[0 if args[1] == "values" else 1]
        if f is operator.getitem:
            if isinstance(x, tuple):
                return x[args[1]]
            if isinstance(x, Win):
                return self._getitem(node, x, args[1], ref_out)
            return NotImplemented
        if f in t["unary_f"] and isinstance(x, Win) and not any(_is_dyn_value(a) for a in list(args[1:]) + list(kwargs.values())):
            return Win(f(x.data, *args[1:], **kwargs), x.off, x.axis, ref_out)
        if f in (F.dropout, F.dropout1d) and isinstance(x, Win):
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            return NotImplemented if training else Win(x.data, x.off, x.axis, ref_out)
        if f in t["binary_f"]:
            return self._pointwise(node, lambda *a: f(*a, **kwargs), list(args), cache, n)
        if f is F.conv1d and isinstance(x, Win) and not _is_dyn_value(args[1]):
            p = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                      dict(bias=None, stride=1, padding=0, dilation=1, groups=1))
            if _is_dyn_value(p["bias"]):
                return NotImplemented
            return self._conv(node, x, p["weight"], p["bias"], _one(p["stride"]), p["padding"] if isinstance(p["padding"], str)
                              else (_one(p["padding"]),), _one(p["dilation"]), p["groups"], cache)
        if f in (F.max_pool1d, F.avg_pool1d, torch.max_pool1d, torch.avg_pool1d) and isinstance(x, Win):
            return self._pool_f(f, args, kwargs, x, ref_out)
        if f is F.pad and isinstance(x, Win):
            p = _bind(args, kwargs, ("input", "pad", "mode", "value"), dict(mode="constant", value=None))
            pad = list(p["pad"])
            if (p["mode"] != "constant" or (p["value"] not in (None, 0, 0.0)) or len(pad) != 2 or min(pad) < 0
                    or x.axis != x.data.dim() - 1):
                return NotImplemented
            return Win(x.data, x.off + pad[0], x.axis, ref_out)
        if f in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax) and isinstance(x, Win):
            d = _dim_arg(args[1:], kwargs)
            if d is not None and d % x.data.dim() not in (0, x.axis):
                return Win(f(x.data, *args[1:], **kwargs), x.off, x.axis, ref_out)
            return NotImplemented
        if f is torch.cat:
            return self._cat(node, args, kwargs, cache, n)
        if f in (torch.transpose, torch.permute, torch.unsqueeze, torch.squeeze):
            return self._layout(f.__name__, x, args[1:], kwargs, ref_out)
        if f in (torch.sum, torch.mean, torch.amax, torch.max):
            return self._reduction_call(node, f.__name__, x, args[1:], kwargs, cache, n)
        if f in (F.adaptive_max_pool1d, F.adaptive_avg_pool1d) and isinstance(x, Win):
            size = args[1] if len(args) > 1 else kwargs.get("output_size")
            if size in (1, (1,)) and x.axis == x.data.dim() - 1 and not kwargs.get("return_indices", False):
                return self._reduce(node.args[0], x, "max" if f is F.adaptive_max_pool1d else "mean", True, cache, n)
            return NotImplemented
        return NotImplemented

    # convolution and pooling ---------------------------------------------------------------------
    def _interval(self, x: Win, k: int, s: int, pl: int, d: int, lout: int):
        """Return ``(output start (E,), width, input start (E,), input width)`` of the outputs ``x``'s windows change."""
        torch = _torch()
        span = d * (k - 1)
        lo = -torch.div(-(x.off - span + pl), s, rounding_mode="floor")  # ceil
        hi = torch.div(x.off + x.width - 1 + pl, s, rounding_mode="floor")
        lo, hi = lo.clamp(min=0), hi.clamp(max=lout - 1)
        width = int((hi - lo + 1).max())
        if width <= 0:
            return None
        width = min(width, lout)
        start = lo.clamp(0, lout - width)
        return start, width, start * s - pl, (width - 1) * s + span + 1

    def _conv(self, node, x: Win, weight, bias, stride, padding, dilation, groups, cache):
        import torch.nn.functional as F

        ref_out = cache[node]
        if x.axis != 2 or x.data.dim() != 3:
            return NotImplemented
        k = weight.shape[-1]
        if isinstance(padding, str):
            if padding == "valid":
                pl = 0
            elif padding == "same":
                pl = dilation * (k - 1) // 2
            else:
                return NotImplemented
        else:
            pl = int(padding[0])
        if (stride == 1 and groups == 1 and _delta_pays(x.width, dilation * (k - 1), ref_out.shape[-1], weight.shape[1], weight.shape[0])
                and self._finite(node.args[0], x.ref, cache) and self._finite(node, ref_out, cache)):
            return self._conv_delta(node, x, weight, bias, pl, dilation, ref_out, cache)
        iv = self._interval(x, k, stride, pl, dilation, ref_out.shape[-1])
        if iv is None:
            return SAME
        start, width, istart, iwidth = iv
        inp = materialize(x, istart, iwidth, 0.0)
        return Win(F.conv1d(inp, weight, bias, stride, 0, dilation, groups), start, 2, ref_out)

    @staticmethod
    def _finite(src, ref, cache) -> bool:
        """Return whether ``ref``, node ``src``'s reference value, is finite everywhere (cached per reference)."""
        derived = cache["__derived__"]
        key = ("finite", src)
        if key not in derived:
            derived[key] = bool(_torch().isfinite(ref).all())
        return derived[key]

    @staticmethod
    def _positions_major(src, ref, cache):
        """Return ``(L, C)`` contiguous: ``ref`` (1, C, L), node ``src``'s reference value, positions first (cached).

        Keyed by the node, not by the tensor's ``id``: a window's ``ref`` can be a view made afresh per batch,
        whose ``id`` a later, different tensor may take."""
        derived = cache["__derived__"]
        key = ("pm", src)
        if key not in derived:
            derived[key] = ref[0].t().contiguous()
        return derived[key]

    def _conv_delta(self, node, x: Win, weight, bias, pl: int, dilation: int, ref_out, cache):
        """Return the window of a stride-1 ``Conv1d`` as the reference output plus the convolved change.

        The convolution is linear: an edit changes output ``q`` by ``sum_t w[:, :, t] @ (x - x_ref)[q - pl +
        t dilation]``, so each tap is one matrix product of the ``W`` changed input columns of every edit
        (``(W E, C_in) @ (C_in, C_out)``) added into the output window of ``W + dilation (k - 1)`` columns,
        held positions-major ``(W_out, E, C_out)`` so that every tap's target is one contiguous slice. That is
        ``W k`` column products per edit where recomputing the output window from its inputs costs
        ``(W + span) k``; the reference output already holds the bias. Values equal the direct convolution
        up to float32 summation order.
        """
        torch = _torch()
        import torch.nn.functional as F

        n, _, width = x.data.shape
        k = weight.shape[-1]
        span = dilation * (k - 1)
        lout = ref_out.shape[-1]
        wout = width + span
        taps = self._taps.get(node.name)
        if taps is None or taps[0] is not weight:
            taps = self._taps[node.name] = (weight, [weight[:, :, t].t().contiguous() for t in range(k)])
        taps = taps[1]
        dev = x.off.device
        pos_in = (x.off[None, :] + torch.arange(width, device=dev)[:, None]).reshape(-1)  # (W E,) positions-major
        ref_in = self._positions_major(node.args[0], x.ref, cache).index_select(0, pos_in)
        delta = x.data.permute(2, 0, 1).reshape(width * n, -1) - ref_in  # (W E, C_in)
        start = x.off + pl - span  # (E,) the first output column an edit can change, possibly outside [0, lout)
        first = start.clamp(0, lout - wout)
        pos_out = (first[None, :] + torch.arange(wout, device=dev)[:, None]).reshape(-1)
        out = self._positions_major(node, ref_out, cache).index_select(0, pos_out).view(wout, n, -1)  # (W_out, E, C_out)
        for t, w_t in enumerate(taps):
            a = span - t * dilation
            out[a:a + width].view(width * n, -1).addmm_(delta, w_t)
        edge = torch.nonzero(first != start).flatten()
        if len(edge):  # windows clamped at an end of the sequence: those edits' columns, recomputed directly
            sub = Win(x.data.index_select(0, edge), x.off.index_select(0, edge), 2, x.ref)
            s0 = first.index_select(0, edge)
            inp = materialize(sub, s0 - pl, wout + span, 0.0)
            out[:, edge] = F.conv1d(inp, weight, bias, 1, 0, dilation).permute(2, 0, 1)
        return Win(out.permute(1, 2, 0), first, 2, ref_out)  # (E, C_out, W_out), positions-major in memory

    def _pool(self, m, x: Win, ref_out):
        import torch.nn as nn
        import torch.nn.functional as F

        k, s, p = _one(m.kernel_size), _one(m.stride if m.stride is not None else m.kernel_size), _one(m.padding)
        if m.ceil_mode or x.axis != x.data.dim() - 1:
            return NotImplemented
        if isinstance(m, nn.MaxPool1d):
            if m.return_indices:
                return NotImplemented
            d = _one(m.dilation)
            return self._pool_run(x, k, s, p, d, float("-inf"), lambda t: F.max_pool1d(t, k, s, 0, d), ref_out)
        if p and not m.count_include_pad:
            return NotImplemented
        return self._pool_run(x, k, s, p, 1, 0.0, lambda t: F.avg_pool1d(t, k, s, 0), ref_out)

    def _pool_f(self, f, args, kwargs, x, ref_out):
        import torch.nn.functional as F

        torch = _torch()
        if f in (F.max_pool1d, torch.max_pool1d):
            p = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                      dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False))
            if p["ceil_mode"] or p["return_indices"]:
                return NotImplemented
            k = _one(p["kernel_size"])
            s = _one(p["stride"]) if p["stride"] not in (None, [], ()) else k
            d = _one(p["dilation"])
            return self._pool_run(x, k, s, _one(p["padding"]), d, float("-inf"), lambda t: F.max_pool1d(t, k, s, 0, d), ref_out)
        p = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
                  dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True))
        k = _one(p["kernel_size"])
        s = _one(p["stride"]) if p["stride"] not in (None, [], ()) else k
        if p["ceil_mode"] or (_one(p["padding"]) and not p["count_include_pad"]):
            return NotImplemented
        return self._pool_run(x, k, s, _one(p["padding"]), 1, 0.0, lambda t: F.avg_pool1d(t, k, s, 0), ref_out)

    def _pool_run(self, x, k, s, p, d, fill, fn, ref_out):
        if x.axis != x.data.dim() - 1 or x.data.dim() not in (2, 3):
            return NotImplemented
        iv = self._interval(x, k, s, p, d, ref_out.shape[-1])
        if iv is None:
            return SAME
        start, width, istart, iwidth = iv
        return Win(fn(materialize(x, istart, iwidth, fill)), start, x.axis, ref_out)

    # elementwise, concatenation, layout ----------------------------------------------------------
    def _pointwise(self, node, fn, args, cache, n):
        """Broadcasting elementwise op of windows, reference values and constants."""
        torch = _torch()
        wins = [a for a in args if isinstance(a, Win)]
        if not wins or any(_is_dyn_value(a) and not isinstance(a, Win) and a is not SAME for a in args):
            return NotImplemented
        ref_out = cache[node]
        if not isinstance(ref_out, torch.Tensor):
            return NotImplemented
        nd = ref_out.dim()
        w0 = wins[0]
        axis = w0.axis + (nd - w0.data.dim())
        L = ref_out.shape[axis]
        if any(w.axis + (nd - w.data.dim()) != axis or w.length != L for w in wins):
            return NotImplemented
        start, width = (w0.off, w0.width) if len(wins) == 1 else union(wins)
        out_args = []
        for a, node_arg in zip(args, node.args):
            if isinstance(a, Win):
                out_args.append(materialize(a, start, width))
            elif a is SAME or isinstance(a, torch.Tensor):
                if a is not SAME and isinstance(node_arg, fx_Node()) and node_arg in self.dynamic:
                    return NotImplemented  # a full per-edit tensor: the op runs in full
                r = cache[node_arg] if a is SAME else a
                if not isinstance(r, torch.Tensor):
                    out_args.append(r)
                    continue
                ax = axis - (nd - r.dim())
                if ax < 0 or r.shape[ax] == 1:
                    out_args.append(r)
                elif r.shape[ax] == L and (ax > 0 or r.dim() == 1):
                    if r.dim() == nd:
                        out_args.append(gather_ref(r, ax, start, width))
                    else:  # a lower-rank constant along length: broadcast it over the edits after gathering
                        r1 = r.reshape((1,) * (nd - r.dim()) + tuple(r.shape))
                        out_args.append(gather_ref(r1, axis, start, width))
                else:
                    return NotImplemented
            else:
                out_args.append(a)
        return Win(fn(*out_args), start, axis, ref_out)

    def _cat(self, node, args, kwargs, cache, n):
        torch = _torch()
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)):
            return NotImplemented
        wins = [a for a in tensors if isinstance(a, Win)]
        ref_out = cache[node]
        nd = ref_out.dim()
        if not wins or any(a is not SAME and not isinstance(a, Win) and _is_dyn_value(a) for a in tensors):
            return NotImplemented
        axis = wins[0].axis
        if dim % nd in (0, axis) or any(w.axis != axis or w.data.dim() != nd for w in wins):
            return NotImplemented
        start, width = (wins[0].off, wins[0].width) if len(wins) == 1 else union(wins)
        parts = []
        for a, src in zip(tensors, node.args[0]):
            if isinstance(a, Win):
                parts.append(materialize(a, start, width))
            else:
                if a is not SAME and isinstance(src, fx_Node()) and src in self.dynamic:
                    return NotImplemented
                r = cache[src] if a is SAME else a
                if not isinstance(r, torch.Tensor) or r.dim() != nd:
                    return NotImplemented
                g = gather_ref(r, axis, start, width)
                parts.append(g.expand(len(start), *g.shape[1:]))
        return Win(torch.cat(parts, dim), start, axis, ref_out)

    def _layout(self, name, x, rest, kwargs, ref_out):
        if not isinstance(x, Win) or kwargs:
            return NotImplemented
        nd = x.data.dim()
        if name == "transpose":
            a, b = (int(v) % nd for v in rest[:2])
            if 0 in (a, b):
                return NotImplemented
            axis = b if x.axis == a else a if x.axis == b else x.axis
            return Win(x.data.transpose(a, b), x.off, axis, ref_out)
        if name == "permute":
            order = [int(v) % nd for v in (rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest)]
            if order[0] != 0:
                return NotImplemented
            return Win(x.data.permute(*order), x.off, order.index(x.axis), ref_out)
        if name == "unsqueeze":
            d = int(rest[0]) % (nd + 1)
            if d == 0:
                return NotImplemented
            return Win(x.data.unsqueeze(d), x.off, x.axis + (d <= x.axis), ref_out)
        if name == "squeeze" and rest:
            d = int(rest[0]) % nd
            if d in (0, x.axis) or x.data.shape[d] != 1:
                return NotImplemented
            return Win(x.data.squeeze(d), x.off, x.axis - (d < x.axis), ref_out)
        return NotImplemented

    # reductions ------------------------------------------------------------------------------------
    def _reduction_call(self, node, name, x, rest, kwargs, cache, n):
        if not isinstance(x, Win):
            return NotImplemented
        dim = rest[0] if rest else kwargs.get("dim")
        keepdim = bool(rest[1] if len(rest) > 1 else kwargs.get("keepdim", False))
        if dim is None or (len(rest) > 2) or set(kwargs) - {"dim", "keepdim"}:
            return NotImplemented
        dims = [dim] if isinstance(dim, int) else list(dim)
        if len(dims) != 1:
            return NotImplemented
        nd = x.data.dim()
        d = int(dims[0]) % nd
        if name == "max":
            if not all(u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0 or
                       (u.op == "call_function" and u.target is getattr and u.args[1] == "values") for u in node.users):
                return NotImplemented
        if d == 0:
            return NotImplemented
        if d != x.axis:  # a reduction over channels: still local along length
            red = getattr(x.data, name)(d, keepdim)
            ref_out = cache[node]
            axis = x.axis - (0 if keepdim or d > x.axis else 1)
            if name == "max":
                return (Win(red.values, x.off, axis, ref_out[0]), None)
            return Win(red, x.off, axis, ref_out)
        kind = {"sum": "sum", "mean": "mean", "amax": "max", "max": "max"}[name]
        out = self._reduce(node.args[0], x, kind, keepdim, cache, n)
        return (out, None) if name == "max" else out

    def _reduce(self, src, x: Win, kind: str, keepdim: bool, cache, n):
        """Return the full ``(E, ...)`` max / mean / sum over ``x``'s length axis from the reference's running values."""
        torch = _torch()
        derived = cache["__derived__"]
        key = (src, kind)
        if key not in derived:
            r = x.ref.movedim(x.axis, -1)  # (1, *rest, L)
            if kind == "max":
                pad = torch.full_like(r[..., :1], -torch.inf)
                pre = torch.cat([pad, torch.cummax(r, dim=-1).values], dim=-1)
                suf = torch.cat([torch.cummax(r.flip(-1), dim=-1).values.flip(-1), pad], dim=-1)
                derived[key] = (pre[0], suf[0])
            else:
                cs = torch.cat([torch.zeros_like(r[..., :1], dtype=torch.float64), torch.cumsum(r.double(), dim=-1)], dim=-1)
                derived[key] = (cs[0],)
        data = x.data.movedim(x.axis, -1)  # (E, *rest, W)
        a, b = x.off, x.off + x.width
        if kind == "max":
            pre, suf = derived[key]
            outside = torch.maximum(pre[..., a], suf[..., b]).movedim(-1, 0)  # (E, *rest)
            out = torch.maximum(outside, data.amax(-1))
        else:
            (cs,) = derived[key]
            total = cs[..., -1:]
            outside = (total - cs[..., b] + cs[..., a]).movedim(-1, 0)
            out = outside + data.sum(-1).double()
            if kind == "mean":
                out = out / x.length
            out = out.to(x.data.dtype)
        return out.unsqueeze(x.axis) if keepdim else out

    # slicing ---------------------------------------------------------------------------------------
    def _getitem(self, node, x: Win, idx, ref_out):
        torch = _torch()
        if not isinstance(ref_out, torch.Tensor):
            return NotImplemented
        idx = idx if isinstance(idx, tuple) else (idx,)
        nd = x.data.dim()
        if any(i is None or isinstance(i, torch.Tensor) or _is_dyn_value(i) for i in idx) or sum(i is Ellipsis for i in idx) > 1:
            return NotImplemented
        if Ellipsis in idx:
            e = idx.index(Ellipsis)
            idx = idx[:e] + (slice(None),) * (nd - len(idx) + 1) + idx[e + 1:]
        idx = idx + (slice(None),) * (nd - len(idx))
        if len(idx) != nd or idx[0] != slice(None):
            return NotImplemented
        ax_idx = idx[x.axis]
        if isinstance(ax_idx, int) and -x.length <= ax_idx < x.length:  # one position: its values, in full
            pos = torch.full_like(x.off, ax_idx % x.length)
            return materialize(x, pos, 1)[tuple(0 if d == x.axis else i for d, i in enumerate(idx))]
        if not isinstance(ax_idx, slice) or ax_idx.step not in (None, 1):
            return NotImplemented
        a, b, _ = ax_idx.indices(x.length)
        rest = tuple(slice(None) if d == x.axis else i for d, i in enumerate(idx))
        new_axis = x.axis - sum(isinstance(i, int) for i in idx[:x.axis])
        lp = max(0, b - a)
        if lp == 0:
            return NotImplemented
        if bool(((x.off + x.width <= a) | (x.off >= b)).all()):
            return SAME
        width = min(x.width, lp)
        start = (x.off - a).clamp(0, lp - width)
        data = materialize(x, start + a, width)
        return Win(data[rest], start, new_axis, ref_out)

    # recurrent layers: prefix-state reuse ----------------------------------------------------------
    def _recurrent(self, node, m, x: Win, hx, cache, n):
        """Recompute a unidirectional batch_first LSTM/GRU from the first changed step on, from the reference's states."""
        import torch.nn as nn

        torch = _torch()
        lstm = isinstance(m, nn.LSTM)
        if (not m.batch_first or m.bidirectional or (lstm and m.proj_size) or x.axis != 1 or x.data.dim() != 3
                or (hx is not None and hx is not SAME and _is_dyn_value(hx))):
            return NotImplemented
        derived = cache["__derived__"]
        key = (node, "states")
        layers = self._single_layers(node, m)
        if key not in derived:
            derived[key] = self._reference_states(layers, x.ref, cache[node.args[1]] if len(node.args) > 1 else None, lstm)
        states = derived[key]  # per layer: h (T+1, H) [, c (T+1, H)] of the reference, index t = before step t
        T = x.length
        u = int(x.off.min())
        inp = materialize(x, torch.full_like(x.off, u), T - u)
        hs, cs = [], []
        for li, layer in enumerate(layers):
            h0 = states[li][0][u].reshape(1, 1, -1).expand(1, n, -1).contiguous()
            if lstm:
                c0 = states[li][1][u].reshape(1, 1, -1).expand(1, n, -1).contiguous()
                inp, (h, c) = layer(inp, (h0, c0))
                cs.append(c)
            else:
                inp, h = layer(inp, h0)
            hs.append(h)
        ref_out = cache[node]
        out = Win(inp, torch.full_like(x.off, u), 1, ref_out[0])
        h_n = torch.cat(hs, 0)
        return (out, (h_n, torch.cat(cs, 0))) if lstm else (out, h_n)

    def _single_layers(self, node, m):
        import torch.nn as nn

        if node not in self._layers:
            lstm = isinstance(m, nn.LSTM)
            layers = []
            for i in range(m.num_layers):
                in_size = m.input_size if i == 0 else m.hidden_size
                layer = (nn.LSTM if lstm else nn.GRU)(in_size, m.hidden_size, 1, bias=m.bias, batch_first=True)
                sd = {}
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if hasattr(m, f"{name}_l{i}"):
                        sd[f"{name}_l0"] = getattr(m, f"{name}_l{i}")
                layer.load_state_dict({k: v.detach() for k, v in sd.items()})
                layers.append(layer.to(next(m.parameters()).device).eval())
            self._layers[node] = layers
        return self._layers[node]

    def _reference_states(self, layers, x, hx, lstm):
        """Return per layer the reference's hidden (and cell) state before every step: ``(T + 1, H)`` each."""
        torch = _torch()
        T = x.shape[1]
        out = []
        inp = x
        for li, layer in enumerate(layers):
            H = layer.hidden_size
            if hx is None:
                h = torch.zeros(1, 1, H, dtype=x.dtype, device=x.device)
                c = torch.zeros_like(h)
            elif lstm:
                h, c = hx[0][li:li + 1], hx[1][li:li + 1]
            else:
                h, c = hx[li:li + 1], None
            hs, cs, ys = [h[0, 0]], [c[0, 0]] if lstm else [], []
            for t in range(T):
                if lstm:
                    y, (h, c) = layer(inp[:, t:t + 1], (h, c))
                    cs.append(c[0, 0])
                else:
                    y, h = layer(inp[:, t:t + 1], h)
                hs.append(h[0, 0])
                ys.append(y)
            out.append((torch.stack(hs), torch.stack(cs)) if lstm else (torch.stack(hs),))
            inp = torch.cat(ys, 1)
        return out


# --- helpers -------------------------------------------------------------------------------------------

def fx_Node():
    import torch.fx as fx

    return fx.Node


def _holds_tensor(v) -> bool:
    torch = _torch()
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
        return any(_holds_tensor(a) for a in v)
    return False


def _is_dyn_value(v) -> bool:
    torch = _torch()
    if v is SAME or isinstance(v, Win):
        return True
    if isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
        return any(_is_dyn_value(a) for a in v)
    return False


def _has_win(v) -> bool:
    if isinstance(v, Win):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_win(a) for a in v)
    return False


def _plain_equal(a, b) -> bool:
    torch = _torch()
    try:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values count as different (the node then runs in full)
        return False


def _one(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _dim_arg(rest, kwargs):
    d = rest[0] if rest else kwargs.get("dim")
    return int(d) if isinstance(d, int) else None


def _bind(args, kwargs, names, defaults) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out
