"""Interleaved A/B runs behind two engine settings (issue 12), each variant measured in turn, several rounds.

* ``profiler``: tiled prediction (reference CNN, 1 kb windows, stride 1000, a synthetic contig of
  ``--mb`` Mb, 256 kb chunks) on ``connect(2)`` with distributed's worker task profiler at its
  default 10 ms, at 100 ms, and off (``engine.cluster.worker_config``); windows/s as a multiple of the
  forward limit measured on the same workers, and the workers' CPU seconds.
* ``batch``: ``Runtime.predict_edits`` over every substitution of 1 kb sequences (one thread, glibc's
  allocator tuned), ``receptive_field.LOCAL_BATCH_FACTOR`` 16 / 8 / 4, on the reference CNN and the
  zoo models of ``bench_locality``; median edits/s per factor.

Run: ``python -m benchmarks.ab_settings profiler [--mb 4] [--rounds 3]`` or
``python -m benchmarks.ab_settings batch [--rounds 3]``. Not a ``bench_`` module: it prints, it does
not rewrite RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def profiler_ab(mb: float, rounds: int) -> None:
    """Print, per round and setting, the tiling rate over the forward limit and the workers' CPU seconds."""
    import dask
    import distributed  # noqa: F401 - its config must be loaded before dask.config.set below

    from interpretome.engine.cluster import PROFILE_ENV, connect
    from interpretome.engine.models import ModelSpec
    from interpretome.storage.genome import read_genome
    from interpretome.tasks.tiles import predict_tiles

    from .bench_tiles import _cpu_seconds, _forward_worker, _write_contig

    length = int(mb * 1_000_000)
    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", batch_size=64, device="cpu")
    settings = {"10ms": {"distributed.worker.profile.interval": "10ms"},
                "100ms": {"distributed.worker.profile.interval": "100ms"},
                "off": {"distributed.worker.profile.enabled": False}}
    with tempfile.TemporaryDirectory() as d:
        fasta = _write_contig(Path(d) / "contig.fa", length)
        for rnd in range(rounds):
            for name, cfg in settings.items():
                # the nanny hands this process's config (cfg) to its workers; with PROFILE_ENV set,
                # worker_config leaves it as it is (unset, it would switch the profiler off in every variant)
                with dask.config.set(cfg):
                    os.environ[PROFILE_ENV] = "False" if name == "off" else "True"
                    try:
                        client = connect(2, log=None)
                    finally:
                        os.environ.pop(PROFILE_ENV, None)
                    with client:
                        graph = predict_tiles(read_genome(fasta, position_chunk=1 << 18), spec, window=1000,
                                              stride=1000, merge=False)["track_prediction"].data
                        client.compute(graph[:, :500], sync=True)
                        fwd = sum(r[0] for r in client.run(_forward_worker, 1000, 64, 3.0).values())
                        cpu0 = sum(client.run(_cpu_seconds).values())
                        t0 = time.perf_counter()
                        client.compute(graph, sync=True)
                        wall = time.perf_counter() - t0
                        cpu = sum(client.run(_cpu_seconds).values()) - cpu0
                n = length // 1000
                print(f"round {rnd} profiler {name:>5}: forward limit {fwd:,.0f} windows/s; tiles {n / wall:,.0f} "
                      f"windows/s = {n / wall / fwd:.2f}x; worker CPU {cpu:.2f} s", flush=True)


def batch_ab(rounds: int) -> None:
    """Print the median edits/s of every substitution of 1 kb per model and LOCAL_BATCH_FACTOR."""
    import torch

    import interpretome.engine.receptive_field as rf
    from interpretome.datasets import random_dna
    from interpretome.engine.models import Runtime
    from interpretome.engine.process import tune_malloc

    from .bench_locality import _edit_rate, _ism_edits, _models, _sweep_edits

    torch.set_num_threads(1)
    tune_malloc()
    refs = [random_dna(1, 1000, seed=s)[0] for s in range(3)]
    default = rf.LOCAL_BATCH_FACTOR
    try:
        for name, spec in _models():
            rt = Runtime(spec)
            rates: dict[int, list[float]] = {}
            for _ in range(rounds):
                for factor in (16, 8, 4):
                    rf.LOCAL_BATCH_FACTOR = factor
                    for ref in refs:
                        edits = _sweep_edits(ref) if spec.input_kind == "kmer" else _ism_edits(ref)
                        rates.setdefault(factor, []).append(_edit_rate(rt, ref, edits)[0])
            print(f"{name[:60]}: " + ", ".join(f"factor {f} {np.median(v):,.0f} edits/s" for f, v in rates.items()),
                  flush=True)
    finally:
        rf.LOCAL_BATCH_FACTOR = default


def main() -> None:
    """CLI: run one of the two A/B comparisons."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["profiler", "batch"])
    p.add_argument("--mb", type=float, default=4.0, help="contig length for 'profiler' (Mb)")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    if a.which == "profiler":
        profiler_ab(a.mb, a.rounds)
    else:
        batch_ab(a.rounds)


if __name__ == "__main__":
    main()
