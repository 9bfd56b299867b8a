"""Genome jobs: ``interpretome tiles``, ``genome-sweep``, ``genome-ism`` and ``export-track``.

``tiles`` writes three groups: ``<group>`` (the tiled track, task ``tiled_prediction``),
``<group>_pyramid`` (its min/max pyramid) and, with ``--annotation``, ``<group>_genes`` (the gene
table with strand-aware starts). Renderers draw a whole-contig PNG per contig, and for a zoomed
region (``--start/--end`` of ``interpretome render``, or the first 40 kb) a PNG and an
interactive HTML, with gene starts as red lines.
"""

from __future__ import annotations

from pathlib import Path

from ..storage.annotation import annotation_dataset, genes_from_dataset, read_annotation
from ..storage.export import export_bedgraph, export_bigwig
from ..storage.genome import as_regions, read_genome
from ..storage.store import group_info, list_groups, open_group
from ..tasks.genome_perturb import genome_ism, genome_sweep
from ..tasks.tiles import STRANDS, predict_tiles, track_pyramid
from ..viz.tracks import plot_ism, plot_sweep, save
from ..viz.tracks_long import plot_track, row_index, track_html
from . import check_model_on, input_sample, store_result
from .dna import SWEEP_PARAMS
from .declare import FIGURES, JobKind, Param, draw_figures

ZOOM = 40_000


def check_window_model(model, ds, regions, length: int) -> str:
    """Run ``model`` in-process on one real ``length``-base window of the genome (the first region's
    start, else the first contig's) and return its digest (``jobs.check_model_on``)."""
    def sample():
        names = [str(n) for n in ds["sequence"].values]
        first = regions[0] if regions else None
        row = names.index(first.contig) if first is not None and first.contig in names else 0
        return input_sample(ds, model.input_kind, row=row, start=first.start if first is not None else 0,
                            length=length)

    return check_model_on(model, sample)


def regions_of(regions=None, bed=None) -> list | None:
    """Return the Regions of ``regions`` (contig:start-end strings or Regions) plus those of a ``bed`` file."""
    out = list(as_regions(regions) if regions else [])
    if bed:
        out += as_regions(bed)
    return out or None


def run_tiles(fasta, model, store, *, window, stride=None, regions=None, bed=None, bin_size=None, crop=0,
              crop_right=None, strand="+", annotation=None, feature="gene", group="tracks", pyramid=True,
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
                  bin_size=bin_size, crop=crop, crop_right=crop_right, strand=strand)
    res = predict_tiles(ds, model, window=window, stride=stride, regions=regions, bin_size=bin_size, crop=crop,
                        crop_right=crop_right, strand=strand, bin_chunk=bin_chunk, merge=False)
    res.attrs["genome_contigs"] = [[str(n), int(x)] for n, x in zip(ds["sequence"].values, ds["sequence_length"].values)]
    digest = check_window_model(model, ds, regions, window)
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


def _run_genome_task(task_fn, kind, fasta, model, store, *, input_length, regions, bed, group, position_chunk,
                     client, overwrite, log, params):
    """Run ``genome_sweep`` / ``genome_ism`` (``task_fn``) of ``kind`` along the regions into ``store/group``."""
    ds = read_genome(fasta)
    regions = regions_of(regions, bed)
    params = dict(input_length=input_length, regions=[r.label for r in regions] if regions else None,
                  **kind.task_params(params))
    res = task_fn(ds, model, position_chunk=position_chunk, merge=False, **{**params, "regions": regions})
    return store_result(res, store, group, task=kind.name, params=params, model=model, inputs=[fasta],
                        model_digest=check_window_model(model, ds, regions, input_length), client=client,
                        overwrite=overwrite, log=log)


def run_genome_sweep(fasta, model, store, *, input_length, regions=None, bed=None, group="genome_sweep",
                     position_chunk=None, client=None, overwrite=False, log=print, **params):
    """Sweep ``model`` along ``fasta`` (or ``regions``) into ``store/group``; return the WriteReport.

    ``params``: the task parameters of ``GENOME_SWEEP`` (windows, stride, replicates, ...).
    """
    return _run_genome_task(genome_sweep, GENOME_SWEEP, fasta, model, store, input_length=input_length,
                            regions=regions, bed=bed, group=group, position_chunk=position_chunk, client=client,
                            overwrite=overwrite, log=log, params=params)


def run_genome_ism(fasta, model, store, *, input_length, regions=None, bed=None, group="genome_ism",
                   position_chunk=None, client=None, overwrite=False, log=print, **params):
    """Saturation mutagenesis of ``model`` along ``regions`` of ``fasta`` into ``store/group``."""
    return _run_genome_task(genome_ism, GENOME_ISM, fasta, model, store, input_length=input_length,
                            regions=regions, bed=bed, group=group, position_chunk=position_chunk, client=client,
                            overwrite=overwrite, log=log, params=params)


def _as_sequences(ds, names):
    ds = ds.rename({"contig": "sequence", **{k: v for k, v in names.items() if k in ds.variables}})
    return ds


def render_genome_sweep(store, group, out_dir, *, sequences=None, markers=None, **_):
    """Draw the sweep of each region (default: the first 4) with the foundation's sweep figure."""
    ds = _as_sequences(open_group(store, group), {"genome_sweep_delta_mean": "sweep_delta_mean",
                                                  "genome_sweep_delta_std": "sweep_delta_std"})
    picks = sequences or [str(s) for s in ds["sequence"].values[:4]]
    return [save(plot_sweep(ds, s, markers=markers), Path(out_dir) / f"{group}_{str(s).replace(':', '_')}.png")
            for s in picks]


def render_genome_ism(store, group, out_dir, *, sequences=None, start=None, end=None, **_):
    """Draw the ISM heatmap of each region (default: the first 4)."""
    ds = _as_sequences(open_group(store, group), {"genome_ism_delta": "ism_delta"})
    picks = sequences or [str(s) for s in ds["sequence"].values[:4]]
    return [save(plot_ism(ds, s, start=start, end=end), Path(out_dir) / f"{group}_{str(s).replace(':', '_')}.png")
            for s in picks]


# --- declarations -----------------------------------------------------------------------------------

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


def register(sub) -> None:
    """Add the ``export-track`` subcommand (the compute subcommands are generated from ``KINDS``)."""
    p = sub.add_parser("export-track", help="export a stored track as bedGraph / bigWig")
    p.add_argument("store")
    p.add_argument("--group", default="tracks")
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

TILES = JobKind(
    "tiles", run_tiles, group="tracks", finish=draw_figures(render_tiles),
    doc="tiled prediction along a genome (track, min/max pyramid, gene starts)", params=(
        GENOME,
        Param("window", "int", required=True, doc="model input length (bp)"),
        Param("stride", "int", None, doc="step between windows (default window/2)"),
        *REGIONS,
        Param("bin_size", "int", None, doc="profile models: bases per output bin"),
        Param("crop", "int", 0, doc="profile models: bases cropped at the window start"),
        Param("crop_right", "int", None, doc="profile models: bases cropped at the end (default crop)"),
        Param("strand", "str", "+", choices=tuple(STRANDS), doc="forward, reverse complement, or their mean"),
        Param("annotation", "str", None, file=True, doc="GTF / GFF3 / BED of genes: starts stored and drawn"),
        Param("feature", "str", "gene", doc="annotation feature type to keep"),
        Param("pyramid", "bool", True, doc="also store the min/max pyramid"),
        Param("position_chunk", "int", 1 << 20, doc="bases per task"),
        Param("bin_chunk", "int", None, doc="bins per task"),
        FIGURES,
    ))

GENOME_SWEEP = JobKind(
    "genome_sweep", run_genome_sweep, group="genome_sweep",
    doc="perturbation sweep along contigs/regions, in genomic context", params=(
        GENOME, INPUT_LENGTH, *REGIONS, *SWEEP_PARAMS, CONTEXT_STEP, POSITIONS,
    ))

GENOME_ISM = JobKind(
    "genome_ism", run_genome_ism, group="genome_ism",
    doc="saturation mutagenesis along regions, in genomic context", params=(
        GENOME, INPUT_LENGTH, *REGIONS, CONTEXT_STEP, POSITIONS,
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
    run_tiles(fasta, demo_model_spec(batch_size=256), ctx.store, window=200, stride=50, strand="both",
              annotation=gtf, group="yeast_chrI", bin_chunk=1200, client=ctx.client, overwrite=ctx.overwrite,
              log=ctx.log)
    out = Path(ctx.out) / "figures"
    figs = render_tiles(ctx.store, "yeast_chrI", out, start=130_000, end=170_000)
    figs.append(export_bedgraph(open_group(ctx.store, "yeast_chrI"), out / "yeast_chrI_promoter.bedgraph.gz"))
    return figs
