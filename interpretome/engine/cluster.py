"""Where work runs: ``connect()`` returns a ``distributed.Client`` for one of

* an embedded ``LocalCluster`` (default): bound to 127.0.0.1, one single-threaded worker process
  per core, torch limited to one intra-op thread per worker (no oversubscription);
* a running scheduler (``scheduler="tcp://host:8786"``) or a scheduler file (HPC: ``dask scheduler
  --scheduler-file FILE`` with workers started by ``srun dask worker --scheduler-file FILE``);
* a dask-jobqueue cluster (SLURM / PBS) from a config dict (the ``hpc`` extra);
* a dask-cuda ``LocalCUDACluster``, one worker per GPU (``gpus=True``, the ``gpu`` extra).

The same ``add_cluster_arguments`` / ``connect_from_args`` pair gives every CLI subcommand the
flags ``--workers N``, ``--scheduler ADDRESS``, ``--scheduler-file FILE``, ``--gpus``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

from ..errors import ClusterError

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object


class TorchThreads(_WorkerPlugin):
    """Worker plugin that limits torch (and BLAS) to ``threads`` intra-op threads on each worker."""

    name = "interpretome-torch-threads"

    def __init__(self, threads: int = 1):
        self.threads = int(threads)

    def setup(self, worker=None) -> None:
        """Apply the thread limit in the worker process."""
        for var in THREAD_ENV:
            os.environ[var] = str(self.threads)
        try:
            import torch

            torch.set_num_threads(self.threads)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        from .process import tune_malloc

        tune_malloc()  # undo the nanny's fixed MALLOC_TRIM_THRESHOLD_ (page faults on every batch)
        ignore_interrupts()

    def teardown(self, worker=None) -> None:
        """Nothing to undo."""


def ignore_interrupts() -> None:
    """Make this worker ignore SIGINT (Ctrl-C reaches every process of the terminal's group).

    The client handles Ctrl-C — it stops the run, says what is stored and how to resume — and
    then closes the cluster, which stops the workers; a worker that took the signal itself would
    only print a KeyboardInterrupt traceback (outside the main thread the signal is left as it
    is). The warning a worker logs for each task the stopped client cancels is dropped too.
    """
    import logging
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").addFilter(_drop_cancelled)


def _drop_cancelled(record) -> bool:
    """Logging filter: drop the worker's warning for a task the client cancelled (a stopped run)."""
    return "ended with CancelledError" not in record.getMessage()


def quiet_shutdown() -> None:
    """Silence distributed's warnings about lost and cancelled tasks while a stopped run closes."""
    import logging

    for name in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.nanny",
                 "distributed.core", "distributed.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def gpu_count() -> int:
    """Return the number of CUDA GPUs visible to this process (0 without cupy/torch CUDA)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - any failure means no usable GPU through cupy
        pass
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def _local_cuda_cluster(**kwargs):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as e:
        raise ClusterError(
            "--gpus needs dask-cuda, which is not installed: pip install 'interpretome[gpu]' "
            "(dask-cuda, cupy, cuML) on a machine with NVIDIA GPUs"
        ) from e
    n = gpu_count()
    if n == 0:
        raise ClusterError("--gpus was given but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, drivers): "
                           "drop --gpus to run on CPU workers")
    return LocalCUDACluster(ip="127.0.0.1", threads_per_worker=1, dashboard_address="127.0.0.1:0", **kwargs)


def jobqueue_config(table: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Return the dask-jobqueue keywords of a ``[cluster.jobqueue]`` table (or ``connect(jobqueue=)``).

    Workers run ``threads`` threads each (``processes = cores // threads`` unless set) and the
    job script exports the thread limits, so torch and BLAS do not oversubscribe the node.
    """
    cfg = dict(table)
    cfg.setdefault("processes", max(1, int(cfg.get("cores", 1)) // max(1, threads)))
    prologue = list(cfg.get("job_script_prologue") or [])
    prologue += [f"export {v}={threads}" for v in THREAD_ENV if not any(v in line for line in prologue)]
    cfg["job_script_prologue"] = prologue
    return cfg


def jobqueue_cluster(config: dict[str, Any], *, scale: bool = True):
    """Return a started dask-jobqueue cluster from ``config``.

    ``config`` holds ``system`` ("slurm" or "pbs"), ``jobs`` (number of jobs to scale to) and any
    keyword of the dask-jobqueue cluster class (cores, memory, queue, walltime, account,
    job_extra_directives ...). ``scale=False`` submits no job (to inspect ``cluster.job_script()``).
    """
    try:
        import dask_jobqueue
    except ImportError as e:
        raise ClusterError("a jobqueue cluster needs dask-jobqueue: pip install 'interpretome[hpc]'") from e
    config = dict(config)
    system = str(config.pop("system", "slurm")).lower()
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    if system not in classes:
        raise ClusterError(f"unknown jobqueue system {system!r}: use one of {sorted(classes)}")
    jobs = int(config.pop("jobs", 1))
    cluster = classes[system](**jobqueue_config(config))
    if scale:
        cluster.scale(jobs=jobs)
    return cluster


def connect(
    workers: int | None = None,
    *,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    gpus: bool = False,
    jobqueue: dict | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    log: Callable[[str], None] | None = print,
):
    """Return a connected ``distributed.Client`` (see the module doc for the choices).

    ``workers`` is the number of local worker processes (default: one per core). Exactly one of
    ``scheduler``, ``scheduler_file``, ``gpus``, ``jobqueue`` may be given. The dashboard address is
    passed to ``log``. Raises ``ClusterError`` with the fix when the choice cannot be honoured.
    """
    from distributed import Client, LocalCluster

    chosen = [n for n, v in (("--scheduler", scheduler), ("--scheduler-file", scheduler_file),
                             ("--gpus", gpus), ("jobqueue", jobqueue)) if v]
    if len(chosen) > 1:
        raise ClusterError(f"{' and '.join(chosen)} cannot be combined: choose one way to reach a cluster")
    if workers is not None and int(workers) < 1:
        raise ClusterError(f"--workers must be at least 1, got {workers}")
    log = log or (lambda msg: None)
    plugin = TorchThreads(threads_per_worker)
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as e:
            raise ClusterError(f"cannot reach the scheduler at {scheduler!r} ({e}): check the address "
                               f"and that `dask scheduler` runs there") from e
    elif scheduler_file:
        if not os.path.exists(scheduler_file):
            raise ClusterError(f"scheduler file {scheduler_file!r} does not exist: start `dask scheduler "
                               f"--scheduler-file {scheduler_file}` first (see README, HPC)")
        client = Client(scheduler_file=scheduler_file, timeout="20s")
    elif gpus:
        cluster = _local_cuda_cluster(**({"n_workers": workers} if workers else {}))
        client = Client(cluster)
    elif jobqueue:
        client = Client(jobqueue_cluster(jobqueue))
    else:
        n = int(workers or os.cpu_count() or 1)
        env = {v: str(threads_per_worker) for v in THREAD_ENV}
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", memory_limit=memory_limit, env=env,
        )
        client = Client(cluster)
    client.register_plugin(plugin)
    log(f"dask dashboard: {client.dashboard_link}")
    return client


def add_cluster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the shared cluster flags to a CLI parser and return it."""
    g = parser.add_argument_group("cluster")
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    g.add_argument("--scheduler", default=None, help="address of a running dask scheduler (tcp://host:8786)")
    g.add_argument("--scheduler-file", default=None, help="scheduler file written by `dask scheduler --scheduler-file`")
    g.add_argument("--gpus", action="store_true", help="one dask-cuda worker per GPU (needs the gpu extra)")
    return parser


def connect_from_args(args: argparse.Namespace, log: Callable[[str], None] | None = print):
    """Return a client for the parsed shared cluster flags."""
    return connect(args.workers, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                   gpus=args.gpus, log=log)
