"""Small jobs carry no fixed tax: in-process executors, the auto choice, quiet worker errors."""

from __future__ import annotations

import argparse
import os
import logging
import time

import numpy as np
import pytest
import xarray as xr

from interpretome.cli import main
from interpretome.datasets import random_dna, reference_cnn
from interpretome.engine import cluster
from interpretome.errors import ClusterError
from interpretome.storage.alphabet import decode_bases
from interpretome.storage.readers import write_fasta

MODEL = ["--model", "interpretome.datasets:reference_cnn", "--model-kwargs", '{"channels": 4}', "--targets", "y"]


def test_choose_executor():
    assert cluster.choose_executor("auto", 4, workers=2) == "threads"
    assert cluster.choose_executor("auto", 5, workers=2) == "local"
    assert cluster.choose_executor("auto", 1, workers=1) == "sync"
    assert cluster.choose_executor("auto", None, workers=2) == "local"  # size unknown: worker processes
    assert cluster.choose_executor("sync", 10_000) == "sync"
    with pytest.raises(ClusterError, match="--executor 'fast' is not one of auto, sync, threads, local"):
        cluster.choose_executor("fast", 1)
    args = argparse.Namespace(workers=None, scheduler="tcp://127.0.0.1:1", scheduler_file=None, gpus=False,
                              executor="threads")
    with pytest.raises(ClusterError, match="cannot be combined with --scheduler"):
        cluster.connect_from_args(args, plan_chunks=1)


def test_executor_default_comes_from_the_environment(monkeypatch):
    """Without ``--executor`` a compute subcommand uses ``$INTERPRETOME_EXECUTOR`` (else ``auto``);
    the flag wins; a value that is not an executor is refused naming the variable."""
    args = argparse.Namespace(workers=2, scheduler=None, scheduler_file=None, gpus=False, executor=None)
    monkeypatch.delenv(cluster.EXECUTOR_ENV, raising=False)
    assert cluster.default_executor() == "auto"
    lines = []
    with cluster.connect_from_args(args, lines.append, plan_chunks=4) as client:  # auto: small plan, in-process
        assert client is None
    monkeypatch.setenv(cluster.EXECUTOR_ENV, "sync")
    with cluster.connect_from_args(args, lines.append, plan_chunks=400) as client:
        assert client is None
    args.executor = "threads"
    with cluster.connect_from_args(args, lines.append, plan_chunks=400) as client:
        assert client is None
    assert [ln.split(" (")[0] for ln in lines] == ["executor: threads", "executor: sync", "executor: threads"]
    monkeypatch.setenv(cluster.EXECUTOR_ENV, "fast")
    with pytest.raises(ClusterError, match="INTERPRETOME_EXECUTOR='fast' is not one of auto, sync, threads, local"):
        cluster.default_executor()


def test_small_ism_runs_in_process_and_equals_a_plain_loop(tmp_path, capsys):
    """2 sequences x 200 bp ISM through the CLI: auto picks the in-process executor (stated), no
    cluster starts, and every delta equals a plain per-edit loop of forward passes."""
    import torch

    codes = random_dna(2, 200, seed=5)
    fa = write_fasta(tmp_path / "s.fa", {f"s{i}": decode_bases(c) for i, c in enumerate(codes)})
    store = tmp_path / "s.zarr"
    t0 = time.perf_counter()
    assert main(["ism", str(fa), "-o", str(store), "--workers", "2", *MODEL]) == 0
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "executor: threads (in this process, 2 threads, no cluster started): the plan has" in out
    assert "dask dashboard" not in out
    delta = xr.open_zarr(str(store), group="ism")["ism_delta"].values[..., 0]  # (sequence, position, base)
    model = reference_cnn(channels=4).eval()
    eye = np.eye(5, 4, dtype=np.float32)
    with torch.inference_mode():
        for i, c in enumerate(codes):
            ref = model(torch.from_numpy(eye[c].T[None].copy()))[0, 0].item()
            for p in range(0, 200, 37):
                for b in range(4):
                    edited = c.copy()
                    edited[p] = b
                    got = model(torch.from_numpy(eye[edited].T[None].copy()))[0, 0].item() - ref
                    np.testing.assert_allclose(delta[i, p, b], got, rtol=1e-4, atol=1e-5)
    assert wall < 60  # the real figure (< 4 s on a quiet machine) is in benchmarks/RESULTS.md


def test_set_verbosity_drops_the_worker_dump_until_verbose():
    """A failed task: the worker's ``Compute Failed`` dump (with traceback) is dropped at levels 0-1
    and logged from level 2; the client raises the exception either way."""
    import torch
    from distributed import Client, LocalCluster

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    def boom():
        raise ValueError("bad input: fix it")

    handler = Keep()
    logging.getLogger("distributed.worker").addHandler(handler)
    try:
        with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as lc, \
                Client(lc) as client:
            for level, dumped in ((1, False), (2, True), (0, False)):
                records.clear()
                cluster.set_verbosity(level)
                client.register_plugin(cluster.TorchThreads(torch.get_num_threads()))
                with pytest.raises(ValueError, match="bad input: fix it"):
                    client.submit(boom, pure=False).result()
                assert any(r.startswith("Compute Failed") for r in records) is dumped, (level, records)
    finally:
        logging.getLogger("distributed.worker").removeHandler(handler)
        cluster.set_verbosity(1)
    with pytest.raises(ValueError, match="0 quiet, 1 normal, 2 verbose, 3 debug"):
        cluster.set_verbosity(5)


def test_worker_processes_survive_a_second_registration_and_exit_when_closed():
    """``connect`` to a running cluster registers the worker plugin again (the old one is torn
    down): the workers keep running; closing the cluster ends them without the nanny's kill."""

    client = cluster.connect(1, log=None)
    try:
        pids = client.run(os.getpid)
        again = cluster.connect(scheduler=client.scheduler.address, log=None)
        time.sleep(3.5)  # past exit_when_closed's deadline
        assert client.run(os.getpid) == pids
        again.close()
    finally:
        client.shutdown()
        client.close()


def test_closing_the_client_closes_the_cluster_it_started():
    """A client ``connect`` started a LocalCluster for closes it with itself (``with`` block or
    ``close()``): no scheduler or worker process outlives it in a long-lived process (a test session,
    a notebook calling the CLI's functions), while a client of a named scheduler leaves that alone."""
    import psutil

    with cluster.connect(1, log=None) as client:
        local = client.cluster
        (pid,) = client.run(os.getpid).values()
        with cluster.connect(scheduler=client.scheduler.address, log=None) as other:
            assert other.cluster is None
        assert client.run(os.getpid) == {w: pid for w in client.run(os.getpid)}  # still served
    assert local.status.name == "closed" and local.scheduler.status.name == "closed"
    deadline = time.monotonic() + 20
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"worker process {pid} still runs after its client closed"
        time.sleep(0.1)


def test_in_process_run_never_imports_distributed(tmp_path):
    """``--executor threads`` / ``sync``: the whole CLI job (plan, compute, store) runs without importing
    ``distributed`` (its import alone is ~0.5-1 s of a small job's wall time); ``local`` does import it."""
    import subprocess
    import sys

    fasta = tmp_path / "s.fa"
    write_fasta(fasta, {f"s{i}": decode_bases(c) for i, c in enumerate(random_dna(2, 200, seed=0))})
    probe = ("import sys; from interpretome.cli import main; rc = main(sys.argv[1:]); "
             "print('distributed' in sys.modules, rc)")
    for executor, imported in (("threads", "False"), ("sync", "False"), ("local", "True")):
        out = subprocess.run([sys.executable, "-c", probe, "ism", str(fasta), *MODEL, "-o",
                              str(tmp_path / f"{executor}.zarr"), "--executor", executor, "--workers", "1", "-q"],
                             capture_output=True, text=True, timeout=300)
        assert out.stdout.split()[-2:] == [imported, "0"], (executor, out.stdout[-500:], out.stderr[-1500:])
