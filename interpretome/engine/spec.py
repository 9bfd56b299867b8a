"""What a model is: ``ModelSpec`` (how a worker builds it, what it takes and returns) and ``load_spec``.

A ``ModelSpec`` is a small, picklable description — never the weights:

* ``factory="package.module:function"`` with JSON ``kwargs`` (the function returns an
  ``nn.Module``), optionally with ``weights=`` a state_dict file loaded with
  ``torch.load(weights_only=True)`` (``trust_pickle=True`` is needed for anything else);
* ``torchscript="model.pt"``, a TorchScript file (``torch.jit.load``).

plus the input kind (``onehot`` DNA ``(N, 4, L)``, ``kmer`` token ids ``(N, T)``, ``dense``
``(N, F)``, ``image`` ``(N, C, H, W)``), the output head (declared ``targets`` names, ``select`` by
index or name, ``activation`` none / sigmoid / softmax; what they mean is ``engine.heads``),
``batch_size`` and ``device``.

Here too: importing the factory and matching its kwargs (a misspelt key is a ``ModelSpecError``
naming the closest parameter), reading a weights file (format sniffed from its first bytes), and
the spec's identity: ``token``, the sha256 of the spec and of its weights file (the digest of
files is ``storage.digests.file_digest``). Building and running is ``engine.runtime``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import json
import os
import pickle
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from ..errors import ModelSpecError
from .heads import ACTIVATIONS, SOFTMAX_ONE
from .tokenize import KmerTokenizer

INPUT_KINDS = ("onehot", "kmer", "dense", "image")


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
    for key in ("model_state_dict", "state_dict"):  # scvi-tools / plain training loops; Lightning
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if hasattr(state, "state_dict") and callable(state.state_dict):  # a whole pickled module (trust_pickle)
        state = state.state_dict()
    if not isinstance(state, dict):
        raise ModelSpecError(f"weights file {path!r} holds a {type(state).__name__}, not a state_dict: save "
                             f"model.state_dict() and pass that file as weights= (--weights)")
    return state


def unwrap_state_dict(state: dict, model) -> dict:
    """Return ``state`` (from ``_load_state``: ``{"model_state_dict": ...}`` of scvi-tools and plain training
    loops and Lightning's ``{"state_dict": ...}`` already unwrapped) with a common key prefix that the
    module's own keys lack (Lightning's ``model.``) removed.
    """
    if not state:
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


def _sha256(path: str) -> str:
    from ..storage.digests import file_digest

    return file_digest(path).split(":", 1)[1]


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model on a worker, what it takes and what it returns (see module doc).

    Parameters
    ----------
    factory : str, optional
        ``package.module:function`` returning an ``nn.Module`` (exactly one of ``factory`` and
        ``torchscript``).
    kwargs : dict
        JSON keyword arguments of the factory.
    weights : str, optional
        A state_dict file loaded into the factory's module (``torch.load(weights_only=True)``).
    torchscript : str, optional
        A TorchScript file.
    input_kind : {'onehot', 'kmer', 'dense', 'image'}
        What the model takes: one-hot DNA (N, 4, L), k-mer ids (N, T), features (N, F) or images
        (N, C, H, W).
    kmer : KmerTokenizer or dict, optional
        The tokenizer of a ``kmer`` model (default ``KmerTokenizer()``).
    targets : sequence of str, optional
        The names of the model's outputs.
    select : sequence of int or str, optional
        The outputs kept, by index or target name.
    activation : {'none', 'sigmoid', 'softmax'}
        Applied to the outputs (``engine.heads``).
    batch_size : int
        Inputs per forward pass.
    device : str
        ``auto``, ``cpu``, ``cuda`` ...
    trust_pickle : bool
        Allow weights that need pickle.
    weights_sha256 : str, optional
        The weights file's digest (computed when not given).
    allow_nonfinite : bool
        Accept NaN / inf outputs instead of refusing them.
    layer : str, optional
        The AnnData layer the model's input is read from (e.g. a scvi-tools model's registered layer).
    feature_names : sequence of str, optional
        The features the model was trained on (an input with other features is refused).
    covariates : sequence of str
        obs columns passed to ``forward`` after the input (``dense`` models only).
    covariate_categories : dict
        ``{covariate: categories}`` coding categorical covariates.

    Examples
    --------
    >>> from interpretome import ModelSpec
    >>> spec = ModelSpec(factory="interpretome.datasets:promoter_cnn", kwargs={"channels": 8},
    ...                  targets=("promoter",), activation="sigmoid")
    >>> spec.input_kind, spec.targets
    ('onehot', ('promoter',))
    >>> import torch
    >>> spec.build()(torch.zeros(2, 4, 200)).shape
    torch.Size([2, 1])
    """

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
        if self.activation == "softmax" and self.targets is not None and len(self.targets) == 1:
            raise ModelSpecError(SOFTMAX_ONE)
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
    def from_scvi(cls, model_dir, *, trust_pickle: bool = False, use_posterior_mean: bool = True,
                  **overrides) -> "ModelSpec":
        """Return the spec of a saved scvi-tools classifier model (``module.classify``; see ``engine.scvi``)."""
        from .scvi import spec_fields

        fields = spec_fields(model_dir, trust_pickle=trust_pickle, use_posterior_mean=use_posterior_mean)
        return cls(**{**fields, **overrides})

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
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ModelSpecError(f"device={self.device!r} (--device {self.device}) but this machine has no CUDA GPU "
                                 f"torch can use: pass device='auto' (--device auto) to use a GPU only where a worker "
                                 f"has one, or device='cpu' (--device cpu)")
        if self.torchscript:
            model = torch.jit.load(self.torchscript, map_location=device)
        else:
            model = _call_factory(self.factory, self.kwargs)
            if not isinstance(model, torch.nn.Module):
                raise ModelSpecError(f"model factory {self.factory!r} returned an object of type {type(model).__name__}, not a "
                                     f"torch.nn.Module: make it return the model (an nn.Module instance)")
            if self.weights:
                try:
                    model.load_state_dict(unwrap_state_dict(_load_state(self.weights, self.trust_pickle), model))
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

    Parameters
    ----------
    arg : str, dict or ModelSpec
        The spec, its fields, or a string as above.
    **overrides
        Fields replaced in the result (``batch_size=``, ``device=`` ...).

    Returns
    -------
    ModelSpec
        The spec.

    Examples
    --------
    >>> import interpretome as it
    >>> spec = it.load_spec("interpretome.datasets:promoter_cnn", batch_size=8)
    >>> spec.factory, spec.batch_size, spec.input_kind
    ('interpretome.datasets:promoter_cnn', 8, 'onehot')
    >>> it.load_spec({"factory": "interpretome.zoo:bpnet_like", "kwargs": {"crop": 4}}).kwargs
    {'crop': 4}
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
