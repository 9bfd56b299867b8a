"""Where ISM and sweep time goes, and how they scale from 1 to 2 workers (issue 12, item 5).

Two measurements, side by side in one run, on the reference CNN (``kwargs={"seed": 0}``, batch 64):

* a profile: cProfile of one worker's share of the work (the same task graph computed with dask's
  synchronous scheduler in this process, torch at one thread, as on a worker), its top functions by
  own time grouped into model forward (torch), edit construction / readout (numpy + our loops) and
  graph / scheduling overhead;
* scaling: ISM and a mask sweep (k in {5, 10, 20}) on ``connect(1)`` and ``connect(2)``, at two
  chunkings — 16 whole sequences a task (seconds of work a task) and 1 sequence x a quarter of its
  positions a task (tens of milliseconds: the scheduler's per-task cost, on the same 2 cores, shows) — the load
  average recorded before and after (a shared machine makes 2-worker figures noisy: 2 workers only
  scale when 2 cores are free).

Run: ``nice -n 5 python -m benchmarks.bench_scaling`` (``--quick``: 4 sequences x 500 bp).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

import numpy as np

WINDOWS = (5, 10, 20)


def _fine_chunk(length: int) -> int:
    """The profile's position chunk: a quarter of the sequence (at least 64), ~45 ms of ISM a task at 1 kb."""
    return max(64, length // 4)


def _graphs(n, length, sequence_chunk=1, position_chunk=None):
    import interpretome as it
    from interpretome.datasets import random_dna

    codes = random_dna(n, length, seed=0)
    spec = it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"seed": 0}, batch_size=64)
    ds = it.sequences_to_dataset(["".join("ACGT"[b] for b in row) for row in codes], sequence_chunk=sequence_chunk,
                                 position_chunk=position_chunk or _fine_chunk(length))
    ism = it.saturation_mutagenesis(ds, spec, merge=False)["ism_delta"].data
    sweep = it.perturbation_sweep(ds, spec, windows=list(WINDOWS), mode="mask", merge=False)["sweep_delta_mean"].data
    edits = {"ism": codes.size * 3, "sweep": sum(n * (length - k + 1) for k in WINDOWS)}
    return {"ism": ism, "sweep": sweep}, edits


def _group(filename: str, func: str) -> str:
    if "torch" in filename or "torch" in func:  # torch's Python modules and its built-ins (conv1d, relu ...)
        return "model forward (torch)"
    if "interpretome" in filename:
        return "our per-window / per-edit Python (edits, readouts)"
    if "numpy" in filename or func.startswith("<method") or func.startswith("<built-in"):
        return "numpy / builtins (array ops, copies)"
    return "dask / scheduling / other"


def profile(arr, top: int = 12):
    """Return (seconds, {group: own seconds}, top-lines text) of computing ``arr`` in this process."""
    import torch

    torch.set_num_threads(1)
    from interpretome.engine.models import clear_runtimes

    arr.compute(scheduler="sync")  # warm: model built, first-call costs paid
    clear_runtimes()
    arr.compute(scheduler="sync")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    arr.compute(scheduler="sync")
    prof.disable()
    dt = time.perf_counter() - t0
    st = pstats.Stats(prof)
    groups: dict[str, float] = {}
    for (filename, _, func), (_, _, tt, _, _) in st.stats.items():
        g = _group(filename, func)
        groups[g] = groups.get(g, 0.0) + tt
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return dt, groups, buf.getvalue()


def rate(client, arr, edits) -> float:
    """Return edits/s of computing ``arr`` on ``client`` (runtimes cleared first, model load included)."""
    client.run(lambda: __import__("interpretome.engine.models", fromlist=["x"]).clear_runtimes())
    client.compute(arr, sync=True)  # warm
    t0 = time.perf_counter()
    client.compute(arr, sync=True)
    return edits / (time.perf_counter() - t0)


def run(quick: bool = False) -> str:
    """Run both measurements and return the markdown section for RESULTS.md."""
    from interpretome.engine.cluster import connect

    n, length = (4, 500) if quick else (16, 1000)
    n_scale = n if quick else 256  # the scaling runs: long enough (~20-40 s a run) that start and tail costs are small
    graphs, edits = _graphs(n, length)
    load0 = os.getloadavg()
    lines = ["## Where the time goes, 1 vs 2 workers (issue 12, item 5)", "",
             f"Reference CNN, {length} bp sequences: {n} for the profile, {n_scale} (whole sequences) and "
             f"{max(n, n_scale // 4)} (finer chunks) for the 1 vs 2 worker rates; "
             f"`nice -n 5 python -m benchmarks.bench_scaling{' --quick' if quick else ''}`.", ""]
    for what, arr in graphs.items():
        dt, groups, text = profile(arr)
        total = sum(groups.values())
        lines += [f"Profile of {what} ({edits[what]:,} edits, one thread, {dt:.2f} s under cProfile):", "",
                  "| where | own time | share |", "|---|---:|---:|"]
        lines += [f"| {g} | {s:.2f} s | {s / total:.0%} |" for g, s in sorted(groups.items(), key=lambda x: -x[1])]
        lines += ["", "<details><summary>top functions by own time</summary>", "", "```",
                  "\n".join(text.strip().splitlines()[-16:]), "```", "</details>", ""]
    rates = {}
    # two chunkings: whole sequences, 16 a task (~2-3 s of work a task), and 1 sequence x length/4 positions
    # (~45 ms a task, the profile's; fewer sequences, as its runs are long) — the scheduler's cost per task
    # runs on the same 2 cores as the workers, so the finer graph scales worse
    chunkings = {"16 sequences x whole length a task": (n_scale, 16, length),
                 f"1 sequence x {_fine_chunk(length)} positions a task": (max(n, n_scale // 4), 1, None)}
    built = {c: _graphs(m, length, sc, pc) for c, (m, sc, pc) in chunkings.items()}
    for w in (1, 2):
        client = connect(w, log=None)
        try:
            from .bench_tiles import _forward_worker
            fwd = list(client.run(_forward_worker, length, 16, 6.0).values())  # the pure forward, side by side
            for c, (graphs_c, edits_c) in built.items():
                for what, arr in graphs_c.items():
                    rates[(c, what, w)] = rate(client, arr, edits_c[what])
            fwd += list(client.run(_forward_worker, length, 16, 6.0).values())
            rates[("forward", w)] = sum(r[0] for r in fwd) / 2  # seq/s of the w workers, mean of before and after
        finally:
            client.shutdown()
            client.close()
    load1 = os.getloadavg()
    lines += ["| task | sequences | chunks | 1 worker edits/s | 2 workers edits/s | 2 / 1 |", "|---|---:|---|---:|---:|---:|"]
    for c, (m, _, _) in chunkings.items():
        for what in built[c][0]:
            r1, r2 = rates[(c, what, 1)], rates[(c, what, 2)]
            lines.append(f"| {what} | {m} | {c} | {r1:,.0f} | {r2:,.0f} | {r2 / r1:.2f}x |")
    f1, f2 = rates[("forward", 1)], rates[("forward", 2)]
    lines.append(f"| pure batched forward (seq/s, batch 16, on the same workers before and after) | | | {f1:,.0f} | "
                 f"{f2:,.0f} | {f2 / f1:.2f}x |")
    lines += ["", f"Load average (1, 5, 15 min) before: {load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f}; after: "
              f"{load1[0]:.2f}, {load1[1]:.2f}, {load1[2]:.2f} on {os.cpu_count()} cores"
              + (" — the machine was loaded: the 2-worker figures are noisy (2 workers need 2 free cores)."
                 if max(load0[0], load1[0]) > 1.5 else "."), ""]
    return "\n".join(lines)


def main() -> None:
    """CLI: print the section."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    print(run(p.parse_args().quick))


if __name__ == "__main__":
    main()
