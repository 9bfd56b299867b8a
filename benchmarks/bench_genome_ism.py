"""Genome ISM along a synthetic contig on the command line: rate, peak RSS per process, resume (issue 12).

``python -m interpretome genome-ism contig.fa --model interpretome.datasets:reference_cnn
--input-length 1000 --context-step 1000 -o A.zarr --executor local --workers 2`` (every base of the
contig substituted by A, C, G, T inside its 1 kb context: 3 edits per base), run twice:

1. straight through, the RSS of the command and of every process under it (nannies, workers)
   sampled every 0.2 s with psutil; the peak per process is reported;
2. into a second store, interrupted with SIGINT (Ctrl-C) at ``--kill-at`` of the first run's wall
   time, then the same command again to resume; the resumed store is compared with the first
   (``np.array_equal`` on every variable).

Run: ``nice -n 5 python -m benchmarks.bench_genome_ism --mb 2`` (prints a markdown section), or
``python -m benchmarks --only genome_ism`` (2 Mb; ``--quick``: 0.1 Mb) to rewrite its RESULTS.md section.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .bench_tiles import _write_contig


def _command(fasta: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "interpretome", "genome-ism", str(fasta), "--model",
            "interpretome.datasets:reference_cnn", "--input-length", "1000", "--context-step", "1000",
            "-o", str(store), "--executor", "local", "--workers", "2"]


def _run(cmd: list[str], interrupt_after: float | None = None) -> dict:
    """Run ``cmd``; return wall s, return code, stderr tail and the peak RSS (MB) of each process under it."""
    import psutil

    t0 = time.perf_counter()
    # SIGINT back to its default in the command: a benchmark started with `&` from a script inherits it
    # ignored, and the command then (rightly) keeps running through Ctrl-C
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                    line = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                kind = ("command" if p.pid == proc.pid else "worker" if "spawn_main" in line or "forkserver" in line
                        else "nanny/other")
                if rss > peaks.get(p.pid, ("", 0.0))[1]:
                    peaks[p.pid] = (kind, rss)
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    if interrupt_after is not None:
        try:
            proc.wait(interrupt_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    done.set()
    th.join()
    return {"wall": time.perf_counter() - t0, "rc": proc.returncode, "err": err.strip().splitlines()[-3:],
            "out": out.strip().splitlines()[-3:], "peaks": sorted(peaks.values(), key=lambda x: -x[1])}


def _equal(a: Path, b: Path) -> tuple[bool, int]:
    import xarray as xr

    da, db = xr.open_zarr(a, group="genome_ism"), xr.open_zarr(b, group="genome_ism")
    names = sorted(da.data_vars)
    same = names == sorted(db.data_vars) and all(np.array_equal(da[v].values, db[v].values, equal_nan=True)
                                                 for v in names)
    return bool(same), len(names)


def _stored(store: Path, length: int) -> str:
    """Return a one-line account of the stored deltas: shape, NaN count, and the store's size on disk."""
    import xarray as xr

    ds = xr.open_zarr(store, group="genome_ism")
    delta = ds["genome_ism_delta"]
    nan = int(delta.isnull().sum().compute())
    size = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
    return (f"`genome_ism_delta` {dict(delta.sizes)}, {nan:,} NaN of {delta.size:,} values, "
            f"{size / 2**20:,.0f} MiB on disk, positions 0..{int(ds['position'][-1])} of {length:,}")


def forward_limit(seconds: float = 5.0) -> float:
    """Return the reference CNN's 2-core forward limit (1 kb sequences/s): two processes of 1 thread at once."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from .bench_perturb import _forward_worker

    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        return float(sum(ex.map(_forward_worker, [0, 0], [1000, 1000], [16, 16], [seconds, seconds])))


def run(quick: bool = False, mb: float | None = None, kill_at: float = 0.5, resume: bool = True) -> str:
    """Run both measurements and return the markdown section (``quick``: 0.1 Mb, else ``mb``, default 2 Mb;
    ``resume=False``: the straight run only, e.g. for a whole 50 Mb contig)."""
    mb = 0.1 if quick else (mb or 2.0)
    length = int(mb * 1_000_000)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fasta = _write_contig(tmp / "contig.fa", length)
        load0 = os.getloadavg()
        fwd0 = forward_limit(2.0 if quick else 5.0)
        a = _run(_command(fasta, tmp / "A.zarr"))
        fwd1 = forward_limit(2.0 if quick else 5.0)
        if resume:
            b1 = _run(_command(fasta, tmp / "B.zarr"), interrupt_after=kill_at * a["wall"])
            b2 = _run(_command(fasta, tmp / "B.zarr"))
            same, nvars = _equal(tmp / "A.zarr", tmp / "B.zarr")
        load1 = os.getloadavg()
        stored = _stored(tmp / "A.zarr", length) if a["rc"] == 0 else "the straight run failed"
    edits = 3 * length
    workers = [rss for kind, rss in a["peaks"] if kind == "worker"]
    cmd_rss = max((rss for kind, rss in a["peaks"] if kind == "command"), default=float("nan"))
    lines = [
        "## Genome ISM along a contig, on the command line (issue 12)", "",
        f"Command: `nice -n 5 python -m benchmarks.bench_genome_ism --mb {mb:g}{'' if resume else ' --no-resume'}` — a synthetic {mb:g} Mb contig, "
        f"`python -m interpretome genome-ism contig.fa --model interpretome.datasets:reference_cnn --input-length 1000 "
        f"--context-step 1000 -o A.zarr --executor local --workers 2`; load average {load0[0]:.2f} / {load0[1]:.2f} / "
        f"{load0[2]:.2f} at the start, {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at the end, "
        f"{os.cpu_count()} cores.", "",
        "| run | wall s | edits/s | exit | last line |", "|---|---:|---:|---:|---|",
        f"| straight through | {a['wall']:.1f} | {edits / a['wall']:,.0f} | {a['rc']} | {(a['err'] or a['out'] or [''])[-1][:160]} |"]
    if resume:
        lines += [
        f"| second store, SIGINT at {kill_at:.0%} of that | {b1['wall']:.1f} | | {b1['rc']} | "
        f"{(b1['err'] or [''])[-1][:200]} |",
        f"| the same command again (resume) | {b2['wall']:.1f} | | {b2['rc']} | {(b2['err'] or b2['out'] or [''])[-1][:160]} |"]
    lines += [
        "",
        f"Peak RSS, straight run (psutil, every 0.2 s): workers {', '.join(f'{w:,.0f}' for w in workers)} MB; "
        f"the command (client + scheduler) {cmd_rss:,.0f} MB.",
        f"Store of the straight run: {stored}.",
        (f"Resumed store equal to the straight one: **{same}** ({nvars} variables, `np.array_equal`)." if resume
         else "Resume not run here (`--no-resume`; the 2 Mb run checks it)."),
        (f"The whole {mb:g} Mb contig ({edits / 1e6:,.0f} M edits): **{a['wall'] / 60:.1f} min** (target for 50 Mb: <= 30 min)."
         if mb >= 50 else f"Extrapolated at this rate (linear in length, not measured): 50 Mb (150 M edits) "
         f"{150e6 / (edits / a['wall']) / 60:.0f} min."),
        f"Forward limit of the reference CNN on the same 2 cores (two processes of 1 thread, batches of 16 "
        f"pre-encoded 1 kb sequences), just before and just after the straight run: {fwd0:,.0f} / {fwd1:,.0f} "
        f"seq/s; the straight run = **{edits / a['wall'] / ((fwd0 + fwd1) / 2):.1f}x** that limit "
        f"(50 Mb in 30 min needs 83,333 edits/s = {83_333 / ((fwd0 + fwd1) / 2):.1f}x).", ""]
    return "\n".join(lines)


def main() -> None:
    """CLI: print the section."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=float, default=2.0, help="contig length in Mb")
    p.add_argument("--kill-at", type=float, default=0.5, help="interrupt the second run at this fraction of the first")
    p.add_argument("--no-resume", action="store_true", help="the straight run only (no interrupted second store)")
    args = p.parse_args()
    print(run(mb=args.mb, kill_at=args.kill_at, resume=not args.no_resume))


if __name__ == "__main__":
    main()
