"""Fault tolerance, for real: a worker killed mid-run, the whole ``interpretome run`` killed mid-run.

Both runs must end with a store identical to an undisturbed run of the same job; the resumed
run must compute exactly the chunks that had no manifest file when the job died.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from interpretome.cli import main
from interpretome.jobs.runner import load_job, plan_job, run_job
from interpretome.storage.store import group_info

from tests.jobfiles import TOTAL_CHUNKS, manifest_count, manifests, store_files, write_job


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client2):
    """The store of an undisturbed run of the job (on the session's 2-worker cluster)."""
    folder = tmp_path_factory.mktemp("reference")
    path = write_job(folder)
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 0
    return folder / "out.zarr"


def assert_same_store(store: Path, reference: Path) -> None:
    """Assert two stores hold the same arrays byte for byte, the same manifests and parameters."""
    a, b = store_files(store), store_files(reference)
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"files differ from the undisturbed run: {different[:5]}"
    assert {m.split("/", 1)[1] for m in manifests(store)} == {m.split("/", 1)[1] for m in manifests(reference)}
    for group in ("ism", "sweep"):
        got, ref = group_info(store, group), group_info(reference, group)
        assert got["complete"] and got["fingerprint"] == ref["fingerprint"] and got["params"] == ref["params"]


def _descendants(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.02):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def test_faults__worker_killed_mid_run(tmp_path, reference, client2):
    """Kill one of the 2 worker processes of a LocalCluster once some chunks are written: the job
    completes and the store is identical to the undisturbed run.

    The job reaches the cluster through a scheduler file (``[cluster] scheduler_file``), as on HPC;
    the cluster's nanny restarts the killed worker.
    """
    # what `dask scheduler --scheduler-file` writes (Client.write_scheduler_file trips on this cluster's info)
    (tmp_path / "scheduler.json").write_text(json.dumps({"type": "Scheduler", "address": client2.scheduler.address}))
    path = write_job(tmp_path, cluster='[cluster]\nscheduler_file = "scheduler.json"\n')
    store = tmp_path / "out.zarr"
    lines: list[str] = []
    errors: list[BaseException] = []

    def job():
        try:
            run_job(path, log=lines.append)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            errors.append(e)

    thread = threading.Thread(target=job)
    thread.start()
    try:
        _wait_for(lambda: manifest_count(store) >= 4 or not thread.is_alive(), 60, "the first chunks")
        victim_address, victim = sorted(client2.run(os.getpid).items())[0]
        os.kill(victim, signal.SIGKILL)
        done_at_kill = manifest_count(store)
    finally:
        thread.join(120)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    assert 0 < done_at_kill < TOTAL_CHUNKS, "the worker was not killed in the middle of the run"
    # the nanny restarted the killed worker: two workers again, none with the old pid
    _wait_for(lambda: len(client2.scheduler_info()["workers"]) == 2, 60, "the restarted worker")
    assert victim not in client2.run(os.getpid).values()
    text = "\n".join(lines)
    assert "[1/2] ism: computed 20 chunks, 0 already in the store" in text
    assert "[2/2] sweep: computed 36 chunks, 0 already in the store" in text
    assert_same_store(store, reference)


def test_faults__whole_job_killed_then_resumed(tmp_path, reference, client2, capsys):
    """SIGKILL ``interpretome run`` (and its workers) mid-run; running it again computes only the
    chunks without a manifest file and gives the undisturbed store."""
    path = write_job(tmp_path, cluster="[cluster]\nworkers = 2\n")
    store = tmp_path / "out.zarr"
    job = load_job(path)
    total = sum(p.chunks for p in plan_job(job))
    assert total == TOTAL_CHUNKS
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "interpretome", "run", str(path)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: manifest_count(store) >= 8 or proc.poll() is not None, 120, "the first chunks")
    finally:
        family = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)  # the runner, its scheduler and its worker processes
        for child in family:  # any that left the process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        proc.wait(30)
        psutil.wait_procs(family, timeout=30)
    done = manifest_count(store)
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    assert 0 < done < total
    assert not group_info(store, "ism")["complete"] or not (store / "sweep").exists() \
        or not group_info(store, "sweep")["complete"]
    capsys.readouterr()
    # run it again (on the session's cluster, the job file unchanged)
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 0
    out = capsys.readouterr().out
    computed = [int(n) for n in re.findall(r"\] \w+: computed (\d+) chunks", out)]
    assert len(computed) == 2
    assert sum(computed) == total - done, out
    assert f"job done: computed {total - done} chunks, {done} already in the store" in out
    assert_same_store(store, reference)
