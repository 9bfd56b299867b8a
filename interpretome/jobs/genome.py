"""Genome jobs: ``interpretome tiles``, ``genome-sweep``, ``genome-ism`` and ``export-track``.

``tiles`` writes three groups: ``<group>`` (the tiled track, task ``tiled_prediction``),
``<group>_pyramid`` (its min/max pyramid) and, with ``--annotation``, ``<group>_genes`` (the gene
table with strand-aware starts) and, when the annotation has exons (BED12 blocks, GTF / GFF3
``exon`` rows), ``<group>_exons``. Renderers draw a whole-contig PNG per contig, and for a zoomed
region (``--start/--end`` of ``interpretome render``, or the first 40 kb) a PNG and an
interactive HTML, with gene starts as red lines and exons as thin boxes on the gene track.
``--strand auto`` (tiles, genome-sweep, genome-ism) runs each region on the strand of the genes of
``--annotation`` it overlaps (or its BED strand column).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..engine.models import get_runtime
from ..storage.annotation import annotation_dataset, genes_from_dataset, read_annotation, read_exons
from ..storage.export import export_bedgraph, export_bigwig
from ..storage.genome import TrackGeometry, as_regions, read_genome
from ..storage.schema import CODE_N
from ..storage.store import decoded_attr, group_info, list_groups, open_group
from ..tasks.genome_perturb import PADS, genome_ism, genome_sweep
from ..tasks.genome_perturb import STRANDS as PERTURB_STRANDS
from ..tasks.genome_readout import REDUCTIONS, make_readout
from ..tasks.tiles import STRANDS, check_output, predict_tiles, track_pyramid
from ..viz.tracks import plot_ism, plot_sweep, save
from ..viz.tracks_long import plot_track, row_index, track_html
from . import check_model_on, input_sample, store_result
from .dna import SWEEP_PARAMS
from .declare import DNA_INPUT_KINDS, FIGURES, JobKind, Param, draw_figures

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


def regions_of(regions=None, bed=None) -> list | None:
    """Return the Regions of ``regions`` (contig:start-end strings or Regions) plus those of a ``bed`` file."""
    out = list(as_regions(regions) if regions else [])
    if bed:
        out += as_regions(bed)
    return out or None


def run_tiles(fasta, model, store, *, window, stride=None, regions=None, bed=None, bin_size=None, crop=0,
              crop_right=None, strand="+", pad=None, annotation=None, feature="gene", group="tracks", pyramid=True,
              position_chunk=1 << 20, bin_chunk=None, client=None, overwrite=False, log=print) -> dict:
    """Tile ``model`` along ``fasta`` (or ``regions``, plus those of ``bed``) into ``store/group``
    (+ pyramid, + genes).

    Every input is read and checked (genome index, regions, annotation, tiling parameters) before
    any model runs. Returns ``{group name: WriteReport}``.
    """
    ds = read_genome(fasta, position_chunk=position_chunk)
    genes = read_annotation(annotation, feature=feature) if annotation else None
    regions = regions_of(regions, bed)
    params = dict(window=window, stride=stride, regions=[r.label for r in regions] if regions else None,
                  bin_size=bin_size, crop=crop, crop_right=crop_right, strand=strand, pad=pad)
    res = predict_tiles(ds, model, window=window, stride=stride, regions=regions, bin_size=bin_size, crop=crop,
                        crop_right=crop_right, strand=strand, annotation=genes if strand == "auto" else None, pad=pad,
                        bin_chunk=bin_chunk, merge=False)
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
        exons = read_exons(annotation)
        if exons is not None:
            params["exons_group"] = f"{group}_exons"
            reports[f"{group}_exons"] = store_result(annotation_dataset(exons), store, f"{group}_exons",
                                                     task="gene_annotation", params={"feature": "exon"},
                                                     inputs=[annotation], overwrite=overwrite, log=log)
    inputs = [fasta] + ([p for p in (bed, annotation) if p] if strand == "auto" else [])  # auto reads their strands
    reports[group] = store_result(res, store, group, task="tiled_prediction", params=params, model=model,
                                  model_digest=digest, inputs=inputs, client=client, overwrite=overwrite, log=log)
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


def load_exons(store, group):
    """Return the exon table (``storage.annotation.COLUMNS``) stored with a tiled-prediction group, or None."""
    exons_group = (group_info(store, group).get("params") or {}).get("exons_group")
    return genes_from_dataset(open_group(store, exons_group).load()) if exons_group in list_groups(store) else None


def render_tiles(store, group, out_dir, *, sequences=None, start=None, end=None, html=True, **_) -> list[Path]:
    """Draw each contig of a track (default: the first 4) whole, zoomed (PNG) and as HTML."""
    track, pyr, genes = load_track(store, group)
    exons = load_exons(store, group)
    out_dir = Path(out_dir)
    labels = [str(c) for c in track["contig"].values]
    picks = sequences or labels[:4]
    paths = []
    for c in picks:
        safe = str(c).replace(":", "_").replace("/", "_")
        paths.append(save(plot_track(track, c, genes=genes, exons=exons, pyramid=pyr), out_dir / f"{group}_{safe}.png"))
        i = row_index(track, c)
        rs, re_ = int(track["region_start"].values[i]), int(track["region_end"].values[i])
        z0 = rs if start is None else int(start)
        z1 = min(re_, z0 + ZOOM) if end is None else int(end)
        paths.append(save(plot_track(track, c, genes=genes, exons=exons, pyramid=pyr, start=z0, end=z1),
                          out_dir / f"{group}_{safe}_{z0}-{z1}.png"))
        if html:
            paths.append(track_html(track, c, out_dir / f"{group}_{safe}_{z0}-{z1}.html", genes=genes, exons=exons,
                                    pyramid=pyr, start=z0, end=z1))
    return paths


def _run_genome_task(task_fn, kind, fasta, model, store, *, input_length, regions, bed, group, position_chunk,
                     client, overwrite, log, params):
    """Run ``genome_sweep`` / ``genome_ism`` (``task_fn``) of ``kind`` along the regions into ``store/group``."""
    ds = read_genome(fasta)
    regions = regions_of(regions, bed)
    params = dict(input_length=input_length, regions=[r.label for r in regions] if regions else None,
                  **kind.task_params(params))
    res = task_fn(ds, model, position_chunk=position_chunk, merge=False, **{**params, "regions": regions})
    readout = make_readout(input_length, params["bin_size"], params["crop"], params["crop_right"],
                           params["reductions"], params["delta_distance"],
                           "+" if params["strand"] == "auto" else params["strand"])  # the shape check only
    inputs = [fasta] + ([p for p in (bed, params.get("annotation")) if p] if params["strand"] == "auto" else [])
    return store_result(res, store, group, task=kind.name, params=params, model=model, inputs=inputs,
                        model_digest=check_window_model(model, ds, regions, input_length, check=readout.check),
                        client=client, overwrite=overwrite, log=log)


def run_genome_sweep(fasta, model, store, *, input_length, regions=None, bed=None, group="genome_sweep",
                     position_chunk=None, client=None, overwrite=False, log=print, **params):
    """Sweep ``model`` along ``fasta`` (or ``regions``) into ``store/group``; return the WriteReport.

    ``params``: the task parameters of ``GENOME_SWEEP`` (windows, stride, replicates, ..., and the
    profile / strand / padding options ``bin_size`` ... ``pad`` of ``tasks.genome_perturb.genome_sweep``).
    """
    return _run_genome_task(genome_sweep, GENOME_SWEEP, fasta, model, store, input_length=input_length,
                            regions=regions, bed=bed, group=group, position_chunk=position_chunk, client=client,
                            overwrite=overwrite, log=log, params=params)


def run_genome_ism(fasta, model, store, *, input_length, regions=None, bed=None, group="genome_ism",
                   position_chunk=None, client=None, overwrite=False, log=print, **params):
    """Saturation mutagenesis of ``model`` along ``regions`` of ``fasta`` into ``store/group``.

    ``params``: the task parameters of ``GENOME_ISM`` (``context_step`` and ``bin_size`` ... ``pad``
    as in ``tasks.genome_perturb.genome_ism``).
    """
    return _run_genome_task(genome_ism, GENOME_ISM, fasta, model, store, input_length=input_length,
                            regions=regions, bed=bed, group=group, position_chunk=position_chunk, client=client,
                            overwrite=overwrite, log=log, params=params)


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


# --- declarations -----------------------------------------------------------------------------------

def _export_cmd(args) -> int:
    if not (args.bedgraph or args.bigwig):
        raise ValueError("export-track needs --bedgraph PATH and/or --bigwig PATH")
    from . import announce

    track = open_group(args.store, args.group)
    written = []
    if args.bedgraph:
        written.append(str(export_bedgraph(track, args.bedgraph, target=args.target)))
    if args.bigwig:
        sizes = {str(n): int(x) for n, x in decoded_attr(track.attrs, "genome_contigs", [])}
        written.append(str(export_bigwig(track, args.bigwig, sizes, target=args.target)))
    announce(f"results: {', '.join(written)} (load in a genome browser, e.g. IGV or the UCSC browser)")
    return 0


def register(sub) -> None:
    """Add the ``export-track`` subcommand (the compute subcommands are generated from ``KINDS``)."""
    text = "export a stored track as bedGraph / bigWig"
    p = sub.add_parser("export-track", help=text, description=text[:1].upper() + text[1:] + ".")
    p.add_argument("store", help="a zarr store holding a tiles group")
    p.add_argument("--group", default="tracks", help="the tiles group")
    p.add_argument("--bedgraph", default=None, help="bedGraph path (.gz: gzipped)")
    p.add_argument("--bigwig", default=None, help="bigWig path (needs pyBigWig)")
    p.add_argument("--target", default=None, help="target name or index (default the first)")
    p.set_defaults(func=_export_cmd)


GENOME = Param("fasta", "str", required=True, file=True, cli="fasta",
               doc="genome FASTA (plain or .gz), one or many contigs")
INPUT_LENGTH = Param("input_length", "int", required=True, doc="model input length (bp)")
REGIONS = (
    Param("regions", "list[str]", None, cli="--region", repeat=True,
          doc="contig:start-end (1-based, inclusive) or a contig name (default: every contig)"),
    Param("bed", "str", None, file=True, doc="BED file of regions (0-based, end exclusive)"),
)
CONTEXT_STEP = Param("context_step", "int", 1, task=True, doc="positions sharing one context window")
POSITIONS = Param("position_chunk", "int", None, doc="positions per task")
PROFILE = (
    Param("bin_size", "int", None, doc="profile models: bases per output bin"),
    Param("crop", "int", 0, doc="profile models: bases cropped at the window start"),
    Param("crop_right", "int", None, doc="profile models: bases cropped at the end (default --crop)"),
)
"""A profile model's output geometry, declared once for ``tiles`` (``run_tiles`` keywords) and the
genome perturbations (there forwarded to the task: ``task=True``)."""
PERTURB_OPTIONS = (
    *(replace(p, task=True) for p in PROFILE),
    Param("reductions", "list[str]", None, task=True, cli="--reduction", repeat=True, choices=REDUCTIONS,
          doc="profile models: what to store of each edit, repeatable (default all): at_edit = change at the bin "
              "covering the edit, total = change of the summed profile, delta_score = SpliceAI max gain and max "
              "loss within --delta-distance"),
    Param("delta_distance", "int", 50, task=True, doc="bases either side of the edit for delta_score"),
    Param("strand", "str", "+", task=True, choices=PERTURB_STRANDS,
          doc="forward, reverse complement (outputs flipped back), both (a strand dimension), or auto: each region "
              "on the strand of the --annotation genes it overlaps (or its BED strand column)"),
    Param("annotation", "str", None, task=True, file=True,
          doc="--strand auto: GTF / GFF3 / BED / BED12 of genes whose strands the regions take"),
    Param("pad", "str", None, task=True, choices=PADS,
          doc="contig ends: N = pad with N so every base has a centred context (default for profile models), "
              "none = shift the context inward (default for scalar models)"),
)
"""The profile-model, strand and padding options of ``genome_sweep`` / ``genome_ism``."""

TILES = JobKind(
    "tiles", run_tiles, input_kinds=DNA_INPUT_KINDS, group="tracks", finish=draw_figures(render_tiles),
    doc="tiled prediction along a genome (track, min/max pyramid, gene starts)", params=(
        GENOME,
        Param("window", "int", required=True, doc="model input length (bp)"),
        Param("stride", "int", None, doc="step between windows (default window/2)"),
        *REGIONS,
        *PROFILE,
        Param("strand", "str", "+", choices=tuple(STRANDS),
              doc="forward, reverse complement, both (a strand dimension), mean (their average: halves a "
                  "stranded model's scores) or auto (each region on the strand of the --annotation genes it "
                  "overlaps, or its BED strand column)"),
        Param("pad", "str", None, choices=PADS,
              doc="profile models: N = pad the regions with N so every base gets a prediction (default with "
                  "--crop), none = leave the cropped ends unpredicted"),
        Param("annotation", "str", None, file=True,
              doc="GTF / GFF3 / BED / BED12 of genes (format told by content): starts stored and drawn"),
        Param("feature", "str", "gene", doc="annotation feature type to keep"),
        Param("pyramid", "bool", True, doc="also store the min/max pyramid"),
        Param("position_chunk", "int", 1 << 20, doc="bases per task"),
        Param("bin_chunk", "int", None, doc="bins per task"),
        FIGURES,
    ))

GENOME_SWEEP = JobKind(
    "genome_sweep", run_genome_sweep, input_kinds=DNA_INPUT_KINDS, group="genome_sweep",
    doc="perturbation sweep along contigs/regions, in genomic context", params=(
        GENOME, INPUT_LENGTH, *REGIONS, *SWEEP_PARAMS, CONTEXT_STEP, *PERTURB_OPTIONS, POSITIONS,
    ))

GENOME_ISM = JobKind(
    "genome_ism", run_genome_ism, input_kinds=DNA_INPUT_KINDS, group="genome_ism",
    doc="saturation mutagenesis along regions, in genomic context", params=(
        GENOME, INPUT_LENGTH, *REGIONS, CONTEXT_STEP, *PERTURB_OPTIONS, POSITIONS,
    ))

KINDS = (TILES, GENOME_SWEEP, GENOME_ISM)
RENDERERS = {"tiled_prediction": render_tiles, "genome_sweep": render_genome_sweep, "genome_ism": render_genome_ism}


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
