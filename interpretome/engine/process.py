"""Tuning of the worker process: glibc's allocator, numba's disk cache, GPU detection.

What a worker process needs set up before it computes, whatever the task:

* ``tune_malloc`` — keep glibc from unmapping each batch's tensors (dask's worker default
  ``MALLOC_TRIM_THRESHOLD_`` otherwise doubles the CPU time of model loops); ``engine.cluster``
  applies it in every worker, the model loops again in case they run elsewhere;
* ``numba_cache`` — compiled numba code cached on disk (``NUMBA_CACHE_DIR``, default
  ``<cache_dir>/numba``), including what umap-learn jits at call time, so a second process loads
  it instead of compiling;
* ``gpu_available`` — whether cuML and a CUDA device are usable in this process;
* ``ieee_float32`` — float32 convolutions and matrix products on CUDA computed in float32 (torch
  lets cuDNN convolutions use TF32, 10-bit mantissas, by default: results then differ from the
  CPU's and from the float32 full forwards the locality path is exact against by ~1e-3 relative).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

from ..storage.readers import cache_dir

_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Keep glibc from unmapping large freed blocks in this process; return True when applied.

    Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which (like any fixed
    threshold) also freezes glibc's mmap threshold at 128 KiB: every batch's activation tensors
    (megabytes) are then mmapped and unmapped again, and the page faults double the CPU time of
    gradient loops. ``mallopt`` restores the behaviour of an untuned process: blocks up to 32 MiB
    come from the heap and are reused; the heap is trimmed above 256 MiB of free top memory.
    A no-op off glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1 and libc.mallopt(m_trim_threshold, 256 * 2**20) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


# --- numba disk cache ------------------------------------------------------------------------------

_NUMBA_LOCK = threading.RLock()
_CACHED_MODULES: set[str] = set()


def numba_cache_dir() -> str:
    """Return (and create) the directory where numba caches compiled code (``NUMBA_CACHE_DIR``)."""
    d = os.environ.get("NUMBA_CACHE_DIR") or str(cache_dir() / "numba")
    os.makedirs(d, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = d
    return d


def enable_module_caching(prefixes=("umap", "pynndescent")) -> int:
    """Turn on disk caching for every module-level numba dispatcher of ``prefixes``; return how many."""
    import sys

    from numba.core.registry import CPUDispatcher

    n = 0
    for name in list(sys.modules):
        if not name.startswith(prefixes) or name in _CACHED_MODULES:
            continue
        _CACHED_MODULES.add(name)
        for obj in list(vars(sys.modules[name]).values()):
            if isinstance(obj, CPUDispatcher) and type(obj._cache).__name__ == "NullCache":
                with contextlib.suppress(Exception):  # functions numba cannot cache stay uncached
                    obj.enable_caching()
                    n += 1
    return n


@contextlib.contextmanager
def numba_cache():
    """Context in which numba caches compiled code on disk, including functions jitted at call time.

    umap-learn jits some functions inside its calls (``numba.njit(f, ...)`` in ``optimize_layout_*``)
    and most of its module functions without ``cache=True``; inside this context those get
    ``cache=True`` so a second process loads them instead of compiling (~15 s -> ~1 s here).
    """
    import numba
    import numba.core.config

    numba.core.config.CACHE_DIR = numba_cache_dir()
    with _NUMBA_LOCK:
        original = numba.njit

        def njit(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return original(*args, **kwargs)

        numba.njit = njit
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning)
                warnings.filterwarnings("ignore", category=FutureWarning)
                import umap  # noqa: F401  (imports pynndescent too)
                import umap.layouts  # noqa: F401
                enable_module_caching()
                yield
        finally:
            numba.njit = original


# --- GPU -------------------------------------------------------------------------------------------

def gpu_available() -> bool:
    """Return True when cuML imports and CUDA reports at least one device in this process."""
    try:
        import cuml  # noqa: F401
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def ieee_float32() -> None:
    """Make torch compute float32 convolutions, matmuls and RNNs on CUDA in IEEE float32, never TF32.

    Process-wide (torch's own switches, read at each call): a worker that runs interpretome models
    gets the precision the results are checked against. Applied by ``Runtime`` whenever a model is
    built; on a CPU-only process the switches have no effect.
    """
    import torch

    backends = torch.backends
    if hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision"):  # torch >= 2.9
        backends.cuda.matmul.fp32_precision = "ieee"
        backends.cudnn.conv.fp32_precision = "ieee"
        backends.cudnn.rnn.fp32_precision = "ieee"
    else:
        backends.cuda.matmul.allow_tf32 = False
        backends.cudnn.allow_tf32 = False
