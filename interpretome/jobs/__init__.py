"""Jobs: inputs -> task graph -> store -> figures, one module per family of analyses.

Each family module (``dna``, ``genome``, ``attribution``, ``embedding``, ``coefficients``)
declares its job kinds (``KINDS``, see ``jobs.declare``) and its renderers (``RENDERERS``);
``jobs.registry`` collects them, ``jobs.commands`` generates their subcommands and
``jobs.jobfile`` their job-file steps. Shared here: the model flags, the store-writing step with
provenance (the model's digest and the input files' digests are part of every result's
fingerprint), the plan-first check every compute subcommand runs before it starts a cluster
(``run_command``) and the translation of error messages into flag spelling (``cli_command``).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import functools
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from ..engine.models import KmerTokenizer, ModelSpec, load_spec
from ..errors import ModelSpecError
from ..storage.store import (StoreError, WriteReport, check_writable, file_digest, group_info, planning, provenance,
                             write_dataset)


INPUT_KINDS = ("onehot", "kmer", "dense", "image")
"""Every model input kind (``ModelSpec.input_kind``)."""


def add_model_arguments(p: argparse.ArgumentParser, input_kind: str = "onehot", *, optional: bool = False,
                        input_kinds: tuple[str, ...] = INPUT_KINDS) -> None:
    """Add the ModelSpec flags to a subcommand parser.

    ``optional``: a kind that may use a model (``embed``: the model's nn.Embedding) gets only
    ``--model``, ``--model-kwargs``, ``--weights`` and the k-mer flags, none of them required.
    ``input_kinds``: the choices of ``--input-kind`` (the kinds the subcommand can run).
    """
    g = p.add_argument_group("model")
    if optional:
        g.add_argument("--model", default=None, help="'package.module:factory' or a .json spec file")
        g.add_argument("--model-kwargs", default=None, help="JSON keyword arguments for the model factory")
        g.add_argument("--weights", default=None, help="state_dict for the model factory")
        g.add_argument("--kmer-k", type=int, default=None,
                       help="k-mer size of the model's vocabulary (rows are labelled by these k-mers; default 5)")
        g.add_argument("--kmer-stride", type=int, default=None, help="k-mer stride of the model's tokenizer (default 2)")
        return
    g.add_argument("--model", default=None,
                   help="'package.module:factory', a TorchScript file, or a .json spec file")
    g.add_argument("--scvi-model", default=None, metavar="DIR",
                   help="a scvi-tools model directory (model.save(dir)) with a classifier, e.g. SCANVI: its "
                        "module.classify is explained (needs --trust-pickle: scvi-tools pickles model.pt)")
    g.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for the factory")
    g.add_argument("--weights", default=None, help="state_dict file for the factory (torch.load weights_only=True)")
    g.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of --weights (trusted files only)")
    g.add_argument("--input-kind", default=None, choices=list(input_kinds),
                   help=f"model input (default {input_kind}, or the .json spec's)")
    g.add_argument("--kmer-k", type=int, default=None, help="k-mer size for --input-kind kmer (default 5)")
    g.add_argument("--kmer-stride", type=int, default=None, help="k-mer stride for --input-kind kmer (default 2)")
    g.add_argument("--targets", default=None, help="comma-separated names of all model outputs")
    g.add_argument("--select", default=None, help="comma-separated targets to keep (names or indices)")
    g.add_argument("--activation", default=None, choices=["none", "sigmoid", "softmax"],
                   help="applied to the model's outputs before --select (default none)")
    g.add_argument("--batch-size", type=int, default=None, help="items per model call (default: the spec's)")
    g.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="where workers run the model (default auto: cuda when the worker has a GPU)")
    g.add_argument("--allow-nonfinite", action="store_true",
                   help="accept NaN/inf model outputs (default: a non-finite output is an error)")
    p.set_defaults(_default_input_kind=input_kind)


def model_from_args(args: argparse.Namespace) -> ModelSpec:
    """Return the ModelSpec described by the model flags (a .json spec may be overridden by flags)."""
    if getattr(args, "scvi_model", None):
        if args.model:
            raise ModelSpecError("pass either --model or --scvi-model, not both")
        over = {k: getattr(args, k) for k in ("batch_size", "device") if getattr(args, k) is not None}
        return ModelSpec.from_scvi(args.scvi_model, trust_pickle=args.trust_pickle, **over)
    if not args.model:
        raise ModelSpecError("a model is needed: --model 'package.module:factory' / model.ts / spec.json, or --scvi-model DIR")
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
    if getattr(args, "allow_nonfinite", False):
        over["allow_nonfinite"] = True
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


def optional_model_from_args(args: argparse.Namespace) -> ModelSpec | None:
    """Return the ModelSpec of ``--model`` (``--model-kwargs``, ``--weights``), or None without ``--model``."""
    if not args.model:
        if getattr(args, "kmer_k", None) or getattr(args, "kmer_stride", None):
            raise ModelSpecError("--kmer-k / --kmer-stride describe a model's vocabulary: pass them with --model")
        return None
    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON ({e}): e.g. --model-kwargs '{{\"dim\": 8}}'") from e
    over: dict = {}
    if getattr(args, "kmer_k", None) or getattr(args, "kmer_stride", None):
        over["kmer"] = KmerTokenizer(k=args.kmer_k or 5, stride=args.kmer_stride or 2)
    return load_spec(args.model, **({"kwargs": kwargs} if kwargs else {}),
                     **({"weights": args.weights} if args.weights else {}), **over)




# --- identity: the model and the input files are part of a result's fingerprint ------------------

_CHECKED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("interpretome_checked", default=None)
_RECORDED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("interpretome_recorded", default=None)


@contextlib.contextmanager
def identity_scope():
    """Context in which each model is built, checked and digested once (one command, one job run).

    The plan and the run that follows it then agree on the model digest, and a model is not built
    again for every group written. Outside it every check builds the model again. Nested scopes
    share the outermost one.
    """
    if _CHECKED.get() is not None:
        yield
        return
    token = _CHECKED.set({})
    try:
        yield
    finally:
        _CHECKED.reset(token)


def input_sample(ds: xr.Dataset, kind: str = "onehot", *, n: int = 2, row: int | None = None, start: int = 0,
                 length: int | None = None) -> np.ndarray:
    """Return a few real input items of ``ds`` for ``check_model`` (read now, on this process).

    ``kind`` is the model's input kind: base codes ``(n, L)`` uint8 of ``sequence_code`` for DNA
    (``onehot``, ``kmer``), ``features`` ``(n, F)`` for ``dense``, ``image`` ``(n, C, H, W)``.
    ``row`` picks one item (a contig) instead of the first ``n``; ``start`` and ``length`` cut a
    window along the second axis (a model input window of a genome).
    """
    arr = ds[{"dense": "features", "image": "image"}.get(kind, "sequence_code")]
    first = arr.dims[0]
    arr = arr.isel({first: [row] if row is not None else slice(0, n)})
    if length is not None:
        arr = arr.isel({arr.dims[1]: slice(start, start + int(length))})
    data = arr.data
    if hasattr(data, "compute"):
        # explicit (also under planning's compute-forbidding scheduler); the function, not "sync":
        # a name makes dask import distributed to look for a client
        import dask.local

        data = data.compute(scheduler=dask.local.get_sync)
    return np.asarray(data)


def check_model_on(model: ModelSpec, sample) -> str:
    """Build ``model`` in-process, run it on ``sample`` (real input items, or a function returning
    them) and return its digest; raises ``ModelSpecError`` / ``ModelOutputError`` with the reason.

    Called by every job function right after it reads its input, so a bad model (a misspelt
    factory keyword, weights of another architecture, outputs that disagree with the targets)
    fails before any cluster starts. Done once per model and input shape inside ``identity_scope``.
    """
    from ..engine.models import check_model, model_digest

    cache = _CHECKED.get()
    sample = np.asarray(sample() if callable(sample) else sample)
    key = ("check", model.token, sample.shape[1:])  # each input shape once (a job's steps may differ)
    if cache is not None and key in cache:
        return cache[key]
    if cache is None or ("digest", model.token) not in cache:
        model_digest(model, fresh=True)  # built anew: a factory's own checkpoint may have been retrained
    info = check_model(model, sample)
    if cache is not None:
        cache[key] = cache[("digest", model.token)] = info["digest"]
    return info["digest"]


def model_identity(model: ModelSpec) -> str:
    """Return ``model_digest(model)`` (the built model's parameters and buffers), once per scope.

    The model is built anew for it (not taken from this process's cache of built models), so a
    factory that loads its own, since retrained, checkpoint gets its new digest.
    """
    from ..engine.models import model_digest

    cache = _CHECKED.get()
    key = ("digest", model.token)
    if cache is not None and key in cache:
        return cache[key]
    digest = model_digest(model, fresh=True)  # built anew: a factory's own checkpoint may have been retrained
    if cache is not None:
        cache[key] = digest
    return digest


def input_digests(inputs) -> dict[str, str]:
    """Return ``{file name: sha256}`` of the input files among ``inputs`` (folders and None skipped)."""
    out: dict[str, str] = {}
    for p in inputs:
        if p and os.path.isfile(p):
            name = Path(p).name
            out[name if name not in out else f"{name}#{len(out)}"] = file_digest(p)
    return out


def store_result(result: xr.Dataset, store: str | Path, group: str, *, task: str, params: dict,
                 model: ModelSpec | None = None, model_digest: str | None = None, inputs=(), client=None,
                 overwrite: bool = False, log: Callable[[str], None] = print) -> WriteReport:
    """Write a task's lazy result to ``store/group`` with provenance; return the WriteReport.

    The fingerprinted parameters are ``params`` plus the model's spec and digest (``model_digest``
    as ``check_model_on`` returned it, else taken here) and the content digests of the input
    files, so a rerun after the model was retrained in place or an input file changed is refused
    (unless ``overwrite``) instead of resuming into a mixed result. Chunk progress is shown
    when a client runs it, except under ``--quiet`` (``INTERPRETOME_VERBOSITY=quiet``).
    """
    full = dict(params)
    prov = provenance(model=model, inputs=list(inputs))
    if model is not None:
        full["model"] = model.describe()
        full["model_digest"] = prov["model_digest"] = model_digest or model_identity(model)
    digests = input_digests(inputs)
    if digests:
        full["input_digests"] = digests
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded[group] = (Path(store), task, full)
    report = write_dataset(result, store, group, task=task, params=full, provenance=prov,
                           overwrite=overwrite, client=client, log=log,
                           progress=client is not None and os.environ.get("INTERPRETOME_VERBOSITY") != "quiet")
    log(report.summary())
    return report


# --- plan first: everything checked before a cluster starts -----------------------------------

class NeedsCompute(RuntimeError):
    """Raised (and caught) when a job function computes while its graph is being planned."""


def _forbid_compute(*args, **kwargs):
    raise NeedsCompute("the job computes while building its graph")


@dataclass
class Plan:
    """What a job function would write (``writes``), and why further writes are not known yet.

    ``params``: group -> (store, task, fingerprinted params) as ``store_result`` received them,
    to name what differs when a group holds other parameters.
    """

    writes: list = field(default_factory=list)
    unknown: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def store(self) -> Path | None:
        """Return the store the planned writes go to (None when nothing was planned)."""
        return next((s for s, _, _ in self.params.values()), None)


def plan_first(call: Callable[[], object], *, tolerate: bool = False) -> Plan:
    """Run a job function in planning mode (nothing computed, nothing written) and return its Plan.

    Inputs are read, parameters validated, graphs built, and the model built and run in-process
    on a few real input items. A compute stops the planning there (``unknown`` says so). An error
    after the first planned write (a later output read back from the store), or any error when
    ``tolerate`` (the step reads what an earlier step of the job writes), also stops it; other
    errors propagate.
    """
    import dask

    plan = Plan()
    token = _RECORDED.set(plan.params)
    try:
        with planning() as writes, dask.config.set(scheduler=_forbid_compute):
            try:
                call()
            except NeedsCompute:
                plan.unknown = ("further sizes known once it runs (they need a compute)" if writes
                                else "sizes known once it runs (its graph needs a compute)")
            except (ValueError, TypeError, KeyError, RuntimeError, OSError):
                if not (writes or tolerate):
                    raise
                plan.unknown = "further sizes known once its first outputs are written"
            plan.writes = list(writes)
    finally:
        _RECORDED.reset(token)
    return plan


def holds_result(store: str | Path, group: str) -> bool:
    """Return whether ``store/group`` holds a result: complete, or with at least one chunk written.

    A group a failed run initialised but never wrote a chunk into holds nothing, so a rerun with
    corrected parameters replaces it without ``--overwrite``.
    """
    from ..storage.store import holds_result as _holds

    info = group_info(store, group)
    return info is not None and _holds(Path(store), group, info)


def refuse_conflicts(plan: Plan, *, overwrite: bool = False, where: str = "",
                     fix: str = "pass --overwrite to replace it, or write to another store") -> None:
    """Raise ``StoreError`` naming what differs when a planned group holds a result of other
    parameters, or an unfinished result of another chunking.

    Nothing when ``overwrite``, and nothing for a group that holds no result (``holds_result``).
    """
    if overwrite:
        return
    for w in plan.writes:
        store = plan.params.get(w.group, (None, None, None))[0]
        if w.state != "conflict" or (store is not None and not holds_result(store, w.group)):
            continue
        if w.changes and all(c.startswith("chunks of ") for c in w.changes):
            raise StoreError(f"group {w.group!r}{where} was started with another chunking and is not complete "
                             f"({'; '.join(w.changes[:4])}): rerun with the chunking it was started with "
                             f"(the same --sequence-chunk / --position-chunk) to resume it, or {fix}")
        raise StoreError(f"group {w.group!r}{where} holds a result computed with other parameters "
                         f"({'; '.join(w.changes[:6]) or 'fingerprint differs'}): {fix}")


def human_bytes(n: float) -> str:
    """Return ``n`` bytes as text (kB, MB ... powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def check_location(store: str | Path, writes) -> int:
    """Check the store location can take ``writes`` (write access, free space); return the bytes needed.

    Raises ``StoreError`` for a read-only location, a path under a file, or too little free space.
    """
    per_group: dict[str, int] = {}
    for w in writes:
        if w.chunks:
            todo = w.chunks - (0 if w.state == "conflict" else w.done)
            per_group[w.group] = per_group.get(w.group, 0) + int(w.nbytes * todo / w.chunks)
        elif w.state != "complete":
            per_group[w.group] = per_group.get(w.group, 0) + w.nbytes
    needed = int(sum(per_group.values()) * 1.05)
    store = Path(store)
    check_writable(store)
    probe = store.absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        parts = ", ".join(f"{g} {human_bytes(b)}" for g, b in per_group.items())
        raise StoreError(f"output location {str(probe)!r} has {human_bytes(free)} free but the job needs about "
                         f"{human_bytes(needed)} ({parts}): free space or choose another store path")
    return needed


def describe_write(w, *, overwrite: bool = False) -> str:
    """Return one line for a planned write: group, chunks (to compute, in the store), tasks, bytes."""
    conflict = ", CONFLICT: the store holds other parameters (pass --overwrite or change store)"
    if overwrite:
        conflict = ", replacing the result of other parameters the store holds (overwrite)"
    state = {"new": "", "resume": f", {w.done} already in the store", "complete": ", complete in the store",
             "conflict": conflict}.get(w.state, f", {w.state}")
    return (f"group {w.group!r}: {w.chunks} chunks ({w.chunks - w.done} to compute{state}), {w.graph_tasks} graph "
            f"tasks, {w.nbytes} bytes ({human_bytes(w.nbytes)}) uncompressed")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--dry-run`` and the cluster flags to a compute subcommand's parser."""
    from ..engine.cluster import add_cluster_arguments

    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print the plan (groups, chunks, bytes, resume state); start nothing")
    add_cluster_arguments(p, executor=True)


def _quiet(msg: str) -> None:
    pass


def written_groups(result) -> list[str]:
    """Return the groups of the WriteReport(s) a job function returned (a report, a list or a dict of them)."""
    if isinstance(result, WriteReport):
        return [result.group]
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, (list, tuple)):
        return [g for r in result for g in written_groups(r)]
    return []


def results_line(store, groups) -> str:
    """Return the last line a command prints: where its results are and how to open them.

    >>> results_line("out.zarr", ["sweep"])
    "results: out.zarr group 'sweep' (open with xarray.open_zarr('out.zarr', group='sweep'))"
    """
    groups = list(dict.fromkeys(groups))
    names = ", ".join(repr(g) for g in groups)
    return (f"results: {store} group{'s' if len(groups) > 1 else ''} {names} "
            f"(open with xarray.open_zarr({str(store)!r}, group={groups[0]!r}))")


_RESULTS_STREAM: list = []


@contextlib.contextmanager
def results_stream(stream):
    """Context in which ``announce`` writes to ``stream`` (``--quiet`` silences stdout but not the results line)."""
    _RESULTS_STREAM.append(stream)
    try:
        yield
    finally:
        _RESULTS_STREAM.pop()


def announce(line: str) -> None:
    """Print a command's results line (to the stream of ``results_stream``, else stdout), even under ``--quiet``."""
    import sys

    print(line, file=_RESULTS_STREAM[-1] if _RESULTS_STREAM else sys.stdout, flush=True)


def run_command(args: argparse.Namespace, job: Callable[..., object]) -> list[str] | None:
    """Plan ``job``, check it, then (unless ``--dry-run``) start the cluster and run it; return the
    groups it wrote (None for ``--dry-run``).

    ``job(client=None, log=print)`` reads the inputs, builds the graphs and writes with
    ``store_result``. It is first called in planning mode (``plan_first``): inputs, parameters and
    the model (built and run in-process on real input items) are checked, then the store's groups
    (``--overwrite`` for one holding other parameters) and the output location (write access,
    free space). With ``args.dry_run`` the plan is printed and nothing starts; otherwise the
    cluster of the cluster flags starts and ``job`` runs on it, recorded in the store's run history.
    """
    from ..engine.cluster import connect_from_args
    from .history import recording_run

    with identity_scope():
        plan = plan_first(lambda: job(log=_quiet))
        refuse_conflicts(plan, overwrite=args.overwrite)
        needed = check_location(args.store, plan.writes)
        if getattr(args, "dry_run", False):
            print(f"{args.command} -> store {args.store}: nothing computed, no cluster started")
            for w in plan.writes:
                print("  " + describe_write(w, overwrite=args.overwrite))
            if plan.unknown:
                print(f"  {plan.unknown}")
            print(f"store location: writable, room for about {human_bytes(needed)}")
            return None
        entry = {"job": f"interpretome {args.command}", "command": args.command}
        todo = None if plan.unknown else sum(w.chunks - w.done for w in plan.writes if w.chunks)
        with connect_from_args(args, plan_chunks=todo) as client, recording_run(args.store, entry):
            result = job(client=client)
    return written_groups(result) or list(dict.fromkeys(w.group for w in plan.writes))


# --- messages in the command line's own words -------------------------------------------------------

_FLAG_ALIASES = {"obs_layer": "--layer-in-file", "n_components": "--n-components", "kwargs": "--model-kwargs"}
_KWARG = re.compile(r"""\b([a-z][a-z0-9_]*)=(True\b|'[^']*'|"[^"]*"|\[[^\]]*\]|[\w.+-]+)?""")


def cli_message(message: str, args: argparse.Namespace) -> str:
    """Return ``message`` with Python keyword spellings as the flags of ``args``' subcommand.

    ``inserts=['TATAAT']`` -> ``--inserts TATAAT``, ``mode='insert'`` -> ``--mode insert``,
    ``overwrite=True (--overwrite)`` and ``--overwrite (overwrite=True in Python)`` -> ``--overwrite``,
    ``input_kind='dense' (--input-kind dense)`` -> ``--input-kind dense``.
    Names that are not options of the subcommand are left as they are.
    """
    flags = {d: "--" + d.replace("_", "-") for d in vars(args) if not d.startswith("_")}
    flags.update({k: v for k, v in _FLAG_ALIASES.items() if v[2:].replace("-", "_") in flags})
    flags.update({k: v for k, v in getattr(args, "_flags", {}).items() if v.startswith("-")})
    text = re.sub(r"\b[a-z_]+=[^\s()]* \((--[^)]*)\)", r"\1", message)  # x=True (--x), k='v' (--k v)
    text = re.sub(r"(--[a-z-]+) \([a-z_]+=True in Python\)", r"\1", text)

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name not in flags:
            return m.group(0)
        if value is None or value == "True":
            return flags[name]
        if value.startswith("["):
            value = ",".join(v.strip(" '\"") for v in value[1:-1].split(","))
        return f"{flags[name]} {value.strip(chr(39) + chr(34))}"

    return _KWARG.sub(flag, text)


def cli_command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Decorate a subcommand function so the errors it raises name flags, not Python keywords."""
    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except Exception as e:
            text = cli_message(str(e), args)
            if text != str(e):
                e.args = (text,)
            raise

    return wrapper
