"""Overlapping tiles at the cost of one pass, and tiles of a large profile model (issue 12, items 6 and 7).

1. **Overlap**: a synthetic contig tiled with the reference CNN (Conv1d(4,64,15)+ReLU,
   Conv1d(64,64,9)+ReLU, global max, Linear(64,1)), 1,000 bp windows at stride 50 (the shared
   trunk: ``engine.tile_trunk``) and at stride 1,000 (one forward per window), ``predict_tiles``
   written to zarr on a 2-worker LocalCluster (1 thread each), side by side with the model's
   batched forward limit on the same workers (``bench_tiles._forward_worker``, before and after);
   and an exactness check of the stride-50 track against per-window forwards of sampled windows.
2. **Profile tiles**: ``zoo.profile_tower`` (32 channels, 16 residual dilated units, 10 kb in,
   5 kb out), in one process, interleaved: ``_tile_block`` over windows at stride 5 kb (each base
   predicted once) against the bare batched forward of the same windows (pre-sliced codes,
   ``Runtime.predict``: encode, forward, head), CPU seconds per window.

Run: ``python -m benchmarks.bench_tiles_overlap --mb 4`` (contig Mb of part 1).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench_tiles import BATCH, WINDOW, _cpu_seconds, _forward_worker, _write_contig


def _tile(client, fasta, tmp, stride, name):
    from interpretome.engine.models import ModelSpec
    from interpretome.storage.genome import read_genome
    from interpretome.storage.store import write_dataset
    from interpretome.tasks.tiles import predict_tiles

    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", batch_size=BATCH, device="cpu")
    ds = read_genome(fasta, position_chunk=1 << 20)
    res = predict_tiles(ds, spec, window=WINDOW, stride=stride, merge=False)
    n = int(res["track_coverage"].shape[1])
    cpu0 = sum(client.run(_cpu_seconds).values())
    t0 = time.perf_counter()
    write_dataset(res, tmp / f"{name}.zarr", "tracks", task="tiled_prediction", params={}, client=client,
                  overwrite=True)
    wall = time.perf_counter() - t0
    cpu = sum(client.run(_cpu_seconds).values()) - cpu0
    return {"windows": n, "wall": wall, "cpu": cpu, "rate": n / wall, "rate_cpu": n / cpu}


def _exactness(fasta, tmp, stride, n_check=400):
    """Return max |track - per-window forward| and max |forward| over ``n_check`` sampled windows of the stored track."""
    import torch

    from interpretome.datasets import reference_cnn
    from interpretome.storage.genome import read_genome
    from interpretome.storage.store import open_group

    track = open_group(tmp / "s50.zarr", "tracks")["track_prediction"]
    codes = np.asarray(read_genome(fasta)["sequence_code"][0].values)
    n = track.shape[1]
    rng = np.random.default_rng(0)
    pick = np.unique(np.r_[0, n - 2, rng.integers(0, n - 1, n_check)])  # regular windows (the last is the tail)
    m = reference_cnn(seed=0).eval()
    lut = np.eye(5, 4, dtype=np.float32)
    x = np.stack([codes[j * stride:j * stride + WINDOW] for j in pick])
    with torch.inference_mode():
        want = m(torch.from_numpy(lut[x].transpose(0, 2, 1).copy())).numpy()
    got = track.values[0, pick]
    return float(np.abs(got - want).max()), float(np.abs(want).max()), len(pick)


def bench_overlap(length: int, tmp: Path, seconds: float = 8.0) -> dict:
    from interpretome.engine.cluster import connect

    fasta = _write_contig(tmp / "contig.fa", length)
    with connect(2, log=None) as client:
        before = list(client.run(_forward_worker, WINDOW, BATCH, seconds).values())
        s1000 = _tile(client, fasta, tmp, WINDOW, "s1000")
        s50 = _tile(client, fasta, tmp, 50, "s50")
        after = list(client.run(_forward_worker, WINDOW, BATCH, seconds).values())
    limit = (sum(r[0] for r in before) + sum(r[0] for r in after)) / 2
    per_cpu = float(np.mean([r[1] for r in before + after]))
    err, scale, n_checked = _exactness(fasta, tmp, 50)
    return {"length": length, "limit": limit, "limit_before": sum(r[0] for r in before),
            "limit_after": sum(r[0] for r in after), "limit_cpu": per_cpu, "s1000": s1000, "s50": s50,
            "err": err, "scale": scale, "checked": n_checked}


def bench_profile(stride: int, strand: str, rounds: int = 3, n: int = 16, batch: int = 8) -> dict:
    """CPU seconds per window of ``_tile_block`` vs the bare batched forward, ``profile_tower``, interleaved.

    ``strand="both"``: the forward side runs the windows and their reverse complements.
    """
    import torch

    from interpretome.datasets import random_dna
    from interpretome.engine.models import get_runtime
    from interpretome.engine.process import tune_malloc
    from interpretome.storage.alphabet import reverse_complement
    from interpretome.storage.genome import TrackGeometry
    from interpretome.tasks.tiles import _tile_block
    from interpretome.zoo import zoo_spec

    torch.set_num_threads(1)
    tune_malloc()  # as the tiling tasks do
    window, out = 10_000, 5_000
    crop = (window - out) // 2
    spec = zoo_spec("profile_tower", options={"batch_size": batch, "device": "cpu"})
    rt = get_runtime(spec)
    geom = TrackGeometry(window, stride, 1, crop, crop)
    length = (n - 1) * stride + window
    codes = random_dna(1, length, seed=3)[0]
    wins = np.stack([codes[i * stride:i * stride + window] for i in range(n)])
    rc = np.ascontiguousarray(reverse_complement(wins))
    nb = geom.n_bins(length)
    kw = dict(spec=spec, geom=geom, length=length, rstart=0, b0=0, b1=nb, strand=strand, n_t=1,
              contig_length=length)

    def forward():
        return [rt.predict(wins)] + ([rt.predict(rc)] if strand == "both" else [])
    tile = _tile_block([codes[None]], 0, 0, length, **kw)
    direct = forward()[0]
    if stride == out:  # windows tile without overlap: bin k of window i is bin i out + k
        assert np.array_equal(tile[0, :, 0], direct[:, 0, :].reshape(-1)), "tiles differ from the direct forward"
    cpu = {"forward": 0.0, "tiles": 0.0}
    for _ in range(rounds):
        c = time.process_time()
        forward()
        cpu["forward"] += time.process_time() - c
        c = time.process_time()
        _tile_block([codes[None]], 0, 0, length, **kw)
        cpu["tiles"] += time.process_time() - c
    return {"n": n, "batch": batch, "stride": stride, "strand": strand, "forward": rounds * n / cpu["forward"],
            "tiles": rounds * n / cpu["tiles"], "ratio": cpu["tiles"] / cpu["forward"]}


def run(mb: float) -> str:
    length = int(mb * 1e6)
    t0 = time.time()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_overlap_") as d:
        o = bench_overlap(length, Path(d))
    profiles = [bench_profile(5_000, "+"), bench_profile(2_500, "both")]
    load1 = os.getloadavg()
    s50, s1000 = o["s50"], o["s1000"]
    per_250 = 250e6 / length
    lines = [
        "## Overlapping tiles at the cost of one pass; profile tiles (issue 12, items 6-7)",
        "",
        f"Command: `nice -n 5 python -m benchmarks.bench_tiles_overlap --mb {mb:g}` — {os.cpu_count()} cores, "
        f"no GPU, shared machine; load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} at the start, "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at the end ({time.time() - t0:.0f} s in all).",
        "",
        f"**Overlap**: a synthetic {mb:g} Mb contig, reference CNN, {WINDOW} bp windows, `predict_tiles` -> zarr, "
        "2 workers x 1 thread; forward limit = pre-encoded batches of 64 on both workers, before and after:",
        "",
        "| | windows | wall s | windows/s | / forward limit | windows per worker CPU-s | / limit per CPU-s |",
        "|---|---|---|---|---|---|---|",
        f"| model forward limit | | | {o['limit']:,.0f} (before {o['limit_before']:,.0f}, after "
        f"{o['limit_after']:,.0f}) | 1 | {o['limit_cpu']:,.1f} | 1 |",
        f"| stride {WINDOW} (one forward per window) | {s1000['windows']:,} | {s1000['wall']:.1f} | "
        f"{s1000['rate']:,.0f} | **{s1000['rate'] / o['limit']:.2f}x** | {s1000['rate_cpu']:,.1f} | "
        f"{s1000['rate_cpu'] / o['limit_cpu']:.2f}x |",
        f"| stride 50 (shared trunk) | {s50['windows']:,} | {s50['wall']:.1f} | {s50['rate']:,.0f} | "
        f"**{s50['rate'] / o['limit']:.2f}x** | {s50['rate_cpu']:,.1f} | {s50['rate_cpu'] / o['limit_cpu']:.2f}x |",
        "",
        f"Stride 50 costs {s50['wall'] / s1000['wall']:.2f}x the wall time of stride {WINDOW} for "
        f"{s50['windows'] / s1000['windows']:.0f}x the windows. "
        + (f"Measured at 250 Mb: stride 50 ({s50['windows']:,} windows) in **{s50['wall'] / 60:.1f} min**, "
           f"stride {WINDOW} in {s1000['wall'] / 60:.1f} min."
           if per_250 <= 1 else
           f"Extrapolation (linear in length, not measured): 250 Mb at stride 50 ({250e6 / 50 / 1e6:.0f} M windows) "
           f"would take ~{s50['wall'] * per_250 / 60:.1f} min, at stride {WINDOW} ~{s1000['wall'] * per_250 / 60:.1f} "
           f"min, on these 2 cores at this load."),
        "",
        f"Exactness: {o['checked']} sampled stride-50 windows of the stored track against per-window forwards of "
        f"the model (plain torch): max |difference| {o['err']:.2e} (outputs up to {o['scale']:.2f}).",
        "",
        "**Profile tiles**: `zoo.profile_tower` (32 channels, 16 residual dilated units, 10 kb in, 5 kb out), "
        f"{profiles[0]['n']} windows, batch {profiles[0]['batch']}, one process, 1 thread, `_tile_block` (slice, "
        "encode, forward, head, place) interleaved 3 times with the bare batched forward of the same windows "
        "(`Runtime.predict` on pre-sliced codes; both strands: also their reverse complements); stride 5 kb "
        "checked bit-identical to the forward first:",
        "",
        "| stride, strand | direct forward, windows/CPU-s | `_tile_block`, windows/CPU-s | **tiles / forward (CPU time)** |",
        "|---|---|---|---|",
        *[f"| {p['stride']:,} bp, {p['strand']} | {p['forward']:.2f} | {p['tiles']:.2f} | **{p['ratio']:.3f}x** |"
          for p in profiles],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=4.0, help="contig length in Mb (part 1)")
    args = ap.parse_args()
    print(run(args.mb))


if __name__ == "__main__":
    main()
