"""``interpretome run job.toml``: several analyses in one job, on one cluster, into one store.

One module per idea: ``schema`` (the tables' keys, ``Job``, ``Step``), ``toml_lines`` (line
numbers of keys, for messages), ``validate`` (``load_job``), ``plan`` (``plan_job``,
``format_plan``, ``preflight``), ``run`` (``run_job``, the ``run`` subcommand). A step's kinds
and their parameters are the declared ``JobKind``s (``jobs.registry.job_kinds``).
"""

from __future__ import annotations

from ...errors import JobFileError
from ..history import RUNS_ATTR, close_stale_runs, recording_run
from .plan import StepPlan, format_plan, plan_job, preflight
from .run import StepResult, cluster_options, describe_kinds, register, run_job, run_steps
from .schema import CLUSTER_KEYS, MODEL_KEYS, STEP_KEYS, TOP_KEYS, Job, Step
from .toml_lines import LineIndex
from .validate import load_job

__all__ = ["CLUSTER_KEYS", "Job", "JobFileError", "LineIndex", "MODEL_KEYS", "RUNS_ATTR", "STEP_KEYS", "Step",
           "StepPlan", "StepResult", "TOP_KEYS", "close_stale_runs", "cluster_options", "describe_kinds",
           "format_plan", "load_job", "plan_job", "preflight", "recording_run", "register", "run_job", "run_steps"]
