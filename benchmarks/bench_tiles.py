"""Long sequences (issue 3): tiling throughput and whole-track rendering, side by side in one run.

1. **Tiling** a synthetic contig (random DNA written to FASTA and read through its index) with the
   reference CNN (Conv1d(4,64,15)+ReLU, Conv1d(64,64,9)+ReLU, global max, Linear(64,1)), 1,000 bp
   windows every 1,000 bp, forward strand, ``predict_tiles`` written to a zarr store on a 2-worker
   LocalCluster (1 thread each), against the model's pure batched forward limit measured on the
   same workers at the same time of day (pre-encoded one-hot batches of the same size, every
   worker running forwards at once). Ratio = tiling windows/s / forward-limit windows/s; the same
   ratio per CPU-second of the workers, which a shared machine's load distorts less; and the task
   path alone in one process, interleaved with bare forwards. Peak RSS per worker is the workers'
   ``ru_maxrss`` after the run. Both the tiling tasks and the forward-limit runs call
   ``engine.process.tune_malloc``: dask starts workers with a fixed malloc trim threshold, which
   makes every batch's activations mmapped and unmapped again and halves the forward rate.
2. **Rendering** a 100 M-position track (``bin_size=1``, one value per base) 1,200 px wide: from
   the stored min/max pyramid (``viz.tracks_long.track_points`` + ``shade_points``: opens the
   store, reads one pyramid level, draws it) against datashader ``Canvas.line`` over the
   full-resolution track held in memory as a DataFrame. Both warm (numba kernels compiled by a
   first call, not timed); the full-resolution figure excludes reading the track from the store.

Run: ``python -m benchmarks.bench_tiles`` (50 Mb contig, 100 M-position track);
``--quick``: 2 Mb and 10 M positions.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

WINDOW = 1000
BATCH = 64


def _forward_worker(window, batch, seconds):
    import torch

    from interpretome.datasets import random_dna, reference_cnn

    from interpretome.engine.process import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()  # as the tiling tasks do: without it dask workers' malloc settings halve the forward rate
    m = reference_cnn(seed=0).eval()
    x = torch.from_numpy(np.eye(5, 4, dtype=np.float32)[random_dna(batch, window)].transpose(0, 2, 1).copy())
    with torch.inference_mode():
        m(x)
        done, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            m(x)
            done += batch
    return done / (time.perf_counter() - t0), done / (time.process_time() - c0)


def _cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_contig(path: Path, length: int) -> Path:
    """Write one random contig of ``length`` bp as FASTA, a few Mb at a time."""
    from interpretome.datasets import random_dna

    piece = 80 * 50_000  # a multiple of the line width: every line but the last has 80 bases
    with open(path, "w") as fh:
        fh.write(">chrS\n")
        for s in range(0, length, piece):
            n = min(piece, length - s)
            seq = np.frombuffer(b"ACGT", np.uint8)[random_dna(1, n, seed=s // piece)[0]]
            fh.write("\n".join(seq[i:i + 80].tobytes().decode() for i in range(0, n, 80)) + "\n")
    return path


def bench_tiling(length: int, tmp: Path, seconds: float = 8.0) -> dict:
    from interpretome.engine.cluster import connect
    from interpretome.engine.models import ModelSpec
    from interpretome.storage.genome import read_genome
    from interpretome.storage.store import write_dataset
    from interpretome.tasks.tiles import predict_tiles

    fasta = _write_contig(tmp / "contig.fa", length)
    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", batch_size=BATCH, device="cpu")
    with connect(2, log=None) as client:
        before = list(client.run(_forward_worker, WINDOW, BATCH, seconds).values())
        ds = read_genome(fasta, position_chunk=1 << 20)
        res = predict_tiles(ds, spec, window=WINDOW, stride=WINDOW, merge=False)
        n_windows = int(res["track_coverage"].shape[1])
        cpu0 = sum(client.run(_cpu_seconds).values())
        t0 = time.perf_counter()
        write_dataset(res, tmp / "tiles.zarr", "tracks", task="tiled_prediction", params={}, client=client,
                      overwrite=True)
        wall = time.perf_counter() - t0
        cpu = sum(client.run(_cpu_seconds).values()) - cpu0
        after = list(client.run(_forward_worker, WINDOW, BATCH, seconds).values())
        rss = client.run(_peak_rss_mb)
    limit_before, limit_after = sum(r[0] for r in before), sum(r[0] for r in after)
    limit = (limit_before + limit_after) / 2
    per_cpu = float(np.mean([r[1] for r in before + after]))  # forward windows per CPU-second of one worker
    rate = n_windows / wall
    return {"length": length, "windows": n_windows, "wall": wall, "rate": rate, "limit": limit,
            "limit_before": limit_before, "limit_after": limit_after, "ratio": rate / limit,
            "cpu": cpu, "rate_cpu": n_windows / cpu, "limit_cpu": per_cpu, "ratio_cpu": n_windows / cpu / per_cpu,
            "rss": sorted(rss.values())}


def bench_task_path(rounds: int = 8, n: int = 576) -> dict:
    """In one process, interleaved (so load changes hit all three alike), CPU seconds per window of:
    the bare forward on the same pre-encoded batch reused (the forward limit's setting), the bare
    forward on the real windows pre-encoded, and ``_tile_block`` (slice, encode, forward, head, place).
    """
    import torch

    from interpretome.datasets import random_dna
    from interpretome.engine.models import ModelSpec, get_runtime
    from interpretome.storage.genome import TrackGeometry
    from interpretome.tasks.tiles import _tile_block

    torch.set_num_threads(1)
    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", batch_size=BATCH, device="cpu")
    rt = get_runtime(spec)
    length = n * WINDOW
    codes = random_dna(1, length, seed=1)[0]
    same = rt.encode(random_dna(BATCH, WINDOW, seed=2))
    real = [rt.encode(codes[i * WINDOW:(i + BATCH) * WINDOW].reshape(-1, WINDOW)) for i in range(0, n, BATCH)]
    kw = dict(spec=spec, geom=TrackGeometry(WINDOW, WINDOW), length=length, rstart=0, b0=0, b1=n, strand="+", n_t=1)
    _tile_block([codes[None]], 0, 0, length, **kw)
    cpu = {"same": 0.0, "real": 0.0, "task": 0.0}
    with torch.inference_mode():
        for _ in range(rounds):
            c = time.process_time()
            for _ in range(len(real)):
                rt.model(same)
            cpu["same"] += time.process_time() - c
            c = time.process_time()
            for x in real:
                rt.model(x)
            cpu["real"] += time.process_time() - c
            c = time.process_time()
            _tile_block([codes[None]], 0, 0, length, **kw)
            cpu["task"] += time.process_time() - c
    return {k: rounds * n / v for k, v in cpu.items()}


def bench_render(n: int, tmp: Path, width: int = 1200, height: int = 300) -> dict:
    import dask.array as da
    import datashader as dsh
    import pandas as pd
    import xarray as xr

    from interpretome.storage.genome import TrackGeometry
    from interpretome.storage.store import open_group, write_dataset
    from interpretome.tasks.tiles import track_pyramid
    from interpretome.viz.tracks_long import shade_points, track_points

    store = tmp / "render.zarr"
    chunk = 1 << 22
    x = da.arange(n, chunks=chunk, dtype=np.float64)
    noise = da.random.default_rng(0).standard_normal(n, chunks=chunk)
    y = (da.sin(x / 2.0e5) + 0.3 * da.sin(x / 997.0) + 0.1 * noise).astype(np.float32)
    geom = TrackGeometry(1, 1, 1, 0, 0)
    track = xr.Dataset({"track_prediction": (("contig", "bin", "target"), y[None, :, None])},
                       coords={"contig": ["chrS"], "contig_name": ("contig", ["chrS"]),
                               "contig_index": ("contig", [0]), "region_start": ("contig", [0]),
                               "region_end": ("contig", [n]), "target": ["signal"]},
                       attrs=geom.to_attrs())
    t0 = time.perf_counter()
    write_dataset(track, store, "tracks", task="tiled_prediction", params={}, overwrite=True)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_dataset(track_pyramid(open_group(store, "tracks")), store, "tracks_pyramid", task="track_pyramid",
                  params={}, overwrite=True)
    t_pyr = time.perf_counter() - t0

    def from_pyramid():
        tr, pyr = open_group(store, "tracks"), open_group(store, "tracks_pyramid")
        pts, level = track_points(tr, 0, width=width, pyramid=pyr)
        img = shade_points(pts, (0, n), (-1.8, 1.8), width, height)
        return img, level, len(pts)

    from_pyramid()  # compile the numba line kernel
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        img_p, level, npts = from_pyramid()
        times.append(time.perf_counter() - t0)
    t_read = time.perf_counter()
    values = open_group(store, "tracks")["track_prediction"].values[0, :, 0]
    t_read = time.perf_counter() - t_read
    df = pd.DataFrame({"x": np.arange(n, dtype=np.float64), "y": values.astype(np.float64)})
    del values
    cvs = dsh.Canvas(plot_width=width, plot_height=height, x_range=(0.0, float(n)), y_range=(-1.8, 1.8))
    cvs.line(df.iloc[:1000], "x", "y", agg=dsh.any())  # compile
    full = []
    for _ in range(2):
        t0 = time.perf_counter()
        agg = cvs.line(df, "x", "y", agg=dsh.any())
        full.append(time.perf_counter() - t0)
    # the two images light the same pixels (M4: each column's min..max is covered by both)
    pyr_on = np.asarray(img_p.data != 0)
    full_on = np.asarray(agg.data, bool)
    agree = float((pyr_on == full_on).mean())
    return {"n": n, "t_write": t_write, "t_pyramid": t_pyr, "pyramid_warm": min(times), "pyramid_median":
            float(np.median(times)), "level": level, "points": npts, "full_warm": min(full), "t_read_full": t_read,
            "ratio": min(full) / min(times), "pixel_agreement": agree, "peak_rss_mb": _peak_rss_mb()}


def run(quick: bool) -> str:
    """Run both benchmarks and return the markdown of the issue-3 section of RESULTS.md."""
    length = 2_000_000 if quick else 50_000_000
    n = 10_000_000 if quick else 100_000_000
    cmd = "python -m benchmarks.bench_tiles" + (" --quick" if quick else "")
    with tempfile.TemporaryDirectory(prefix="bench_tiles_") as d:
        tmp = Path(d)
        t = bench_tiling(length, tmp)
        k = bench_task_path()
        r = bench_render(n, tmp)
    lines = [
        "## Long sequences: tiled prediction and track rendering (issue 3)",
        "",
        f"Command: `{cmd}` — {os.cpu_count()} cores, no GPU, machine shared with other engineers' jobs "
        "(timings are noisy: the forward limit is measured right before and right after the tiling run and averaged).",
        "",
        f"**Tiling** a synthetic {length / 1e6:g} Mb contig with the reference CNN, {WINDOW} bp windows every "
        f"{WINDOW} bp ({t['windows']:,} windows), FASTA read through its index, track written to zarr, "
        "2 workers x 1 thread:",
        "",
        "| | windows/s |",
        "|---|---|",
        f"| model forward limit (pre-encoded batches of {BATCH}, both workers at once) | "
        f"{t['limit']:,.0f} (before {t['limit_before']:,.0f}, after {t['limit_after']:,.0f}) |",
        f"| `predict_tiles` -> store, end to end ({t['wall']:.1f} s) | {t['rate']:,.0f} |",
        f"| **ratio (wall clock)** | **{t['ratio']:.2f}x** |",
        "",
        "The machine is shared (load average ~10 on 2 cores during these runs), so wall-clock rates depend on "
        "how much CPU the other jobs leave. Per CPU-second of the workers (user + system time of the worker "
        "processes, which run torch with 1 thread; the scheduler's own CPU is not counted):",
        "",
        "| | windows per worker CPU-second |",
        "|---|---|",
        f"| model forward limit | {t['limit_cpu']:,.1f} |",
        f"| `predict_tiles` -> store ({t['cpu']:.0f} worker CPU-s) | {t['rate_cpu']:,.1f} |",
        f"| **ratio (CPU time)** | **{t['ratio_cpu']:.2f}x** |",
        "",
        "Per-window cost of the task path in one process, the three measured interleaved 8 times over the same "
        "576 windows (so load swings hit them alike), windows per CPU-second:",
        "",
        "| bare forward, one pre-encoded batch reused | bare forward, the real windows pre-encoded | "
        "`_tile_block` (slice, encode, forward, head, place) | task / reused-batch forward |",
        "|---|---|---|---|",
        f"| {k['same']:,.0f} | {k['real']:,.0f} | {k['task']:,.0f} | **{k['task'] / k['same']:.2f}x** |",
        "",
        f"Peak RSS per worker (ru_maxrss, includes the forward-limit runs): "
        f"{', '.join(f'{x:,.0f} MB' for x in t['rss'])}.",
        "",
        f"**Rendering** a {n / 1e6:g} M-position track (one value per base, float32) 1200x300 px:",
        "",
        "| | seconds (warm) |",
        "|---|---|",
        f"| from the stored min/max pyramid (open store, read level {r['level']}: {r['points']:,} points, "
        f"datashader line) | {r['pyramid_warm']:.3f} (median of 5: {r['pyramid_median']:.3f}) |",
        f"| datashader `Canvas.line` on the full-resolution track (in memory; reading it took "
        f"{r['t_read_full']:.1f} s more) | {r['full_warm']:.2f} |",
        f"| **ratio** | **{r['ratio']:.0f}x** |",
        "",
        f"The two images light the same pixels in {100 * r['pixel_agreement']:.2f}% of the canvas. One-off costs: "
        f"writing the track {r['t_write']:.1f} s, building and writing its pyramid {r['t_pyramid']:.1f} s. Peak RSS "
        f"of the benchmark process (holding the full-resolution DataFrame): {r['peak_rss_mb']:,.0f} MB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 Mb contig and a 10 M-position track")
    args = p.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
