"""Where work runs: ``connect()`` returns a ``distributed.Client`` for one of

* an embedded ``LocalCluster`` (default): bound to 127.0.0.1, one single-threaded worker process
  per core, torch limited to one intra-op thread per worker (no oversubscription);
* a running scheduler (``scheduler="tcp://host:8786"``) or a scheduler file (HPC: ``dask scheduler
  --scheduler-file FILE`` with workers started by ``srun dask worker --scheduler-file FILE``);
* a dask-jobqueue cluster (SLURM / PBS) from a config dict (the ``hpc`` extra);
* a dask-cuda ``LocalCUDACluster``, one worker per GPU (``gpus=True``, the ``gpu`` extra).

The same ``add_cluster_arguments`` / ``connect_from_args`` pair gives every CLI subcommand the
flags ``--workers N``, ``--scheduler ADDRESS``, ``--scheduler-file FILE``, ``--gpus`` and (compute
subcommands) ``--executor auto|sync|threads|local``: where a job's chunks run when no cluster is
named. ``local`` is the ``LocalCluster`` of worker processes; ``sync`` (one thread) and
``threads`` (one per core, torch at one intra-op thread each) run in this process with dask's own
schedulers, no cluster started (the model built during planning is reused); ``auto`` (default;
``$INTERPRETOME_EXECUTOR`` sets another) runs in-process when the plan has at most
``SMALL_PLAN_CHUNKS_PER_CORE`` chunks to compute per core, else ``local``, and says which it chose.

Worker processes exit as soon as they have closed (no nanny kill at shutdown, see
``exit_when_closed``). ``set_verbosity(level)`` (0 quiet, 1 normal, 2 verbose, 3 debug) sets
how much distributed logs here and on the workers: a failed task is reported once by the
client as its one-line exception; the worker's ``Compute Failed`` dump with its traceback is
kept from level 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Callable

from ..errors import ClusterError

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
EXECUTORS = ("auto", "sync", "threads", "local")
SMALL_PLAN_CHUNKS_PER_CORE = 2
EXECUTOR_ENV = "INTERPRETOME_EXECUTOR"
VERBOSITY = {0: "quiet", 1: "normal", 2: "verbose", 3: "debug"}
_DISTRIBUTED_LOGGERS = ("distributed", "distributed.scheduler", "distributed.worker", "distributed.nanny",
                        "distributed.core", "distributed.client", "distributed.worker.state_machine")
_verbosity = 1


def set_verbosity(level: int) -> None:
    """Set how much distributed logs (0 quiet, 1 normal, 2 verbose, 3 debug), here and on the workers
    that ``connect`` starts from now on.

    0: errors only; 1: warnings, a failed task's worker-side ``Compute Failed`` dump dropped (the
    client raises its exception once, as one line); 2: that dump with its traceback kept; 3: info
    and debug messages of scheduler, workers and nannies.
    """
    global _verbosity
    if int(level) not in VERBOSITY:
        raise ValueError(f"verbosity {level!r} is not one of {sorted(VERBOSITY)} (0 quiet, 1 normal, 2 verbose, "
                         f"3 debug)")
    _verbosity = int(level)
    apply_verbosity(_verbosity)


def get_verbosity() -> int:
    """Return the level ``set_verbosity`` set (default 1, normal)."""
    return _verbosity


def apply_verbosity(level: int) -> None:
    """Configure this process's distributed loggers for verbosity ``level`` (see ``set_verbosity``)."""
    import logging

    lvl = {0: logging.ERROR, 1: logging.WARNING, 2: logging.WARNING, 3: logging.DEBUG}[int(level)]
    for name in _DISTRIBUTED_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(lvl)
        for f in [f for f in logger.filters if isinstance(f, _ComputeFailed)]:
            logger.removeFilter(f)
    if int(level) < 2:
        logging.getLogger("distributed.worker").addFilter(_ComputeFailed())


class _ComputeFailed:
    """Logging filter: drop the worker's ``Compute Failed`` dump (the client reports the error once)."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def _torch_threads_class() -> type:
    """Return the ``TorchThreads`` worker-plugin class, built on first use.

    It subclasses ``distributed``'s ``WorkerPlugin`` (``register_plugin`` dispatches on that
    type), so it is defined only when a cluster needs it: in-process runs never import
    ``distributed`` (about 0.5 s of a small job's start).
    """
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin

    class TorchThreads(_WorkerPlugin):
        """Worker plugin that limits torch (and BLAS) to ``threads`` intra-op threads on each worker."""

        name = "interpretome-torch-threads"

        def __init__(self, threads: int = 1, verbosity: int | None = None):
            self.threads = int(threads)
            self.verbosity = _verbosity if verbosity is None else int(verbosity)

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
            apply_verbosity(self.verbosity)

        def teardown(self, worker=None) -> None:
            """End a nanny's worker process as soon as its worker has closed (see ``exit_when_closed``).

            Only while the worker is closing: a plugin replaced by a new registration (``connect`` to
            a running cluster registers it again) is torn down too, and that worker keeps running.
            """
            from distributed.core import Status

            if worker is not None and getattr(worker, "nanny", None) and worker.status == Status.closing:
                exit_when_closed(worker)

    TorchThreads.__module__ = __name__
    TorchThreads.__qualname__ = "TorchThreads"
    return TorchThreads


def __getattr__(name: str):
    """Module attribute ``TorchThreads``, defined lazily (see ``_torch_threads_class``)."""
    if name == "TorchThreads":
        if "TorchThreads" not in globals():
            globals()["TorchThreads"] = _torch_threads_class()
        return globals()["TorchThreads"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def exit_when_closed(worker, poll: float = 0.01, deadline: float = 3.0) -> None:
    """End this worker process (``os._exit(0)``) as soon as ``worker`` reports itself closed, or
    ``deadline`` seconds into its close, whichever comes first.

    A closed worker has sent its last message and shut its executors; what is left is the
    interpreter's own teardown (torch, numpy, every module's finaliser), which on a loaded machine
    takes longer than the nanny's 4 s and ends in ``Worker process still alive after 4.0 seconds,
    killing`` (so can the close itself, waiting on its streams). The deadline ends the process
    before that kill. Only for workers run by a nanny (their own process, called from the plugin's
    teardown, i.e. once the worker is closing): an in-process worker is left alone. Results are
    never at stake: a closing worker runs no task and the stores write synchronously.
    """
    import sys
    import threading
    import time

    from distributed.core import Status

    def watch():
        end = time.monotonic() + deadline
        while worker.status not in (Status.closed, Status.failed) and time.monotonic() < end:
            time.sleep(poll)
        time.sleep(poll)  # let ``Worker.close`` return to the nanny's loop
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    threading.Thread(target=watch, name="interpretome-exit-when-closed", daemon=True).start()


PROFILE_ENV = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"
"""Setting this variable (to True or False) gives the workers of a cluster started here distributed's own choice."""


def worker_config() -> dict:
    """Return the dask config for the workers of a cluster started here (``LocalCluster``, dask-cuda's
    ``LocalCUDACluster``, which hands it to the same nannies): this process's, with
    distributed's statistical task profiler off (``distributed.worker.profile.enabled``).

    The profiler samples the Python stack of every task thread every 10 ms, and only the dashboard's
    Profile page reads it; in interleaved tiling runs (``python -m benchmarks.ab_settings profiler``,
    ``benchmarks/RESULTS.md``, scaling) it cost the workers ~8 % of their CPU time in a first series
    and ~1 % in a second: a small cost, but one no task here needs. When
    ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED`` is set in the environment, the workers get this
    process's config unchanged (the variable's value decides).
    """
    import dask

    if PROFILE_ENV in os.environ:
        return {}
    # the nanny merges this over the global config one level deep: pass the whole, deep-merged config
    return dask.config.merge(dask.config.config, {"distributed": {"worker": {"profile": {"enabled": False}}}})


NANNY_CLOSE_S = 15.0
"""Seconds a closing nanny of the embedded cluster gives its worker process to end by itself
(distributed waits 0.8 x this, then kills it); distributed's own default is 5 (a 4 s wait)."""


def patient_nanny():
    """Return the ``distributed.Nanny`` subclass the embedded ``LocalCluster`` runs its workers in.

    It only changes how long a closing nanny waits for its worker process: ``NANNY_CLOSE_S``
    instead of 5 s. A worker process ends within about 3 s of its close (``exit_when_closed``),
    but on a loaded machine the close itself can take longer than distributed's 4 s wait, and the
    nanny then logs ``Worker process still alive after 4.0 seconds, killing`` (and kills a process
    that was about to end). Nothing else differs; restarts and failures keep distributed's timings.
    """
    from distributed import Nanny

    class PatientNanny(Nanny):
        """A ``Nanny`` whose ``close`` waits ``NANNY_CLOSE_S`` for its worker process by default."""

        async def close(self, timeout: float = NANNY_CLOSE_S, reason: str = "nanny-close"):  # type: ignore[override]
            return await super().close(timeout=timeout, reason=reason)

    return PatientNanny


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


def _local_cuda_cluster(threads_per_worker: int = 1, **kwargs):
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
    return LocalCUDACluster(ip="127.0.0.1", threads_per_worker=threads_per_worker, dashboard_address="127.0.0.1:0",
                            config=worker_config(), **kwargs)


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


def owning_client(cluster):
    """Return a ``distributed.Client`` of ``cluster`` that closes ``cluster`` when it closes.

    A ``Client(cluster)`` given its cluster leaves it running at ``close()`` (and at the end of a
    ``with`` block): each embedded cluster a long-lived process started (a Python program, a test
    session, a notebook calling the CLI's functions) would keep its scheduler and its worker
    processes until the interpreter exits. The client returned here closes its cluster after itself.
    """
    from distributed import Client

    class OwningClient(Client):
        """A ``Client`` that closes the cluster it was started with after itself."""

        def close(self, *args, **kwargs):
            owned = self.__dict__.pop("_interpretome_cluster", None)
            try:
                return super().close(*args, **kwargs)
            finally:
                if owned is not None:
                    owned.close()

    client = OwningClient(cluster)
    client._interpretome_cluster = cluster
    return client


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
    """Return a connected ``distributed.Client`` (see the module doc for the choices); a cluster it
    starts (local, dask-cuda, jobqueue) is closed with it (``owning_client``).

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
    plugin = __getattr__("TorchThreads")(threads_per_worker)
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
        client = owning_client(_local_cuda_cluster(threads_per_worker,
                                                   **({"n_workers": workers} if workers else {})))
    elif jobqueue:
        client = owning_client(jobqueue_cluster(jobqueue))
    else:
        n = int(workers or os.cpu_count() or 1)
        env = {v: str(threads_per_worker) for v in THREAD_ENV}
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", memory_limit=memory_limit, env=env,
            worker_class=patient_nanny(), config=worker_config(),
        )
        client = owning_client(cluster)
    client.register_plugin(plugin)
    log(f"dask dashboard: {client.dashboard_link}")
    return client


class InProcess:
    """Context running dask's own scheduler in this process: ``sync`` (one thread) or ``threads``
    (``workers`` threads, default one per core); entering yields ``None`` (no client: the jobs
    compute with the scheduler set here).

    Torch runs one intra-op thread per dask thread (as on the cluster's workers) and glibc's
    allocator is tuned (``process.tune_malloc``); torch's thread count is restored on exit.
    """

    def __init__(self, mode: str = "threads", workers: int | None = None):
        if mode not in ("sync", "threads"):
            raise ClusterError(f"in-process executor {mode!r} is not 'sync' or 'threads'")
        self.mode = mode
        self.workers = 1 if mode == "sync" else int(workers or os.cpu_count() or 1)
        self._stack = None

    def describe(self) -> str:
        """Return one line naming what runs where."""
        if self.mode == "sync":
            return "executor: sync (in this process, one thread, no cluster started)"
        return f"executor: threads (in this process, {self.workers} threads, no cluster started)"

    def __enter__(self):
        import dask

        from .process import tune_malloc

        tune_malloc()
        self._stack = contextlib.ExitStack()
        # dask's scheduler functions themselves, not their names: a name makes every compute import
        # ``distributed`` to look for a client (about 0.5 s of a small job's start)
        import dask.local
        import dask.threaded

        cfg = ({"scheduler": dask.local.get_sync} if self.mode == "sync"
               else {"scheduler": dask.threaded.get, "num_workers": self.workers})
        self._stack.enter_context(dask.config.set(cfg))
        try:
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(1)
            self._stack.callback(torch.set_num_threads, before)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        return None

    def __exit__(self, *exc):
        self._stack.close()
        return False


def default_executor() -> str:
    """Return the executor a compute subcommand uses without ``--executor``: ``$INTERPRETOME_EXECUTOR``
    (e.g. ``local`` on a workstation where every job should get worker processes, ``threads`` in a
    container without room for them) if set, else ``auto``.

    Raises ``ClusterError`` naming the variable when it holds another value.
    """
    value = os.environ.get(EXECUTOR_ENV, "").strip()
    if not value:
        return "auto"
    if value not in EXECUTORS:
        raise ClusterError(f"environment variable {EXECUTOR_ENV}={value!r} is not one of {', '.join(EXECUTORS)}: "
                           f"set it to one of them or unset it (--executor chooses per command)")
    return value


def choose_executor(executor: str, plan_chunks: int | None, workers: int | None = None) -> str:
    """Return the executor ``auto`` resolves to: ``threads`` (``sync`` on one core) when the plan's
    ``plan_chunks`` chunks to compute are at most ``SMALL_PLAN_CHUNKS_PER_CORE`` per core, else
    ``local`` (also when the plan's size is unknown, ``None``); other choices are returned as given.
    """
    if executor not in EXECUTORS:
        raise ClusterError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor != "auto":
        return executor
    cores = int(workers or os.cpu_count() or 1)
    if plan_chunks is not None and plan_chunks <= SMALL_PLAN_CHUNKS_PER_CORE * cores:
        return "sync" if cores == 1 else "threads"
    return "local"


def add_cluster_arguments(parser: argparse.ArgumentParser, *, executor: bool = False) -> argparse.ArgumentParser:
    """Add the shared cluster flags to a CLI parser and return it (``executor``: also ``--executor``)."""
    g = parser.add_argument_group("cluster")
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    g.add_argument("--scheduler", default=None, help="address of a running dask scheduler (tcp://host:8786)")
    g.add_argument("--scheduler-file", default=None, help="scheduler file written by `dask scheduler --scheduler-file`")
    g.add_argument("--gpus", action="store_true", help="one dask-cuda worker per GPU (needs the gpu extra)")
    if executor:
        g.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="where the chunks run without --scheduler/--scheduler-file/--gpus: sync or threads "
                            "(in this process, no cluster), local (worker processes), auto (in-process "
                            f"for a plan of at most {SMALL_PLAN_CHUNKS_PER_CORE} chunks per core, stated in the "
                            f"output); default: ${EXECUTOR_ENV} if set, else auto")
    return parser


def connect_from_args(args: argparse.Namespace, log: Callable[[str], None] | None = print, *,
                      plan_chunks: int | None = None):
    """Return a client for the parsed shared cluster flags, or an ``InProcess`` context.

    ``args.executor`` (absent: ``local``; None: ``default_executor()``) picks where the chunks run unless a scheduler, a
    scheduler file or GPUs are named; ``plan_chunks`` (the chunks the plan computes, None when
    unknown) decides ``auto``. Either result is used as ``with connect_from_args(args) as client``
    (``client`` None in-process). The choice is passed to ``log``.
    """
    executor = getattr(args, "executor", "local") or default_executor()
    remote = [n for n, v in (("--scheduler", args.scheduler), ("--scheduler-file", args.scheduler_file),
                             ("--gpus", args.gpus)) if v]
    if remote:
        if executor in ("sync", "threads"):
            raise ClusterError(f"--executor {executor} runs in this process and cannot be combined with "
                               f"{remote[0]}: drop one of them")
        return connect(args.workers, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                       gpus=args.gpus, log=log)
    chosen = choose_executor(executor, plan_chunks, args.workers)
    if chosen in ("sync", "threads"):
        runner = InProcess(chosen, args.workers)
        if log:
            why = (f": the plan has {plan_chunks} chunks to compute; --executor local for worker processes"
                   if executor == "auto" else "")
            log(runner.describe() + why)
        return runner
    if log and executor == "auto":
        size = "of unknown size" if plan_chunks is None else f"with {plan_chunks} chunks to compute"
        log(f"executor: local (worker processes, a plan {size})")
    return connect(args.workers, log=log)
