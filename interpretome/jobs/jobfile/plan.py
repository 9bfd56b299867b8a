"""Planning a job: every step's graph built without computing, what it would write, the checks
of the store location (``plan_job``, ``format_plan``, ``preflight``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...errors import JobFileError
from ...storage.store import PlannedWrite
from .. import Plan, _quiet, check_location, describe_write, human_bytes, identity_scope, plan_first, refuse_conflicts
from .schema import Job, Step

@dataclass
class StepPlan:
    """The plan of one step: the writes it will make, or why they are not known before running.

    ``params``: group -> (store, task, fingerprinted params) of its writes (``jobs.Plan.params``).
    """

    step: Step
    writes: list[PlannedWrite]
    unknown: str | None = None
    params: dict = field(default_factory=dict)

    chunks = property(lambda self: sum(w.chunks for w in self.writes), doc="chunks of every write")
    done = property(lambda self: sum(w.done for w in self.writes), doc="chunks already in the store")
    nbytes = property(lambda self: sum(w.nbytes for w in self.writes), doc="uncompressed bytes")
    graph_tasks = property(lambda self: sum(w.graph_tasks for w in self.writes), doc="tasks of the graphs")


def _call(step: Step, store: Path, *, overwrite=False, log=print):
    return step.kind.invoke(step.params, store=store, group=step.name, model=step.model, overwrite=overwrite, log=log)


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

