"""Former home of the job-file runner, kept so ``from interpretome.jobs.runner import load_job``
keeps working; everything lives in ``interpretome.jobs.jobfile`` (one module per idea) and the
kinds in ``interpretome.jobs.registry``."""

from __future__ import annotations

from .jobfile import (CLUSTER_KEYS, MODEL_KEYS, RUNS_ATTR, STEP_KEYS, TOP_KEYS, Job, JobFileError, LineIndex, Step,
                      StepPlan, StepResult, close_stale_runs, cluster_options, describe_kinds, format_plan, load_job,
                      plan_job, preflight, recording_run, register, run_job, run_steps)
from .registry import job_kinds

__all__ = ["CLUSTER_KEYS", "Job", "JobFileError", "LineIndex", "MODEL_KEYS", "RUNS_ATTR", "STEP_KEYS", "Step",
           "StepPlan", "StepResult", "TOP_KEYS", "close_stale_runs", "cluster_options", "describe_kinds",
           "format_plan", "job_kinds", "load_job", "plan_job", "preflight", "recording_run", "register", "run_job",
           "run_steps"]
