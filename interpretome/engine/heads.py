"""What a model's output means, in one place: normalisation, activation, target selection, finiteness.

Every path from a raw model output to a result goes through here:

* ``first_output`` — a tuple output's first element, a 1-D output as one column: ``(N, n_out[, L])``;
* ``activate`` / ``activation_layer`` — the spec's activation (none / sigmoid / softmax over the
  outputs, before selection), as a function and as the module shap's DeepExplainer must see
  (``head_module``); both read the one table ``activation_layer``;
* ``OutputHead`` — a spec's head: ``check`` a first output against the declared targets (raises
  ``ModelOutputError``), ``__call__`` = select + activate + finiteness check, ``target_indices``
  and ``resolve`` (the ``target=`` argument of the explaining tasks: "predicted", "all", names,
  indices);
* ``require_finite`` / ``outputs_of`` / ``item_name`` — a NaN or infinite value is a
  ``NonFiniteOutputError`` naming the batch row and target, re-raised by the tasks naming the
  sequence or sample.

The exception types are those of ``interpretome.errors``.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import ModelOutputError, NonFiniteOutputError

ACTIVATIONS = ("none", "sigmoid", "softmax")

SOFTMAX_ONE = ("activation='softmax' over a model with one output is always 1, so every delta and attribution "
               "would be 0: use activation='sigmoid' (--activation sigmoid) for a single logit, or declare all the "
               "model's outputs in targets= (--targets)")


def first_output(out):
    """Return a model's output as ``(N, n_out[, ...])``: the first of a tuple, a 1-D output as one column."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out[:, None] if out.ndim == 1 else out


def activation_layer(activation: str):
    """Return the ``nn.Module`` applying ``activation`` over the outputs (dim 1), or None for ``"none"``."""
    import torch.nn as nn

    if activation == "sigmoid":
        return nn.Sigmoid()
    if activation == "softmax":
        return nn.Softmax(dim=1)
    if activation == "none":
        return None
    raise ModelOutputError(f"activation {activation!r} is not one of {ACTIVATIONS}")


def activate(out, activation: str):
    """Return the model output ``(N, n_out[, L])`` after the spec's activation (none / sigmoid / softmax)."""
    out = first_output(out)
    layer = activation_layer(activation)
    return out if layer is None else layer(out)


class ActivatedModel:
    """Callable ``(x, *extra) -> activate(model(x, *extra))`` of shape (N, n_out) (an nn.Module-free forward
    function; ``extra``: per-sample tensors such as covariates, passed after the input)."""

    def __init__(self, model, activation: str = "none"):
        self.model = model
        self.activation = activation

    def __call__(self, x, *extra):
        return activate(self.model(x, *extra), self.activation)


def head_module(model, activation: str = "none", select=None):
    """Return an ``nn.Sequential``: ``model``, the activation as a module, then output columns ``select``.

    The activation is a module (``activation_layer``), not a functional call, so shap's
    DeepExplainer sees it; ``select`` (output indices) keeps only those columns.
    """
    import torch
    import torch.nn as nn

    class _Columns(nn.Module):
        def __init__(self, cols):
            super().__init__()
            self.register_buffer("cols", torch.as_tensor(np.asarray(cols, np.int64)))

        def forward(self, out):
            return first_output(out)[:, self.cols]

    layers = [model]
    layer = activation_layer(activation)
    if layer is not None:
        layers.append(layer)
    if select is not None:
        layers.append(_Columns(select))
    return nn.Sequential(*layers).eval() if len(layers) > 1 else model


# --- finiteness --------------------------------------------------------------------------------------

def require_finite(values: np.ndarray, names, row0: int = 0, what: str = "model output") -> None:
    """Raise ``NonFiniteOutputError`` at the first NaN/inf of ``values`` ``(N, T[, ...])``.

    ``names`` (T,) are the target names of axis 1; the error's row is ``row0`` + the batch row.
    """
    values = np.asarray(values)
    if values.size == 0 or np.isfinite(values).all():
        return
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    r, t = np.argwhere(~np.isfinite(flat).all(-1))[0]
    v = flat[r, t][~np.isfinite(flat[r, t])][0]
    raise NonFiniteOutputError(row0 + int(r), names[int(t)], str(v), what=what)


def item_name(kind: str, name, index: int) -> str:
    """Return how an error names an input item, e.g. ``sequence 'chr1_tss' (index 4)`` (``name``: str or ASCII bytes)."""
    name = name.decode("ascii") if isinstance(name, (bytes, np.bytes_)) else str(name)
    return f"{kind} {name!r} (index {int(index)})"


@contextlib.contextmanager
def outputs_of(item=None, *, rows=None):
    """Context re-raising a ``NonFiniteOutputError`` of batch rows for the caller's items.

    ``rows`` (array) maps the error's row to the caller's row; ``item`` names what the row is: a
    string, or a function ``row -> str`` (e.g. ``lambda r: item_name("sample", names[r], index[r])``).
    An error already naming its item passes unchanged, so the innermost task context wins.
    """
    try:
        yield
    except NonFiniteOutputError as e:
        if e.item is not None:
            raise
        row = e.row if rows is None else int(np.asarray(rows)[e.row])
        label = item(row) if callable(item) else item
        raise NonFiniteOutputError(row, e.target, e.value, label, e.what) from None


# --- the head of one spec -----------------------------------------------------------------------------

class OutputHead:
    """A spec's output head: checked on the first output, then select + activate + finiteness per batch."""

    def __init__(self, spec):
        self.spec = spec
        self.checked = False
        self.select_idx: np.ndarray | None = None

    def check(self, out) -> None:
        """Check a raw model output ``(N, n_out[, L_out])`` against the spec and fix the selection.

        Raises ``ModelOutputError`` when the number of outputs disagrees with the declared targets
        (or none are declared for several outputs), when ``select`` is out of range, when softmax
        would run over one output, or when the output is neither 2-D nor 3-D.
        """
        n_out = out.shape[1]
        declared = self.spec.targets
        if declared is not None and n_out != len(declared):
            raise ModelOutputError(
                f"model returned {n_out} outputs per sample (output shape {tuple(out.shape)}) but the spec "
                f"declares {len(declared)} targets {list(declared)}: fix targets= (--targets) or the model"
            )
        if declared is None and self.spec.select is None and n_out != 1:
            raise ModelOutputError(
                f"model returned {n_out} outputs per sample (output shape {tuple(out.shape)}) but the spec "
                f"declares no targets, which means one output: declare targets=[...] (--targets, names of all "
                f"{n_out} outputs) and optionally select= (--select) the ones to keep"
            )
        if self.spec.activation == "softmax" and n_out == 1:
            raise ModelOutputError(f"model returned 1 output per sample (output shape {tuple(out.shape)}): {SOFTMAX_ONE}")
        if out.ndim > 3:
            raise ModelOutputError(f"model output shape {tuple(out.shape)} is neither (N, T) nor (N, T, L_out)")
        self.select_idx = self.target_indices(n_out)
        self.checked = True

    def __call__(self, out, row0: int = 0) -> np.ndarray:
        """Return the selected, activated outputs as float32 numpy: ``(N, T)`` or ``(N, T, L_out)``.

        Raises ``ModelOutputError`` on the first batch whose output disagrees with the targets
        (``check``), and ``NonFiniteOutputError`` (row ``row0`` + batch row) for a NaN or infinite
        result unless the spec allows them.
        """
        import torch

        out = first_output(out)
        if not self.checked:
            self.check(out)
        out = activate(out, self.spec.activation)
        out = out[:, torch.as_tensor(self.select_idx, device=out.device)]
        res = out.float().cpu().numpy()
        if not self.spec.allow_nonfinite:
            require_finite(res, self.spec.target_names, row0)
        return res

    def require_finite_selected(self, out, sel) -> None:
        """Raise ``NonFiniteOutputError`` for a NaN/inf among activated outputs ``out[:, sel]`` (torch (N, n_out))."""
        import torch

        if not self.spec.allow_nonfinite:
            require_finite(out[:, torch.as_tensor(sel, device=out.device)].float().cpu().numpy(),
                           self.spec.target_names)

    def target_indices(self, n_out: int | None = None) -> np.ndarray:
        """Return the indices of the selected targets among the model's outputs."""
        names = self.spec.targets
        n_out = n_out if n_out is not None else (len(names) if names else None)
        if self.spec.select is None:
            return np.arange(n_out)
        idx = []
        for s in self.spec.select:
            i = names.index(s) if isinstance(s, str) else int(s)
            if not 0 <= i < n_out:
                raise ModelOutputError(f"selected target index {i} is outside the model's {n_out} outputs")
            idx.append(i)
        return np.asarray(idx)

    def resolve(self, target, n_out: int) -> tuple[list[str], np.ndarray | None]:
        """Return ``(coordinate names, output indices)`` for a task's ``target=``; indices None means
        "each sample's predicted class" (``"predicted"``); ``"all"``, a name, an index or a list of them.
        """
        names = self.spec.target_names
        sel = self.target_indices(n_out)
        if isinstance(target, str) and target == "predicted":
            return ["predicted"], None
        if isinstance(target, str) and target == "all":
            return list(names), np.asarray(sel, np.int64)
        items = list(target) if isinstance(target, (list, tuple, np.ndarray)) else [target]
        out_names, out_idx = [], []
        for t in items:
            if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
                if not 0 <= int(t) < len(names):
                    raise ValueError(f"target index {t} is outside the model's {len(names)} targets {names}: "
                                     f"pass 0..{len(names) - 1}, a name, 'predicted' or 'all'")
                i = int(t)
            else:
                if str(t) not in names:
                    raise ValueError(f"class {t!r} is not one of the model's targets {names}: pass one of them, "
                                     f"'predicted' or 'all'")
                i = names.index(str(t))
            out_names.append(names[i])
            out_idx.append(int(sel[i]))
        return out_names, np.asarray(out_idx, np.int64)
