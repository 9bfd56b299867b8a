"""Validation of a job file: every problem found, each as ``file:line: message`` (``load_job``)."""

from __future__ import annotations

import difflib
import inspect
import os
from pathlib import Path
from typing import Any, Callable

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ...engine.models import ModelSpec, ModelSpecError
from ...errors import JobFileError
from ..declare import Param
from ..registry import job_kinds
from .schema import CLUSTER_KEYS, MODEL_KEYS, STEP_KEYS, TOP_KEYS, Job, Step, toml_type, type_ok
from .toml_lines import LineIndex

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
        if not type_ok(value, param.type):
            self.add(path, key, f"key {key!r} in {where} must be {param.type}, got {toml_type(value)} {value!r}")
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
    from ...engine.models import load_spec

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
            if "jobs" in jq and not type_ok(jq["jobs"], "int"):
                ck.add(jpath, "jobs", f"key 'jobs' in {where} must be int, got {toml_type(jq['jobs'])} {jq['jobs']!r}")
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
    if "model" in top and type_ok(top["model"], "table|str"):
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
        kind = job_kinds().get(kind_name)
        if kind is None:
            ck.add(spath, "kind", f"unknown step kind {kind_name!r} in {where}{_did_you_mean(kind_name, job_kinds())}; "
                                  f"known kinds: {', '.join(sorted(job_kinds()))}")
            continue
        schema = {**STEP_KEYS, **{p.name: p for p in kind.file_params()}}
        if not kind.model:
            schema.pop("model")
        checked = ck.check_table(raw, schema, spath, where)
        params = {p.name: checked.get(p.name, p.default) for p in kind.file_params()}
        model = None
        if kind.model:
            if "model" in checked and type_ok(checked["model"], "table|str"):
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

