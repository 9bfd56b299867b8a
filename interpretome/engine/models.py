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
``ModelOutputError`` on the first batch.

One-hot encoding: channels A,C,G,T; N (code 4) and padding encode as all zeros.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from typing import Any, Callable

import numpy as np

from ..storage.schema import BASES, CODE_N

INPUT_KINDS = ("onehot", "kmer", "dense", "image")
ACTIVATIONS = ("none", "sigmoid", "softmax")


class ModelSpecError(ValueError):
    """A model spec cannot be resolved (bad factory path, missing file, bad option)."""


class ModelOutputError(ValueError):
    """A model's output disagrees with the declared targets."""


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


def _sha256(path: str) -> str:
    from ..storage.store import file_digest

    return file_digest(path).split(":", 1)[1]


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
    layer: str | None = None
    feature_names: tuple[str, ...] | None = None
    covariates: tuple[str, ...] = ()
    covariate_categories: dict = field(default_factory=dict)

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
        for name in ("targets", "select", "feature_names", "covariates"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v) if isinstance(v, (list, tuple)) else (v,))
        for f in (self.weights, self.torchscript):
            if f and not os.path.isfile(f):
                raise ModelSpecError(f"model file {f!r} does not exist: check the path")
        if self.select is not None:
            for s in self.select:
                if isinstance(s, str) and (self.targets is None or s not in self.targets):
                    raise ModelSpecError(f"target {s!r} is selected by name but the declared targets are "
                                         f"{self.targets}: declare targets= or select by index")
        if self.covariates and self.input_kind != "dense":
            raise ModelSpecError(f"covariates= (per-sample obs columns passed to forward) need input_kind 'dense', "
                                 f"the spec says {self.input_kind!r}")
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
        for k in ("targets", "select", "covariates"):
            d[k] = list(d[k]) if d[k] is not None else None
        if self.feature_names is not None:
            d["feature_names"] = {"n": len(self.feature_names), "sha256": hashlib.sha256(
                "\n".join(self.feature_names).encode()).hexdigest()}
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
        full["feature_names"] = list(self.feature_names) if self.feature_names is not None else None
        if self.kmer is not None:
            full["kmer"]["vocab"] = list(self.kmer.vocab)
        return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()

    @classmethod
    def from_scvi(cls, model_dir, *, trust_pickle: bool = False, **overrides) -> "ModelSpec":
        """Return the spec of a saved scvi-tools classifier model (``module.classify``; see ``engine.scvi``)."""
        from .scvi import spec_from_scvi

        return spec_from_scvi(model_dir, trust_pickle=trust_pickle, **overrides)

    def with_options(self, **changes) -> "ModelSpec":
        """Return a copy with ``changes`` applied (e.g. ``batch_size=16``)."""
        return replace(self, **changes)

    def check(self) -> "ModelSpec":
        """Import the factory (without building the model) so a bad spec fails before any work."""
        if self.factory:
            _import_factory(self.factory)
        return self

    # building -----------------------------------------------------------------------------------
    def build(self):
        """Return the ``nn.Module`` (eval mode, on ``self.resolved_device()``); called on workers."""
        import torch

        device = self.resolved_device()
        if self.torchscript:
            model = torch.jit.load(self.torchscript, map_location=device)
        else:
            model = _import_factory(self.factory)(**self.kwargs)
            if self.weights:
                try:
                    state = torch.load(self.weights, map_location="cpu", weights_only=not self.trust_pickle)
                except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError and others
                    raise ModelSpecError(
                        f"weights file {self.weights!r} could not be loaded as a plain state_dict "
                        f"(torch.load weights_only=True): {str(e).strip().splitlines()[0][:200]} ... "
                        f"Only if you trust the file, pass trust_pickle=True (--trust-pickle)"
                    ) from e
                state = unwrap_state_dict(state, model)
                try:
                    model.load_state_dict(state)
                except RuntimeError as e:
                    raise ModelSpecError(f"weights {self.weights!r} do not fit {self.factory!r}: {e}") from e
        return model.to(device).eval()

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


def unwrap_state_dict(state, model) -> dict:
    """Return the module state_dict inside a checkpoint: ``{"model_state_dict": ...}`` (scvi-tools, plain
    training loops) or ``{"state_dict": ...}`` (Lightning), with a common key prefix that the module's own
    keys lack (Lightning's ``model.``) removed.
    """
    for key in ("model_state_dict", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        return state
    own = set(model.state_dict())
    keys = list(state)
    if own and not own & set(keys):
        heads = {k.split(".", 1)[0] for k in keys}
        if len(heads) == 1 and all("." in k for k in keys):
            stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
            if set(stripped) & own:
                return stripped
    return state


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
    def head(self, out) -> np.ndarray:
        """Return the selected, activated outputs as float32 numpy: ``(N, T)`` or ``(N, T, L_out)``.

        Raises ``ModelOutputError`` on the first batch whose output disagrees with the targets.
        """
        torch = self.torch
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == 1:
            out = out[:, None]
        n_out = out.shape[1]
        if not self.checked:
            declared = self.spec.targets
            if declared is not None and n_out != len(declared):
                raise ModelOutputError(
                    f"model returned {n_out} outputs per sample (output shape {tuple(out.shape)}) but the spec "
                    f"declares {len(declared)} targets {list(declared)}: fix targets= or the model"
                )
            if declared is None and self.spec.select is None and n_out != 1:
                raise ModelOutputError(
                    f"model returned {n_out} outputs per sample (output shape {tuple(out.shape)}) but the spec "
                    f"declares no targets, which means one output: declare targets=[...] (names of all "
                    f"{n_out} outputs) and optionally select= the ones to keep"
                )
            if out.ndim > 3:
                raise ModelOutputError(f"model output shape {tuple(out.shape)} is neither (N, T) nor (N, T, L_out)")
            self._select_idx = self.target_indices(n_out)
            self.checked = True
        if self.spec.activation == "sigmoid":
            out = torch.sigmoid(out)
        elif self.spec.activation == "softmax":
            out = torch.softmax(out, dim=1)
        out = out[:, torch.as_tensor(self._select_idx, device=out.device)]
        return out.float().cpu().numpy()

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
            outs.append(self.head(self.forward(self.encode(codes[i:i + bs]))))
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
            res = self._edits_fast(ref, starts[fast], new[fast])
            out = np.empty((n_edit,) + res.shape[1:], np.float32)
            out[fast] = res
        slow = ~fast
        if slow.any():
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
            outs.append(self.head(self.forward(self.encode(batch))))
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
                    outs.append(self.head(self.max_head(pooled)))
                    continue
                act = ref_act.expand(b, -1, -1).clone()
                pos = ((s - right)[:, None] + torch.arange(changed)[None, :]).to(act.device)
                act.scatter_(2, pos[:, None, :].expand(-1, act.shape[1], -1), act_new)
                outs.append(self.head(head(act)))
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
    """Forget the models built in this process (tests, or to free device memory)."""
    _RUNTIMES.clear()
