"""Running a job: its cluster, its steps in order, the run recorded in the store; the ``run``
subcommand and ``run --kinds``.


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
    kind = "sweep"                  # a declared kind (interpretome run --kinds)
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
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from ...engine.cluster import add_cluster_arguments, connect, jobqueue_config
from ...storage.digests import file_digest
from .. import human_bytes, identity_scope
from ..history import recording_run
from ..registry import job_kinds
from .plan import StepPlan, format_plan, plan_job, preflight
from .schema import Job, Step
from .validate import load_job


@dataclass
class StepResult:
    """What one step did: chunks computed now and already done, seconds; the job's store."""

    step: Step
    computed_chunks: int
    skipped_chunks: int
    seconds: float
    store: Any = None


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
    entry = {"job": str(job.path.absolute()), "job_sha256": file_digest(job.path)}
    with recording_run(job.store, entry, steps=results):
        for i, step in enumerate(job.steps, 1):
            log(f"[{i}/{len(job.steps)}] {step.label()} -> {job.store}/{step.name}")
            t0 = time.perf_counter()
            report = step.kind.invoke(step.params, store=job.store, group=step.name, model=step.model, client=client,
                                      overwrite=job.overwrite, log=log)
            step.kind.finished(step.params, store=job.store, group=step.name, log=log)
            computed, skipped = _count(report)
            res = StepResult(step, computed, skipped, time.perf_counter() - t0, job.store)
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
            client.close()  # and the cluster it started (local, dask-cuda, jobqueue): see engine.cluster.connect


# --- command line ------------------------------------------------------------------------------------

def describe_kinds() -> str:
    """Return the job kinds and their parameters as text (``interpretome run --kinds``), each
    parameter with its command-line spelling (the same declaration makes both)."""
    out = []
    for kind in job_kinds().values():
        deps = f"; runs after {', '.join(kind.depends)}" if kind.depends else ""
        model = {True: ", uses [model]", "optional": ", uses [model] (model optional)"}.get(kind.model, "")
        out.append(f"[[step]] kind = {kind.name!r}: {kind.doc} (group {kind.group!r}{model}{deps}; "
                   f"command line: interpretome {kind.subcommand})")
        for p in kind.file_params():
            req = "required" if p.required else f"default {p.default!r}"
            extra = " (file)" if p.file else (" (output path)" if p.output else (" (a step's group)" if p.step else ""))
            choices = f", one of {list(p.choices)}" if p.choices else ""
            flag = f"  [{p.flag if p.flag.startswith('-') else p.name.upper()}]" if p.flag else ""
            out.append(f"    {p.name}: {p.type}{extra}, {req}{choices}  {p.doc}{flag}")
    return "\n".join(out)


def _run_cmd(args) -> int:
    if args.kinds:
        print(describe_kinds())
        return 0
    if not args.job:
        raise ValueError("give a job file: interpretome run job.toml (see --kinds for the step kinds)")
    results = run_job(args.job, args=args, dry_run=args.dry_run, overwrite=args.overwrite)
    if not args.dry_run and results:
        from .. import announce, results_line
        announce(results_line(results[0].store, [r.step.name for r in results]))
    return 0


def register(sub) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run a job file (several analyses, one cluster, one store)",
                       description=__doc__)
    p.add_argument("job", nargs="?", help="job file (TOML)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (chunks, bytes) and start nothing")
    p.add_argument("--local", action="store_true", help="ignore the [cluster] table: embedded LocalCluster")
    p.add_argument("--overwrite", action="store_true", help="replace groups computed with other parameters")
    p.add_argument("--kinds", action="store_true", help="list the step kinds and their parameters")
    add_cluster_arguments(p)
    p.set_defaults(func=_run_cmd)

