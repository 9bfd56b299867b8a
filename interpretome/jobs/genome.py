"""Genome jobs: ``interpretome tiles``, ``genome-sweep``, ``genome-ism`` and ``export-track``.

``tiles`` writes three groups: ``<group>`` (the tiled track, task ``tiled_prediction``),
``<group>_pyramid`` (its min/max pyramid) and, with ``--annotation``, ``<group>_genes`` (the gene
table with strand-aware starts). Renderers draw a whole-contig PNG per contig, and for a zoomed
region (``--start/--end`` of ``interpretome render``, or the first 40 kb) a PNG and an
interactive HTML, with gene starts as red lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..engine.models import get_runtime
from ..storage.annotation import annotation_dataset, genes_from_dataset, read_annotation
from ..storage.export import export_bedgraph, export_bigwig
from ..storage.genome import TrackGeometry, as_regions, read_genome
from ..storage.schema import CODE_N
from ..storage.store import group_info, list_groups, open_group
from ..tasks.genome_perturb import PADS, REDUCTIONS, genome_ism, genome_sweep, make_readout
from ..tasks.genome_perturb import STRANDS as PERTURB_STRANDS
from ..tasks.perturb import MODES
from ..tasks.tiles import STRANDS, check_output, predict_tiles, track_pyramid
from ..viz.tracks import plot_ism, plot_sweep, save
from ..viz.tracks_long import plot_track, row_index, track_html
from . import (RENDERERS, add_model_arguments, add_run_arguments, check_model_on, cli_command, input_sample,
               model_from_args, run_command, store_result)

ZOOM = 40_000


def check_window_model(model, ds, regions, length: int, check=None) -> str:
    """Run ``model`` in-process on one real ``length``-base window of the genome (the first region's
    start, else the first contig's) and return its digest (``jobs.check_model_on``).

    ``check``: called with the model's output on that window (N-padded to ``length``), e.g. a
    readout's shape check, so that a profile model run as scalar (or with the wrong ``bin_size``
    / ``crop``) fails here, naming the fix, before any cluster starts.
    """
    def sample():
        names = [str(n) for n in ds["sequence"].values]
        first = regions[0] if regions else None
        row = names.index(first.contig) if first is not None and first.contig in names else 0
        return input_sample(ds, model.input_kind, row=row, start=first.start if first is not None else 0,
                            length=length)

    digest = check_model_on(model, sample)
    if check is not None:
        x = sample()[:1]
        x = np.pad(x, ((0, 0), (0, length - x.shape[1])), constant_values=CODE_N)  # a contig shorter than one window
        check(get_runtime(model).predict(x))
    return digest


def run_tiles(fasta, model, store, *, window, stride=None, regions=None, bin_size=None, crop=0, crop_right=None,
              strand="+", pad=None, annotation=None, feature="gene", group="tracks", pyramid=True,
              position_chunk=1 << 20, bin_chunk=None, client=None, overwrite=False, log=print) -> dict:
    """Tile ``model`` along ``fasta`` (or ``regions``) into ``store/group`` (+ pyramid, + genes).

    Every input is read and checked (genome index, regions, annotation, tiling parameters) before
    any model runs. Returns ``{group name: WriteReport}``.
    """
    ds = read_genome(fasta, position_chunk=position_chunk)
    genes = read_annotation(annotation, feature=feature) if annotation else None
    regions = as_regions(regions) or None
    params = dict(window=window, stride=stride, regions=[r.label for r in regions] if regions else None,
                  bin_size=bin_size, crop=crop, crop_right=crop_right, strand=strand, pad=pad)
    res = predict_tiles(ds, model, window=window, stride=stride, regions=regions, bin_size=bin_size, crop=crop,
                        crop_right=crop_right, strand=strand, pad=pad, bin_chunk=bin_chunk, merge=False)
    res.attrs["genome_contigs"] = [[str(n), int(x)] for n, x in zip(ds["sequence"].values, ds["sequence_length"].values)]
    digest = check_window_model(model, ds, regions, window,
                                check=lambda o: check_output(o, TrackGeometry.from_attrs(res.attrs)))
    reports = {}
    if genes is not None:
        known = set(map(str, ds["sequence"].values))
        if not set(genes["contig"]) & known:
            raise ValueError(f"no gene of {str(annotation)!r} lies on a contig of {str(fasta)!r} (genes on "
                             f"{sorted(set(genes['contig']))[:5]}, genome has {sorted(known)[:5]}): use matching files")
        params["genes_group"] = f"{group}_genes"
        reports[f"{group}_genes"] = store_result(annotation_dataset(genes), store, f"{group}_genes",
                                                 task="gene_annotation", params={"feature": feature},
                                                 inputs=[annotation], overwrite=overwrite, log=log)
    reports[group] = store_result(res, store, group, task="tiled_prediction", params=params, model=model,
                                  model_digest=digest, inputs=[fasta], client=client, overwrite=overwrite, log=log)
    if pyramid:
        track = open_group(store, group)
        fp = group_info(store, group)["fingerprint"]
        reports[f"{group}_pyramid"] = store_result(
            track_pyramid(track), store, f"{group}_pyramid", task="track_pyramid",
            params={"source_group": group, "source_fingerprint": fp, "factor": 4}, client=client,
            overwrite=overwrite, log=log)
    return reports


def load_track(store, group):
    """Return ``(track, pyramid or None, genes DataFrame or None)`` of a stored tiled-prediction group."""
    track = open_group(store, group)
    groups = list_groups(store)
    pyr = open_group(store, f"{group}_pyramid") if f"{group}_pyramid" in groups else None
    genes_group = (group_info(store, group).get("params") or {}).get("genes_group")
    genes = genes_from_dataset(open_group(store, genes_group).load()) if genes_group in groups else None
    return track, pyr, genes


def render_tiles(store, group, out_dir, *, sequences=None, start=None, end=None, html=True, **_) -> list[Path]:
    """Draw each contig of a track (default: the first 4) whole, zoomed (PNG) and as HTML."""
    track, pyr, genes = load_track(store, group)
    out_dir = Path(out_dir)
    labels = [str(c) for c in track["contig"].values]
    picks = sequences or labels[:4]
    paths = []
    for c in picks:
        safe = str(c).replace(":", "_").replace("/", "_")
        paths.append(save(plot_track(track, c, genes=genes, pyramid=pyr), out_dir / f"{group}_{safe}.png"))
        i = row_index(track, c)
        rs, re_ = int(track["region_start"].values[i]), int(track["region_end"].values[i])
        z0 = rs if start is None else int(start)
        z1 = min(re_, z0 + ZOOM) if end is None else int(end)
        paths.append(save(plot_track(track, c, genes=genes, pyramid=pyr, start=z0, end=z1),
                          out_dir / f"{group}_{safe}_{z0}-{z1}.png"))
        if html:
            paths.append(track_html(track, c, out_dir / f"{group}_{safe}_{z0}-{z1}.html", genes=genes, pyramid=pyr,
                                    start=z0, end=z1))
    return paths


def _profile_params(bin_size, crop, crop_right, reductions, delta_distance, strand, pad) -> dict:
    """Return the profile / strand / padding options of a genome perturbation (stored with the params)."""
    return dict(bin_size=bin_size, crop=crop, crop_right=crop_right,
                reductions=list(reductions) if reductions else None, delta_distance=delta_distance, strand=strand,
                pad=pad)


def _readout_check(params: dict):
    """Return the output check of a genome perturbation's model (``tasks.genome_perturb.make_readout``)."""
    return make_readout(params["input_length"], params["bin_size"], params["crop"], params["crop_right"],
                        params["reductions"], params["delta_distance"], params["strand"]).check


def run_genome_sweep(fasta, model, store, *, input_length, regions=None, group="genome_sweep", windows=None,
                     stride=1, replicates=1, mode="random", seed=0, inserts=None, context_step=1, bin_size=None,
                     crop=0, crop_right=None, reductions=None, delta_distance=50, strand="+", pad=None,
                     position_chunk=None, client=None, overwrite=False, log=print):
    """Sweep ``model`` along ``fasta`` (or ``regions``) into ``store/group``; return the WriteReport.

    ``bin_size``... ``pad`` as in ``tasks.genome_perturb.genome_sweep`` (profile models, strands,
    contig-end padding).
    """
    ds = read_genome(fasta)
    regions = as_regions(regions) or None
    params = dict(input_length=input_length, regions=[r.label for r in regions] if regions else None,
                  windows=windows, stride=stride, replicates=replicates, mode=mode, seed=seed, inserts=inserts,
                  context_step=context_step,
                  **_profile_params(bin_size, crop, crop_right, reductions, delta_distance, strand, pad))
    res = genome_sweep(ds, model, position_chunk=position_chunk, merge=False, **{**params, "regions": regions})
    return store_result(res, store, group, task="genome_sweep", params=params, model=model, inputs=[fasta],
                        model_digest=check_window_model(model, ds, regions, input_length, check=_readout_check(params)),
                        client=client,
                        overwrite=overwrite, log=log)


def run_genome_ism(fasta, model, store, *, input_length, regions=None, group="genome_ism", context_step=1,
                   bin_size=None, crop=0, crop_right=None, reductions=None, delta_distance=50, strand="+", pad=None,
                   position_chunk=None, client=None, overwrite=False, log=print):
    """Saturation mutagenesis of ``model`` along ``regions`` of ``fasta`` into ``store/group``.

    ``bin_size``... ``pad`` as in ``tasks.genome_perturb.genome_ism``.
    """
    ds = read_genome(fasta)
    regions = as_regions(regions) or None
    params = dict(input_length=input_length, regions=[r.label for r in regions] if regions else None,
                  context_step=context_step,
                  **_profile_params(bin_size, crop, crop_right, reductions, delta_distance, strand, pad))
    res = genome_ism(ds, model, position_chunk=position_chunk, merge=False, **{**params, "regions": regions})
    return store_result(res, store, group, task="genome_ism", params=params, model=model, inputs=[fasta],
                        model_digest=check_window_model(model, ds, regions, input_length, check=_readout_check(params)),
                        client=client,
                        overwrite=overwrite, log=log)


def _as_sequences(ds, names):
    """Return a genome perturbation result shaped for the foundation's figures (rows as ``sequence``).

    ``names`` maps the first stored variable found to the name the figure reads; a ``strand`` dim
    is read on ``+``.
    """
    if "strand" in ds.dims:
        ds = ds.sel(strand="+")
    for old, new in names.items():
        if old in ds.variables:
            return ds.rename({"contig": "sequence", old: new})
    raise ValueError(f"the group holds none of {list(names)}")


def render_genome_sweep(store, group, out_dir, *, sequences=None, markers=None, **_):
    """Draw the sweep of each region (default: the first 4) with the foundation's sweep figure."""
    ds = open_group(store, group)
    value = next(n.removeprefix("genome_sweep_").removesuffix("_mean") for n in ds.data_vars if n.endswith("_mean"))
    ds = _as_sequences(ds, {f"genome_sweep_{value}_mean": "sweep_delta_mean"}).rename(
        {f"genome_sweep_{value}_std": "sweep_delta_std"})
    picks = sequences or [str(s) for s in ds["sequence"].values[:4]]
    return [save(plot_sweep(ds, s, markers=markers), Path(out_dir) / f"{group}_{str(s).replace(':', '_')}.png")
            for s in picks]


def render_genome_ism(store, group, out_dir, *, sequences=None, start=None, end=None, **_):
    """Draw the ISM heatmap of each region (default: the first 4; a profile model's total, else at_edit, else gain)."""
    ds = _as_sequences(open_group(store, group), {f"genome_ism_{v}": "ism_delta" for v in
                                                  ("delta", "profile_total", "profile_at_edit", "delta_gain")})
    picks = sequences or [str(s) for s in ds["sequence"].values[:4]]
    return [save(plot_ism(ds, s, start=start, end=end), Path(out_dir) / f"{group}_{str(s).replace(':', '_')}.png")
            for s in picks]


RENDERERS["tiled_prediction"] = render_tiles
RENDERERS["genome_sweep"] = render_genome_sweep
RENDERERS["genome_ism"] = render_genome_ism


# --- command line ---------------------------------------------------------------------------------------

def _regions_from_args(args):
    regions = list(args.region or [])
    if args.bed:
        regions += as_regions(args.bed)
    return regions or None


def _common(p: argparse.ArgumentParser, group: str) -> None:
    p.add_argument("fasta", help="genome FASTA (plain or .gz), one or many contigs")
    p.add_argument("-o", "--store", required=True, help="output zarr store (created or resumed)")
    p.add_argument("--group", default=group, help=f"group name in the store (default {group})")
    p.add_argument("--region", action="append", default=None,
                   help="contig:start-end (1-based, inclusive) or a contig name; repeatable (default: every contig)")
    p.add_argument("--bed", default=None, help="BED file of regions (0-based, end exclusive)")
    p.add_argument("--position-chunk", type=int, default=None, help="positions (sweep/ISM) or bases (tiles) per task")
    p.add_argument("--overwrite", action="store_true", help="replace a group computed with other parameters")
    add_model_arguments(p)
    add_run_arguments(p)


@cli_command
def _tiles_cmd(args) -> int:
    model = model_from_args(args)

    def job(client=None, log=print):
        return run_tiles(args.fasta, model, args.store, window=args.window, stride=args.stride,
                         regions=_regions_from_args(args), bin_size=args.bin_size, crop=args.crop,
                         crop_right=args.crop_right, strand=args.strand, pad=args.pad, annotation=args.annotation,
                         feature=args.feature, group=args.group, pyramid=not args.no_pyramid,
                         position_chunk=args.position_chunk or (1 << 20), bin_chunk=args.bin_chunk, client=client,
                         overwrite=args.overwrite, log=log)

    if run_command(args, job) and args.figures:
        for p in render_tiles(args.store, args.group, args.figures):
            print(p)
    return 0


def _profile_args(args) -> dict:
    return dict(bin_size=args.bin_size, crop=args.crop, crop_right=args.crop_right, reductions=args.reduction,
                delta_distance=args.delta_distance, strand=args.strand, pad=args.pad)


@cli_command
def _sweep_cmd(args) -> int:
    model = model_from_args(args)
    windows = [int(k) for k in args.windows.split(",")] if args.windows else None
    inserts = args.inserts.split(",") if args.inserts else None

    def job(client=None, log=print):
        return run_genome_sweep(args.fasta, model, args.store, input_length=args.input_length,
                                regions=_regions_from_args(args), group=args.group, windows=windows,
                                stride=args.stride, replicates=args.replicates, mode=args.mode, seed=args.seed,
                                inserts=inserts, context_step=args.context_step, position_chunk=args.position_chunk,
                                client=client, overwrite=args.overwrite, log=log, **_profile_args(args))

    run_command(args, job)
    return 0


@cli_command
def _ism_cmd(args) -> int:
    model = model_from_args(args)

    def job(client=None, log=print):
        return run_genome_ism(args.fasta, model, args.store, input_length=args.input_length,
                              regions=_regions_from_args(args), group=args.group, context_step=args.context_step,
                              position_chunk=args.position_chunk, client=client, overwrite=args.overwrite, log=log,
                              **_profile_args(args))

    run_command(args, job)
    return 0


@cli_command
def _export_cmd(args) -> int:
    if not (args.bedgraph or args.bigwig):
        raise ValueError("export-track needs --bedgraph PATH and/or --bigwig PATH")
    track = open_group(args.store, args.group)
    if args.bedgraph:
        print(export_bedgraph(track, args.bedgraph, target=args.target))
    if args.bigwig:
        sizes = {str(n): int(x) for n, x in track.attrs.get("genome_contigs", [])}
        print(export_bigwig(track, args.bigwig, sizes, target=args.target))
    return 0


def _perturb_arguments(p: argparse.ArgumentParser) -> None:
    """Add the profile-model, strand and padding options of ``genome-sweep`` / ``genome-ism``."""
    p.add_argument("--bin-size", type=int, default=None, help="profile models: bases per output bin")
    p.add_argument("--crop", type=int, default=0, help="profile models: bases cropped at the window start")
    p.add_argument("--crop-right", type=int, default=None, help="profile models: bases cropped at the end (default --crop)")
    p.add_argument("--reduction", action="append", default=None, choices=REDUCTIONS,
                   help="profile models: what to store of each edit, repeatable (default all): at_edit = change at "
                        "the bin covering the edit, total = change of the summed profile, delta_score = SpliceAI "
                        "max gain and max loss within --delta-distance")
    p.add_argument("--delta-distance", type=int, default=50, help="bases either side of the edit for delta_score")
    p.add_argument("--strand", default="+", choices=PERTURB_STRANDS,
                   help="forward, reverse complement (outputs flipped back), or both (a strand dimension)")
    p.add_argument("--pad", default=None, choices=PADS,
                   help="contig ends: N = pad with N so every base has a centred context (default for profile "
                        "models), none = shift the context inward (default for scalar models)")


def register(sub) -> None:
    """Add the ``tiles``, ``genome-sweep``, ``genome-ism`` and ``export-track`` subcommands."""
    p = sub.add_parser("tiles", help="tiled prediction along a genome (track, pyramid, gene starts)")
    _common(p, "tracks")
    p.add_argument("--window", type=int, required=True, help="model input length (bp)")
    p.add_argument("--stride", type=int, default=None, help="step between windows (default window/2)")
    p.add_argument("--bin-size", type=int, default=None, help="profile models: bases per output bin")
    p.add_argument("--crop", type=int, default=0, help="profile models: bases cropped at the window start")
    p.add_argument("--crop-right", type=int, default=None, help="profile models: bases cropped at the end (default --crop)")
    p.add_argument("--strand", default="+", choices=STRANDS,
                   help="forward, reverse complement, both (a strand dimension) or mean (their average: halves a "
                        "stranded model's scores)")
    p.add_argument("--pad", default=None, choices=PADS,
                   help="profile models: N = pad the regions with N so every base gets a prediction (default with "
                        "--crop), none = leave the cropped ends unpredicted")
    p.add_argument("--annotation", default=None,
                   help="GTF / GFF3 / BED / BED12 of genes (format told by content): starts stored and drawn")
    p.add_argument("--feature", default="gene", help="annotation feature type to keep (default gene)")
    p.add_argument("--bin-chunk", type=int, default=None, help="bins per task")
    p.add_argument("--no-pyramid", action="store_true", help="skip the min/max pyramid")
    p.add_argument("--figures", default=None, help="also draw the figures into this folder")
    p.set_defaults(func=_tiles_cmd)

    p = sub.add_parser("genome-sweep", help="perturbation sweep along contigs/regions, in genomic context")
    _common(p, "genome_sweep")
    p.add_argument("--input-length", type=int, required=True, help="model input length (bp)")
    p.add_argument("--windows", default=None, help="comma-separated window sizes (default 1,3,...,15)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--replicates", type=int, default=1)
    p.add_argument("--mode", default="random", choices=MODES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inserts", default=None, help="comma-separated k-mers for --mode insert")
    p.add_argument("--context-step", type=int, default=1, help="positions sharing one context window")
    _perturb_arguments(p)
    p.set_defaults(func=_sweep_cmd)

    p = sub.add_parser("genome-ism", help="saturation mutagenesis along regions, in genomic context")
    _common(p, "genome_ism")
    p.add_argument("--input-length", type=int, required=True, help="model input length (bp)")
    p.add_argument("--context-step", type=int, default=1, help="positions sharing one context window")
    _perturb_arguments(p)
    p.set_defaults(func=_ism_cmd)

    p = sub.add_parser("export-track", help="export a stored track as bedGraph / bigWig")
    p.add_argument("store")
    p.add_argument("--group", default="tracks")
    p.add_argument("--bedgraph", default=None, help="bedGraph path (.gz: gzipped)")
    p.add_argument("--bigwig", default=None, help="bigWig path (needs pyBigWig)")
    p.add_argument("--target", default=None, help="target name or index (default the first)")
    p.set_defaults(func=_export_cmd)


def step_genome(ctx) -> list[Path]:
    """Demo: the promoter model tiled along yeast chromosome I (both strands) with its gene starts.

    200 bp windows every 50 bp (each prediction at its window centre), the mean of the forward and
    reverse-complement predictions; whole-chromosome and 40 kb zoom PNGs, an HTML of the zoom and
    a bedGraph. ``ctx`` is the demo's ``DemoContext``.
    """
    from ..datasets import data_path, demo_model_spec

    fasta, gtf = data_path("yeast_chrI.fna.gz"), data_path("yeast_chrI.gtf.gz")
    run_tiles(fasta, demo_model_spec(batch_size=256), ctx.store, window=200, stride=50, strand="mean",
              annotation=gtf, group="yeast_chrI", bin_chunk=1200, client=ctx.client, overwrite=ctx.overwrite,
              log=ctx.log)
    out = Path(ctx.out) / "figures"
    figs = render_tiles(ctx.store, "yeast_chrI", out, start=130_000, end=170_000)
    figs.append(export_bedgraph(open_group(ctx.store, "yeast_chrI"), out / "yeast_chrI_promoter.bedgraph.gz"))
    return figs


DEMO_TATA = 129_169  # 0-based start of a TATAAA box 100 bp upstream of DEP1 on yeast chrI (NC_001133.9)


def step_genome_profile(ctx) -> list[Path]:
    """Demo: profile-model ISM on yeast chromosome I, the zoo's BPNet-like model planted with TATAAA.

    Every base of the 100 bp ``NC_001133.9:129120-129219`` (1-based) upstream of DEP1 is mutated in
    its 96 bp genomic context; each edit's profile change is reduced on the workers to the change
    at the edited base and to the summed profile (``genome_ism_profile_at_edit`` / ``_total``).
    The TATAAA box at ``DEMO_TATA`` tops the ISM. A few seconds.
    """
    from ..datasets import data_path
    from ..zoo import zoo_spec

    fasta = data_path("yeast_chrI.fna.gz")
    run_genome_ism(fasta, zoo_spec("bpnet_like", motif="TATAAA", crop=16, options={"batch_size": 64}), ctx.store,
                   input_length=96, regions=["NC_001133.9:129120-129219"], group="yeast_tata_ism", bin_size=1,
                   crop=16, reductions=["at_edit", "total"], client=ctx.client, overwrite=ctx.overwrite, log=ctx.log)
    res = open_group(ctx.store, "yeast_tata_ism")
    loss = -res["genome_ism_profile_total"].isel(contig=0, target=0).min("base")
    top = sorted(int(p) for p in loss["position"].values[np.argsort(-loss.values)[:6]])
    ctx.log(f"profile ISM: the 6 bases whose edits lower the profile most: {top} (TATAAA planted in the model, "
            f"found in the genome at {DEMO_TATA}-{DEMO_TATA + 5})")
    return render_genome_ism(ctx.store, "yeast_tata_ism", Path(ctx.out) / "figures", start=DEMO_TATA - 30,
                             end=DEMO_TATA + 36)
