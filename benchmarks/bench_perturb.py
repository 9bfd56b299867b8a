"""Sweeps and ISM (issue 2), side by side in one run on the reference CNN.

Reference model: Conv1d(4,64,15,pad 7)+ReLU, Conv1d(64,64,9,pad 4)+ReLU, global max pool,
Linear(64,1); 16 sequences of 1,000 bp; stride 1; k in {5, 10, 20}.

Measured, all in edits (perturbed sequences evaluated) per second:
* the forward limit: pure batched forward passes, whole machine (2 processes x 1 thread, batch 16),
  measured on the same interpretome workers (``connect()``: 1 torch thread, glibc malloc tuned);
* captum ``Occlusion`` (the window replaced by zeros = our ``mask`` mode), perturbations_per_eval
  64 and 256, one process with all threads;
* tangermeme ``saturation_mutagenesis`` fast=False and fast=True, one process with all threads;
* ours: sweeps (mask and random modes) and ISM on 1 and 2 local workers, through the store-less
  task graph computed on a LocalCluster.

Run: ``python -m benchmarks.bench_perturb`` (``--quick``: 4 sequences of 500 bp).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

N_SEQ, LENGTH, WINDOWS = 16, 1000, (5, 10, 20)


def _model():
    from interpretome.datasets import reference_cnn

    return reference_cnn(seed=0).eval()


def _data(n, length):
    from interpretome.datasets import random_dna

    return random_dna(n, length, seed=0)


def _forward_worker(n, length, batch, seconds):
    import torch

    from interpretome.datasets import random_dna, reference_cnn

    torch.set_num_threads(1)
    m = reference_cnn(seed=0).eval()
    x = torch.from_numpy(np.eye(5, 4, dtype=np.float32)[random_dna(batch, length)].transpose(0, 2, 1).copy())
    with torch.inference_mode():
        m(x)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            m(x)
            done += batch
    return done / (time.perf_counter() - t0)


def forward_limit(client, length, batch=16, seconds=5.0) -> float:
    """Return whole-machine forward throughput (sequences/s): every worker runs forwards at once."""
    rates = client.run(_forward_worker, 0, length, batch, seconds)
    return float(sum(rates.values()))


def captum_occlusion(codes, k, ppe) -> tuple[float, int]:
    """Return (edits/s, edits) of captum Occlusion with window (4, k), stride 1, baseline 0."""
    import torch
    from captum.attr import Occlusion

    torch.set_num_threads(os.cpu_count())
    m = _model()
    x = torch.from_numpy(np.eye(5, 4, dtype=np.float32)[codes].transpose(0, 2, 1).copy())
    occ = Occlusion(m)
    t0 = time.perf_counter()
    occ.attribute(x, sliding_window_shapes=(4, k), strides=(4, 1), baselines=0, target=0,
                  perturbations_per_eval=ppe)
    dt = time.perf_counter() - t0
    edits = codes.shape[0] * (codes.shape[1] - k + 1)
    return edits / dt, edits


def tangermeme_ism(codes, fast):
    """Return (edits/s, delta (N, L, 4)) of tangermeme saturation_mutagenesis in one process."""
    import warnings

    import torch
    from tangermeme.saturation_mutagenesis import saturation_mutagenesis

    torch.set_num_threads(os.cpu_count())
    m = _model()
    x = torch.from_numpy(np.eye(5, 4, dtype=np.float32)[codes].transpose(0, 2, 1).copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        r = saturation_mutagenesis(m, x, raw_outputs=True, fast=fast, batch_size=64)
        dt = time.perf_counter() - t0
    delta = (r.y_hat[..., 0] - r.y0[:, None, None, 0]).numpy().transpose(0, 2, 1)  # (N, L, 4)
    return codes.shape[0] * codes.shape[1] * 3 / dt, delta


def ours(client, codes, what, **kw):
    """Return (edits/s, result array) of our task graph computed on ``client``'s workers."""
    import interpretome as it

    spec = it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"seed": 0}, batch_size=64)
    ds = it.sequences_to_dataset(["".join("ACGT"[b] for b in row) for row in codes], sequence_chunk=1,
                                 position_chunk=max(64, codes.shape[1] // 4))
    if what == "ism":
        res = it.saturation_mutagenesis(ds, spec, merge=False)["ism_delta"]
        edits = codes.size * 3
    else:
        res = it.perturbation_sweep(ds, spec, windows=list(WINDOWS), merge=False, **kw)["sweep_delta_mean"]
        edits = sum(codes.shape[0] * (codes.shape[1] - k + 1) for k in WINDOWS) * kw.get("replicates", 1)
    client.run(lambda: __import__("interpretome.engine.models", fromlist=["x"]).clear_runtimes())
    t0 = time.perf_counter()
    out = client.compute(res.data, sync=True)
    return edits / (time.perf_counter() - t0), out


def run(quick: bool = False) -> str:
    """Run every measurement and return the markdown section for RESULTS.md."""
    import torch

    from interpretome.engine.cluster import connect

    n, length = (4, 500) if quick else (N_SEQ, LENGTH)
    codes = _data(n, length)
    rows = []
    clusters = {}
    for w in (1, 2):  # interpretome's own cluster: 1 thread per worker, glibc malloc tuned (both sides alike)
        clusters[w] = connect(w, log=None)
    fwd = forward_limit(clusters[2], length, seconds=2.0 if quick else 5.0)
    fwd1 = forward_limit(clusters[1], length, seconds=2.0 if quick else 5.0)
    rows.append(("forward limit, 2 processes x 1 thread, batch 16", fwd, "1.00"))
    rows.append(("forward limit, 1 process x 1 thread, batch 16", fwd1, f"{fwd1 / fwd:.2f}"))

    occ_total = {}
    for ppe in (64, 256):
        rates, edits = [], 0
        for k in WINDOWS:
            r, e = captum_occlusion(codes, k, ppe)
            rates.append(e / r)
            edits += e
        occ_total[ppe] = edits / sum(rates)
        rows.append((f"captum Occlusion, perturbations_per_eval {ppe} ({torch.get_num_threads()} threads)",
                     occ_total[ppe], f"{occ_total[ppe] / fwd:.2f}"))

    tm = {}
    for fast in (False, True):
        r, delta = tangermeme_ism(codes, fast)
        tm[fast] = (r, delta)
        rows.append((f"tangermeme saturation_mutagenesis fast={fast}", r, f"{r / fwd:.2f}"))

    sweep_rates, ism_rates, ism_out = {}, {}, None
    for w in (1, 2):
        r, _ = ours(clusters[w], codes, "sweep", mode="mask")
        sweep_rates[w] = r
        rows.append((f"ours: sweep mask k={{5,10,20}}, {w} worker(s)", r, f"{r / fwd:.2f}"))
        r, _ = ours(clusters[w], codes, "sweep", mode="random", replicates=2, seed=0)
        rows.append((f"ours: sweep random x2 replicates, {w} worker(s)", r, f"{r / fwd:.2f}"))
        r, out = ours(clusters[w], codes, "ism")
        ism_rates[w] = r
        ism_out = out
        rows.append((f"ours: ISM, {w} worker(s)", r, f"{r / fwd:.2f}"))
    for c in clusters.values():
        c.cluster.close()
        c.close()

    max_diff = float(np.nanmax(np.abs(ism_out[..., 0] - tm[True][1])))
    max_diff_slow = float(np.nanmax(np.abs(ism_out[..., 0] - tm[False][1])))
    lines = [
        "## Sweeps and ISM (issue 2)",
        "",
        f"Reference CNN, {n} sequences x {length} bp, stride 1, k in {{5, 10, 20}}; rates in edits "
        f"(perturbed sequences evaluated) per second; ratio = rate / whole-machine forward limit.",
        "",
        "| what | edits/s | x forward limit |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {rate:,.0f} | {ratio} |" for name, rate, ratio in rows]
    best_occ = max(occ_total.values())
    lines += [
        "",
        "| target | reached |",
        "|---|---|",
        f"| ISM >= 1.0x tangermeme fast=True, equal values | {ism_rates[2] / tm[True][0]:.2f}x "
        f"(2 workers vs its 2 threads); max abs diff {max_diff:.1e} vs fast=True, {max_diff_slow:.1e} vs fast=False |",
        f"| sweeps >= 3x the forward limit (convolutional model) | {sweep_rates[2] / fwd:.2f}x |",
        f"| sweep vs captum Occlusion (best setting) | {sweep_rates[2] / best_occ:.2f}x |",
        f"| 2 workers >= 1.8x 1 worker | sweep {sweep_rates[2] / sweep_rates[1]:.2f}x, ISM {ism_rates[2] / ism_rates[1]:.2f}x |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """CLI: print the section (and write it into RESULTS.md with --write)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
