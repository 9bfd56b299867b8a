"""How a worker runs a model: the per-process ``Runtime`` cache, input encoding, identity checks.

Workers build the model once per process (``get_runtime``), cached by the spec's ``token`` (a
sha256 of the spec and of its weights file); building is serialised by a lock. A ``Runtime``
encodes DNA (one-hot from ``storage.alphabet``: channels A,C,G,T, N and padding all zeros; or
k-mer ids, ``engine.tokenize``), runs batches and passes every output through the spec's head
(``engine.heads.OutputHead``): a model whose output disagrees with the declared targets raises
``ModelOutputError`` on the first batch; so does a NaN or infinite output on any batch
(``NonFiniteOutputError``, naming the batch row and the target; the tasks re-raise it naming the
sequence or sample, see ``outputs_of``) unless the spec says ``allow_nonfinite=True``.
``predict_edits`` takes the locality fast path (``engine.receptive_field``, ``engine.fx_locality``) where it can.

``model_digest(spec)`` is the sha256 of the built model's parameters and buffers (what actually
runs, whoever loaded the weights); ``check_model(spec, sample)`` builds the model and runs it on a
few real items before any work; ``Runtime.probe`` is the same check on one batch, which the
tasks run on zeros at graph-build time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import numpy as np

from ..errors import ModelSpecError
from ..storage.alphabet import CODE_N, ONEHOT_LUT
from .heads import OutputHead, first_output, outputs_of
from .process import ieee_float32
from .receptive_field import plan_for, predict_edits_local, say_no_plan
from .spec import ModelSpec, load_spec


class Runtime:
    """A built model with its input encoding and output head; ``predict`` and ``predict_edits``."""

    def __init__(self, spec: ModelSpec):
        import torch

        self.spec = spec
        self.torch = torch
        self.device = spec.resolved_device()
        ieee_float32()  # cuDNN would otherwise run float32 convolutions in TF32 on a GPU
        self.model = spec.build()
        self.digest: str | None = None  # model_digest of self.model, computed on first request
        self.output = OutputHead(spec)
        # the locality plan of predict_edits (None: full forwards); traced here, under get_runtime's build lock
        self.locality, self.no_locality = plan_for(self.model, spec)
        self.onehot_lut = torch.from_numpy(np.array(ONEHOT_LUT)).to(self.device)
        self.kmer_table = spec.kmer.lookup() if spec.kmer is not None else None
        self.thread_cache = threading.local()  # per-thread caches: a Runtime is shared by a worker's threads
        self.grad_parts = None  # (first, rest) of the gradient model, made by engine.attribution.gradient_parts

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

    # checks -------------------------------------------------------------------------------------
    def probe(self, x, what: str, extra=()):
        """Return the raw output ``(N, n_out[, L_out])`` of model input ``x``, checked against the spec.

        ``extra``: per-sample tensors passed after the input (the spec's covariates). Raises ``ModelSpecError`` when the model does not accept ``x`` (``what`` describes it, e.g.
        "12 input features") and ``ModelOutputError`` when its output disagrees with the targets.
        """
        try:
            out = first_output(self.forward(x, *extra))
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise ModelSpecError(f"the model does not accept {what} (a batch of shape {tuple(x.shape)}): "
                                 f"{str(e).strip()[:300]}. Check input_kind= (--input-kind), the model kwargs= "
                                 f"(--model-kwargs) and that the model was trained on these inputs (same "
                                 f"features, same order)") from e
        self.output.check(out)
        return out

    def probe_shape(self, shape: tuple[int, ...], what: str) -> int:
        """Run the model once on zeros of model-input shape ``(1, *shape)``; return its number of outputs.

        Token ids for ``kmer`` specs, float32 otherwise, and a zero ``(1, 1)`` tensor per covariate of
        the spec; checked as ``probe`` (graph-build time).
        """
        torch = self.torch
        dtype = torch.long if self.spec.input_kind == "kmer" else torch.float32
        x = torch.zeros((1,) + tuple(shape), dtype=dtype, device=self.device)
        return int(self.probe(x, what, self.zero_covariates(1)).shape[1])

    def zero_covariates(self, n: int) -> tuple:
        """Return a zero ``(n, 1)`` tensor per covariate of the spec (the checks' stand-in for obs values)."""
        return tuple(self.torch.zeros((n, 1), device=self.device) for _ in self.spec.covariates)

    # prediction ---------------------------------------------------------------------------------
    def forward(self, x, *extra):
        """Return the raw model output for an encoded batch (and per-sample ``extra`` tensors), without gradients."""
        with self.torch.inference_mode():
            return self.model(x, *extra)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Return head outputs ``(N, T[, L_out])`` for base codes ``(N, L)`` in batches."""
        outs = []
        bs = int(self.spec.batch_size)
        for i in range(0, len(codes), bs):
            outs.append(self.output(self.forward(self.encode(codes[i:i + bs])), row0=i))
        if not outs:
            return np.zeros((0, len(self.spec.target_names)), np.float32)
        return np.concatenate(outs)

    def predict_edits(self, ref: np.ndarray, starts: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Return head outputs ``(E, T)`` for ``E`` copies of ``ref`` each with one span replaced.

        ``ref`` (L,) uint8 codes of one sequence (its real length); ``starts`` (E,) span starts;
        ``new`` (E, k) uint8 replacement codes (code 4 = N, a zero column in the one-hot). Spans
        must fit in ``ref``. Traceable models take the locality fast path (``engine.receptive_field``):
        only the cone a span can change is recomputed; others run batched full forward passes.
        """
        starts = np.asarray(starts, np.int64)
        new = np.asarray(new, np.uint8)
        if new.shape[0] == 0:
            return np.zeros((0, len(self.spec.target_names)), np.float32)
        if self.locality:
            return predict_edits_local(self, self.locality, ref, starts, new)
        say_no_plan(self.no_locality)
        return self._edits_full(ref, starts, new)

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
            outs.append(self.output(self.forward(self.encode(batch)), row0=i))
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


def sample_input(rt: Runtime, sample) -> tuple[Any, str]:
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
    x, what = sample_input(rt, sample)
    out = rt.probe(x, what, rt.zero_covariates(x.shape[0]))
    with outputs_of(lambda r: f"sample item {r}"):
        rt.output(out)
    return {"digest": model_digest(spec), "n_outputs": int(out.shape[1]), "output_shape": tuple(int(d) for d in out.shape),
            "targets": list(spec.target_names)}
