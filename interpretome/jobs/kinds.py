"""The job kinds of the other analysis families, for ``interpretome run`` (see ``jobs.runner``).

Each kind's runner here is a thin adapter: it reads the step's inputs the way that family's own
subcommand does (with that family's readers) and calls its ``run_*`` function, unchanged. A
family whose module is not installed is simply not registered.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .runner import JobKind, Param, register_kind


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _choices(module: str, name: str, fallback: tuple) -> tuple:
    try:
        return tuple(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError):
        return fallback


def _regions(regions, bed):
    """Return the regions of a step: ``regions`` (contig:start-end strings) plus those of ``bed``."""
    from ..storage.genome import as_regions

    out = list(regions or [])
    if bed:
        out += as_regions(bed)
    return out or None


_REGION_PARAMS = (
    Param("regions", "list[str]", None, doc="contig:start-end (1-based, inclusive) or contig names (default: all)"),
    Param("bed", "str", None, file=True, doc="BED file of regions (0-based, end exclusive)"),
)


# --- long sequences (issue 3): tiles, genome_sweep, genome_ism ---------------------------------------

def run_tiles_step(*, fasta, model, store, group, window, stride=None, regions=None, bed=None, bin_size=None,
                   crop=0, crop_right=None, strand="+", annotation=None, feature="gene", pyramid=True,
                   position_chunk=1 << 20, bin_chunk=None, client=None, overwrite=False, log=print):
    """Job adapter of ``jobs.genome.run_tiles`` (regions and a BED file merged as its CLI does)."""
    from .genome import run_tiles

    return run_tiles(fasta, model, store, window=window, stride=stride, regions=_regions(regions, bed),
                     bin_size=bin_size, crop=crop, crop_right=crop_right, strand=strand, annotation=annotation,
                     feature=feature, group=group, pyramid=pyramid, position_chunk=position_chunk,
                     bin_chunk=bin_chunk, client=client, overwrite=overwrite, log=log)


def run_genome_sweep_step(*, fasta, model, store, group, input_length, regions=None, bed=None, windows=None,
                          stride=1, replicates=1, mode="random", seed=0, inserts=None, context_step=1,
                          position_chunk=None, client=None, overwrite=False, log=print):
    """Job adapter of ``jobs.genome.run_genome_sweep``."""
    from .genome import run_genome_sweep

    return run_genome_sweep(fasta, model, store, input_length=input_length, regions=_regions(regions, bed),
                            group=group, windows=windows, stride=stride, replicates=replicates, mode=mode,
                            seed=seed, inserts=inserts, context_step=context_step, position_chunk=position_chunk,
                            client=client, overwrite=overwrite, log=log)


def run_genome_ism_step(*, fasta, model, store, group, input_length, regions=None, bed=None, context_step=1,
                        position_chunk=None, client=None, overwrite=False, log=print):
    """Job adapter of ``jobs.genome.run_genome_ism``."""
    from .genome import run_genome_ism

    return run_genome_ism(fasta, model, store, input_length=input_length, regions=_regions(regions, bed),
                          group=group, context_step=context_step, position_chunk=position_chunk, client=client,
                          overwrite=overwrite, log=log)


if _have("interpretome.jobs.genome"):
    _STRANDS = _choices("interpretome.tasks.tiles", "STRANDS", ("+", "-", "both"))
    _MODES = _choices("interpretome.tasks.perturb", "MODES", ("random", "shuffle", "insert", "mask"))
    register_kind(JobKind(
        "tiles", "interpretome.jobs.kinds:run_tiles_step", group="tracks",
        doc="tiled prediction along a genome (track, min/max pyramid, gene starts)", params=(
            Param("fasta", "str", required=True, file=True, doc="genome FASTA, one or many contigs"),
            Param("window", "int", required=True, doc="model input length (bp)"),
            Param("stride", "int", None, doc="step between windows (default window/2)"),
            *_REGION_PARAMS,
            Param("bin_size", "int", None, doc="profile models: bases per output bin"),
            Param("crop", "int", 0, doc="profile models: bases cropped at the window start"),
            Param("crop_right", "int", None, doc="profile models: bases cropped at the end (default crop)"),
            Param("strand", "str", "+", choices=_STRANDS, doc="forward, reverse complement, or their mean"),
            Param("annotation", "str", None, file=True, doc="GTF / GFF3 / BED of genes: starts stored and drawn"),
            Param("feature", "str", "gene", doc="annotation feature type to keep"),
            Param("pyramid", "bool", True, doc="also store the min/max pyramid"),
            Param("position_chunk", "int", 1 << 20, doc="bases per task"),
            Param("bin_chunk", "int", None, doc="bins per task"),
        )))
    register_kind(JobKind(
        "genome_sweep", "interpretome.jobs.kinds:run_genome_sweep_step", group="genome_sweep",
        doc="perturbation sweep along contigs/regions, in genomic context", params=(
            Param("fasta", "str", required=True, file=True, doc="genome FASTA"),
            Param("input_length", "int", required=True, doc="model input length (bp)"),
            *_REGION_PARAMS,
            Param("windows", "list[int]", None, doc="window sizes k (default 1,3,...,15)"),
            Param("stride", "int", 1), Param("replicates", "int", 1),
            Param("mode", "str", "random", choices=_MODES), Param("seed", "int", 0),
            Param("inserts", "list[str]", None, doc="k-mers to insert (mode = 'insert')"),
            Param("context_step", "int", 1, doc="positions sharing one context window"),
            Param("position_chunk", "int", None, doc="positions per task"),
        )))
    register_kind(JobKind(
        "genome_ism", "interpretome.jobs.kinds:run_genome_ism_step", group="genome_ism",
        doc="saturation mutagenesis along regions, in genomic context", params=(
            Param("fasta", "str", required=True, file=True, doc="genome FASTA"),
            Param("input_length", "int", required=True, doc="model input length (bp)"),
            *_REGION_PARAMS,
            Param("context_step", "int", 1, doc="positions sharing one context window"),
            Param("position_chunk", "int", None, doc="positions per task"),
        )))


# --- attributions (issue 4) ---------------------------------------------------------------------------

def run_attribute_step(*, input, model, store, group, method="integrated_gradients", target="predicted",
                       baseline="zero", n_steps=50, ig_method="gausslegendre", internal_batch_size=None,
                       background=100, seed=0, nsamples=200, local_smoothing=0.0, layer=None, layer_in_file=None,
                       by=None, sample_chunk=256, fastshap_train=2000, fastshap_epochs=200, export=None, client=None,
                       overwrite=False, log=print):
    """Job adapter of ``jobs.attribution.run_attribute`` (a baseline .npy file is loaded as its CLI does;
    ``export`` writes the summary table, as ``--export`` does)."""
    import numpy as np

    from .attribution import run_attribute

    if baseline not in ("zero", "mean"):
        baseline = np.load(baseline, allow_pickle=False)
    fs = dict(n_train=fastshap_train, epochs=fastshap_epochs) if method == "fastshap" else None
    reports = run_attribute(input, model, store, group=group, method=method, target=target, baseline=baseline,
                            n_steps=n_steps, ig_method=ig_method, internal_batch_size=internal_batch_size,
                            background=background, seed=seed, nsamples=nsamples, local_smoothing=local_smoothing,
                            layer=layer, obs_layer=layer_in_file, sample_chunk=sample_chunk, by=by,
                            fastshap_options=fs, client=client, overwrite=overwrite, log=log)
    if export:
        from ..storage.attribution_export import export_attributions
        from ..storage.store import open_group

        log(f"wrote {export_attributions(open_group(store, f'{group}_summary'), export)}")
    return reports


if _have("interpretome.jobs.attribution"):
    register_kind(JobKind(
        "attribute", "interpretome.jobs.kinds:run_attribute_step", group="attributions",
        doc="Integrated Gradients / SHAP / FastSHAP attributions over many samples (+ per-group summary)",
        lazy=lambda p: p.get("method") != "fastshap", params=(
            Param("input", "str", required=True, file=True,
                  doc="AnnData .h5ad (dense model), .npy/zarr images, or FASTA (DNA); [model] input_kind says which"),
            Param("method", "str", "integrated_gradients",
                  choices=("integrated_gradients", "ig", "gradient_shap", "deep_shap", "fastshap")),
            Param("target", "str|int|list[str]|list[int]", "predicted",
                  doc="'predicted', 'all', a class name/index or a list"),
            Param("baseline", "str", "zero", doc="IG baseline: zero, mean, or a .npy file of one sample's input"),
            Param("n_steps", "int", 50), Param("ig_method", "str", "gausslegendre"),
            Param("internal_batch_size", "int", None, doc="(sample, step) rows per model call"),
            Param("background", "int", 100, doc="SHAP background samples"),
            Param("seed", "int", 0), Param("nsamples", "int", 200, doc="GradientExplainer samples"),
            Param("local_smoothing", "float", 0.0),
            Param("layer", "str", None, doc="k-mer models: attribute path of the embedding layer"),
            Param("layer_in_file", "str", None, doc="AnnData layer to read instead of X"),
            Param("by", "str", None, doc="obs column to summarise by (e.g. bulk_labels)"),
            Param("sample_chunk", "int", 256, doc="samples per task"),
            Param("fastshap_train", "int", 2000), Param("fastshap_epochs", "int", 200),
            Param("export", "str", None, output=True, doc="write the summary table (.tsv/.csv/.parquet)"),
        )))


# --- embeddings and clustering scores (issue 5) --------------------------------------------------------

def _embedding_input(input, store, *, model=None, layer=None, kmer_bases=1, obsm="X_pca", label=None, batch=None,
                     columns=(), group_in=None, variable=None, array=None, trust_pickle=False, item_chunk=10_000,
                     filter_column=None, filter_max=None, argmax=None, log=print):
    from .embedding import load_input

    if input is None and model is None and group_in is None:
        raise ValueError("an embed step needs input = 'file', group_in = 'a group of this job's store', "
                         "or from_model = true (the [model]'s nn.Embedding)")
    path = input if input is not None else (None if model is not None else store)
    return load_input(path, model=model, layer=layer, kmer_bases=kmer_bases, obsm=obsm, label=label, batch=batch,
                      columns=list(columns or ()), group=group_in, variable=variable, array=array,
                      trust_pickle=trust_pickle, chunk=item_chunk, filter_column=filter_column,
                      filter_max=filter_max, argmax=argmax, log=log)


def run_embed_step(*, store, group, input=None, group_in=None, variable=None, array=None, obsm="X_pca", label=None,
                   batch=None, columns=None, trust_pickle=False, item_chunk=10_000, from_model=False, model=None,
                   layer=None, kmer_bases=1, filter_column=None, filter_max=None, argmax=None, method="umap",
                   n_components=2, seed=0, fit_size=100_000, backend="auto", reducer=None, neighbors=None,
                   perplexity=None, client=None, overwrite=False, log=print):
    """Job adapter of ``jobs.embedding.run_embed`` (input read by its ``load_input``)."""
    from .embedding import run_embed

    if from_model and model is None:
        raise ValueError("from_model = true needs a [model] (its nn.Embedding is embedded)")
    params = dict(reducer or {})
    if neighbors is not None:
        params["n_neighbors"] = neighbors
    if perplexity is not None:
        params["perplexity"] = perplexity
    ds, inputs = _embedding_input(input, store, model=model if from_model else None, layer=layer,
                                  kmer_bases=kmer_bases, obsm=obsm, label=label, batch=batch, columns=columns,
                                  group_in=group_in, variable=variable, array=array, trust_pickle=trust_pickle,
                                  item_chunk=item_chunk, filter_column=filter_column, filter_max=filter_max,
                                  argmax=argmax, log=log)
    return run_embed(ds, store, group=group, method=method, n_components=n_components, seed=seed,
                     fit_size=fit_size, item_chunk=item_chunk, backend=backend, params=params, inputs=inputs,
                     client=client, overwrite=overwrite, log=log)


def run_scores_step(*, store, group, inputs, names=None, out=None, group_in=None, variable=None, array=None,
                    obsm="X_pca", label=None, batch=None, trust_pickle=False, item_chunk=10_000,
                    convention="sklearn", metric="euclidean", sample_size=None, seed=0, block=2048, umap=True,
                    client=None, overwrite=False, log=print):
    """Job adapter of ``jobs.embedding.run_scores``: one input per fold; tables into ``out``."""
    from .embedding import run_scores

    names = list(names) if names else [Path(p).stem for p in inputs]
    if len(names) != len(inputs):
        raise ValueError(f"names has {len(names)} names for {len(inputs)} inputs: give one name per input")
    if len(set(names)) != len(names):
        raise ValueError(f"fold names {names} repeat: give distinct names")
    folds = {}
    for name, path in zip(names, inputs):
        folds[name] = _embedding_input(path, store, obsm=obsm, label=label, batch=batch, group_in=group_in,
                                       variable=variable, array=array, trust_pickle=trust_pickle,
                                       item_chunk=item_chunk, log=log)
    out = out or str(Path(store).with_suffix("")) + "_scores"
    table, summary, extremes, paths = run_scores(
        folds, store, out, batch="item_batch" if batch else None, convention=convention, metric=metric,
        sample_size=sample_size, seed=seed, block=block, umap=umap, client=client, overwrite=overwrite, log=log)
    log(summary.to_string(index=False))
    log(f"scores: tables in {out}")
    return None


_EMBED_INPUT = (
    Param("group_in", "str", None, step=True, doc="a group of an interpretome store input (of this job's store when "
                                                  "input is omitted: the step then runs after the step writing it)"),
    Param("variable", "str", None, doc="variable of a store input, e.g. attribution"),
    Param("array", "str", None, doc="array inside a zarr group input"),
    Param("obsm", "str", "X_pca", doc="AnnData .obsm key to embed, or X"),
    Param("label", "str", None, doc="AnnData obs column: categorical label (item_label)"),
    Param("batch", "str", None, doc="AnnData obs column: batch (item_batch)"),
    Param("trust_pickle", "bool", False, doc="allow a pickled DataFrame input (runs code from the file)"),
    Param("item_chunk", "int", 10_000, doc="items per task"),
)

if _have("interpretome.jobs.embedding"):
    _METHODS = _choices("interpretome.tasks.embed", "METHODS", ("umap", "tsne", "pca"))
    _BACKENDS = _choices("interpretome.tasks.embed", "BACKENDS", ("auto", "cpu", "gpu"))
    _CONVENTIONS = _choices("interpretome.tasks.scores", "CONVENTIONS", ("sklearn", "scib"))
    register_kind(JobKind(
        "embed", "interpretome.jobs.kinds:run_embed_step", group="embedding", model="optional", lazy=False,
        doc="UMAP / t-SNE / PCA of item vectors (h5ad, npy, zarr, a store group, a model's nn.Embedding)", params=(
            Param("input", "str", None, file=True, doc="input file (.h5ad, .npy, zarr, store, .pkl)"),
            *_EMBED_INPUT,
            Param("columns", "list[str]", None, doc="other obs columns to keep"),
            Param("from_model", "bool", False, doc="embed the [model]'s nn.Embedding instead of an input"),
            Param("layer", "str", None, doc="name of the nn.Embedding module (default: the only one)"),
            Param("kmer_bases", "int", 1, doc="label k-mers by their first N bases"),
            Param("filter_column", "str", None, doc="background filter on this annotation column"),
            Param("filter_max", "float", None, doc="keep items with filter_column <= this (default 0.005)"),
            Param("argmax", "list[str]", None, doc="annotation columns: label = the largest"),
            Param("method", "str", "umap", choices=_METHODS),
            Param("n_components", "int", 2), Param("seed", "int", 0),
            Param("fit_size", "int", 100_000, doc="fit on this many items (seeded), transform the rest"),
            Param("backend", "str", "auto", choices=_BACKENDS, doc="cpu, gpu (cuML) or auto"),
            Param("reducer", "table", None, doc="keyword arguments for the reducer"),
            Param("neighbors", "int", None, doc="UMAP n_neighbors"),
            Param("perplexity", "float", None, doc="t-SNE perplexity"),
        )))
    register_kind(JobKind(
        "scores", "interpretome.jobs.kinds:run_scores_step", group="scores", model=False, lazy=False,
        fixed_group=True, depends=("embed",),
        doc="clustering scores (ASW, Davies-Bouldin, Calinski-Harabasz) across folds; groups scores, scores_<fold>",
        params=(
            Param("inputs", "list[str]", required=True, file=True, doc="one embedding input per fold"),
            Param("names", "list[str]", None, doc="fold names (default: file stems)"),
            Param("out", "str", None, output=True, doc="folder for tables, UMAP CSVs and PNGs (default STORE_scores)"),
            *_EMBED_INPUT,
            Param("convention", "str", "sklearn", choices=_CONVENTIONS),
            Param("metric", "str", "euclidean", choices=("euclidean", "cosine")),
            Param("sample_size", "int", None, doc="score a seeded subsample of this many items"),
            Param("seed", "int", 0), Param("block", "int", 2048, doc="items per side of a distance tile"),
            Param("umap", "bool", True, doc="per fold UMAP CSV and PNGs"),
        )))


# --- coefficients and CCC (issue 6) --------------------------------------------------------------------

def run_coefficients_step(*, store, group, inputs, tsv=None, n_perms=0, seed=0, class_col="class",
                          feature_col="feature", value_col="coefficient", trust_pickle=False, client=None,
                          overwrite=False, log=print):
    """Job adapter of ``jobs.coefficients.run_coefficients`` (inputs parsed and read as its CLI does)."""
    from ..storage.coef_io import combine_coefficients, read_coefficients
    from .coefficients import parse_input, run_coefficients

    parts, paths = [], []
    for spec in inputs:
        meta, path = parse_input(spec)
        parts.append(read_coefficients(path, trust_pickle=trust_pickle, class_col=class_col, feature_col=feature_col,
                                       value_col=value_col, **meta))
        paths.append(path)
    tsv = tsv or str(Path(store).with_suffix("")) + "_correlations.tsv"
    return run_coefficients(combine_coefficients(parts), store, group=group, n_perms=n_perms, seed=seed, tsv=tsv,
                            inputs=paths, client=client, overwrite=overwrite, log=log)


def run_ccc_step(*, store, group, matrix, transpose=False, var=None, form="square", feature_chunk=None, n_perms=0,
                 seed=0, client=None, overwrite=False, log=print):
    """Job adapter of ``jobs.coefficients.run_ccc`` (the matrix read by its ``read_matrix``)."""
    from .coefficients import read_matrix, run_ccc

    ds = read_matrix(matrix, transpose=transpose, var=var)
    return run_ccc(ds, store, group=group, form=form, feature_chunk=feature_chunk, n_perms=n_perms, seed=seed,
                   inputs=[matrix] if Path(matrix).is_file() else [], client=client, overwrite=overwrite, log=log)


if _have("interpretome.jobs.coefficients"):
    register_kind(JobKind(
        "coefficients", "interpretome.jobs.kinds:run_coefficients_step", group="coefficients", model=False,
        doc="multi-class vs one-vs-rest coefficient maps and per-class Pearson/Spearman/CCC", params=(
            Param("inputs", "list[str]", required=True, file="=",
                  doc="KIND:MODEL:FEATURESET[:CLASS]=PATH (KIND multiclass|ovr) or a tidy table path"),
            Param("tsv", "str", None, output=True, doc="tidy correlation table (default STORE_correlations.tsv)"),
            Param("n_perms", "int", 0, doc="permutations for the CCC p-value"),
            Param("seed", "int", 0),
            Param("class_col", "str", "class"), Param("feature_col", "str", "feature"),
            Param("value_col", "str", "coefficient"),
            Param("trust_pickle", "bool", False, doc="allow joblib/pickle model files (trusted files only)"),
        )))
    register_kind(JobKind(
        "ccc", "interpretome.jobs.kinds:run_ccc_step", group="ccc", model=False,
        doc="distributed all-pairs Clustermatch Correlation Coefficient of a (feature, sample) matrix", params=(
            Param("matrix", "str", required=True, file=True,
                  doc="features x samples: .csv/.tsv/.parquet (first column = names), .npy, .zarr"),
            Param("transpose", "bool", False, doc="the file's rows are samples"),
            Param("var", "str", None, doc="variable of a zarr input"),
            Param("form", "str", "square", choices=("square", "condensed")),
            Param("feature_chunk", "int", None, doc="features per tile side"),
            Param("n_perms", "int", 0, doc="permutations for p-values"),
            Param("seed", "int", 0),
        )))
