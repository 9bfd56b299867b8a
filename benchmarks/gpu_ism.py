"""ISM on a GPU through dask-cuda workers, against the same GPU's forward limit (issue 12).

Run by ``benchmarks/gpu_check.sh`` on a machine with an NVIDIA GPU (the script installs the carried
wheels first); ``python -m benchmarks.gpu_ism --cpu`` runs every stage on CPU with tiny sizes (a
plain ``LocalCluster`` in place of dask-cuda), which is how the script is checked without a GPU.

Stages, each timed and reported even when a later one fails (a failure prints its traceback and the
table says "failed"):

1. the forward limit: the reference CNN (Conv1d 4->64 k15, Conv1d 64->64 k9, max pool, Linear) on
   pre-encoded 1 kb one-hot batches of 256 .. 16,384 sequences on the GPU, float32 IEEE (TF32 off,
   as ``Runtime`` sets it); sequences/s, best batch;
2. ``Runtime.predict_edits`` in this process (no dask): every substitution of one 1 kb and one 10 kb
   sequence (3 edits per base), local batches of 64 x 16 and 4,096 x 16 edits; edits/s;
3. the task graph: ``saturation_mutagenesis`` of N x 1 kb sequences computed by one dask-cuda
   worker (``engine.cluster.connect(gpus=True)``, ``ModelSpec(device="cuda")``), after a warm-up
   graph; edits/s and the multiple of the forward limit;
4. exactness: the first sequences' deltas against plain full forwards of every edited sequence on
   the same GPU (IEEE float32) and against the same graph computed on CPU workers;
5. the command line: ``interpretome genome-ism`` of a synthetic contig with ``--gpus --device
   cuda`` into a zarr store; wall time, edits/s, and 64 random positions checked against plain
   forwards of their 1 kb contexts on the CPU.

Prints a markdown section (and writes it to ``--out``/gpu_section.md when given). Not a ``bench_``
module on purpose: ``python -m benchmarks`` runs on CPU machines and must not overwrite the GPU
figures in RESULTS.md; the section there is pasted from a GPU run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

SPEC_KW = {"factory": "interpretome.datasets:reference_cnn", "kwargs": {"seed": 0}}
ONEHOT = np.eye(5, 4, dtype=np.float32)


class Stages:
    """Run named stages, keeping each one's result or its failure."""

    def __init__(self):
        self.results: dict[str, object] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, name, fn, *args, **kw):
        t0 = time.perf_counter()
        print(f"--- {name}", flush=True)
        try:
            out = fn(*args, **kw)
        except Exception:  # noqa: BLE001 - a benchmark stage reports its failure and the rest run
            traceback.print_exc()
            out = None
        self.seconds[name] = time.perf_counter() - t0
        self.results[name] = out
        print(f"    {name}: {_short(out)} ({self.seconds[name]:.1f} s)", flush=True)
        return out


def _short(value) -> str:
    """Return a one-line description of a stage's result (arrays by shape, not by value)."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    if isinstance(value, np.ndarray):
        return f"array{value.shape} {value.dtype}"
    return repr(value)[:300]


def _sync(torch, dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def forward_limit(dev, batches, seconds) -> dict[int, float]:
    """Return sequences/s of pre-encoded 1 kb forwards per batch size on ``dev``."""
    import torch

    from interpretome.datasets import random_dna, reference_cnn
    from interpretome.engine.process import ieee_float32

    ieee_float32()
    m = reference_cnn(seed=0).eval().to(dev)
    rates = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.from_numpy(ONEHOT[random_dna(b, 1000, seed=1)].transpose(0, 2, 1).copy()).to(dev)
            for _ in range(3):
                m(x)
            _sync(torch, dev)
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                m(x)
                done += b
            _sync(torch, dev)
            rates[b] = done / (time.perf_counter() - t0)
    return rates


def runtime_edits(dev, lengths, batch_sizes, seconds) -> dict[tuple[int, int], float]:
    """Return edits/s of ``Runtime.predict_edits`` (every substitution of one sequence) in this process."""
    from interpretome.datasets import random_dna
    from interpretome.engine.models import ModelSpec, get_runtime

    rates = {}
    for bs in batch_sizes:
        rt = get_runtime(ModelSpec(**SPEC_KW, batch_size=bs, device=dev))
        assert rt.locality is not None, rt.no_locality
        for length in lengths:
            ref = random_dna(1, length, seed=2)[0]
            pos = np.repeat(np.arange(length), 3)
            new = ((ref[pos] + np.tile([1, 2, 3], length)) % 4).astype(np.uint8)[:, None]
            rt.predict_edits(ref, pos, new)
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                rt.predict_edits(ref, pos, new)
                done += len(pos)
            rates[(length, bs)] = done / (time.perf_counter() - t0)
    return rates


def _ism_graph(codes, dev, batch_size, sequence_chunk):
    import interpretome as it
    from interpretome.storage.alphabet import decode_bases

    spec = it.ModelSpec(**SPEC_KW, batch_size=batch_size, device=dev)
    ds = it.sequences_to_dataset([decode_bases(row) for row in codes], sequence_chunk=sequence_chunk,
                                 position_chunk=codes.shape[1])
    return it.saturation_mutagenesis(ds, spec, merge=False)["ism_delta"]


def graph_ism(client, codes, dev, batch_size, sequence_chunk) -> tuple[float, np.ndarray]:
    """Return (edits/s, ism_delta (N, L, 4, 1)) of the ISM graph on ``client``, after a warm-up graph."""
    client.compute(_ism_graph(codes[:2], dev, batch_size, 2).data, sync=True)
    res = _ism_graph(codes, dev, batch_size, sequence_chunk)
    t0 = time.perf_counter()
    out = client.compute(res.data, sync=True)
    return codes.size * 3 / (time.perf_counter() - t0), out


def plain_ism(codes, dev) -> np.ndarray:
    """Return ism deltas (N, L, 4) from full forwards of every substituted sequence on ``dev``."""
    import torch

    from interpretome.datasets import reference_cnn
    from interpretome.engine.process import ieee_float32

    ieee_float32()
    m = reference_cnn(seed=0).eval().to(dev)
    n, length = codes.shape
    out = np.zeros((n, length, 4), np.float32)
    with torch.inference_mode():
        for i in range(n):
            x = torch.from_numpy(ONEHOT[codes[i]].T.copy()).to(dev)  # (4, L)
            y0 = m(x[None])[0, 0]
            for b in range(4):
                batch = x[None].repeat(length, 1, 1)
                idx = torch.arange(length, device=dev)
                batch[idx, :, idx] = 0.0
                batch[idx, b, idx] = 1.0
                out[i, :, b] = (m(batch)[:, 0] - y0).cpu().numpy()
            out[i, np.arange(length), codes[i]] = 0.0  # the reference base: no edit
    return out


def cli_genome_ism(mb, dev, batch_size, gpus, workdir: Path, timeout: float = 200.0) -> dict:
    """Run ``interpretome genome-ism`` on a synthetic contig; return wall s, rc, edits/s, checked max |diff|."""
    from .bench_tiles import _write_contig

    length = int(mb * 1_000_000)
    fasta = _write_contig(workdir / "contig.fa", length)
    store = workdir / "G.zarr"
    cmd = [sys.executable, "-m", "interpretome", "genome-ism", str(fasta), "--model", SPEC_KW["factory"],
           "--input-length", "1000", "--context-step", "1000", "--batch-size", str(batch_size),
           "--device", dev, "-o", str(store)] + (["--gpus"] if gpus else ["--executor", "local", "--workers", "1"])
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"wall": timeout, "rc": "killed at the time limit", "edits_per_s": float("nan"), "cmd": " ".join(cmd[1:])}
    wall = time.perf_counter() - t0
    print(p.stdout[-2000:], p.stderr[-3000:], sep="\n", flush=True)
    res = {"wall": wall, "rc": p.returncode, "edits_per_s": 3 * length / wall, "cmd": " ".join(cmd[1:])}
    if p.returncode == 0:
        res["max_abs_diff"] = check_genome_store(fasta, store, length)
    return res


def check_genome_store(fasta, store, length, n=64) -> float:
    """Return max |stored delta - plain CPU forward delta| at ``n`` random positions of the contig."""
    import torch
    import xarray as xr

    from interpretome.datasets import reference_cnn
    from interpretome.storage.alphabet import encode_bases

    seq = encode_bases("".join(line.strip() for line in open(fasta) if not line.startswith(">")))
    ds = xr.open_zarr(store, group="genome_ism")
    delta = ds["genome_ism_delta"]
    m = reference_cnn(seed=0).eval()
    rng = np.random.default_rng(0)
    worst = 0.0
    with torch.inference_mode():
        for p in sorted(rng.choice(length, n, replace=False)):
            cs = min((p // 1000) * 1000, length - 1000)  # the context rule of context_step = input_length
            ctx = seq[cs:cs + 1000]
            x = torch.from_numpy(ONEHOT[np.stack([ctx] * 5)].transpose(0, 2, 1).copy())
            for b in range(4):
                x[1 + b, :, p - cs] = 0.0
                x[1 + b, b, p - cs] = 1.0
            y = m(x)[:, 0].numpy()
            want = y[1:] - y[0]
            got = delta.isel(contig=0, position=int(p)).values.reshape(4, -1)[:, 0]
            worst = max(worst, float(np.nanmax(np.abs(got - want))))
    return worst


def gpu_client(cpu: bool):
    """Return (client, what): one dask-cuda worker (``connect(gpus=True)``), or when dask-cuda cannot
    start, one plain ``LocalCluster`` worker process (which sees the GPU too); ``cpu``: one CPU worker."""
    from interpretome.engine.cluster import connect

    if cpu:
        return connect(1, log=print), "1 CPU worker (dry run)"
    try:
        return connect(gpus=True, log=print), "1 dask-cuda worker"
    except Exception:  # noqa: BLE001 - say why, then measure on a plain worker process
        traceback.print_exc()
        return connect(1, log=print), "1 LocalCluster worker process on the GPU (dask-cuda failed to start)"


def run(cpu: bool, n_seq: int | None, mb: float | None) -> str:
    """Run every stage and return the markdown section."""
    import torch

    from interpretome.datasets import random_dna
    from interpretome.engine.cluster import connect

    dev = "cpu" if cpu else "cuda"
    st = Stages()
    env = {"torch": torch.__version__, "python": sys.version.split()[0], "cores": os.cpu_count()}
    for name in ("dask", "distributed", "dask_cuda", "xarray", "zarr", "numpy", "pandas"):
        try:
            env[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001
            env[name] = f"missing ({type(e).__name__})"
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    print(env, flush=True)

    quick = cpu
    fwd = st("forward limit", forward_limit, dev, (16, 64) if quick else (256, 1024, 4096, 16384),
             0.5 if quick else 2.0)
    edits = st("predict_edits in process", runtime_edits, dev, (1000,) if quick else (1000, 10_000), (64, 4096),
               0.5 if quick else 2.0)
    in_process = max(edits.values()) if edits else 30_000.0
    if n_seq is None:  # about 10 s of the in-process rate, 64 .. 4096 sequences (a multiple of 32)
        n_seq = int(min(4096, max(64, in_process * 10 / 3000)) // 32 * 32)
    codes = random_dna(n_seq, 1000, seed=0)
    seq_chunk = max(1, n_seq // 32)
    client, what = st("cluster start", gpu_client, cpu) or (None, "no worker (the cluster did not start)")
    ism = {}
    for bs in (64, 4096):
        ism[bs] = st(f"ISM graph, batch {bs}", graph_ism, client, codes, dev, bs, seq_chunk) if client else None
    if client is not None:
        client.close()
    check_n = 2 if quick else 8
    plain = st("plain full-forward ISM", plain_ism, codes[:check_n], dev)
    cpu_client = st("CPU cluster start", connect, min(16, os.cpu_count() or 1), log=print)
    cpu_ism = (st("ISM graph on CPU workers", graph_ism, cpu_client, codes, "cpu", 64, seq_chunk)
               if cpu_client else None)
    if cpu_client is not None:
        cpu_client.close()
    if mb is None:  # about 30 s at the graph's rate, 0.5 .. 20 Mb
        graph_rate = max([r[0] for r in ism.values() if r] or [in_process / 3])
        mb = round(min(20.0, max(0.5, graph_rate * 30 / 3e6)), 1)
    with tempfile.TemporaryDirectory() as d:
        cli = st("genome-ism on the command line", cli_genome_ism, mb, dev, 4096, "dask-cuda" in what, Path(d))

    limit = max(fwd.values()) if fwd else float("nan")
    best_b = max(fwd, key=fwd.get) if fwd else None
    lines = ["## ISM on a GPU through dask-cuda (issue 12)", "",
             f"Command: `bash benchmarks/gpu_check.sh` (`python -m benchmarks.gpu_ism{' --cpu' if cpu else ''}`, "
             f"which chose {n_seq} sequences and a {mb:g} Mb contig from the in-process rate) on {env.get('gpu', 'no GPU (CPU dry run)')}, {env['cores']} CPU cores; "
             f"python {env['python']}, torch {env['torch']}, dask {env['dask']}, distributed {env['distributed']}, "
             f"dask-cuda {env['dask_cuda']}, numpy {env['numpy']}, pandas {env['pandas']}, xarray {env['xarray']}, "
             f"zarr {env['zarr']}. Reference CNN, 1 kb sequences, float32 with TF32 off.", "",
             "| what | rate | x forward limit |", "|---|---:|---:|"]
    if fwd:
        for b, r in fwd.items():
            lines.append(f"| forward limit, batch {b:,} pre-encoded | {r:,.0f} seq/s | {r / limit:.2f} |")
    else:
        lines.append("| forward limit | failed | |")
    if edits:
        for (length, bs), r in edits.items():
            lines.append(f"| `Runtime.predict_edits`, in process, one {length:,} bp sequence, batch_size {bs} "
                         f"({bs * 16:,} edits per call) | {r:,.0f} edits/s | {r / limit:.1f} |")
    for bs, r in ism.items():
        lines.append(f"| ours: ISM graph, {n_seq} x 1 kb, {what}, batch_size {bs} | "
                     + (f"{r[0]:,.0f} edits/s | **{r[0] / limit:.1f}** |" if r else "failed | |"))
    lines.append(f"| ours: the same graph on {min(16, os.cpu_count() or 1)} CPU workers of this machine | "
                 + (f"{cpu_ism[0]:,.0f} edits/s | {cpu_ism[0] / limit:.2f} |" if cpu_ism else "failed | |"))
    if cli:
        flags = "--gpus" if "dask-cuda" in what else "--executor local --workers 1"
        lines.append(f"| `interpretome genome-ism`, {mb:g} Mb contig, `{flags} --device {dev} --batch-size 4096`, "
                     f"end to end ({cli['wall']:.1f} s, exit {cli['rc']}) | {cli['edits_per_s']:,.0f} edits/s | "
                     f"{cli['edits_per_s'] / limit:.1f} |")
    lines.append("")
    gpu_ism = ism.get(4096) or ism.get(64)
    if plain is not None and gpu_ism is not None:
        d = float(np.max(np.abs(gpu_ism[1][:check_n, :, :, 0] - plain)))
        scale = float(np.max(np.abs(plain)))
        lines.append(f"Exactness: ISM deltas of the first {check_n} sequences vs plain full forwards of every edited "
                     f"sequence on the same device: max |diff| {d:.2e} (max |delta| {scale:.2e}).")
    if cpu_ism is not None and gpu_ism is not None:
        d = float(np.max(np.abs(gpu_ism[1] - cpu_ism[1])))
        lines.append(f"GPU graph vs the same graph on CPU workers, all {n_seq} sequences: max |diff| {d:.2e}.")
    if ism.get(64) is not None and ism.get(4096) is not None:
        lines.append(f"batch_size 64 vs 4096 on the GPU: max |diff| "
                     f"{float(np.max(np.abs(ism[64][1] - ism[4096][1]))):.2e}.")
    if cli and "max_abs_diff" in cli:
        lines.append(f"genome-ism store vs plain CPU forwards of their 1 kb contexts at 64 random positions: "
                     f"max |diff| {cli['max_abs_diff']:.2e}.")
    if best_b is not None:
        lines.append(f"Forward limit = the best batch ({best_b:,}): {limit:,.0f} seq/s.")
    lines.append("Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in st.seconds.items()) + ".")
    return "\n".join(lines) + "\n"


def cuda_client(threads: int, profiler: bool, dev: str = "cuda"):
    """Return ``connect(gpus=True)`` with ``threads`` task threads on its worker, distributed's task profiler on
    (``PROFILE_ENV`` set) or off (interpretome's default); ``dev="cpu"``: one local CPU worker instead (dry run)."""
    from interpretome.engine.cluster import PROFILE_ENV, connect

    old = os.environ.pop(PROFILE_ENV, None)
    if profiler:
        os.environ[PROFILE_ENV] = "True"
    try:
        return connect(1 if dev == "cpu" else None, gpus=dev != "cpu", threads_per_worker=threads, log=print)
    finally:
        os.environ.pop(PROFILE_ENV, None)
        if old is not None:
            os.environ[PROFILE_ENV] = old


def threads_check(n_seq: int, dev: str = "cuda") -> str:
    """Return a markdown table: the ISM graph (batch 4096) on one dask-cuda worker with 1 or 4 task threads,
    the workers' profiler on or off, against the GPU's forward limit."""
    from interpretome.datasets import random_dna

    st = Stages()
    fwd = st("forward limit", forward_limit, dev, (4096, 16384) if dev == "cuda" else (64,), 2.0) or {}
    limit = max(fwd.values()) if fwd else float("nan")
    codes = random_dna(n_seq, 1000, seed=0)
    rows, ref = [], None
    for threads, profiler in ((1, True), (1, False), (4, False), (8, False)):
        client = st(f"cluster {threads} threads, profiler {profiler}", cuda_client, threads, profiler, dev)
        if client is None:
            continue
        r = st(f"ISM graph {threads} threads", graph_ism, client, codes, dev, 4096, max(1, n_seq // 64))
        client.close()
        if r is not None:
            ref = r[1] if ref is None else ref
            rows.append(f"| 1 dask-cuda worker, {threads} task thread(s), profiler {'on' if profiler else 'off'} | "
                        f"{r[0]:,.0f} edits/s | {r[0] / limit:.1f} | {float(np.max(np.abs(r[1] - ref))):.1e} |")
    return "\n".join(["", f"ISM graph, {n_seq} x 1 kb, batch_size 4096, {max(1, n_seq // 64)} sequences a task; "
                      f"forward limit {limit:,.0f} seq/s.", "",
                      "| worker | rate | x forward limit | max abs diff vs the first row |", "|---|---:|---:|---:|"]
                     + rows) + "\n"


def main() -> None:
    """CLI: run, print the section, write it to --out/gpu_section.md."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cpu", action="store_true", help="dry run on CPU with tiny sizes (no dask-cuda)")
    p.add_argument("--n-seq", type=int, default=None, help="1 kb sequences of the ISM graph (default: ~10 s at the in-process rate; --cpu 8)")
    p.add_argument("--mb", type=float, default=None, help="genome-ism contig in Mb (default: ~30 s at the graph's rate; --cpu 0.02)")
    p.add_argument("--out", default=None, help="folder for gpu_section.md")
    p.add_argument("--threads-check", action="store_true",
                   help="only: the ISM graph on a dask-cuda worker of 1, 4 or 8 task threads, profiler on / off")
    a = p.parse_args()
    if a.threads_check:
        text = threads_check(a.n_seq or (16 if a.cpu else 4096), "cpu" if a.cpu else "cuda")
        print(text, flush=True)
        if a.out:
            Path(a.out, "gpu_threads.md").write_text(text)
        return
    n = a.n_seq or (8 if a.cpu else None)
    mb = a.mb or (0.02 if a.cpu else None)
    text = run(a.cpu, n, mb)
    print(text, flush=True)
    if a.out:
        Path(a.out, "gpu_section.md").write_text(text)


if __name__ == "__main__":
    main()
