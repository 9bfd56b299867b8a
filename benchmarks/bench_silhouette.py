"""Benchmark of issue 14: the exact silhouette against the BLAS bound of its distance GEMMs, side by side.

    python -m benchmarks.bench_silhouette            # 100k x 50 (about 3 minutes on 2 cores)
    python -m benchmarks.bench_silhouette --quick    # 30k x 50

The bound is the time of the matmuls the silhouette cannot avoid: every ``x_i @ x_j.T`` of the
n x n x d float64 distance matrix (``d`` features), in the blocking BLAS runs fastest here (row
strips of 256 against 4096-row blocks, so the output stays in cache), on the same two dask threads
with BLAS at one thread each — measured before and after ours, the faster kept. Ours is
``clustering_scores(batch=...)``: label ASW, batch ASW, per-item and per-class silhouettes,
Davies-Bouldin and Calinski-Harabasz, all exact, in one compute. Its kernel computes each tile of
the symmetric matrix once (i <= j, the n^2/2 tiles: so it is also compared with half the bound)
and adds the per-(label, batch) sums and the square roots on top.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

STRIP, BLOCK = 256, 4096


def _gemm_pair(a: np.ndarray, b: np.ndarray) -> float:
    bt = np.ascontiguousarray(b.T)
    acc = 0.0
    for r0 in range(0, a.shape[0], STRIP):
        acc += float((a[r0:r0 + STRIP] @ bt)[0, 0])   # keep one value: the product is really computed
    return acc


def gemm_bound(x: np.ndarray, threads: int = 2) -> float:
    """Return the seconds of all n x n x d float64 block products of ``x`` on ``threads`` dask threads."""
    import dask
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, np.float64)
    blocks = [x[i:i + BLOCK] for i in range(0, x.shape[0], BLOCK)]
    tasks = [dask.delayed(_gemm_pair, pure=False)(a, b) for a in blocks for b in blocks]
    with threadpool_limits(1), dask.config.set(scheduler="threads", num_workers=threads):
        t0 = time.perf_counter()
        dask.compute(*tasks)
        return time.perf_counter() - t0


def ours(x, lab, bat, threads: int = 2) -> tuple[float, dict]:
    """Return (seconds, scores) of the exact ``clustering_scores`` with label and batch on ``threads`` dask threads."""
    import dask
    import xarray as xr
    from threadpoolctl import threadpool_limits

    from interpretome.tasks.scores import clustering_scores

    ds = xr.Dataset({"item_vector": (("item", "feature"), x), "item_label": (("item",), lab),
                     "item_batch": (("item",), bat)})
    res = clustering_scores(ds, batch="item_batch", block=BLOCK)
    with threadpool_limits(1), dask.config.set(scheduler="threads", num_workers=threads):
        t0 = time.perf_counter()
        values, per_item = dask.compute(res["score_value"].data, res["score_silhouette_label"].data)
        t = time.perf_counter() - t0
    return t, {**dict(zip(res["metric"].values.tolist(), values.tolist())), "_per_item": per_item}


def sklearn_check(x, lab, per_item, rows: int = 2000) -> float:
    """Return the max relative difference of ours from ``sklearn.metrics.silhouette_samples`` on a row subset.

    sklearn on all items would take long; the subset's silhouettes need every distance anyway, so
    they are computed here from the same full data (sklearn's formula, float64) for ``rows`` rows.
    """
    from sklearn.metrics import pairwise_distances

    x = np.asarray(x, np.float64)
    idx = np.random.default_rng(1).choice(x.shape[0], rows, replace=False)
    classes = np.unique(lab)
    sums = np.zeros((rows, classes.size))
    for c0 in range(0, x.shape[0], 8192):
        d = pairwise_distances(x[idx], x[c0:c0 + 8192])
        for k, c in enumerate(classes):
            sums[:, k] += d[:, lab[c0:c0 + 8192] == c].sum(1)
    counts = np.array([(lab == c).sum() for c in classes])
    own = np.searchsorted(classes, lab[idx])
    a = sums[np.arange(rows), own] / (counts[own] - 1)
    mean = sums / counts
    mean[np.arange(rows), own] = np.inf
    b = mean.min(1)
    ref = (b - a) / np.maximum(a, b)
    return float(np.max(np.abs(per_item[idx] - ref) / np.abs(ref)))


def run(quick: bool = False) -> str:
    """Run the benchmark and return the markdown of its RESULTS.md section."""
    from .bench_embed import blobs

    n = 30_000 if quick else 100_000
    x, lab, bat = blobs(n)
    load0 = os.getloadavg()
    t_b1 = gemm_bound(x)
    print(f"bound (before) {t_b1:.1f} s", flush=True)
    t_ours, v = ours(x, lab, bat)
    print(f"ours {t_ours:.1f} s", flush=True)
    t_b2 = gemm_bound(x)
    print(f"bound (after) {t_b2:.1f} s", flush=True)
    load1 = os.getloadavg()
    bound = min(t_b1, t_b2)
    rel = sklearn_check(x, lab, v["_per_item"])
    cmd = "python -m benchmarks.bench_silhouette" + (" --quick" if quick else "")
    flops = 2.0 * n * n * x.shape[1]
    lines = [
        "## Issue 14 — exact silhouette against the BLAS bound", "",
        f"Command: `{cmd}`; 2 cores shared with other engineers' jobs, load average "
        f"{load0[0]:.2f} at start and {load1[0]:.2f} at the end (so each time is noisy; the bound was measured "
        "before and after ours, the faster kept). Data: 10 Gaussian blobs (`bench_embed.blobs`), float32, "
        "3 batches; 2 dask threads, BLAS at 1 thread each, for all rows.", "",
        "| what | seconds | ours / this |", "|---|---:|---:|",
        f"| GEMM bound: all n x n x d float64 products `x_i @ x_j.T` ({n:,} x {n:,} x {x.shape[1]}, "
        f"{flops / bound / 1e9:.1f} GFLOP/s; before {t_b1:.1f} s, after {t_b2:.1f} s) | {bound:.1f} | "
        f"**{t_ours / bound:.2f}** |",
        f"| half the bound: the i <= j tiles only (what a symmetric kernel must do) | {bound / 2:.1f} | "
        f"**{t_ours / (bound / 2):.2f}** |",
        f"| ours: `clustering_scores(batch=..., block={BLOCK})`, exact label and batch ASW, per-item and "
        f"per-class silhouettes, Davies-Bouldin, Calinski-Harabasz | {t_ours:.1f} | 1.00 |", "",
        f"Target: within 3x of the bound — **{'met' if t_ours <= 3 * bound else 'not met'}** "
        f"({t_ours / bound:.2f}x the full bound, {2 * t_ours / bound:.2f}x half of it). "
        f"ASW label {v['asw_label']:.6f}, ASW batch {v['asw_batch']:.6f}. Exactness: the per-item silhouettes "
        f"of 2,000 random items differ from sklearn's formula on all {n:,} items (float64 `pairwise_distances`) "
        f"by at most {rel:.1e} relative (the tests assert `silhouette_samples` to 1e-12 absolute on float64 "
        "and 1e-6 relative on float32 input). Before this kernel (issue 5's run, same data and machine) the "
        "same call took 138.6 s.",
        "",
        "How: each row block is centred and augmented once, `[-2x, |x|^2, 1]` against `[x, 1, |x|^2]`, so a "
        "tile of squared distances is one GEMM; it is computed in 256-row strips that stay in cache, square-"
        "rooted in place and reduced at once on both sides to per-(label, batch) sums (each block's rows are "
        "sorted by cluster, so these are sums over contiguous runs of columns and of rows); each tile is computed once for the pair (i, j) and its transpose. Memory per task: one "
        "strip (256 x 4096 float64, 8 MB) plus the blocks.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30k items instead of 100k")
    print(run(ap.parse_args().quick))
