"""One writer per store: a lock file holding the writer's pid, host and start time.

``store_lock(path)`` creates ``<store>.lock`` beside the store (inside it, as
``<store>/.interpretome-lock``, when the store's folder is read-only for this user — so that zarr
never meets a file it does not know) exclusively (``O_CREAT | O_EXCL``) and
keeps its modification time fresh from a heartbeat thread while the write runs. A second writer
finds the file and refuses with a message naming the holder. A lock is stale — removed, with a
line saying so — when its process is gone from this host, or when its heartbeat is older than
``STALE_SECONDS`` (a writer on another node that was killed). A run killed with SIGKILL therefore
never blocks its own resume.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import StoreLockedError

LOCK_SUFFIX = ".lock"
INNER_LOCK_NAME = ".interpretome-lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


def lock_path(path: str | os.PathLike) -> Path:
    """Return the lock file of the store at ``path`` (beside it, or inside a store whose folder is read-only)."""
    path = Path(path).absolute()
    parent = path.parent
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK) and path.is_dir():
        return path / INNER_LOCK_NAME
    return path.with_name(path.name + LOCK_SUFFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: str | os.PathLike) -> dict | None:
    """Return the holder record of a store's lock (pid, host, started, command), None if unlocked."""
    f = lock_path(path)
    try:
        holder = json.loads(f.read_text() or "{}")
        holder["age_s"] = time.time() - f.stat().st_mtime
    except (OSError, ValueError):
        return None
    return holder


def stale_reason(holder: dict) -> str | None:
    """Return why a lock holder is stale (its process is gone, its heartbeat stopped), else None."""
    if holder.get("host") == platform.node() and isinstance(holder.get("pid"), int):
        if not _pid_alive(holder["pid"]):
            return f"process {holder['pid']} no longer runs on {holder['host']}"
    if holder.get("age_s", 0) > STALE_SECONDS:
        return f"its heartbeat stopped {holder['age_s']:.0f} s ago"
    return None


def describe_holder(path: str | os.PathLike, holder: dict) -> str:
    """Return the refusal message for a store held by ``holder``."""
    return (f"store {str(path)!r} is being written by another run (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('started')}: {holder.get('command', '?')}); wait "
            f"for it to finish, or, if that run is dead, delete {str(lock_path(path))!r} and rerun")


def check_unlocked(path: str | os.PathLike) -> None:
    """Raise ``StoreLockedError`` when a live run holds the store's lock (used by planning)."""
    holder = read_lock(path)
    if holder is not None and stale_reason(holder) is None:
        raise StoreLockedError(describe_holder(path, holder))


@contextlib.contextmanager
def store_lock(path: str | os.PathLike, log: Callable[[str], None] | None = None):
    """Hold the store's lock for the duration of the block (see module doc).

    Raises ``StoreLockedError`` when a live run holds it.
    """
    f = lock_path(path)
    f.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": platform.node(), "thread": threading.get_ident(),
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
    for _ in range(3):
        try:
            fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None:  # removed between the two calls
                continue
            why = stale_reason(holder)
            if why is None:
                raise StoreLockedError(describe_holder(path, holder)) from None
            if log:
                log(f"removed a stale lock of {str(path)!r} ({why})")
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        break
    else:
        raise StoreLockedError(f"could not take the lock {str(f)!r}: delete it if no run is writing the store")
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(f)

    thread = threading.Thread(target=beat, name="interpretome-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield f
    finally:
        stop.set()
        thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
