"""Benchmark of issue 14: a 1,000,000-cell x 2,000-gene sparse h5ad through IG, SHAP, FastSHAP and scores.

    python -m benchmarks.bench_million_cells            # 1 M cells (about 15 minutes on 2 cores)
    python -m benchmarks.bench_million_cells --quick    # 100k cells

1. A synthetic sparse h5ad is written on disk chunk by chunk (CSR, 50,000 cells per chunk, never the
   dense matrix; the generator's own peak RSS is reported): 10 cell types with 100-gene programs,
   3 batches with a batch shift, ~3 % non-zeros, log1p counts, float32.
2. It is read lazily with ``interpretome.storage.anndata_io.read_h5ad`` (row chunks of the backed
   CSR, densified one chunk at a time) on a 2-worker ``LocalCluster`` (``interpretome.connect(2)``).
3. Each stage is timed, with the peak RSS of each worker process (psutil, sampled every 0.2 s):

   * **scores**: a 50-dimensional embedding of every cell (a fixed random projection of the
     expression, lazy) and ``clustering_scores`` (label and batch ASW exact on a 20,000-cell seeded
     subsample, as sklearn's ``sample_size``; Davies-Bouldin and Calinski-Harabasz on the same rows);
   * **per-group expression summaries**: per-cell-type mean/std/CI of every gene
     (``summarize_attributions`` over the expression), all cells;
   * **IG summaries**: ``attribute(method="integrated_gradients", n_steps=16, target="predicted")``
     of a small MLP classifier (2000-64-10), then per-class mean |attribution| tables
     (``summarize_attributions`` of |attribution|);
   * **SHAP summaries**: the same with ``method="gradient_shap"`` (expected gradients with shap's
     per-sample draws; 100 background cells, 16 samples);
   * **FastSHAP training**: ``validate_fastshap`` with its defaults (``tasks.fastshap.TRAINING``, those
     of the 0.9-fidelity PBMC test and of ``fastshap``) on 2,000 seeded random cells (``--fastshap-train N``:
     N), on one worker, validated on 8 held-out cells; timed alone;
   * **FastSHAP**: the amortised inference over the cells with that state (``fastshap(...,
     trained=state, min_fidelity=None)``: the state is used whatever its fidelity, which the training row
     reports — this stage measures time and memory) and per-class mean |value| tables, timed apart from the
     training.

   A stage whose measured rate (from a pilot on the first cells, ``PILOT``) says it would exceed its time budget
   at 1 M cells is run on the first N cells that fit and its throughput is stated; the table says
   which.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

N_GENES, N_TYPES, N_BATCHES, PROGRAM = 2000, 10, 3, 100
CHUNK = 50_000


# --- 1. the synthetic h5ad, written chunkwise ------------------------------------------------------

def _chunk(rs: np.random.Generator, n: int):
    """Return (indptr, indices, data, types, batches) of ``n`` synthetic cells (CSR rows, float32 log1p counts)."""
    types = rs.integers(0, N_TYPES, n)
    batches = rs.integers(0, N_BATCHES, n)
    n_bg, n_prog = 40, 25                       # background genes anywhere, program genes of the type
    rows = np.repeat(np.arange(n), n_bg + n_prog)
    genes = np.concatenate([rs.integers(0, N_GENES, (n, n_bg)),
                            types[:, None] * PROGRAM + rs.integers(0, PROGRAM, (n, n_prog))], axis=1).ravel()
    key = np.unique(rows.astype(np.int64) * N_GENES + genes)
    r, g = key // N_GENES, (key % N_GENES).astype(np.int32)
    counts = rs.poisson(1.0 + 2.0 * (g // PROGRAM == types[r]) + 0.5 * (g % N_BATCHES == batches[r])) + 1
    indptr = np.searchsorted(r, np.arange(n + 1)).astype(np.int64)
    return indptr, g, np.log1p(counts).astype(np.float32), types, batches


def write_h5ad(path: str | Path, n_cells: int, *, seed: int = 0) -> dict:
    """Write the synthetic ``n_cells`` x 2000 CSR h5ad chunk by chunk; return its size, non-zeros and the time."""
    import anndata
    import h5py
    import pandas as pd

    try:
        from anndata.io import write_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import write_elem

    t0 = time.perf_counter()
    rs = np.random.default_rng(seed)
    path = Path(path)
    types_all, batches_all = np.empty(n_cells, np.int64), np.empty(n_cells, np.int64)
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, N_GENES)})
        data = g.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=(1 << 20,))
        indices = g.create_dataset("indices", (0,), np.int32, maxshape=(None,), chunks=(1 << 20,))
        indptr = g.create_dataset("indptr", (n_cells + 1,), np.int64)
        nnz = 0
        indptr[0] = 0
        for r0 in range(0, n_cells, CHUNK):
            m = min(CHUNK, n_cells - r0)
            ip, ind, val, types, batches = _chunk(rs, m)
            data.resize((nnz + val.size,))
            indices.resize((nnz + val.size,))
            data[nnz:] = val
            indices[nnz:] = ind
            indptr[r0 + 1:r0 + m + 1] = nnz + ip[1:]
            nnz += val.size
            types_all[r0:r0 + m], batches_all[r0:r0 + m] = types, batches
        obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types_all]),
                            "batch": pd.Categorical([f"b{b}" for b in batches_all])},
                           index=[f"c{i}" for i in range(n_cells)])
        var = pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    del anndata
    return {"seconds": time.perf_counter() - t0, "nnz": int(nnz), "bytes": path.stat().st_size,
            "types": types_all, "batches": batches_all}


# --- peak RSS per worker ----------------------------------------------------------------------------

class PeakRSS:
    """Sample the RSS of the given processes every ``every`` seconds in a thread; ``peaks`` in MB per pid."""

    def __init__(self, pids, every: float = 0.2):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peaks = {pid: 0.0 for pid in pids}
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, p in self.procs.items():
                try:
                    self.peaks[pid] = max(self.peaks[pid], p.memory_info().rss / 2**20)
                except Exception:  # noqa: BLE001 - a worker that went away keeps its last peak
                    pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --- the model ------------------------------------------------------------------------------------

def train_classifier(h5ad: str, out: Path, *, n_train: int = 20_000, epochs: int = 60):
    """Train ``interpretome.pbmc:cell_classifier`` (2000-64-10) on the first ``n_train`` cells; return the spec."""
    import torch
    import torch.nn.functional as F

    from interpretome.engine.models import ModelSpec
    from interpretome.pbmc import cell_classifier
    from interpretome.storage.anndata_io import read_h5ad

    ds = read_h5ad(h5ad, sample_chunk=n_train)
    x = ds["features"][:n_train].values
    labels = np.asarray(ds["cell_type"].values[:n_train]).astype(str)
    classes = sorted(set(labels))
    y = torch.from_numpy(np.array([classes.index(v) for v in labels], np.int64))
    model = cell_classifier(N_GENES, len(classes), 64, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    xt = torch.from_numpy(x)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(xt), y).backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == y).float().mean())
    torch.save(model.state_dict(), out)
    spec = ModelSpec(factory="interpretome.pbmc:cell_classifier", weights=str(out), input_kind="dense",
                     kwargs={"n_features": N_GENES, "n_classes": len(classes), "hidden": 64, "seed": 0},
                     targets=tuple(classes))
    return spec, acc


# --- the stages -----------------------------------------------------------------------------------

def _abs_table(res, var: str, by_ds):
    """Return the lazy per-class mean |var| summary of an attribution result."""
    import xarray as xr

    from interpretome.tasks.summarize import summarize_attributions

    a = abs(res[var]).rename("attribution")
    ds = xr.Dataset({"attribution": a}, coords={"cell_type": by_ds["cell_type"].variable})
    return summarize_attributions(ds, by="cell_type")["feature_attribution_mean"]


def stage_graph(name: str, ds, spec, embed_proj, state=None):
    """Return the lazy result of stage ``name`` on ``ds`` (cells already sliced)."""
    import xarray as xr

    from interpretome.tasks.attribute import attribute
    from interpretome.tasks.fastshap import fastshap
    from interpretome.tasks.scores import clustering_scores
    from interpretome.tasks.summarize import summarize_attributions

    if name == "scores":
        emb = ds["features"].data @ embed_proj
        e = xr.Dataset({"item_vector": (("item", "component"), emb),
                        "item_label": (("item",), ds["cell_type"].values),
                        "item_batch": (("item",), ds["batch"].values)})
        res = clustering_scores(e, batch="item_batch", sample_size=20_000, seed=0)
        return res["score_value"]
    if name == "expression summaries":
        e = xr.Dataset({"attribution": (("sample", "feature", "target"), ds["features"].data[:, :, None])},
                       coords={"feature": ds["feature"].values, "target": ["expression"],
                               "cell_type": ds["cell_type"].variable})
        return summarize_attributions(e, by="cell_type")["feature_attribution_mean"]
    if name == "IG summaries":
        res = attribute(ds, spec, method="integrated_gradients", n_steps=16, target="predicted", merge=False)
        return _abs_table(res, "attribution", ds)
    if name == "SHAP summaries":
        res = attribute(ds, spec, method="gradient_shap", nsamples=16, background=100, target="predicted",
                        merge=False)
        return _abs_table(res, "attribution", ds)
    if name == "FastSHAP":
        res = fastshap(ds, spec, target=spec.targets[0], trained=state, min_fidelity=None, merge=False)
        return _abs_table(res, "fastshap_attribution", ds)
    raise ValueError(name)


def run_stage(client, name: str, ds, spec, proj, n: int, workers, state=None) -> dict:
    """Compute stage ``name`` on the first ``n`` cells; return seconds, peak RSS per worker and the result."""
    import dask

    sub = ds.isel(sample=slice(0, n))
    obj = stage_graph(name, sub, spec, proj, state)
    with PeakRSS(workers) as peak:
        t0 = time.perf_counter()
        (value,) = dask.compute(obj)
        t = time.perf_counter() - t0
    return {"stage": name, "cells": n, "seconds": t, "cells_per_s": n / t,
            "peak_rss_mb": [round(peak.peaks[p]) for p in workers], "value": value}


BUDGET = {"scores": 420, "expression summaries": 420, "IG summaries": 900, "SHAP summaries": 300, "FastSHAP": 300}
FASTSHAP_TRAIN = {"n_validate": 8, "seed": 0, "min_fidelity": None}
"""FastSHAP training: ``validate_fastshap``'s defaults (``TRAINING``: those of the 0.9-fidelity PBMC test), 8 held-out cells."""
N_FASTSHAP_TRAIN = None
"""FastSHAP's training cells (``--fastshap-train``, as the CLI's flag); None: ``TRAINING["n_train"]``."""


def train_fastshap_stage(client, ds, spec, workers) -> tuple[dict, dict]:
    """Train and validate FastSHAP on one worker (``N_FASTSHAP_TRAIN`` seeded random cells); return ``(row, state)``."""
    from interpretome.tasks.fastshap import TRAINING, validate_fastshap

    n = ds.sizes["sample"]
    n_train = int(N_FASTSHAP_TRAIN or TRAINING["n_train"])
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(n_train, n), replace=False))
    x = ds["features"][rows].values
    with PeakRSS(workers) as peak:
        t0 = time.perf_counter()
        (xf,) = client.scatter([x])  # the 16 MB of cells as data, not inside the graph
        state = client.submit(validate_fastshap, spec, xf, target=spec.targets[0], **FASTSHAP_TRAIN,
                              pure=False).result()
        t = time.perf_counter() - t0
    return ({"stage": "FastSHAP training", "cells": len(rows), "seconds": t, "cells_per_s": len(rows) / t,
             "peak_rss_mb": [round(peak.peaks[p]) for p in workers], "value": state["validation"]}, state)
PILOT = {"scores": 20_000, "expression summaries": 20_000, "IG summaries": 8192, "SHAP summaries": 2048,
         "FastSHAP": 8192}


def run(quick: bool = False, cells: int | None = None, reuse: str | None = None, stages=None) -> str:
    """Run the benchmark and return the markdown of its RESULTS.md section."""
    from interpretome.engine.cluster import connect
    from interpretome.storage.anndata_io import read_h5ad

    n_cells = cells or (100_000 if quick else 1_000_000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-1m-"))
    h5ad = tmp / "cells.h5ad"
    load0 = os.getloadavg()
    import resource

    if reuse:   # a file this benchmark wrote before, with its generation figures beside it
        h5ad = Path(reuse)
        gen = json.loads(Path(str(h5ad) + ".json").read_text())
        gen_peak = gen.pop("peak_mb")
    else:
        gen = write_h5ad(h5ad, n_cells)
        gen_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(str(h5ad) + ".json").write_text(json.dumps({k: v for k, v in gen.items() if k not in ("types", "batches")}
                                                        | {"peak_mb": gen_peak}))
    print(f"generated {n_cells:,} cells, {gen['nnz']:,} non-zeros, {gen['bytes'] / 2**20:.0f} MiB in "
          f"{gen['seconds']:.0f} s (peak RSS {gen_peak:.0f} MB)", flush=True)
    spec, acc = train_classifier(str(h5ad), tmp / "mlp.pt")
    print(f"classifier training accuracy {acc:.3f}", flush=True)
    client = connect(2, log=None)
    rows = []
    try:
        workers = list(client.run(os.getpid).values())
        t0 = time.perf_counter()
        ds = read_h5ad(h5ad, sample_chunk=8192)
        t_open = time.perf_counter() - t0
        proj = np.random.default_rng(1).normal(size=(N_GENES, 50)).astype(np.float32) / np.sqrt(N_GENES)
        state = None
        for name in (stages or BUDGET):
            if name == "FastSHAP":
                row, state = train_fastshap_stage(client, ds, spec, workers)
                print(json.dumps({k: v for k, v in row.items()}), flush=True)
                rows.append(row)
            pilot = run_stage(client, name, ds, spec, proj, min(PILOT[name], n_cells), workers, state)
            print(json.dumps({k: v for k, v in pilot.items() if k != "value"}), flush=True)
            r = pilot
            for _ in range(3):   # scale up with the latest measured rate (a pilot's fixed costs underestimate it)
                est = n_cells / r["cells_per_s"]
                n = n_cells if est <= BUDGET[name] else int(r["cells_per_s"] * BUDGET[name]) // 8192 * 8192
                if n <= r["cells"]:
                    break
                r = run_stage(client, name, ds, spec, proj, n, workers, state)
                print(json.dumps({k: v for k, v in r.items() if k != "value"}), flush=True)
            r["pilot_cells_per_s"] = pilot["cells_per_s"]
            print(json.dumps({k: v for k, v in r.items() if k != "value"}), flush=True)
            rows.append(r)
    finally:
        client.close()
    load1 = os.getloadavg()
    return markdown(rows, gen=gen, gen_peak=gen_peak, acc=acc, n_cells=n_cells, t_open=t_open, quick=quick,
                    load=(load0, load1))


def markdown(rows, *, gen, gen_peak, acc, n_cells, t_open, quick, load) -> str:
    """Return the RESULTS.md section."""
    import shlex
    import sys

    from interpretome.tasks.fastshap import TRAINING

    cmd = " ".join(["python -m benchmarks.bench_million_cells", *map(shlex.quote, sys.argv[1:])])
    lines = [
        f"## Issue 14 — {n_cells:,} cells x {N_GENES:,} genes, sparse h5ad, 2-worker LocalCluster", "",
        f"Command: `{cmd}`; 2 cores shared with other engineers' jobs (load average {load[0][0]:.2f} at start, "
        f"{load[1][0]:.2f} at the end), 1 thread per worker, memory limit 'auto'.", "",
        f"Input: written chunk by chunk (50,000 cells at a time, CSR, never dense) in {gen['seconds']:.0f} s, "
        f"{gen['nnz']:,} non-zeros ({gen['nnz'] / n_cells / N_GENES:.1%}), {gen['bytes'] / 2**30:.2f} GiB on disk; "
        f"the generator's peak RSS {gen_peak:.0f} MB (a dense float32 matrix would be "
        f"{n_cells * N_GENES * 4 / 2**30:.1f} GiB). Read lazily by `read_h5ad(sample_chunk=8192)` (opening: "
        f"{t_open:.1f} s, obs and var only; each task reads its rows of the backed CSR and densifies them: "
        f"8192 x 2000 float32 = 62.5 MiB). Classifier: `interpretome.pbmc:cell_classifier` 2000-64-10, trained "
        f"on the first 20,000 cells (accuracy {acc:.3f}).", "",
        "| stage | cells | wall s | cells / s | peak RSS worker 1 (MB) | peak RSS worker 2 (MB) | at 1 M cells |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        full = r["cells"] >= n_cells
        note = ("training and validation, one task on one worker" if r["stage"] == "FastSHAP training" else
                "measured" if full else
                f"**not run**: {r['cells_per_s']:,.0f} cells/s here would take {n_cells / r['cells_per_s'] / 60:.0f} "
                f"min (time budget)")
        lines.append(f"| {r['stage']} | {r['cells']:,} | {r['seconds']:.1f} | {r['cells_per_s']:,.0f} | "
                     f"{r['peak_rss_mb'][0]:,} | {r['peak_rss_mb'][1]:,} | {note} |")
    lines.append("")
    for r in rows:
        if r["stage"] == "scores":
            v = r["value"]
            lines.append("Scores: " + ", ".join(f"{m} {float(x):.4f}" for m, x in zip(v["metric"].values, v.values))
                         + " (silhouettes exact on the 20,000-cell subsample; the embedding of every cell computed).")
        if r["stage"] == "FastSHAP training":
            figs = r["value"]
            lines.append(f"FastSHAP (explaining `type0`): trained by `validate_fastshap` with its defaults (those of "
                         f"the 0.9-fidelity PBMC test: hidden {TRAINING['hidden']}, {TRAINING['experts']} experts, "
                         f"{TRAINING['n_masks']} masks, early stopping) on "
                         f"{r['cells']:,} seeded random cells, validated on {figs['n_validate']:.0f} held-out cells "
                         f"against antithetic permutation-sampled Shapley values of the surrogate game "
                         f"({figs['reference_permutations']:.0f} permutations, noise {figs['reference_noise']:.3f}): "
                         f"fidelity **{figs['fidelity']:.3f}** (worst cell {figs['fidelity_min']:.3f}), top-15 "
                         f"agreement {figs['topk_agreement']:.2f}, surrogate R² {figs['surrogate_r2']:.3f}, epochs "
                         f"{figs['epochs_surrogate']:.0f} / {figs['epochs_explainer']:.0f}. The `FastSHAP` row is "
                         f"the amortised inference alone (`fastshap(..., trained=state)`) and the per-class tables.")
    peaks = [max(r["peak_rss_mb"]) for r in rows if r["stage"] != "FastSHAP training"]
    lines += ["", f"Peak RSS per worker over these stages: {min(peaks):,} to {max(peaks):,} MB. Each task holds one "
              f"8192-cell dense chunk (and its attributions for one target); whether the peak grows with the number "
              f"of cells is read from the rows above and a run at fewer cells, not assumed."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k cells")
    ap.add_argument("--cells", type=int, default=None, help="this many cells instead")
    ap.add_argument("--h5ad", default=None, help="reuse a file an earlier run wrote (its .json beside it)")
    ap.add_argument("--stage", action="append", default=None, choices=list(BUDGET), help="run only these stages")
    ap.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS",
                    help="the time budget of a stage at full size (default: BUDGET)")
    ap.add_argument("--fastshap-train", type=int, default=None, metavar="N",
                    help="FastSHAP's training cells (default: fastshap's, 2,000)")
    a = ap.parse_args()
    if a.fastshap_train is not None and a.fastshap_train < 16:
        ap.error(f"--fastshap-train {a.fastshap_train}: FastSHAP needs at least 16 training cells")
    N_FASTSHAP_TRAIN = a.fastshap_train
    for item in a.budget:
        stage, _, secs = item.rpartition("=")
        if stage not in BUDGET:
            ap.error(f"--budget {item!r}: the stage must be one of {list(BUDGET)}")
        BUDGET[stage] = float(secs)
    print(run(a.quick, a.cells, a.h5ad, a.stage))
