"""Job files: validation with key and line, the registry of kinds, dry-run plans, clusters, preflight."""

from __future__ import annotations

import collections
import inspect
import json
import os
import re
import shutil

import pytest
import xarray as xr

from interpretome.cli import main
from interpretome.jobs import runner
from interpretome.jobs.jobfile import run as jobfile_run
from interpretome.jobs.registry import job_kinds
from interpretome.jobs.runner import JobFileError, LineIndex, load_job, plan_job

JOB_KINDS = job_kinds()

from tests.jobfiles import MODEL_TABLE, STEPS, TOTAL_CHUNKS, write_job


def _errors(path) -> str:
    with pytest.raises(JobFileError) as info:
        load_job(path)
    return str(info.value)


def _line(path, needle: str, nth: int = 0) -> int:
    """Return the 1-based line number of the ``nth`` line of ``path`` containing ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[nth]


# --- the registry --------------------------------------------------------------------------------

def test_job_kinds__runner_signatures_take_every_parameter():
    assert {"sweep", "ism"} <= set(JOB_KINDS)
    for kind in JOB_KINDS.values():
        sig = inspect.signature(kind.function()).parameters
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in sig.values())
        needed = [p.name for p in kind.params if p.to == "run" and not p.task]
        needed += ["store", "group", "client", "overwrite", "log"]
        assert accepts_any or not any(p.task for p in kind.params), f"{kind.name}: task params need **params"
        needed += ["model"] if kind.model else []
        missing = [n for n in needed if n not in sig]
        assert accepts_any or not missing, f"{kind.name}: {kind.runner} takes no {missing}"
        for dep in kind.depends:
            assert dep in JOB_KINDS, f"{kind.name} depends on unknown kind {dep!r}"


def test_run__kinds_lists_parameters(capsys):
    assert main(["run", "--kinds"]) == 0
    out = capsys.readouterr().out
    assert "kind = 'sweep'" in out and "windows: list[int]" in out and "fasta: str (file), required" in out


# --- line numbers ------------------------------------------------------------------------------

def test_line_index__tables_arrays_and_keys():
    text = ('store = "x"\n[model]\nfactory = "a:b"\n[[step]]\nkind = "sweep"\nwindows = [\n  1,\n  2,\n]\n'
            '[step.model]\nweights = "w"\n[[step]]\n"kind" = "ism"\nfasta = """\na = 1\n"""\nx.y = 2\n')
    idx = LineIndex(text)
    assert idx.line((), "store") == 1
    assert idx.line(("model",), "factory") == 3
    assert idx.line(("step", 0), "windows") == 6
    assert idx.line(("step", 0, "model"), "weights") == 11
    assert idx.line(("step", 1), "kind") == 13
    assert idx.line(("step", 1), "a") == 12  # inside a multi-line string: not a key, the table's line
    assert idx.line(("step", 1), "x") == 17
    assert idx.line(("step", 1), "nothing") == 12
    assert idx.line(("cluster",), "workers") == 1


# --- validation errors, each naming the key and the line -----------------------------------------

def test_load_job__valid_file(tmp_path):
    job = load_job(write_job(tmp_path))
    assert [s.name for s in job.steps] == ["ism", "sweep"]
    assert job.store == (tmp_path / "out.zarr").absolute()
    sweep = job.steps[1]
    assert sweep.params["windows"] == [1, 5, 9] and sweep.params["stride"] == 1 and sweep.params["mode"] == "random"
    assert sweep.params["fasta"] == str((tmp_path / "promoters.fa").absolute())
    assert sweep.model.factory == "interpretome.datasets:promoter_cnn" and sweep.model.activation == "sigmoid"


def test_load_job__unknown_top_key_did_you_mean(tmp_path):
    path = write_job(tmp_path)
    path.write_text(path.read_text() + '\n[cluster]\nworkers = 2\n')
    path.write_text(path.read_text().replace("store =", "stor ="))
    msg = _errors(path)
    assert re.search(rf"job.toml:1: unknown key 'stor' in the job file \(did you mean 'store'\?\)", msg)
    assert "missing the required key 'store'" in msg


def test_load_job__unknown_step_key_did_you_mean(tmp_path):
    path = write_job(tmp_path, steps=STEPS.replace("replicates = 2", "replicate = 2"))
    line = _line(path, "replicate = 2")
    with pytest.raises(JobFileError, match=rf"job.toml:{line}: unknown key 'replicate' in \[\[step\]\] #2 "
                                           rf"\(kind 'sweep'\) \(did you mean 'replicates'\?\)"):
        load_job(path)


def test_load_job__wrong_type(tmp_path):
    path = write_job(tmp_path, steps=STEPS.replace("windows = [1, 5, 9]", 'windows = "1,5,9"'))
    line = _line(path, "windows =")
    with pytest.raises(JobFileError, match=rf"job.toml:{line}: key 'windows' in \[\[step\]\] #2 \(kind 'sweep'\) "
                                           rf"must be list\[int\], got str '1,5,9'"):
        load_job(path)
    path = write_job(tmp_path, steps=STEPS.replace("sequence_chunk = 1", "sequence_chunk = 1.5", 1))
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'sequence_chunk')}: key 'sequence_chunk' .* "
                                           rf"must be int, got float 1.5"):
        load_job(path)


def test_load_job__bad_choice(tmp_path):
    path = write_job(tmp_path, steps=STEPS.replace("replicates = 2", 'replicates = 2\nmode = "randm"'))
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'mode =')}: key 'mode' .* is 'randm', not one of "
                                           rf".*\(did you mean 'random'\?\)"):
        load_job(path)


def test_load_job__missing_input_file(tmp_path):
    path = write_job(tmp_path, steps=STEPS.replace('fasta = "promoters.fa"', 'fasta = "nope.fa"', 1))
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'nope.fa')}: key 'fasta' in \[\[step\]\] #1 "
                                           rf"\(kind 'ism'\): file 'nope.fa' does not exist"):
        load_job(path)


def test_load_job__missing_required_key(tmp_path):
    path = write_job(tmp_path, steps='[[step]]\nkind = "ism"\nsequence_chunk = 2\n')
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, '[[step]]')}: \[\[step\]\] #1 \(kind 'ism'\) "
                                           rf"is missing the required key 'fasta'"):
        load_job(path)


def test_load_job__unknown_kind(tmp_path):
    path = write_job(tmp_path, steps=STEPS.replace('kind = "sweep"', 'kind = "swep"'))
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'swep')}: unknown step kind 'swep' .*"
                                           rf"\(did you mean 'sweep'\?\)"):
        load_job(path)


def test_load_job__model_does_not_import(tmp_path):
    model = MODEL_TABLE.replace("interpretome.datasets:promoter_cnn", "interpretome.nosuchmodule:net")
    path = write_job(tmp_path, model=model)
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'factory')}: \[model\]: the model does not "
                                           rf"import: .*cannot import module 'interpretome.nosuchmodule'"):
        load_job(path)
    path = write_job(tmp_path, model=MODEL_TABLE.replace("promoter_cnn\"", "no_such_net\""))
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'factory')}: .*has no attribute 'no_such_net'"):
        load_job(path)


def test_load_job__model_weights_missing_and_unknown_model_key(tmp_path):
    model = re.sub(r'weights = ".*"', 'weights = "missing.pt"', MODEL_TABLE) + "batchsize = 8\n"
    path = write_job(tmp_path, model=model)
    msg = _errors(path)
    assert f"job.toml:{_line(path, 'weights')}: key 'weights' in [model]: file 'missing.pt' does not exist" in msg
    assert f"job.toml:{_line(path, 'batchsize')}: unknown key 'batchsize' in [model] (did you mean 'batch_size'?)" in msg


def test_load_job__step_model_override_and_no_model(tmp_path):
    steps = STEPS + '[step.model]\nfactory = "interpretome.datasets:promoter_cnn"\nbatch_sise = 4\n'
    path = write_job(tmp_path, steps=steps)
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'batch_sise')}: unknown key 'batch_sise' in "
                                           rf"\[\[step\]\] #2 \(kind 'sweep'\) model"):
        load_job(path)
    path = write_job(tmp_path, model="")
    with pytest.raises(JobFileError, match=r"\[\[step\]\] #1 \(kind 'ism'\) needs a model: add a \[model\] table"):
        load_job(path)


def test_load_job__duplicate_groups_after_and_cycles(tmp_path):
    steps = STEPS.replace('kind = "sweep"', 'kind = "ism"').replace("windows = [1, 5, 9]\nreplicates = 2\n", "")
    path = write_job(tmp_path, steps=steps)
    with pytest.raises(JobFileError, match=r"\[\[step\]\] #2 writes group 'ism', as \[\[step\]\] #1 does"):
        load_job(path)
    steps = STEPS.replace('kind = "ism"', 'kind = "ism"\nafter = ["sweeep"]')
    path = write_job(tmp_path, steps=steps)
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, 'after')}: \[\[step\]\] #1: after = 'sweeep' "
                                           rf"names no step \(did you mean 'sweep'\?\)"):
        load_job(path)
    steps = STEPS.replace('kind = "ism"', 'kind = "ism"\nafter = ["sweep"]').replace(
        'kind = "sweep"', 'kind = "sweep"\nafter = ["ism"]')
    with pytest.raises(JobFileError, match=r"the steps depend on each other in a cycle"):
        load_job(write_job(tmp_path, steps=steps))


def test_load_job__after_orders_steps(tmp_path):
    job = load_job(write_job(tmp_path, steps=STEPS.replace('kind = "ism"', 'kind = "ism"\nafter = ["sweep"]')))
    assert [s.name for s in job.steps] == ["sweep", "ism"]


def test_load_job__not_toml_and_no_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('store = "x"\n[[step]\n')
    with pytest.raises(JobFileError, match=r"job.toml: not valid TOML: .*line 2"):
        load_job(path)
    with pytest.raises(FileNotFoundError, match="job file .*nothere.toml' does not exist"):
        load_job(tmp_path / "nothere.toml")


def test_load_job__cluster_table_errors(tmp_path):
    cluster = '[cluster]\nworker = 2\nscheduler = "tcp://x:1"\n[cluster.jobqueue]\nsystem = "slurm"\nqueu = "gpu"\n'
    path = write_job(tmp_path, cluster=cluster)
    msg = _errors(path)
    assert f"job.toml:{_line(path, 'worker =')}: unknown key 'worker' in [cluster] (did you mean 'workers'?)" in msg
    assert f"job.toml:{_line(path, 'queu =')}: unknown key 'queu' in [cluster.jobqueue] (did you mean 'queue'?)" in msg
    assert "[cluster] sets scheduler and jobqueue: choose one way" in msg
    # --local (or cluster flags) replaces the table: its jobqueue keys are then not checked
    path = write_job(tmp_path, cluster='[cluster.jobqueue]\nsystem = "slurm"\nqueu = "gpu"\n')
    assert load_job(path, use_cluster_table=False).steps


def test_run__error_message_and_exit_status(tmp_path, capsys):
    path = write_job(tmp_path, steps=STEPS.replace("windows", "windws"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "interpretome run: error: the job file has 1 problem:" in err
    assert f"job.toml:{_line(path, 'windws')}: unknown key 'windws'" in err and "did you mean 'windows'" in err


def test_plan__step_parameter_error_names_the_step_line(tmp_path, no_compute):
    path = write_job(tmp_path, steps=STEPS.replace("windows = [1, 5, 9]", "windows = [1, 500]"))
    job = load_job(path)
    with pytest.raises(JobFileError, match=rf"job.toml:{_line(path, '[[step]]', 1)}: \[\[step\]\] #2 \(sweep\) "
                                           rf"cannot be planned: window 500 is longer than every sequence"):
        plan_job(job)


# --- dry run -----------------------------------------------------------------------------------

def test_run__dry_run_plans_without_computing(tmp_path, capsys, no_compute, monkeypatch):
    monkeypatch.setattr(jobfile_run, "connect", lambda *a, **k: pytest.fail("a dry run must not start a cluster"))
    path = write_job(tmp_path)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # ism: ism_delta 4 sequences x 4 position chunks + ism_reference 4; sweep: 2 x 16 + 4
    assert "1. ism -> group 'ism': 20 chunks (20 to compute)" in out
    assert "2. sweep -> group 'sweep': 36 chunks (36 to compute)" in out
    # bytes: ism_delta 4x200x4x1 f32 + ism_reference 4 f32 + sequence_length 4 i64
    ism_bytes = 4 * 200 * 4 * 4 + 4 * 4 + 4 * 8
    sweep_bytes = 2 * 4 * 3 * 200 * 4 + 4 * 4 + 4 * 8
    assert f"{ism_bytes} bytes" in out and f"{sweep_bytes} bytes" in out
    assert f"total: {TOTAL_CHUNKS} chunks ({TOTAL_CHUNKS} to compute), {ism_bytes + sweep_bytes} bytes" in out
    assert "store location: writable, room for about 33.7 kB" in out
    assert not (tmp_path / "out.zarr").exists()


def test_run__job_runs_on_a_running_scheduler_then_plan_shows_it_done(tmp_path, client2, capsys):
    # a job file written for SLURM runs unchanged elsewhere: the cluster flag replaces its table
    slurm = '[cluster.jobqueue]\nsystem = "slurm"\njobs = 4\ncores = 8\nmemory = "16GB"\nqueue = "long"\n'
    path = write_job(tmp_path, steps=STEPS.split("[[step]]\nkind = \"sweep\"")[0], cluster=slurm)
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 0
    out = capsys.readouterr().out
    assert "[1/1] ism: computed 20 chunks, 0 already in the store" in out
    ds = xr.open_zarr(tmp_path / "out.zarr", group="ism")
    assert ds["ism_delta"].shape == (4, 200, 4, 1)
    (run,) = json.loads(json.loads((tmp_path / "out.zarr" / ".zattrs").read_text())["interpretome_runs"])
    assert run["job"] == str(path) and run["job_sha256"].startswith("sha256:")
    assert [(s["name"], s["kind"], s["computed_chunks"]) for s in run["steps"]] == [("ism", "ism", 20)]
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "20 chunks (0 to compute, complete in the store)" in capsys.readouterr().out
    # the same group with other parameters: refused before any work, unless overwrite
    path.write_text(path.read_text().replace('kind = "ism"', 'kind = "ism"\nstart = 100'))
    assert main(["run", str(path), "--dry-run"]) == 2  # the plan, then the refusal
    captured = capsys.readouterr()
    assert "CONFLICT" in captured.out and "holds a result computed with other parameters" in captured.err
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 2
    assert "holds a result computed with other parameters" in capsys.readouterr().err
    assert main(["run", str(path), "--dry-run", "--overwrite"]) == 0


# --- clusters ------------------------------------------------------------------------------------

JOBQUEUE = """
[cluster]
threads_per_worker = 1
[cluster.jobqueue]
system = "{system}"
jobs = 3
cores = 4
memory = "8GB"
queue = "gpu"
walltime = "01:30:00"
account = "proj42"
job_extra_directives = ["{extra}"]
scheduler_options = {{ dashboard_address = "127.0.0.1:0" }}
"""


@pytest.mark.parametrize("system,expect", [
    ("slurm", ["#SBATCH -p gpu", "#SBATCH -A proj42", "#SBATCH -t 01:30:00", "#SBATCH --gres=gpu:1",
               "#SBATCH -n 1", "#SBATCH --cpus-per-task=4"]),
    ("pbs", ["#PBS -q gpu", "#PBS -A proj42", "#PBS -l walltime=01:30:00", "#PBS -l select=1:ncpus=4",
             "#PBS -l ngpus=1"]),
])
def test_cluster__jobqueue_table_makes_the_job_script(tmp_path, system, expect):
    from interpretome.engine.cluster import jobqueue_cluster

    extra = "--gres=gpu:1" if system == "slurm" else "-l ngpus=1"
    job = load_job(write_job(tmp_path, cluster=JOBQUEUE.format(system=system, extra=extra)))
    opts = runner.cluster_options(job)
    assert opts["jobqueue"]["system"] == system and opts["jobqueue"]["jobs"] == 3
    cluster = jobqueue_cluster(opts["jobqueue"], scale=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in expect:
        assert line in script, f"{line!r} not in\n{script}"
    assert "export OMP_NUM_THREADS=1" in script and "export MKL_NUM_THREADS=1" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
    assert "distributed.cli.dask_worker" in script or "dask worker" in script or "dask-worker" in script


def test_cluster__command_line_flags_replace_the_table(tmp_path):
    import argparse

    job = load_job(write_job(tmp_path, cluster=JOBQUEUE.format(system="slurm", extra="x")), use_cluster_table=False)
    args = argparse.Namespace(workers=2, scheduler=None, scheduler_file=None, gpus=False, local=False)
    assert runner.cluster_options(job, args) == {"workers": 2, "scheduler": None, "scheduler_file": None,
                                                 "gpus": False}
    args = argparse.Namespace(workers=None, scheduler=None, scheduler_file=None, gpus=False, local=True)
    assert "jobqueue" not in runner.cluster_options(job, args)
    job = load_job(write_job(tmp_path, cluster='[cluster]\nscheduler_file = "sched.json"\n'))
    assert runner.cluster_options(job)["scheduler_file"] == str((tmp_path / "sched.json").absolute())


@pytest.mark.parametrize("how", ["flag", "table"])
def test_run__gpus_pass_through(tmp_path, capsys, how):
    from interpretome.engine.cluster import gpu_count

    if gpu_count():
        pytest.skip("a GPU is visible: this checks the message given without one")
    path = write_job(tmp_path, cluster="[cluster]\ngpus = true\n" if how == "table" else "")
    argv = ["run", str(path)] + (["--gpus"] if how == "flag" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(r"--gpus needs dask-cuda|--gpus was given but no CUDA GPU is visible", err), err


# --- the output location, checked before any work -----------------------------------------------

def _no_cluster(monkeypatch):
    monkeypatch.setattr(jobfile_run, "connect", lambda *a, **k: pytest.fail("the cluster started before the check"))


def test_run__full_disk_fails_before_work(tmp_path, capsys, monkeypatch):
    _no_cluster(monkeypatch)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 20_000, 20_000))
    path = write_job(tmp_path)
    for dry in ([], ["--dry-run"]):  # a dry run checks the location too
        assert main(["run", str(path), *dry]) == 2
        err = capsys.readouterr().err
        assert re.search(r"output location .* has 20.0 kB free but the job needs about 33.7 kB \(ism 12.8 kB, "
                         r"sweep 19.2 kB\): free space or choose another store path", err), err
    assert not (tmp_path / "out.zarr").exists()


def test_run__store_under_a_file_fails_before_work(tmp_path, capsys, monkeypatch):
    _no_cluster(monkeypatch)
    (tmp_path / "results").write_text("a file, not a folder")
    path = write_job(tmp_path, store="results/out.zarr")
    assert main(["run", str(path)]) == 2
    assert re.search(r"lies under .*results', which is a file, not a folder", capsys.readouterr().err)


def test_run__read_only_location_fails_before_work(tmp_path, capsys, monkeypatch):
    _no_cluster(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    path = write_job(tmp_path, store="ro/out.zarr")
    if os.geteuid() == 0:
        # root writes through any mode bits (as in CI), so chmod cannot make a folder read-only
        # for this test: the access check itself is made to answer as it does for other users.
        from interpretome.storage import store as store_mod

        real = os.access
        monkeypatch.setattr(store_mod.os, "access",
                            lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw))
    ro.chmod(0o555)
    try:
        assert main(["run", str(path)]) == 2
    finally:
        ro.chmod(0o755)
    assert re.search(r"output location .*ro' is read-only for this user: choose a writable", capsys.readouterr().err)
    assert not (ro / "out.zarr").exists()
