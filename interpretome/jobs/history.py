"""The run history of a store: root attribute ``interpretome_runs``, one entry per run.

Each run (a job file, or a subcommand) is recorded while it runs (``recording_run``):
``running``, then ``done``, ``failed`` or ``interrupted``, with pid, host, times and (for a job
file) each step's seconds and chunks. The report shows it next to every group's provenance.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

RUNS_ATTR = "interpretome_runs"
"""Root attribute of a store listing the runs that wrote it: job file (or subcommand) and digest,
``status`` (running, done, failed, interrupted), pid, host, start and end times, steps."""


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True
    return True


def _update_runs(store, change: Callable[[list[dict]], list[dict]]) -> None:
    """Read the store's run history, apply ``change`` and write it back (root attrs, consolidated)."""
    import warnings

    import zarr

    from ..storage.groups import decoded_attr, set_json_attr
    from ..storage.store import ZARR_FORMAT

    store = Path(store)
    root = zarr.open_group(str(store), mode="a", zarr_format=ZARR_FORMAT)
    set_json_attr(root, RUNS_ATTR, change([dict(r) for r in decoded_attr(dict(root.attrs), RUNS_ATTR, [])]))
    with warnings.catch_warnings():  # the manifest folders are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        zarr.consolidate_metadata(str(store), zarr_format=ZARR_FORMAT)


def close_stale_runs(runs: list[dict], *, host: str | None = None, pid: int | None = None) -> list[dict]:
    """Return ``runs`` with every entry still ``running`` that is not alive marked ``interrupted``.

    An entry is alive only when it was started on this ``host`` by a live process (``pid``, not
    this process's own entry). An entry of another host cannot be checked: a run found it unclosed,
    so it is marked interrupted too (one store is written by one run at a time).
    """
    import platform

    host = host or platform.node()
    pid = os.getpid() if pid is None else pid
    for r in runs:
        if r.get("status") != "running":
            continue
        same_host = r.get("host") == host
        if same_host and r.get("pid") != pid and _pid_alive(r.get("pid")):
            continue
        r["status"] = "interrupted"
        r["finished"] = r.get("finished") or None
        r["note"] = (f"found unclosed by a run started {_now()} on {host}: "
                     + ("its process had ended" if same_host else "started on another host"))
    return runs


@contextlib.contextmanager
def recording_run(store, entry: dict, *, steps: list | None = None):
    """Context recording one run in the store's run history (root attrs ``interpretome_runs``).

    At the start: ``entry`` plus ``status = "running"``, pid, host and start time (and stale
    ``running`` entries of dead processes are marked ``interrupted``). At the end: ``done``;
    ``failed`` with the error's first line; ``interrupted`` on KeyboardInterrupt (re-raised). A
    SIGKILLed run stays ``running`` until the next run marks it. ``steps``: the StepResults
    list the run appends to, recorded at the end.
    """
    import platform
    import uuid

    run = {**entry, "run_id": uuid.uuid4().hex[:12], "status": "running", "pid": os.getpid(),
           "host": platform.node(), "started": _now()}
    _update_runs(store, lambda runs: close_stale_runs(runs) + [run])
    status, error = "done", None
    try:
        yield run
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status, error = "failed", (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise
    finally:
        def close(runs: list[dict]) -> list[dict]:
            for r in runs:
                if r.get("run_id") == run["run_id"]:
                    r.update(status=status, finished=_now())
                    if error:
                        r["error"] = error
                    if steps is not None:
                        r["steps"] = [{"name": s.step.name, "kind": s.step.kind.name, "seconds": round(s.seconds, 3),
                                       "computed_chunks": s.computed_chunks, "skipped_chunks": s.skipped_chunks}
                                      for s in steps]
            return runs

        _update_runs(store, close)

