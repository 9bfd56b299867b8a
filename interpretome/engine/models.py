"""How a worker builds and runs a model: ``ModelSpec`` and the per-process ``Runtime`` cache.

A ``ModelSpec`` is a small, picklable description — never the weights:

* ``factory="package.module:function"`` with JSON ``kwargs`` (the function returns an
  ``nn.Module``), optionally with ``weights=`` a state_dict file loaded with
  ``torch.load(weights_only=True)`` (``trust_pickle=True`` is needed for anything else);
* ``torchscript="model.pt"``, a TorchScript file (``torch.jit.load``).

plus the input kind (``onehot`` DNA ``(N, 4, L)``, ``kmer`` token ids ``(N, T)``, ``dense``
``(N, F)``, ``image`` ``(N, C, H, W)``), the output head (declared ``targets`` names, ``select`` by
index or name, ``activation`` none / sigmoid / softmax), ``batch_size`` and ``device``.

Workers build the model once per process, cached by the spec's ``token`` (a sha256 of the spec and
of its weights file). A model whose output disagrees with the declared targets raises
``ModelOutputError`` on the first batch; so does a NaN or infinite output on any batch
(``NonFiniteOutputError``, naming the batch row and the target; the tasks re-raise it naming the
sequence or sample, see ``outputs_of``) unless the spec says ``allow_nonfinite=True``.

``model_digest(spec)`` is the sha256 of the built model's parameters and buffers (what actually
runs, whoever loaded the weights); ``check_model(spec, sample)`` builds the model and runs it on a
few real items before any work.

One-hot encoding: channels A,C,G,T; N (code 4) and padding encode as all zeros.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import inspect
import json
import os
import pickle
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from typing import Any, Callable

import numpy as np

from ..errors import ModelOutputError, ModelSpecError, NonFiniteOutputError
from ..storage.schema import BASES, CODE_N

INPUT_KINDS = ("onehot", "kmer", "dense", "image")
ACTIVATIONS = ("none", "sigmoid", "softmax")


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
    """Return how an error names an input item, e.g. ``sequence 'chr1_tss' (index 4)``."""
    return f"{kind} {str(name)!r} (index {int(index)})"


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


def first_output(out):
    """Return a model's output as ``(N, n_out[, ...])``: the first of a tuple, a 1-D output as one column."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out[:, None] if out.ndim == 1 else out


# --- k-mer tokenisation (Genomic-ULMFiT) -----------------------------------------------------------

@dataclass(frozen=True)
class KmerTokenizer:
    """Genomic-ULMFiT tokenisation: k-mers of ``k`` bases every ``stride`` bases, mapped to ids.

    ``vocab`` lists the token strings in id order (the model's ``itos``); by default it is the
    fastai special tokens followed by all 4^k k-mers in lexicographic order. A k-mer absent from the
    vocabulary, or holding an N, maps to ``unk``. ``bos``, when set, is prepended (fastai's xxbos).
    """

    k: int = 5
    stride: int = 2
    vocab: tuple[str, ...] | None = None
    unk: str = "xxunk"
    bos: str | None = "xxbos"

    SPECIALS = ("xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep")

    def __post_init__(self):
        if self.k < 1 or self.stride < 1:
            raise ModelSpecError(f"k-mer tokenizer needs k >= 1 and stride >= 1, got k={self.k} stride={self.stride}")
        if self.vocab is None:
            object.__setattr__(self, "vocab", self.SPECIALS + tuple("".join(p) for p in product(BASES, repeat=self.k)))
        else:
            object.__setattr__(self, "vocab", tuple(self.vocab))
        if self.unk not in self.vocab:
            raise ModelSpecError(f"k-mer vocabulary has no unknown token {self.unk!r}: add it or set unk=")
        if self.bos is not None and self.bos not in self.vocab:
            raise ModelSpecError(f"k-mer vocabulary has no {self.bos!r} token: add it or set bos=None")

    def lookup(self) -> np.ndarray:
        """Return the int64 table mapping a k-mer's base-4 index (0..4^k-1) to its token id."""
        index = {t: i for i, t in enumerate(self.vocab)}
        unk = index[self.unk]
        return np.array([index.get("".join(p), unk) for p in product(BASES, repeat=self.k)], dtype=np.int64)

    def encode(self, codes: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        """Return token ids ``(N, T)`` int64 for base codes ``(N, L)`` uint8 (T = (L-k)//stride+1 [+1 bos])."""
        table = self.lookup() if table is None else table
        codes = np.asarray(codes)
        n, length = codes.shape
        if length < self.k:
            raise ModelSpecError(f"sequence of {length} bp is shorter than the k-mer size {self.k}")
        starts = np.arange(0, length - self.k + 1, self.stride)
        win = codes[:, starts[:, None] + np.arange(self.k)[None, :]].astype(np.int64)  # (N, T, k)
        has_n = (win >= CODE_N).any(-1)
        idx = (np.minimum(win, 3) * (4 ** np.arange(self.k - 1, -1, -1))).sum(-1)
        ids = table[idx]
        ids[has_n] = self.vocab.index(self.unk)
        if self.bos is not None:
            ids = np.concatenate([np.full((n, 1), self.vocab.index(self.bos), np.int64), ids], axis=1)
        return ids

    def token_starts(self, length: int) -> np.ndarray:
        """Return the first base of each (non-bos) token for a sequence of ``length`` bp."""
        return np.arange(0, length - self.k + 1, self.stride)


# --- the spec --------------------------------------------------------------------------------------

def _first_mismatch(error: Exception) -> str:
    """Return a one-line summary of torch's ``load_state_dict`` error (first problem and a count)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    details = [ln for ln in lines[1:] if ln] or lines[:1]
    more = f", and {len(details) - 1} more" if len(details) > 1 else ""
    return (details[0][:200] + more) if details else "state_dict does not match"


def _import_factory(path: str) -> Callable:
    if ":" not in path:
        raise ModelSpecError(f"model factory {path!r} must look like 'package.module:function'")
    mod_name, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelSpecError(f"model factory {path!r}: cannot import module {mod_name!r} ({e}); "
                             f"install it or fix the module path") from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"model factory {path!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"model factory {path!r} is not callable")
    return obj


def _factory_parameters(fn: Callable) -> list[str] | None:
    """Return the keyword parameters ``fn`` accepts, or None when it takes ``**kwargs`` (or has no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def _kwarg_error(path: str, name: str, accepted: list[str] | None) -> ModelSpecError:
    close = difflib.get_close_matches(name, accepted or [], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    takes = f"it takes {accepted}" if accepted is not None else "see its documentation"
    return ModelSpecError(f"model factory {path!r} has no parameter {name!r}{hint}: {takes}. Fix the name in "
                          f"kwargs= (--model-kwargs)")


def _check_kwargs(path: str, fn: Callable, kwargs: dict) -> None:
    """Raise ``ModelSpecError`` naming a kwarg the factory does not take (a misspelt --model-kwargs key)."""
    accepted = _factory_parameters(fn)
    if accepted is None:
        return
    for name in kwargs:
        if name not in accepted:
            raise _kwarg_error(path, name, accepted)


def _call_factory(path: str, kwargs: dict):
    """Return ``factory(**kwargs)``; a kwarg it rejects (even through ``**kwargs``) is a ``ModelSpecError``."""
    fn = _import_factory(path)
    _check_kwargs(path, fn, kwargs)
    try:
        return fn(**kwargs)
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '([^']+)'", str(e))
        if m is None or m.group(1) not in kwargs:  # a TypeError of the factory's own code
            raise
        raise _kwarg_error(path, m.group(1), _factory_parameters(fn)) from e


def _weights_format(path: str) -> str:
    """Return ``"zip"`` (torch.save) or ``"pickle"`` (legacy torch) from a weights file's first bytes.

    Raises ``ModelSpecError`` for anything else (text, safetensors, random bytes): such a file is
    not a torch state_dict, so unpickling it (``trust_pickle``) could not help.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(b"\x80"):
        return "pickle"
    raise ModelSpecError(
        f"weights file {path!r} is not a torch state_dict file: it starts with {head!r}, but torch.save writes a "
        f"zip archive (b'PK...') and legacy torch files are pickles (b'\\x80...'). Pass the file written by "
        f"torch.save(model.state_dict(), path) as weights= (--weights)")


def _load_state(path: str, trust_pickle: bool) -> dict:
    """Return the state_dict held by the torch file ``path`` (see ``ModelSpec.build``)."""
    import torch

    fmt = _weights_format(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        if trust_pickle:
            raise ModelSpecError(f"weights file {path!r} could not be unpickled: {str(e).strip().splitlines()[0][:200]}") from e
        raise ModelSpecError(
            f"weights file {path!r} (a torch {fmt} file) could not be loaded as a plain state_dict "
            f"(torch.load weights_only=True): {str(e).strip().splitlines()[0][:200]} ... "
            f"Only if you trust the file, pass trust_pickle=True (--trust-pickle)") from e
    except Exception as e:  # noqa: BLE001 - a damaged archive raises RuntimeError, KeyError, EOFError ...
        raise ModelSpecError(f"weights file {path!r} looks like a torch {fmt} file but cannot be read "
                             f"({type(e).__name__}: {str(e).strip()[:200]}): is it truncated or damaged?") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if hasattr(state, "state_dict") and callable(state.state_dict):  # a whole pickled module (trust_pickle)
        state = state.state_dict()
    if not isinstance(state, dict):
        raise ModelSpecError(f"weights file {path!r} holds a {type(state).__name__}, not a state_dict: save "
                             f"model.state_dict() and pass that file as weights= (--weights)")
    return state


def _sha256(path: str) -> str:
    from ..storage.store import file_digest

    return file_digest(path).split(":", 1)[1]


_SOFTMAX_ONE = ("activation='softmax' over a model with one output is always 1, so every delta and attribution "
                "would be 0: use activation='sigmoid' (--activation sigmoid) for a single logit, or declare all the "
                "model's outputs in targets= (--targets)")


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model on a worker, what it takes and what it returns (see module doc)."""

    factory: str | None = None
    kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    torchscript: str | None = None
    input_kind: str = "onehot"
    kmer: KmerTokenizer | None = None
    targets: tuple[str, ...] | None = None
    select: tuple[int | str, ...] | None = None
    activation: str = "none"
    batch_size: int = 64
    device: str = "auto"
    trust_pickle: bool = False
    weights_sha256: str | None = None
    allow_nonfinite: bool = False

    def __post_init__(self):
        if (self.factory is None) == (self.torchscript is None):
            raise ModelSpecError("a model spec needs exactly one of factory='package.module:function' "
                                 "or torchscript='file.pt'")
        if self.weights and not self.factory:
            raise ModelSpecError("weights= (a state_dict file) needs factory= to build the module it fills")
        if self.input_kind not in INPUT_KINDS:
            raise ModelSpecError(f"input_kind {self.input_kind!r} is not one of {INPUT_KINDS}")
        if self.activation not in ACTIVATIONS:
            raise ModelSpecError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if int(self.batch_size) < 1:
            raise ModelSpecError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.input_kind == "kmer" and self.kmer is None:
            object.__setattr__(self, "kmer", KmerTokenizer())
        if isinstance(self.kmer, dict):
            object.__setattr__(self, "kmer", KmerTokenizer(**self.kmer))
        for name in ("targets", "select"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v) if isinstance(v, (list, tuple)) else (v,))
        for f in (self.weights, self.torchscript):
            if f and not os.path.isfile(f):
                raise ModelSpecError(f"model file {f!r} does not exist: check the path")
        if self.activation == "softmax" and self.targets is not None and len(self.targets) == 1:
            raise ModelSpecError(_SOFTMAX_ONE)
        if self.select is not None:
            for s in self.select:
                if isinstance(s, str) and (self.targets is None or s not in self.targets):
                    raise ModelSpecError(f"target {s!r} is selected by name but the declared targets are "
                                         f"{self.targets}: declare targets= or select by index")
        if self.weights_sha256 is None:
            f = self.weights or self.torchscript
            if f:
                object.__setattr__(self, "weights_sha256", _sha256(f))

    # identity ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Return the spec as JSON-ready dict (the tokenizer's vocabulary summarised by its hash)."""
        d = asdict(self)
        if self.kmer is not None:
            vocab = "\n".join(self.kmer.vocab)
            d["kmer"] = {"k": self.kmer.k, "stride": self.kmer.stride, "unk": self.kmer.unk,
                         "bos": self.kmer.bos, "vocab_size": len(self.kmer.vocab),
                         "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest()}
        for k in ("targets", "select"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    def describe(self) -> dict:
        """Return the provenance record: the spec with ``source`` and ``weights_sha256``."""
        d = self.to_dict()
        d["source"] = self.factory or self.torchscript
        d["weights_sha256"] = self.weights_sha256 or "-"
        return d

    @property
    def token(self) -> str:
        """Return the sha256 of the spec (weights digest included): the per-worker cache key."""
        full = self.to_dict()
        if self.kmer is not None:
            full["kmer"]["vocab"] = list(self.kmer.vocab)
        return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()

    def with_options(self, **changes) -> "ModelSpec":
        """Return a copy with ``changes`` applied (e.g. ``batch_size=16``)."""
        return replace(self, **changes)

    def check(self) -> "ModelSpec":
        """Import the factory and match ``kwargs`` to its parameters (without building the model).

        A bad spec then fails before any work; ``check_model`` also builds and runs the model.
        """
        if self.factory:
            _check_kwargs(self.factory, _import_factory(self.factory), self.kwargs)
        return self

    # building -----------------------------------------------------------------------------------
    def build(self):
        """Return the ``nn.Module`` (eval mode, on ``self.resolved_device()``); called on workers.

        Raises ``ModelSpecError`` for a kwarg the factory does not take, a weights file that is not a
        torch state_dict file, one needing full unpickling without ``trust_pickle``, and weights
        that do not fit the factory's architecture.
        """
        import torch

        device = self.resolved_device()
        if self.torchscript:
            model = torch.jit.load(self.torchscript, map_location=device)
        else:
            model = _call_factory(self.factory, self.kwargs)
            if self.weights:
                try:
                    model.load_state_dict(_load_state(self.weights, self.trust_pickle))
                except RuntimeError as e:
                    raise ModelSpecError(f"weights {self.weights!r} do not fit {self.factory!r} with kwargs "
                                         f"{self.kwargs} ({_first_mismatch(e)}): check that weights= (--weights) "
                                         f"was saved from this factory with these kwargs= (--model-kwargs)") from e
        return model.to(device).eval()

    def output_name(self, index: int) -> str:
        """Return the name of model output ``index`` (among all outputs, before ``select``)."""
        if self.targets is not None:
            return self.targets[int(index)]
        return "output" if self.select is None else str(int(index))

    @property
    def target_names(self) -> list[str]:
        """Return the names of the selected outputs (the ``target`` coordinate), known without a model run."""
        if self.select is not None:
            return [s if isinstance(s, str) else (self.targets[s] if self.targets else str(s)) for s in self.select]
        if self.targets is not None:
            return list(self.targets)
        return ["output"]

    def resolved_device(self) -> str:
        """Return 'cuda' or 'cpu' (``auto`` picks CUDA when torch sees a GPU)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def load_spec(arg: str | dict | ModelSpec, **overrides) -> ModelSpec:
    """Return a ModelSpec from a spec, a dict of its fields, or a string.

    Strings: ``package.module:function`` (a factory), a ``.pt``/``.ts``/``.jit`` TorchScript file, or a
    ``.json`` file holding the spec's fields.
    """
    if isinstance(arg, ModelSpec):
        return arg.with_options(**overrides) if overrides else arg
    if isinstance(arg, dict):
        return ModelSpec(**{**arg, **overrides})
    if isinstance(arg, str) and arg.endswith(".json"):
        if not os.path.isfile(arg):
            raise ModelSpecError(f"model spec file {arg!r} does not exist")
        with open(arg) as fh:
            fields = json.load(fh)
        base = os.path.dirname(os.path.abspath(arg))
        for k in ("weights", "torchscript"):
            if fields.get(k) and not os.path.isabs(fields[k]):
                fields[k] = os.path.join(base, fields[k])
        return ModelSpec(**{**fields, **overrides})
    if isinstance(arg, str) and ":" in arg and not os.path.exists(arg):
        return ModelSpec(factory=arg, **overrides)
    if isinstance(arg, str) and os.path.isfile(arg):
        return ModelSpec(torchscript=arg, **overrides)
    raise ModelSpecError(f"model {arg!r} is neither 'package.module:function', a TorchScript file nor a .json spec")


# --- receptive-field split (the fast path for convolutional models) -------------------------------

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


def _after_global_max(head):
    """Return the layers after a leading global ``AdaptiveMaxPool1d(1)`` of ``head``, else None."""
    import torch.nn as nn

    layers = list(head.children())
    if layers and isinstance(layers[0], nn.AdaptiveMaxPool1d) and layers[0].output_size in (1, (1,)):
        return nn.Sequential(*layers[1:])
    return None


# --- the runtime (one per worker process and spec) -------------------------------------------------

class Runtime:
    """A built model with its input encoding and output head; ``predict`` and ``predict_edits``."""

    def __init__(self, spec: ModelSpec):
        import torch

        self.spec = spec
        self.torch = torch
        self.device = spec.resolved_device()
        self.model = spec.build()
        self.digest: str | None = None  # model_digest of self.model, computed on first request
        self.checked = False
        self.split = local_split(self.model) if spec.input_kind == "onehot" else None
        self.max_head = _after_global_max(self.split[1]) if self.split is not None else None
        lut = np.zeros((CODE_N + 1, 4), np.float32)
        lut[np.arange(4), np.arange(4)] = 1.0
        self.onehot_lut = torch.from_numpy(lut).to(self.device)
        self.kmer_table = spec.kmer.lookup() if spec.kmer is not None else None
        self._select_idx: np.ndarray | None = None
        self._local = threading.local()  # per-thread caches: a Runtime is shared by a worker's threads

    # encoding -----------------------------------------------------------------------------------
    def encode(self, codes):
        """Return the model input for base codes ``(N, L)`` (numpy uint8 or torch): one-hot or ids."""
        torch = self.torch
        if self.spec.input_kind == "kmer":
            codes = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else codes
            return torch.from_numpy(self.spec.kmer.encode(codes, self.kmer_table)).to(self.device)
        if self.spec.input_kind != "onehot":
            raise ModelSpecError(f"DNA input needs input_kind 'onehot' or 'kmer', the spec says {self.spec.input_kind!r}")
        t = codes if isinstance(codes, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(codes))
        t = t.to(self.device).long()
        return self.onehot_lut[t].permute(0, 2, 1).contiguous()

    # output head --------------------------------------------------------------------------------
    def check_output(self, out) -> None:
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
            raise ModelOutputError(f"model returned 1 output per sample (output shape {tuple(out.shape)}): {_SOFTMAX_ONE}")
        if out.ndim > 3:
            raise ModelOutputError(f"model output shape {tuple(out.shape)} is neither (N, T) nor (N, T, L_out)")
        self._select_idx = self.target_indices(n_out)
        self.checked = True

    def head(self, out, row0: int = 0) -> np.ndarray:
        """Return the selected, activated outputs as float32 numpy: ``(N, T)`` or ``(N, T, L_out)``.

        Raises ``ModelOutputError`` on the first batch whose output disagrees with the targets
        (``check_output``), and ``NonFiniteOutputError`` (row ``row0`` + batch row) for a NaN or
        infinite result unless the spec allows them.
        """
        torch = self.torch
        out = first_output(out)
        if not self.checked:
            self.check_output(out)
        if self.spec.activation == "sigmoid":
            out = torch.sigmoid(out)
        elif self.spec.activation == "softmax":
            out = torch.softmax(out, dim=1)
        out = out[:, torch.as_tensor(self._select_idx, device=out.device)]
        res = out.float().cpu().numpy()
        if not self.spec.allow_nonfinite:
            require_finite(res, self.spec.target_names, row0)
        return res

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

    # prediction ---------------------------------------------------------------------------------
    def forward(self, x):
        """Return the raw model output for an encoded batch, without gradients."""
        with self.torch.inference_mode():
            return self.model(x)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Return head outputs ``(N, T[, L_out])`` for base codes ``(N, L)`` in batches."""
        outs = []
        bs = int(self.spec.batch_size)
        for i in range(0, len(codes), bs):
            outs.append(self.head(self.forward(self.encode(codes[i:i + bs])), row0=i))
        if not outs:
            return np.zeros((0, len(self.spec.target_names)), np.float32)
        return np.concatenate(outs)

    def predict_edits(self, ref: np.ndarray, starts: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Return head outputs ``(E, T)`` for ``E`` copies of ``ref`` each with one span replaced.

        ``ref`` (L,) uint8 codes of one sequence (its real length); ``starts`` (E,) span starts;
        ``new`` (E, k) uint8 replacement codes (code 4 = N, a zero column in the one-hot). Spans
        must fit in ``ref``. Uses the receptive-field fast path when the model allows it: only
        the positions a span can change are recomputed through the convolutional prefix.
        """
        starts = np.asarray(starts, np.int64)
        new = np.asarray(new, np.uint8)
        n_edit, k = new.shape
        length = ref.shape[0]
        out = None
        if n_edit == 0:
            return np.zeros((0, len(self.spec.target_names)), np.float32)
        fast = np.zeros(n_edit, bool)
        if self.split is not None:
            _, _, left, right = self.split
            ctx = left + right
            fast = (starts - ctx >= 0) & (starts + k + ctx <= length)
        if fast.any():
            with outputs_of(rows=np.flatnonzero(fast)):  # error rows as edit indices
                res = self._edits_fast(ref, starts[fast], new[fast])
            out = np.empty((n_edit,) + res.shape[1:], np.float32)
            out[fast] = res
        slow = ~fast
        if slow.any():
            with outputs_of(rows=np.flatnonzero(slow)):
                res = self._edits_full(ref, starts[slow], new[slow])
            if out is None:
                out = np.empty((n_edit,) + res.shape[1:], np.float32)
            out[slow] = res
        return out

    def _edits_full(self, ref, starts, new):
        torch = self.torch
        bs = int(self.spec.batch_size)
        k = new.shape[1]
        ref_t = torch.from_numpy(np.ascontiguousarray(ref))
        offs = torch.arange(k)
        outs = []
        for i in range(0, len(starts), bs):
            s = torch.from_numpy(starts[i:i + bs])
            batch = ref_t.unsqueeze(0).repeat(len(s), 1)
            cols = s[:, None] + offs[None, :]
            batch.scatter_(1, cols, torch.from_numpy(new[i:i + bs]))
            outs.append(self.head(self.forward(self.encode(batch)), row0=i))
        return np.concatenate(outs)

    def _prefix_reference(self, ref):
        """Return the prefix activations ``(1, C, L)`` of ``ref``, cached per thread (one sequence)."""
        key = (ref.shape[0], hash(ref.tobytes()))
        cache = getattr(self._local, "ref", None)
        if cache is None or cache[0] != key:
            torch = self.torch
            with torch.inference_mode():
                act = self.split[0](self.encode(ref[None, :]))
                pre = suf = None
                if self.max_head is not None:  # running maxima from the left and the right, (1, C, L + 1)
                    pad = torch.full_like(act[:, :, :1], -torch.inf)
                    pre = torch.cat([pad, torch.cummax(act, dim=2).values], dim=2)
                    suf = torch.cat([torch.cummax(act.flip(2), dim=2).values.flip(2), pad], dim=2)
            cache = self._local.ref = (key, act, pre, suf)
        return cache[1:]

    def _edits_fast(self, ref, starts, new):
        torch = self.torch
        prefix, head, left, right = self.split
        ctx = left + right
        k = new.shape[1]
        width = k + 2 * ctx
        bs = int(self.spec.batch_size)
        ref_act, pre, suf = self._prefix_reference(ref)  # (1, C, L); running maxima (1, C, L + 1) or None
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
                act_new = prefix(self.encode(sl))[:, :, left:left + changed]  # positions s-right .. s+k-1+left
                if self.max_head is not None:
                    # global max pool: max(outside the changed span, inside it) — exact, no (C, L) copy
                    a = (s - right).to(pre.device)
                    outside = torch.maximum(pre[0][:, a].T, suf[0][:, a + changed].T)  # (b, C)
                    pooled = torch.maximum(outside, act_new.amax(dim=2)).unsqueeze(-1)
                    outs.append(self.head(self.max_head(pooled), row0=i))
                    continue
                act = ref_act.expand(b, -1, -1).clone()
                pos = ((s - right)[:, None] + torch.arange(changed)[None, :]).to(act.device)
                act.scatter_(2, pos[:, None, :].expand(-1, act.shape[1], -1), act_new)
                outs.append(self.head(head(act), row0=i))
        return np.concatenate(outs)


_RUNTIMES: dict[str, Runtime] = {}
_BUILD_LOCK = threading.Lock()


def get_runtime(spec: ModelSpec) -> Runtime:
    """Return this process's Runtime for ``spec``, building the model once on first use.

    Building is serialised: factories commonly seed torch's global generator, which concurrent
    threads would otherwise interleave into different weights.
    """
    token = spec.token
    rt = _RUNTIMES.get(token)
    if rt is None:
        with _BUILD_LOCK:
            rt = _RUNTIMES.get(token)
            if rt is None:
                rt = _RUNTIMES[token] = Runtime(spec)
    return rt


def clear_runtimes() -> None:
    """Forget the models built in this process (tests, or to free device memory), and their digests."""
    _RUNTIMES.clear()


# --- identity and checks of the built model ---------------------------------------------------------

def state_digest(module) -> str:
    """Return ``"sha256:<hex>"`` over a module's ``state_dict`` (parameters and persistent buffers).

    Each entry, in state_dict order, contributes its name, dtype, shape and raw bytes (C order,
    copied to the CPU), length-prefixed so no two different states hash alike.
    """
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach()
        if t.is_sparse:
            t = t.to_dense()
        raw = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        head = json.dumps([name, str(t.dtype), list(t.shape), len(raw)]).encode()
        h.update(len(head).to_bytes(8, "little") + head + raw)
    return "sha256:" + h.hexdigest()


def model_digest(spec: ModelSpec | str | dict, *, fresh: bool = False) -> str:
    """Return ``"sha256:<hex>"`` of the model ``spec`` builds in this process (``state_digest``).

    Unlike ``spec.token`` it covers weights the factory loads itself (a checkpoint directory in
    its kwargs, scvi-tools / Lightning), and works for factories with or without ``weights=`` and
    for TorchScript. The model is this process's ``get_runtime(spec)`` model, so the digest
    describes exactly what this process computes with.

    Caching: the digest is kept on that Runtime — per process and spec token, and forgotten with
    the model by ``clear_runtimes()``. It is never kept apart from the model, because the token
    does not cover the factory's own files: a retrained checkpoint is noticed by a process that
    builds the model anew (a new process, after ``clear_runtimes()``, or with ``fresh=True``, which
    rebuilds the model for ``spec`` first — its cost is one model build).
    """
    spec = load_spec(spec)
    if fresh:
        with _BUILD_LOCK:
            _RUNTIMES.pop(spec.token, None)
    rt = get_runtime(spec)
    if rt.digest is None:
        rt.digest = state_digest(rt.model)
    return rt.digest


def _sample_input(rt: Runtime, sample) -> tuple[Any, str]:
    """Return ``(model input, description)`` for real items ``sample`` of the spec's input kind."""
    torch = rt.torch
    kind = rt.spec.input_kind
    x = sample.cpu().numpy() if isinstance(sample, torch.Tensor) else np.asarray(sample)
    want = {"onehot": 2, "kmer": 2, "dense": 2, "image": 4}[kind]
    shapes = {"onehot": "base codes (N, L) uint8", "kmer": "base codes (N, L) uint8",
              "dense": "features (N, F) float", "image": "images (N, C, H, W) float"}
    if x.ndim != want or x.shape[0] == 0:
        others = [k for k, n in (("dense", 2), ("image", 4)) if n == x.ndim and k != kind]
        hint = f", or set input_kind={others[0]!r} (--input-kind {others[0]})" if others else ""
        raise ModelSpecError(f"the spec's input_kind {kind!r} takes {shapes[kind]}, but the sample has shape "
                             f"{x.shape}: pass at least one item of that shape{hint}")
    if kind in ("onehot", "kmer"):
        if x.dtype.kind not in "ui" or x.min() < 0 or x.max() > CODE_N:
            raise ModelSpecError(f"the spec's input_kind {kind!r} takes base codes 0..{CODE_N} (A,C,G,T,N) as uint8, "
                                 f"but the sample is {x.dtype} in [{x.min()}, {x.max()}]: encode the sequences "
                                 f"(interpretome.read_fasta), or set input_kind='dense' (--input-kind dense) for features")
        return rt.encode(x.astype(np.uint8)), f"DNA of {x.shape[1]} bp as {kind}"
    if not np.isfinite(x).all():
        raise ValueError("the sample holds NaN or infinite input values: check the model on real, complete items")
    what = f"{x.shape[1]} input features" if kind == "dense" else f"images of shape {x.shape[1:]}"
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(rt.device), what


def check_model(spec: ModelSpec | str | dict, sample) -> dict:
    """Build ``spec``'s model in this process and run it on real items; return what it returns.

    ``sample``: a few real input items of the spec's input kind — base codes ``(N, L)`` uint8 for
    ``onehot`` / ``kmer`` DNA, features ``(N, F)`` float for ``dense``, images ``(N, C, H, W)``
    for ``image``. Checks that the model builds (factory, kwargs, weights), accepts the input,
    returns as many outputs as ``targets`` declares (and ``select`` picks existing ones), and that
    the selected, activated outputs are finite (unless ``allow_nonfinite``).

    Returns ``{"digest": model_digest(spec), "n_outputs": outputs per item before select,
    "output_shape": the raw output's shape (N, n_out[, L_out]), "targets": the selected names}``.
    Raises ``ModelSpecError`` (the spec or the input do not fit the model) or ``ModelOutputError``
    (what the model returned), each naming the problem and the fix.
    """
    spec = load_spec(spec)
    rt = get_runtime(spec)
    x, what = _sample_input(rt, sample)
    try:
        out = first_output(rt.forward(x))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise ModelSpecError(f"the model does not accept {what} (a batch of shape {tuple(x.shape)}): "
                             f"{str(e).strip()[:300]}. Check input_kind= (--input-kind), the model kwargs= "
                             f"(--model-kwargs) and that the model was trained on these inputs") from e
    rt.check_output(out)
    with outputs_of(lambda r: f"sample item {r}"):
        rt.head(out)
    return {"digest": model_digest(spec), "n_outputs": int(out.shape[1]), "output_shape": tuple(int(d) for d in out.shape),
            "targets": list(spec.target_names)}
