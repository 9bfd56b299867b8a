"""``interpretome run job.toml``: several analyses in one job, on one cluster, into one store.

A job file (TOML) names the store, the model, the cluster and the steps::

    store = "results.zarr"          # relative paths are relative to the job file's folder
    # overwrite = false             # replace groups computed with other parameters

    [model]                         # a ModelSpec: factory + kwargs [+ weights], or torchscript
    factory = "interpretome.datasets:promoter_cnn"
    weights = "promoter_cnn.pt"
    targets = ["promoter"]
    activation = "sigmoid"

    [cluster]                       # optional; default: an embedded LocalCluster
    workers = 2                     # or scheduler = "tcp://..", scheduler_file = "..", gpus = true
    # [cluster.jobqueue]            # or a dask-jobqueue cluster (the ``hpc`` extra)
    # system = "slurm"              # slurm | pbs
    # jobs = 4                      # jobs to submit; other keys go to SLURMCluster / PBSCluster
    # cores = 8
    # memory = "32GB"

    [[step]]
    kind = "sweep"                  # a key of JOB_KINDS
    name = "sweep"                  # the store group (default: the kind's default group)
    fasta = "promoters.fa"
    windows = [1, 5, 9]

    [[step]]
    kind = "ism"
    fasta = "promoters.fa"
    # after = ["sweep"]             # explicit ordering; kinds also declare their dependencies
    # [step.model]                  # a step may override the job's model

Everything is validated before any work: unknown keys (with a did-you-mean), wrong types,
missing input files, a model spec that does not import, unknown step kinds, duplicate groups and
dependency cycles; each message names the key and its line in the file. Then every step's lazy
graph is built without computing (``storage.store.planning``) to know the chunks and bytes it
will write, and its model is built and run in-process on a few real items of its input (a
misspelt factory keyword, weights of another architecture, outputs that disagree with the
targets fail here); the output location is checked for write access and free space; only then does the
cluster start and the steps run in dependency order. A rerun of the same job resumes: each step
writes only the chunks missing from the store's manifest, and the runner prints how many.

``--dry-run`` prints that plan (chunks, graph tasks, output bytes, what is already in the store)
and starts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import inspect
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ..engine.cluster import THREAD_ENV, add_cluster_arguments, connect
from ..engine.models import ModelSpec, ModelSpecError
from ..errors import JobFileError
from ..storage.store import PlannedWrite
from . import (Plan, _quiet, check_location, describe_write, human_bytes, identity_scope, plan_first,
               refuse_conflicts)


# --- the registry of job kinds ----------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One parameter of a job kind.

    ``type``: ``int``, ``float``, ``str``, ``bool``, ``table``, ``list[T]``, or alternatives joined
    by ``|``. ``file``: an input file (a path, or a list of paths for ``list[str]``) resolved
    against the job file's folder and checked to exist; a string instead of True is a separator:
    the path is what follows its last occurrence (``"="`` for ``KIND:MODEL:SET=PATH``).
    ``output``: a path written by the step, resolved against the job file's folder. ``step``:
    names another step's group (the step then runs after that one). ``choices``: allowed values.
    """

    name: str
    type: str
    default: Any = None
    required: bool = False
    file: bool | str = False
    output: bool = False
    step: bool = False
    choices: tuple = ()
    doc: str = ""


@dataclass(frozen=True)
class JobKind:
    """A kind of step: its runner (``module:function``), parameters and dependencies.

    The runner is called with keywords only: the step's parameters (defaults filled in),
    ``store``, ``group``, ``client``, ``overwrite``, ``log`` and, when ``model``, ``model`` (a
    ModelSpec, or None for ``model="optional"`` without one). It returns a ``WriteReport`` (or a
    list / dict of them). ``depends``: kinds whose steps in the same job must run first.
    ``lazy`` (a bool, or a function of the step's parameters): the runner only builds graphs
    before writing, so its plan (chunks, bytes) can be taken without computing.
    ``fixed_group``: the runner names its own groups (``name`` must stay the default).
    """

    name: str
    runner: str
    params: tuple[Param, ...]
    doc: str
    group: str
    model: bool | str = True
    depends: tuple[str, ...] = ()
    lazy: bool | Callable[[dict], bool] = True
    fixed_group: bool = False

    def is_lazy(self, params: dict) -> bool:
        """Return whether a step with ``params`` can be planned without computing."""
        return bool(self.lazy(params) if callable(self.lazy) else self.lazy)

    def function(self) -> Callable:
        """Import and return the runner function."""
        mod, _, attr = self.runner.partition(":")
        return getattr(importlib.import_module(mod), attr)

    def param(self, name: str) -> Param | None:
        """Return the parameter called ``name`` (None if the kind has none)."""
        return next((p for p in self.params if p.name == name), None)


def _chunk_params(sequence_chunk: int = 16) -> tuple[Param, ...]:
    return (
        Param("sequence_chunk", "int", sequence_chunk, doc="sequences per task"),
        Param("position_chunk", "int", None, doc="positions per task (default: whole sequences)"),
    )


_MODES = ("random", "shuffle", "dinuc_shuffle", "mask", "insert")
try:  # the sweep's modes, from the task itself when it is importable
    from ..tasks.perturb import MODES as _MODES  # noqa: F811
except ImportError:  # pragma: no cover
    pass

JOB_KINDS: dict[str, JobKind] = {}
"""kind name -> JobKind: what ``[[step]] kind = ...`` may name in a job file."""


def register_kind(kind: JobKind) -> JobKind:
    """Add (or replace) a job kind in ``JOB_KINDS`` and return it."""
    JOB_KINDS[kind.name] = kind
    return kind


register_kind(JobKind(
    "sweep", "interpretome.jobs.dna:run_sweep", doc="perturbation sweep of sliding k-mer windows over FASTA records",
    group="sweep", params=(
        Param("fasta", "str", required=True, file=True, doc="FASTA file, one or many records"),
        Param("windows", "list[int]", None, doc="window sizes k (default 1,3,...,15)"),
        Param("stride", "int", 1, doc="positions between window starts"),
        Param("replicates", "int", 1, doc="random draws per window"),
        Param("mode", "str", "random", choices=tuple(_MODES), doc="how a window is perturbed"),
        Param("seed", "int", 0, doc="seed of the counter-based draws"),
        Param("inserts", "list[str]", None, doc="k-mers to insert (mode = 'insert')"),
        Param("keep_replicates", "bool", False, doc="also store each replicate's prediction"),
        *_chunk_params(),
    )))

register_kind(JobKind(
    "ism", "interpretome.jobs.dna:run_ism", doc="in-silico saturation mutagenesis of FASTA records",
    group="ism", params=(
        Param("fasta", "str", required=True, file=True, doc="FASTA file, one or many records"),
        Param("start", "int", None, doc="first position mutated (default 0)"),
        Param("end", "int", None, doc="end of the mutated region (default: sequence end)"),
        *_chunk_params(),
    )))


# --- line numbers ------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)]


class LineIndex:
    """Line numbers of the tables and keys of a TOML text (tomllib gives none).

    Paths are tuples: ``("model",)``, ``("step", 1)`` for the second ``[[step]]``, ``("step", 1,
    "model")``. ``line(path, key)`` returns the key's line, else the nearest enclosing table's or
    key's line, else 1.
    """

    def __init__(self, text: str):
        self.tables: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        counts: dict[tuple, int] = {}
        current: tuple = ()
        depth = 0
        in_multi = None
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw
            if in_multi:
                if in_multi in line:
                    in_multi = None
                continue
            stripped = line.strip()
            if depth == 0 and stripped.startswith("["):
                is_array = stripped.startswith("[[")
                inner = stripped[2:stripped.find("]]")] if is_array else stripped[1:stripped.find("]")]
                parts = _split_key(inner)
                path: list = []
                for i, part in enumerate(parts):
                    path.append(part)
                    key = tuple(path)
                    last = i == len(parts) - 1
                    if is_array and last:
                        counts[key] = counts.get(key, -1) + 1
                        path.append(counts[key])
                    elif key in counts:
                        path.append(counts[key])
                current = tuple(path)
                self.tables.setdefault(current, no)
                continue
            if depth == 0:
                m = _KEY_RE.match(line)
                if m:
                    parts = _split_key(m.group(1))
                    self.keys.setdefault(current + tuple(parts), no)
                    if len(parts) > 1:
                        self.keys.setdefault(current + (parts[0],), no)
                    rest = line[m.end():]
                else:
                    rest = line
            else:
                rest = line
            depth, in_multi = _scan_value(rest, depth)

    def line(self, path: tuple, key: str | None = None) -> int:
        """Return the line of ``key`` in the table at ``path`` (or the closest enclosing thing)."""
        full = tuple(path) + ((key,) if key is not None else ())
        while full:
            if full in self.keys:
                return self.keys[full]
            if full in self.tables:
                return self.tables[full]
            full = full[:-1]
            if full and isinstance(full[-1], int) and full in self.tables:
                return self.tables[full]
        return 1


def _scan_value(text: str, depth: int) -> tuple[int, str | None]:
    """Return the bracket depth after ``text`` and the open multi-line string delimiter, if any."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            delim = text[i:i + 3]
            end = text.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if c in "\"'":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if (c == '"' and text[end] == "\\") else 1
            i = end + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None


# --- the job -----------------------------------------------------------------------------------------

@dataclass
class Step:
    """One validated step: its kind, group name, parameters (defaults filled, paths resolved), model."""

    kind: JobKind
    name: str
    params: dict
    model: ModelSpec | None
    index: int
    line: int
    after: list[str] = field(default_factory=list)

    def label(self) -> str:
        """Return ``name (kind)``."""
        return self.name if self.name == self.kind.name else f"{self.name} ({self.kind.name})"


@dataclass
class Job:
    """A validated job file: store, model, cluster table and steps in dependency order."""

    path: Path
    store: Path
    overwrite: bool
    model: ModelSpec | None
    cluster: dict
    steps: list[Step]
    description: str = ""


TOP_KEYS = {
    "store": Param("store", "str", required=True, doc="output zarr store"),
    "overwrite": Param("overwrite", "bool", False, doc="replace groups computed with other parameters"),
    "description": Param("description", "str", "", doc="free text, kept for the record"),
    "model": Param("model", "table|str", None, doc="the model spec (table of ModelSpec fields, or a string)"),
    "cluster": Param("cluster", "table", None, doc="where the job runs"),
    "step": Param("step", "list[table]", required=True, doc="the analyses, [[step]] tables"),
}

MODEL_KEYS = {
    "factory": Param("factory", "str", doc="'package.module:function' building the nn.Module"),
    "kwargs": Param("kwargs", "table", doc="keyword arguments of the factory"),
    "weights": Param("weights", "str", file=True, doc="state_dict file for the factory"),
    "torchscript": Param("torchscript", "str", file=True, doc="TorchScript file (instead of factory)"),
    "spec": Param("spec", "str", file=True, doc="a .json ModelSpec file (other keys override it)"),
    "input_kind": Param("input_kind", "str", choices=("onehot", "kmer", "dense", "image")),
    "kmer": Param("kmer", "table", doc="KmerTokenizer fields (k, stride ...)"),
    "targets": Param("targets", "list[str]"),
    "select": Param("select", "list[str]|list[int]"),
    "activation": Param("activation", "str", choices=("none", "sigmoid", "softmax")),
    "batch_size": Param("batch_size", "int"),
    "device": Param("device", "str", choices=("auto", "cpu", "cuda")),
    "trust_pickle": Param("trust_pickle", "bool"),
    "weights_sha256": Param("weights_sha256", "str"),
    "allow_nonfinite": Param("allow_nonfinite", "bool", doc="accept NaN/inf model outputs"),
}

CLUSTER_KEYS = {
    "workers": Param("workers", "int", doc="local worker processes"),
    "scheduler": Param("scheduler", "str", doc="address of a running scheduler"),
    "scheduler_file": Param("scheduler_file", "str", doc="scheduler file (dask scheduler --scheduler-file)"),
    "gpus": Param("gpus", "bool", False, doc="one dask-cuda worker per GPU"),
    "threads_per_worker": Param("threads_per_worker", "int", 1),
    "memory_limit": Param("memory_limit", "str", doc="per local worker, e.g. '4GB'"),
    "jobqueue": Param("jobqueue", "table", doc="a dask-jobqueue cluster: system, jobs, and the class's keywords"),
}

STEP_KEYS = {
    "kind": Param("kind", "str", required=True),
    "name": Param("name", "str", doc="store group (default: the kind's group)"),
    "after": Param("after", "list[str]", doc="steps that must run first"),
    "model": Param("model", "table|str", doc="this step's model (default: the job's)"),
}


def _type_ok(value: Any, tp: str) -> bool:
    for alt in tp.split("|"):
        alt = alt.strip()
        if alt.startswith("list[") and alt.endswith("]"):
            if isinstance(value, list) and all(_type_ok(v, alt[5:-1]) for v in value):
                return True
        elif alt == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif alt == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif alt == "str":
            if isinstance(value, str):
                return True
        elif alt == "bool":
            if isinstance(value, bool):
                return True
        elif alt == "table":
            if isinstance(value, dict):
                return True
        elif alt == "any":
            return True
    return False


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _did_you_mean(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Collects the problems of one job file, each with its line."""

    def __init__(self, path: Path, lines: LineIndex):
        self.path, self.lines, self.problems = path, lines, []

    def add(self, path: tuple, key: str | None, message: str) -> None:
        self.problems.append(f"{self.path.name}:{self.lines.line(path, key)}: {message}")

    def resolve(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.path.parent / p).absolute()

    def check_table(self, table: dict, schema: dict[str, Param], path: tuple, where: str,
                    extra_ok: Callable[[str], bool] | None = None) -> dict:
        """Check keys, types, choices and files of ``table``; return it with files resolved."""
        out = {}
        for key, value in table.items():
            param = schema.get(key)
            if param is None:
                if extra_ok is not None and extra_ok(key):
                    out[key] = value
                    continue
                self.add(path, key, f"unknown key {key!r} in {where}{_did_you_mean(key, schema)}; "
                                    f"known keys: {', '.join(sorted(schema))}")
                continue
            out[key] = self.check_value(param, value, path, where)
        for param in schema.values():
            if param.required and param.name not in table:
                self.add(path, None, f"{where} is missing the required key {param.name!r} ({param.doc or param.type})")
        return out

    def check_value(self, param: Param, value: Any, path: tuple, where: str) -> Any:
        key = param.name
        if not _type_ok(value, param.type):
            self.add(path, key, f"key {key!r} in {where} must be {param.type}, got {_toml_type(value)} {value!r}")
            return value
        if param.choices and value not in param.choices:
            self.add(path, key, f"key {key!r} in {where} is {value!r}, not one of {list(param.choices)}"
                                f"{_did_you_mean(str(value), [str(c) for c in param.choices])}")
        if param.type.startswith("float") and isinstance(value, int):
            value = float(value)
        if param.file or param.output:
            items = value if isinstance(value, list) else [value]
            resolved = []
            for item in items:
                head, f = "", item
                if isinstance(param.file, str) and param.file in item:
                    head, _, f = item.rpartition(param.file)
                    head += param.file
                p = self.resolve(f)
                if param.file and not p.exists():
                    self.add(path, key, f"key {key!r} in {where}: file {f!r} does not exist "
                                        f"(looked for {str(p)!r}; relative paths are relative to the job file)")
                resolved.append(head + str(p))
            value = resolved if isinstance(value, list) else resolved[0]
        return value


def _model_from(value: Any, ck: _Checker, path: tuple, where: str) -> ModelSpec | None:
    """Return the ModelSpec of a ``model`` value (a table of ModelSpec fields, or a string), checked
    to import; ``path`` is the model table's path (a string value's line is its ``model`` key's)."""
    from ..engine.models import load_spec

    if isinstance(value, str):
        table_path, at = path[:-1], "model"
        if value.endswith(".json"):
            table = {"spec": value}
        elif ":" in value and not ck.resolve(value).exists():
            table = {"factory": value}
        else:
            table = {"torchscript": value}
        table = {k: ck.check_value(MODEL_KEYS[k], v, table_path, where) for k, v in table.items()}
        if any(not os.path.exists(v) for k, v in table.items() if k != "factory"):
            return None
    else:
        table_path, at = path, None
        n_before = len(ck.problems)
        table = ck.check_table(value, MODEL_KEYS, table_path, where)
        if len(ck.problems) > n_before:
            return None
    try:
        if "spec" in table:
            base = table.pop("spec")
            spec = load_spec(base, **table)
        elif ("factory" in table) == ("torchscript" in table):
            ck.add(table_path, at, f"{where} needs exactly one of factory = 'package.module:function' "
                                   f"or torchscript = 'file.pt'")
            return None
        else:
            spec = ModelSpec(**table)
    except (ModelSpecError, TypeError, ValueError) as e:
        ck.add(table_path, at or _guess_key(str(e), table), f"{where}: {e}")
        return None
    try:
        spec.check()
    except ModelSpecError as e:
        ck.add(table_path, at or "factory", f"{where}: the model does not import: {e}")
        return None
    return spec


def _guess_key(message: str, table: dict) -> str | None:
    """Return the model key a ModelSpec error message is about (for its line), if one is named."""
    for key in ("weights", "torchscript", "factory", "select", "targets", "input_kind", "activation",
                "batch_size", "kmer"):
        if key in table and (key in message or (isinstance(table[key], str) and table[key] in message)):
            return key
    return None


def _jobqueue_keys() -> set[str] | None:
    try:
        from dask_jobqueue.core import Job as _Job, JobQueueCluster
        from dask_jobqueue.pbs import PBSJob
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        return None
    keys = {"system", "jobs"}
    for f in (JobQueueCluster.__init__, _Job.__init__, SLURMJob.__init__, PBSJob.__init__):
        keys |= {p for p, v in inspect.signature(f).parameters.items()
                 if p != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
    return keys - {"job_cls", "loop", "scheduler", "asynchronous", "config_name"}


def _check_cluster(table: dict, ck: _Checker, use_table: bool) -> dict:
    path = ("cluster",)
    out = ck.check_table(table, CLUSTER_KEYS, path, "[cluster]")
    ways = [k for k in ("scheduler", "scheduler_file", "jobqueue") if out.get(k)] + (["gpus"] if out.get("gpus") else [])
    if len(ways) > 1:
        ck.add(path, ways[1], f"[cluster] sets {' and '.join(ways)}: choose one way to reach a cluster")
    jq = out.get("jobqueue")
    if isinstance(jq, dict) and use_table:
        where, jpath = "[cluster.jobqueue]", ("cluster", "jobqueue")
        known = _jobqueue_keys()
        if known is None:
            ck.add(jpath, None, "[cluster.jobqueue] needs dask-jobqueue: pip install 'interpretome[hpc]' "
                                "(or run with --local to use an embedded LocalCluster)")
        else:
            for key in jq:
                if key not in known:
                    ck.add(jpath, key, f"unknown key {key!r} in {where}{_did_you_mean(key, known)}; see the "
                                       f"dask-jobqueue SLURMCluster / PBSCluster keywords")
            system = jq.get("system", "slurm")
            if not isinstance(system, str) or system.lower() not in ("slurm", "pbs"):
                ck.add(jpath, "system", f"key 'system' in {where} is {system!r}, not one of ['slurm', 'pbs']")
            if "jobs" in jq and not _type_ok(jq["jobs"], "int"):
                ck.add(jpath, "jobs", f"key 'jobs' in {where} must be int, got {_toml_type(jq['jobs'])} {jq['jobs']!r}")
    if out.get("scheduler_file") and use_table:
        out["scheduler_file"] = str(ck.resolve(out["scheduler_file"]))
    return out


def load_job(path: str | os.PathLike, *, use_cluster_table: bool = True) -> Job:
    """Read and validate a job file; return the Job with its steps in dependency order.

    Raises ``JobFileError`` listing every problem found, each as ``file:line: message``.
    ``use_cluster_table=False`` (``--local`` or cluster flags on the command line) skips the
    checks that only matter when the ``[cluster]`` table is used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"job file {str(path)!r} does not exist: check the path")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobFileError([f"{path.name}: not valid TOML: {e}"]) from e
    lines = LineIndex(text)
    ck = _Checker(path, lines)
    top = ck.check_table(data, TOP_KEYS, (), "the job file")
    store = ck.resolve(top["store"]) if isinstance(top.get("store"), str) else None
    job_model = None
    if "model" in top and _type_ok(top["model"], "table|str"):
        job_model = _model_from(top["model"], ck, ("model",), "[model]")
    cluster = _check_cluster(top["cluster"], ck, use_cluster_table) if isinstance(top.get("cluster"), dict) else {}

    steps: list[Step] = []
    raw_steps = top.get("step") if isinstance(top.get("step"), list) else []
    if "step" in data and not raw_steps:
        ck.add((), "step", "the job file has no [[step]] tables: add at least one")
    for i, raw in enumerate(raw_steps):
        spath = ("step", i)
        kind_name = raw.get("kind")
        where = f"[[step]] #{i + 1}" + (f" (kind {kind_name!r})" if isinstance(kind_name, str) else "")
        if not isinstance(kind_name, str):
            ck.check_table(raw, STEP_KEYS, spath, where, extra_ok=lambda k: True)
            continue
        kind = JOB_KINDS.get(kind_name)
        if kind is None:
            ck.add(spath, "kind", f"unknown step kind {kind_name!r} in {where}{_did_you_mean(kind_name, JOB_KINDS)}; "
                                  f"known kinds: {', '.join(sorted(JOB_KINDS))}")
            continue
        schema = {**STEP_KEYS, **{p.name: p for p in kind.params}}
        if not kind.model:
            schema.pop("model")
        checked = ck.check_table(raw, schema, spath, where)
        params = {p.name: checked.get(p.name, p.default) for p in kind.params}
        model = None
        if kind.model:
            if "model" in checked and _type_ok(checked["model"], "table|str"):
                model = _model_from(checked["model"], ck, spath + ("model",), f"{where} model")
            elif job_model is not None:
                model = job_model
            elif "model" not in data and kind.model != "optional":
                ck.add(spath, "kind", f"{where} needs a model: add a [model] table to the job file "
                                      f"(or a [step.model] table to this step)")
        name = checked.get("name") if isinstance(checked.get("name"), str) else kind.group
        if kind.fixed_group and name != kind.group:
            ck.add(spath, "name", f"{where}: a {kind.name!r} step names its own groups ({kind.group!r} and "
                                  f"more); drop name = {name!r}")
        steps.append(Step(kind, name, params, model, i, lines.line(spath), list(checked.get("after") or [])))

    by_name: dict[str, Step] = {}
    for s in steps:
        if s.name in by_name:
            ck.add(("step", s.index), "name" if "name" in raw_steps[s.index] else "kind",
                   f"[[step]] #{s.index + 1} writes group {s.name!r}, as [[step]] #{by_name[s.name].index + 1} does: "
                   f"give one of them another name = '...'")
        by_name[s.name] = s
    for s in steps:
        for other in s.after:
            if other not in by_name:
                ck.add(("step", s.index), "after", f"[[step]] #{s.index + 1}: after = {other!r} names no step"
                                                   f"{_did_you_mean(other, by_name)}; steps: {sorted(by_name)}")
        for p in s.kind.params:
            if p.step and isinstance(s.params.get(p.name), str) and s.params[p.name] in by_name:
                s.after.append(s.params[p.name])
        for dep in s.kind.depends:
            s.after += [o.name for o in steps if o.kind.name == dep and o is not s]
    if ck.problems:
        raise JobFileError(ck.problems)
    ordered = _order(steps, ck)
    if ck.problems:
        raise JobFileError(ck.problems)
    return Job(path, store, bool(top.get("overwrite", False)), job_model, cluster, ordered,
               str(top.get("description", "")))


def _order(steps: list[Step], ck: _Checker) -> list[Step]:
    """Return the steps in dependency order (stable: file order among the ready ones)."""
    done: list[Step] = []
    names_done: set[str] = set()
    pending = list(steps)
    while pending:
        ready = [s for s in pending if all(a in names_done for a in s.after)]
        if not ready:
            cycle = ", ".join(f"{s.name} (after {s.after})" for s in pending)
            ck.add(("step", pending[0].index), "after", f"the steps depend on each other in a cycle: {cycle}")
            return done
        s = ready[0]
        done.append(s)
        names_done.add(s.name)
        pending.remove(s)
    return done


# --- planning and running -------------------------------------------------------------------------

@dataclass
class StepPlan:
    """The plan of one step: the writes it will make, or why they are not known before running.

    ``params``: group -> (store, task, fingerprinted params) of its writes (``jobs.Plan.params``).
    """

    step: Step
    writes: list[PlannedWrite]
    unknown: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return sum(w.chunks for w in self.writes)

    @property
    def done(self) -> int:
        return sum(w.done for w in self.writes)

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.writes)

    @property
    def graph_tasks(self) -> int:
        return sum(w.graph_tasks for w in self.writes)


def _call(step: Step, store: Path, *, client=None, overwrite=False, log=print):
    kwargs = dict(step.params)
    kwargs.update(store=str(store), group=step.name, client=client, overwrite=overwrite, log=log)
    if step.kind.model:
        kwargs["model"] = step.model
    return step.kind.function()(**kwargs)


def _job_dir_of(store) -> Path:
    """Return the folder for a step's side outputs (tables, CSVs) next to the store."""
    return Path(store).absolute().parent


def plan_job(job: Job, *, log: Callable[[str], None] | None = None) -> list[StepPlan]:
    """Build every step's lazy graph without computing and return what each would write.

    Each step's inputs are read and its model built and run in-process on a few real input items
    (``jobs.check_model_on``). Steps whose graph needs the output of an earlier step of this job
    (or a compute) are reported with ``unknown`` set. Errors in a step's parameters or model (a
    window longer than the sequences, a misspelt factory keyword ...) raise here, before any
    work, as ``JobFileError`` naming the step and its line.
    """
    plans = []
    planned_groups: set[str] = set()
    with identity_scope():
        for step in job.steps:
            waits = [a for a in step.after if a in planned_groups]
            try:
                plan = plan_first(lambda step=step: _call(step, job.store, overwrite=job.overwrite, log=_quiet),
                                  tolerate=bool(waits))
            except (ValueError, TypeError, KeyError, RuntimeError, OSError) as e:
                raise JobFileError([f"{job.path.name}:{step.line}: [[step]] #{step.index + 1} ({step.label()}) "
                                    f"cannot be planned: {e}"]) from e
            unknown = plan.unknown
            if unknown and not plan.writes and not step.kind.is_lazy(step.params):
                unknown = "sizes known once it runs (this kind computes while building)"
            elif unknown and waits and "first outputs" in unknown:
                unknown = f"{'further ' if plan.writes else ''}sizes known once {', '.join(waits)} has run"
            plans.append(StepPlan(step, plan.writes, unknown, plan.params))
            planned_groups.add(step.name)
    return plans


def format_plan(job: Job, plans: list[StepPlan]) -> str:
    """Return the plan as text: one line per step and write, then the totals."""
    out = [f"job {job.path} -> store {job.store}", f"{len(plans)} steps in dependency order:"]
    for i, p in enumerate(plans, 1):
        deps = f" after {', '.join(p.step.after)}" if p.step.after else ""
        if p.unknown and not p.writes:
            out.append(f"  {i}. {p.step.label()}{deps}: {p.unknown}")
            continue
        for w in p.writes:
            out.append(f"  {i}. {p.step.label()}{deps} -> {describe_write(w, overwrite=job.overwrite)}")
        if p.unknown:
            out.append(f"  {i}. {p.step.label()}: {p.unknown}")
    known = [p for p in plans if not p.unknown]
    total_chunks = sum(p.chunks for p in plans)
    todo = sum(p.chunks - p.done for p in plans)
    nbytes = sum(p.nbytes for p in plans)
    out.append(f"total: {total_chunks} chunks ({todo} to compute), {nbytes} bytes ({human_bytes(nbytes)})"
               + (f"; {len(plans) - len(known)} step(s) sized when they run" if len(known) < len(plans) else ""))
    return "\n".join(out)


def preflight(job: Job, plans: list[StepPlan]) -> int:
    """Check the store location can hold the plan's outputs before any work; return bytes needed.

    Raises ``StoreError`` (a group holding a result of other parameters without ``overwrite``,
    a read-only location, a path under a file, too little free space).
    """
    for p in plans:
        refuse_conflicts(Plan(p.writes, p.unknown, p.params), overwrite=job.overwrite,
                         where=f" of store {str(job.store)!r} (step {p.step.label()}, line {p.step.line})",
                         fix="set overwrite = true in the job file (or --overwrite), or write to another store")
    return check_location(job.store, [w for p in plans for w in p.writes])


@dataclass
class StepResult:
    """What one step did: chunks computed now and already done, seconds."""

    step: Step
    computed_chunks: int
    skipped_chunks: int
    seconds: float


def _count(report) -> tuple[int, int]:
    if report is None:
        return 0, 0
    if hasattr(report, "computed_chunks"):
        return int(report.computed_chunks), int(getattr(report, "skipped_chunks", 0))
    if isinstance(report, dict):
        report = list(report.values())
    if isinstance(report, (list, tuple)):
        c = [_count(r) for r in report]
        return sum(a for a, _ in c), sum(b for _, b in c)
    return 0, 0


def _has_reports(report) -> bool:
    if hasattr(report, "computed_chunks"):
        return True
    if isinstance(report, dict):
        report = list(report.values())
    return isinstance(report, (list, tuple)) and any(_has_reports(r) for r in report)


def run_steps(job: Job, client, *, log: Callable[[str], None] = print) -> list[StepResult]:
    """Run the job's steps in order on ``client``; print and return the chunks each computed.

    The run is recorded in the store's run history (``recording_run``): ``running`` while it
    runs, then ``done``, ``failed`` or ``interrupted``, with each finished step's seconds and chunks.
    """
    results: list[StepResult] = []
    entry = {"job": str(job.path.absolute()), "job_sha256": _file_digest(job.path)}
    with recording_run(job.store, entry, steps=results):
        for i, step in enumerate(job.steps, 1):
            log(f"[{i}/{len(job.steps)}] {step.label()} -> {job.store}/{step.name}")
            t0 = time.perf_counter()
            report = _call(step, job.store, client=client, overwrite=job.overwrite, log=log)
            computed, skipped = _count(report)
            res = StepResult(step, computed, skipped, time.perf_counter() - t0)
            if _has_reports(report):
                log(f"[{i}/{len(job.steps)}] {step.label()}: computed {computed} chunks, {skipped} already in the "
                    f"store, {res.seconds:.1f} s")
            else:
                log(f"[{i}/{len(job.steps)}] {step.label()}: done in {res.seconds:.1f} s (its groups' chunk counts "
                    f"are in the log above)")
            results.append(res)
        total = sum(r.computed_chunks for r in results)
        log(f"job done: computed {total} chunks, {sum(r.skipped_chunks for r in results)} already in the store, "
            f"{sum(r.seconds for r in results):.1f} s; store {job.store}")
    return results


RUNS_ATTR = "interpretome_runs"
"""Root attribute of a store listing the runs that wrote it: job file (or subcommand) and digest,
``status`` (running, done, failed, interrupted), pid, host, start and end times, steps."""


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _file_digest(path) -> str:
    from ..storage.store import file_digest

    return file_digest(path)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True
    return True


def _update_runs(store, change: Callable[[list[dict]], list[dict]]) -> None:
    """Read the store's run history, apply ``change`` and write it back (root attrs, consolidated)."""
    import warnings

    import zarr

    from ..storage.store import ZARR_FORMAT

    store = Path(store)
    root = zarr.open_group(str(store), mode="a", zarr_format=ZARR_FORMAT)
    root.attrs[RUNS_ATTR] = change([dict(r) for r in root.attrs.get(RUNS_ATTR, [])])
    with warnings.catch_warnings():  # the manifest folders are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        zarr.consolidate_metadata(str(store), zarr_format=ZARR_FORMAT)


def close_stale_runs(runs: list[dict], *, host: str | None = None, pid: int | None = None) -> list[dict]:
    """Return ``runs`` with every entry still ``running`` that is not alive marked ``interrupted``.

    An entry is alive only when it was started on this ``host`` by a live process (``pid``, not
    this process's own entry). An entry of another host cannot be checked: a run found it unclosed,
    so it is marked interrupted too (one store is written by one run at a time).
    """
    import platform

    host = host or platform.node()
    pid = os.getpid() if pid is None else pid
    for r in runs:
        if r.get("status") != "running":
            continue
        same_host = r.get("host") == host
        if same_host and r.get("pid") != pid and _pid_alive(r.get("pid")):
            continue
        r["status"] = "interrupted"
        r["finished"] = r.get("finished") or None
        r["note"] = (f"found unclosed by a run started {_now()} on {host}: "
                     + ("its process had ended" if same_host else "started on another host"))
    return runs


@contextlib.contextmanager
def recording_run(store, entry: dict, *, steps: list[StepResult] | None = None):
    """Context recording one run in the store's run history (root attrs ``interpretome_runs``).

    At the start: ``entry`` plus ``status = "running"``, pid, host and start time (and stale
    ``running`` entries of dead processes are marked ``interrupted``). At the end: ``done``;
    ``failed`` with the error's first line; ``interrupted`` on KeyboardInterrupt (re-raised). A
    SIGKILLed run stays ``running`` until the next run marks it. ``steps``: the StepResults
    list the run appends to, recorded at the end.
    """
    import platform
    import uuid

    run = {**entry, "run_id": uuid.uuid4().hex[:12], "status": "running", "pid": os.getpid(),
           "host": platform.node(), "started": _now()}
    _update_runs(store, lambda runs: close_stale_runs(runs) + [run])
    status, error = "done", None
    try:
        yield run
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status, error = "failed", (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise
    finally:
        def close(runs: list[dict]) -> list[dict]:
            for r in runs:
                if r.get("run_id") == run["run_id"]:
                    r.update(status=status, finished=_now())
                    if error:
                        r["error"] = error
                    if steps is not None:
                        r["steps"] = [{"name": s.step.name, "kind": s.step.kind.name, "seconds": round(s.seconds, 3),
                                       "computed_chunks": s.computed_chunks, "skipped_chunks": s.skipped_chunks}
                                      for s in steps]
            return runs

        _update_runs(store, close)


def cluster_options(job: Job, args: argparse.Namespace | None = None) -> dict:
    """Return the ``connect()`` keywords for a job: command-line cluster flags, else its [cluster] table.

    Any of ``--workers``, ``--scheduler``, ``--scheduler-file``, ``--gpus`` or ``--local`` on the
    command line replaces the table (so a file written for SLURM runs unchanged on a laptop).
    """
    flags = {}
    if args is not None:
        flags = {k: getattr(args, k, None) for k in ("workers", "scheduler", "scheduler_file", "gpus")}
        if any(flags.values()) or getattr(args, "local", False):
            return {"workers": flags["workers"], "scheduler": flags["scheduler"],
                    "scheduler_file": flags["scheduler_file"], "gpus": bool(flags["gpus"])}
    t = dict(job.cluster)
    opts: dict[str, Any] = {"workers": t.get("workers"), "scheduler": t.get("scheduler"),
                            "scheduler_file": t.get("scheduler_file"), "gpus": bool(t.get("gpus", False))}
    if "threads_per_worker" in t:
        opts["threads_per_worker"] = t["threads_per_worker"]
    if "memory_limit" in t:
        opts["memory_limit"] = t["memory_limit"]
    if t.get("jobqueue"):
        opts["jobqueue"] = jobqueue_config(t["jobqueue"], threads=t.get("threads_per_worker", 1))
    return opts


def jobqueue_config(table: dict, threads: int = 1) -> dict:
    """Return the ``connect(jobqueue=...)`` config of a ``[cluster.jobqueue]`` table.

    Workers run one thread each (``processes = cores`` unless set) and the job script exports
    the thread limits so torch does not oversubscribe the node.
    """
    cfg = dict(table)
    cfg.setdefault("processes", max(1, int(cfg.get("cores", 1)) // max(1, threads)))
    prologue = list(cfg.get("job_script_prologue") or [])
    prologue += [f"export {v}={threads}" for v in THREAD_ENV if not any(v in line for line in prologue)]
    cfg["job_script_prologue"] = prologue
    return cfg


def run_job(path: str | os.PathLike, *, args: argparse.Namespace | None = None, dry_run: bool = False,
            overwrite: bool = False, log: Callable[[str], None] = print) -> list[StepResult] | list[StepPlan]:
    """Validate, plan, check the store and run the job file at ``path``; return the step results.

    With ``dry_run`` print the plan and return it without starting a cluster.
    """
    local = args is not None and (getattr(args, "local", False) or any(
        getattr(args, k, None) for k in ("workers", "scheduler", "scheduler_file", "gpus")))
    job = load_job(path, use_cluster_table=not local)
    if overwrite:
        job.overwrite = True
    with identity_scope():  # the plan and the run agree on each model's digest
        plans = plan_job(job)
        if dry_run:
            log(format_plan(job, plans))
            needed = preflight(job, plans)  # the store location too: a dry run on a login node catches it
            log(f"store location: writable, room for about {human_bytes(needed)}")
            return plans
        preflight(job, plans)
        opts = cluster_options(job, args)
        client = connect(**opts, log=log)
        try:
            return run_steps(job, client, log=log)
        finally:
            cluster = client.cluster
            client.close()
            if cluster is not None:  # a cluster this job started (local, dask-cuda, jobqueue)
                cluster.close()


# --- command line ------------------------------------------------------------------------------------

def describe_kinds() -> str:
    """Return the job kinds and their parameters as text (``interpretome run --kinds``)."""
    out = []
    for kind in JOB_KINDS.values():
        deps = f"; runs after {', '.join(kind.depends)}" if kind.depends else ""
        out.append(f"[[step]] kind = {kind.name!r}: {kind.doc} (group {kind.group!r}"
                   f"{', uses [model]' if kind.model else ''}{deps})")
        for p in kind.params:
            req = "required" if p.required else f"default {p.default!r}"
            extra = " (file)" if p.file else (" (output path)" if p.output else (" (a step's group)" if p.step else ""))
            choices = f", one of {list(p.choices)}" if p.choices else ""
            out.append(f"    {p.name}: {p.type}{extra}, {req}{choices}  {p.doc}")
        if kind.model == "optional":
            out[-len(kind.params) - 1] += " (model optional)"
    return "\n".join(out)


def _run_cmd(args) -> int:
    if args.kinds:
        print(describe_kinds())
        return 0
    if not args.job:
        raise ValueError("give a job file: interpretome run job.toml (see --kinds for the step kinds)")
    run_job(args.job, args=args, dry_run=args.dry_run, overwrite=args.overwrite)
    return 0


def register(sub) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run a job file (several analyses, one cluster, one store)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", nargs="?", help="job file (TOML)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (chunks, bytes) and start nothing")
    p.add_argument("--local", action="store_true", help="ignore the [cluster] table: embedded LocalCluster")
    p.add_argument("--overwrite", action="store_true", help="replace groups computed with other parameters")
    p.add_argument("--kinds", action="store_true", help="list the step kinds and their parameters")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    add_cluster_arguments(p)
    p.set_defaults(func=_run_cmd)


from . import kinds as _kinds  # noqa: E402,F401 - registers the other families' kinds (it imports this module)

if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
