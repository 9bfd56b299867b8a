"""Jobs: inputs -> task graph -> store -> figures, one module per family of analyses.

Each module exposes ``register(subparsers)`` adding its CLI subcommands (see ``interpretome.cli``)
and may add renderers to ``RENDERERS`` (task name -> function drawing a stored group).
Shared here: the model flags, the store-writing step with provenance, and the render registry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import xarray as xr

from ..engine.models import KmerTokenizer, ModelSpec, load_spec
from ..storage.store import StoreError, WriteReport, planning, provenance, write_dataset

RENDERERS: dict[str, Callable[..., list[Path]]] = {}
"""task name (as stored in the group's attrs) -> ``fn(store, group, out_dir, **options) -> [paths]``."""


def add_model_arguments(p: argparse.ArgumentParser, input_kind: str = "onehot") -> None:
    """Add the ModelSpec flags to a subcommand parser."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="'package.module:factory', a TorchScript file, or a .json spec file")
    g.add_argument("--scvi-model", default=None, metavar="DIR",
                   help="a scvi-tools model directory (model.save(dir)) with a classifier, e.g. SCANVI: its "
                        "module.classify is explained (needs --trust-pickle: scvi-tools pickles model.pt)")
    g.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for the factory")
    g.add_argument("--weights", default=None, help="state_dict file for the factory (torch.load weights_only=True)")
    g.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of --weights (trusted files only)")
    g.add_argument("--input-kind", default=None, choices=["onehot", "kmer", "dense", "image"],
                   help=f"model input (default {input_kind})")
    g.add_argument("--kmer-k", type=int, default=None, help="k-mer size for --input-kind kmer")
    g.add_argument("--kmer-stride", type=int, default=None, help="k-mer stride for --input-kind kmer")
    g.add_argument("--targets", default=None, help="comma-separated names of all model outputs")
    g.add_argument("--select", default=None, help="comma-separated targets to keep (names or indices)")
    g.add_argument("--activation", default=None, choices=["none", "sigmoid", "softmax"])
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--device", default=None, help="cpu, cuda or auto (default)")
    p.set_defaults(_default_input_kind=input_kind)


def model_from_args(args: argparse.Namespace) -> ModelSpec:
    """Return the ModelSpec described by the model flags (a .json spec may be overridden by flags)."""
    if getattr(args, "scvi_model", None):
        if args.model:
            raise ValueError("pass either --model or --scvi-model, not both")
        over = {k: getattr(args, k) for k in ("batch_size", "device") if getattr(args, k) is not None}
        return ModelSpec.from_scvi(args.scvi_model, trust_pickle=args.trust_pickle, **over)
    if not args.model:
        raise ValueError("a model is needed: --model 'package.module:factory' / model.ts / spec.json, or --scvi-model DIR")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON ({e}): e.g. --model-kwargs '{{\"channels\": 32}}'") from e
    over: dict = {}
    if kwargs:
        over["kwargs"] = kwargs
    if args.weights:
        over["weights"] = args.weights
    if args.trust_pickle:
        over["trust_pickle"] = True
    over["input_kind"] = args.input_kind or (None if str(args.model).endswith(".json") else args._default_input_kind)
    if args.kmer_k or args.kmer_stride:
        over["kmer"] = KmerTokenizer(k=args.kmer_k or 5, stride=args.kmer_stride or 2)
    if args.targets:
        over["targets"] = tuple(t.strip() for t in args.targets.split(","))
    if args.select:
        over["select"] = tuple(int(s) if s.strip().isdigit() else s.strip() for s in args.select.split(","))
    for name in ("activation", "batch_size", "device"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    over = {k: v for k, v in over.items() if v is not None}
    return load_spec(args.model, **over).check()


def store_result(result: xr.Dataset, store: str | Path, group: str, *, task: str, params: dict,
                 model: ModelSpec | None = None, inputs=(), client=None, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> WriteReport:
    """Write a task's lazy result to ``store/group`` with provenance; return the WriteReport."""
    full = dict(params)
    if model is not None:
        full["model"] = model.describe()
    report = write_dataset(result, store, group, task=task, params=full,
                           provenance=provenance(model=model, inputs=list(inputs)),
                           overwrite=overwrite, client=client, progress=client is not None, log=log)
    log(report.summary())
    return report


def _no_compute(*args, **kwargs):
    raise RuntimeError("planning must not compute")


def plan_first(call: Callable[[], object], *, overwrite: bool = False) -> list:
    """Run a job function in planning mode (nothing computed, nothing written) and return its writes.

    Used by CLI commands before they start a cluster, so a bad input, parameter, model spec or a
    store holding other parameters fails in a second with its message. Raises ``StoreError`` for
    a conflicting group when not ``overwrite``.
    """
    import dask

    with planning() as writes, dask.config.set(scheduler=_no_compute):
        call()
    for w in writes:
        if w.state == "conflict" and not overwrite:
            raise StoreError(f"group {w.group!r} holds a result computed with other parameters: "
                             f"pass overwrite=True (--overwrite) to replace it, or write to another store")
    return list(writes)
