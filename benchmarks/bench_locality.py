"""Edits at the locality bound (issue 12, items 1-2): ISM and sweeps vs each model's own forward limit.

For each model, in this one process with 1 torch thread, interleaved (forward, edits, forward) so
load swings hit both alike:

* forward limit: batched forward passes of one pre-encoded batch of ``batch`` 1 kb sequences
  (sequences/s), measured before and after the edits and averaged;
* ours: ``Runtime.predict_edits`` (the locality fast path, ``engine.fx_locality``) over every
  single-base substitution of a 1 kb sequence (3 L edits; for the k-mer LSTM also a mask sweep
  k in {5, 10, 20}), edits/s; and the same edits with the fast path off (batched full forwards),
  whose rate is the model's "own full-forward rate".

Then the reference CNN ISM through the task graph (``saturation_mutagenesis``, 16 x 1 kb) on 1 and
2 local workers against the whole-machine forward limit (``benchmarks.bench_perturb``).

Run: ``python -m benchmarks.bench_locality`` (``--quick``: 400 bp, fewer sequences).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _models():
    from interpretome.engine.models import ModelSpec
    from interpretome.zoo import zoo_spec

    return [
        ("reference CNN (datasets.reference_cnn)", ModelSpec(factory="interpretome.datasets:reference_cnn",
                                                             kwargs={"seed": 0}, batch_size=64)),
        ("BPNet-like residual dilated tower, profile head (zoo.bpnet_tower)", zoo_spec("bpnet_tower", options={"batch_size": 64})),
        ("BPNet-like tower, counts head", zoo_spec("bpnet_tower", output="counts", options={"batch_size": 64})),
        ("SpliceAI-like residual units + crop (zoo.spliceai_like)", zoo_spec("spliceai_like", options={"batch_size": 64})),
        ("Basenji-like pooling + dilated stack (zoo.basenji_like)", zoo_spec("basenji_like", options={"batch_size": 64})),
        ("Genomic-ULMFiT-like 3-layer LSTM over 5-mers (zoo.ulmfit_like)", zoo_spec("ulmfit_like", options={"batch_size": 64})),
    ]


def _forward_rate(rt, length, batch, seconds):
    from interpretome.datasets import random_dna

    x = rt.encode(random_dna(batch, length, seed=1))
    rt.forward(x)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rt.forward(x)
        done += batch
    return done / (time.perf_counter() - t0)


def _ism_edits(ref):
    L = ref.shape[0]
    starts = np.repeat(np.arange(L), 3)
    new = ((ref[starts] + np.tile([1, 2, 3], L)) % 4).astype(np.uint8)[:, None]
    return [(starts, new)]


def _sweep_edits(ref):
    from interpretome.tasks.perturb import window_edits

    out = []
    for k in (5, 10, 20):
        starts = np.arange(0, ref.shape[0] - k + 1)
        out.append((starts, window_edits("mask", ref, starts, k, 1, 0, 0)[:, 0]))
    return out


def _edit_rate(rt, ref, edits, limit=None):
    n, t0, res = 0, time.perf_counter(), []
    for starts, new in edits:
        if limit is not None:
            starts, new = starts[:limit], new[:limit]
        res.append(rt.predict_edits(ref, starts, new))
        n += len(starts)
    return n / (time.perf_counter() - t0), res


def single_process(length, seconds):
    """Return rows (model, what, forward seq/s, ours edits/s, full-forward edits/s, max |diff|)."""
    import torch

    from interpretome.datasets import random_dna
    from interpretome.engine.models import Runtime
    from interpretome.engine.process import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()  # as every task does (and the workers): large tensors then come from the heap, not fresh mmaps
    ref = random_dna(1, length, seed=0)[0]
    rows = []
    for name, spec in _models():
        rt = Runtime(spec)
        plan = rt.locality
        kinds = [("ISM", _ism_edits(ref))] + ([("sweep mask k={5,10,20}", _sweep_edits(ref))]
                                             if spec.input_kind == "kmer" else [])
        for what, edits in kinds:
            rt.locality = plan
            rt.predict_edits(ref, edits[0][0][:64], edits[0][1][:64])  # trace, reference cache, warm
            f1 = _forward_rate(rt, length, 64, seconds)
            ours, res = _edit_rate(rt, ref, edits)
            f2 = _forward_rate(rt, length, 64, seconds)
            rt.locality = None
            n_full = 3 * 192
            full, res_full = _edit_rate(rt, ref, edits, limit=n_full // len(edits))
            diff = max(float(np.abs(a[:len(b)] - b).max()) for a, b in zip(res, res_full))
            rows.append((name, what, (f1 + f2) / 2, ours, full, diff, sorted(plan.full_nodes) if plan else None))
    return rows


def cluster_ism(quick):
    """Return (forward limit 2 workers, {workers: ISM edits/s}) for the reference CNN through the task graph."""
    from benchmarks.bench_perturb import _data, forward_limit, ours
    from interpretome.engine.cluster import connect

    n, length = (4, 500) if quick else (16, 1000)
    codes = _data(n, length)
    out = {}
    fwd = None
    for w in (1, 2):
        client = connect(w, log=None)
        try:
            if w == 2:
                fwd = forward_limit(client, length, seconds=2.0 if quick else 5.0)
            ours(client, codes, "ism")  # warm: model built, graph path exercised
            out[w], _ = ours(client, codes, "ism")
        finally:
            client.cluster.close()
            client.close()
    return fwd, out


def run(quick: bool = False) -> str:
    length = 400 if quick else 1000
    load0 = os.getloadavg()
    t0 = time.time()
    rows = single_process(length, 1.0 if quick else 3.0)
    fwd, ism = cluster_ism(quick)
    load1 = os.getloadavg()
    lines = [
        "## Edits at the locality bound (issue 12, items 1-2)",
        "",
        f"Command: `python -m benchmarks.bench_locality{' --quick' if quick else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, {time.time() - t0:.0f} s); load average "
        f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} at start, {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} "
        f"at the end (2 cores shared with other engineers: absolute rates are noisy, the ratios are measured "
        f"side by side).",
        "",
        f"One process, 1 torch thread, glibc's allocator tuned as in the tasks (``engine.process.tune_malloc``), one {length} bp sequence, every edit of it; forward limit = batched "
        f"forwards of 64 pre-encoded sequences (before and after the edits, averaged); `full` = the same edits "
        f"through batched full forwards (the fast path off); max |diff| = fast vs full on the first 576 edits.",
        "",
        "| model | edits | forward limit (seq/s) | ours (edits/s) | x forward limit | full forwards (edits/s) | x own full-forward rate | max abs diff | ran in full |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, what, f, o, full, diff, nodes in rows:
        lines.append(f"| {name} | {what} | {f:,.0f} | {o:,.0f} | **{o / f:.1f}x** | {full:,.0f} | {o / full:.1f}x | "
                     f"{diff:.1e} | {', '.join(nodes) if nodes else 'nothing'} |")
    n, L = (4, 500) if quick else (16, 1000)
    lines += [
        "",
        f"Reference CNN ISM through the task graph (`saturation_mutagenesis`, {n} x {L} bp, LocalCluster of 1 thread "
        f"per worker): forward limit {fwd:,.0f} seq/s (2 processes); 1 worker {ism[1]:,.0f} edits/s "
        f"(**{ism[1] / fwd:.1f}x** the 2-process forward limit); 2 workers {ism[2]:,.0f} edits/s "
        f"(**{ism[2] / fwd:.1f}x**); 2 workers vs 1: {ism[2] / ism[1]:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
