"""Embedding jobs: ``interpretome embed`` and ``interpretome scores``, their renderers and demo step.

``embed``: an input (h5ad ``.obsm``/X, npy, zarr, an interpretome store variable, a model's
``nn.Embedding``, or a PathFlowAI pickle with ``--trust-pickle``) -> optional background filter
and argmax labels -> UMAP / t-SNE / PCA -> store group ``embedding`` (+ PNG/HTML with ``--figures``).

``scores``: one input per fold (or split, or model) -> clustering scores per fold (group
``scores_<fold>``), the fold table (group ``scores``, ``score_fold``), tidy TSVs (per fold, summary
with mean/SD/SEM/95 % t-interval, lowest/highest batch ASW), and per fold UMAP coordinates as CSV
and PNGs coloured by label and by batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage.embedding_io import first_bases, read_embedding_input
from ..tasks.embedding_layer import from_embedding_layer
from ..storage.schema import ITEM
from ..storage.store import open_group
from ..tasks.embed import BACKENDS, METHODS, argmax_label, background_filter, embed
from ..tasks.scores import CONVENTIONS, clustering_scores, fold_dataset, fold_table, summarize_folds
from ..viz.scatter import datashader_png, matplotlib_png, scatter3d_html, scatter_html
from . import store_result
from .declare import FIGURES, JobKind, Param, draw_figures

SMALL = 50_000
"""Up to this many points figures are matplotlib scatters / bokeh points; above, datashader."""


def load_input(path=None, *, model=None, layer=None, kmer_bases: int = 1, obsm="X_pca", label=None, batch=None,
               columns=(), group=None, variable=None, array=None, trust_pickle=False, chunk=10_000,
               filter_column=None, filter_max=None, argmax=None, log=print):
    """Return the embedding input Dataset (filtered, with argmax labels) and the input file list."""
    if model is not None:
        ds = from_embedding_layer(model, layer=layer)
        ds["item_label"] = (ITEM, first_bases(ds[ITEM].values, kmer_bases).astype(str))
        inputs = []
    else:
        ds = read_embedding_input(path, obsm=obsm, label=label, batch=batch, columns=columns, group=group,
                                  variable=variable, array=array, trust_pickle=trust_pickle, chunk=chunk)
        inputs = [path]
    if filter_column is not None:
        ds = background_filter(ds, filter_column, filter_max if filter_max is not None else 0.005)
        keep = np.asarray(ds["item_keep"].values)          # job layer: the mask is small, compute it
        log(f"background filter {filter_column} <= {filter_max}: keeping {int(keep.sum())} of {keep.size} items")
        ds = ds.drop_vars("item_keep").isel({ITEM: keep})
    if argmax:
        ds = argmax_label(ds, list(argmax))
        ds["item_label"] = ds["item_argmax"].load()
    return ds, inputs


def run_embed(ds, store, *, group="embedding", method="umap", n_components=2, seed=0, fit_size=100_000,
              item_chunk=10_000, backend="auto", params=None, inputs=(), model=None, client=None, overwrite=False,
              log=print, source=None):
    """Embed ``ds`` (from ``load_input``) and write ``store/group``; return the WriteReport.

    ``model``: the ModelSpec whose ``nn.Embedding`` ``ds`` holds (its digest is fingerprinted).
    """
    params = dict(params or {})
    res = embed(ds, method=method, n_components=n_components, seed=seed, fit_size=fit_size, item_chunk=item_chunk,
                backend=backend, merge=False, **params)
    for v in ("item_label", "item_batch", "item_argmax", "item_annotation"):
        if v in ds.data_vars:
            res[v] = ds[v].astype(str) if v != "item_annotation" else ds[v]
    all_params = dict(method=method, n_components=n_components, seed=seed, fit_size=fit_size, item_chunk=item_chunk,
                      backend=backend, reducer=params, source=source or ds.attrs.get("source"))
    return store_result(res, store, group, task="embedding", params=all_params, model=model, inputs=inputs,
                        client=client, overwrite=overwrite, log=log)


def _embedding_var(ds) -> str:
    names = [v for v in ds.data_vars if v.startswith("embedding_") and v != "embedding_fitted"]
    if not names:
        raise ValueError(f"no embedding_* variable in the group; it has {sorted(ds.data_vars)}")
    return names[0]


def render_embedding(store, group, out_dir, *, color=None, html: bool = True, **_):
    """Draw a stored embedding: PNG coloured by ``color`` (default item_label), 2-D HTML, 3-D page."""
    ds = open_group(store, group)
    name = _embedding_var(ds)
    coords = ds[name]
    n, k = coords.shape
    color = color or ("item_label" if "item_label" in ds.variables else None)
    labels = values = None
    if color is not None:
        if color not in ds.variables:
            raise ValueError(f"colour column {color!r} not in group {group!r}; it has {sorted(ds.variables)}")
        col = ds[color]
        if col.dtype.kind == "f":
            values = col.values
        else:
            labels = col.values.astype(str)
    out_dir = Path(out_dir)
    title = f"{group}: {name}" + (f" by {color}" if color else "")
    paths = []
    png = out_dir / f"{group}_{name}.png"
    if n <= SMALL:
        paths.append(matplotlib_png(coords.values, png, labels=labels, values=values, title=title))
    else:
        paths.append(datashader_png(coords.data, png, labels=labels, values=values, title=color, spread=1))
    if html:
        paths.append(scatter_html(coords.data if n > SMALL else coords.values, out_dir / f"{group}_{name}.html",
                                  labels=labels, title=title,
                                  hover={"item": ds[ITEM].values.astype(str)} if n <= SMALL and ITEM in ds.coords else None))
        if k >= 3 and n <= 100_000:
            paths.append(scatter3d_html(coords.values, out_dir / f"{group}_{name}_3d.html", labels=labels, title=title))
    return paths


def render_folds(store, group, out_dir, **_):
    """Draw the per-fold scores: one panel per metric, folds as points, mean and 95 % t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = open_group(store, group)
    table = pd.DataFrame([{"fold": f, "metric": m, "value": float(ds["score_fold"].sel(fold=f, metric=m))}
                          for f in ds["fold"].values for m in ds["metric"].values])
    summary, _ = summarize_folds(table)
    metrics = list(summary["metric"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.4 * len(metrics), 3), squeeze=False)
    for ax, (_, row) in zip(axes[0], summary.iterrows()):
        v = table[table.metric == row.metric]["value"].to_numpy()
        ax.scatter(np.zeros(v.size) + np.linspace(-0.1, 0.1, v.size), v, s=14, color="#1f77b4")
        ax.errorbar([0.35], [row["mean"]], yerr=[[row["mean"] - row.ci_low], [row.ci_high - row["mean"]]]
                    if np.isfinite(row.ci_low) else None, fmt="o", color="black", capsize=3)
        ax.set_xticks([])
        ax.set_xlim(-0.4, 0.7)
        ax.set_title(row.metric, fontsize=8)
    fig.suptitle(f"{group}: {len(ds['fold'])} folds (mean, 95% t-interval)", fontsize=9)
    fig.tight_layout()
    out = Path(out_dir) / f"{group}_folds.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]


def run_scores(folds: dict, store, out_dir, *, label="item_label", batch=None, convention="sklearn",
               metric="euclidean", sample_size=None, seed=0, block=2048, umap=True, umap_fit_size=100_000,
               client=None, overwrite=False, log=print):
    """Score each fold's embedding and summarise across folds; return (table, summary, extremes, paths).

    ``folds`` maps a fold name to ``(dataset, inputs)`` with ``item_vector`` and the label (batch)
    variables. Writes ``scores_<fold>`` groups, the ``scores`` group (``score_fold``), TSV/JSON
    tables in ``out_dir`` and, with ``umap``, per fold ``umap_<fold>.csv`` and PNGs.
    """
    out_dir = Path(out_dir)
    results, paths = {}, []
    params = dict(label=label, batch=batch, convention=convention, metric=metric, sample_size=sample_size,
                  seed=seed, block=block)
    for name, (ds, inputs) in folds.items():
        res = clustering_scores(ds, label=label, batch=batch, **{k: v for k, v in params.items()
                                                                  if k not in ("label", "batch")})
        store_result(res, store, f"scores_{name}", task="clustering_scores", params=params, inputs=inputs,
                     client=client, overwrite=overwrite, log=log)
        results[name] = open_group(store, f"scores_{name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        if umap:
            run_embed(ds, store, group=f"umap_{name}", method="umap", seed=seed, fit_size=umap_fit_size,
                      inputs=inputs, client=client, overwrite=overwrite, log=log)
            emb = open_group(store, f"umap_{name}")
            xy = emb["embedding_umap"].values
            frame = pd.DataFrame({"item": emb[ITEM].values.astype(str) if ITEM in emb.coords else np.arange(len(xy)),
                                  "umap1": xy[:, 0], "umap2": xy[:, 1]})
            for v, col in (("item_label", "label"), ("item_batch", "batch")):
                if v in emb.variables:
                    frame[col] = emb[v].values.astype(str)
            csv = out_dir / f"umap_{name}.csv"
            frame.to_csv(csv, index=False)
            paths.append(csv)
            for col in ("label", "batch"):
                if col in frame:
                    paths.append(matplotlib_png(xy, out_dir / f"umap_{name}_{col}.png", labels=frame[col].to_numpy(),
                                                title=f"{name}: UMAP by {col}"))
    table = fold_table(results)
    summary, extremes = summarize_folds(table)
    store_result(fold_dataset(table), store, "scores", task="clustering_score_folds", params=params,
                 inputs=[p for _, inputs in folds.values() for p in inputs], client=None, overwrite=overwrite, log=log)
    table.to_csv(out_dir / "scores_by_fold.tsv", sep="\t", index=False)
    summary.to_csv(out_dir / "scores_summary.tsv", sep="\t", index=False)
    (out_dir / "scores_extremes.json").write_text(json.dumps(extremes, indent=1, default=str))
    paths += [out_dir / "scores_by_fold.tsv", out_dir / "scores_summary.tsv", out_dir / "scores_extremes.json"]
    if len(results) > 1:
        paths += render_folds(store, "scores", out_dir)
    return table, summary, extremes, paths


# --- the job functions and their declarations ---------------------------------------------------

def _fold_input(path, store, *, model=None, group_in=None, item_chunk=10_000, log=print, **options):
    """Return ``load_input``'s (dataset, inputs) for a job: a file, a group of the job's store
    (``group_in`` without ``path``), or the ``model``'s nn.Embedding."""
    if path is None and model is None and group_in is None:
        raise ValueError("an embed step needs input = 'file', group_in = 'a group of this job's store', "
                         "or from_model = true (the [model]'s nn.Embedding); on the command line: an input "
                         "file, --group-in, or --model")
    where = path if path is not None else (None if model is not None else store)
    return load_input(where, model=model, group=group_in, chunk=item_chunk, log=log, **options)


def embed_job(*, store, group, input=None, group_in=None, variable=None, array=None, obsm="X_pca", label=None,
              batch=None, columns=None, trust_pickle=False, item_chunk=10_000, from_model=False, model=None,
              layer=None, kmer_bases=1, filter_column=None, filter_max=None, argmax=None, method="umap",
              n_components=2, seed=0, fit_size=100_000, backend="auto", reducer=None, neighbors=None,
              perplexity=None, client=None, overwrite=False, log=print):
    """The ``embed`` kind: read the input (``load_input``), embed it and write ``store/group``."""
    if from_model and model is None:
        raise ValueError("from_model = true needs a [model] (its nn.Embedding is embedded)")
    model = model if from_model else None
    params = dict(reducer or {})
    if neighbors is not None:
        params["n_neighbors"] = neighbors
    if perplexity is not None:
        params["perplexity"] = perplexity
    ds, inputs = _fold_input(input, store, model=model, group_in=group_in, item_chunk=item_chunk, log=log,
                             layer=layer, kmer_bases=kmer_bases, obsm=obsm, label=label, batch=batch,
                             columns=list(columns or ()), variable=variable, array=array, trust_pickle=trust_pickle,
                             filter_column=filter_column, filter_max=filter_max, argmax=argmax)
    return run_embed(ds, store, group=group, method=method, n_components=n_components, seed=seed,
                     fit_size=fit_size, item_chunk=item_chunk, backend=backend, params=params, inputs=inputs,
                     model=model, client=client, overwrite=overwrite, log=log)


def scores_job(*, store, group, inputs, names=None, out=None, group_in=None, variable=None, array=None,
               obsm="X_pca", label=None, batch=None, trust_pickle=False, item_chunk=10_000, convention="sklearn",
               metric="euclidean", sample_size=None, seed=0, block=2048, umap=True, client=None, overwrite=False,
               log=print):
    """The ``scores`` kind: one input per fold -> ``run_scores``; tables into ``out`` (default STORE_scores)."""
    names = list(names) if names else [Path(p).stem for p in inputs]
    if len(names) != len(inputs):
        raise ValueError(f"names has {len(names)} names for {len(inputs)} inputs: give one name per input")
    if len(set(names)) != len(names):
        raise ValueError(f"fold names {names} repeat: give distinct names")
    folds = {name: _fold_input(path, store, group_in=group_in, item_chunk=item_chunk, log=log, obsm=obsm,
                               label=label, batch=batch, variable=variable, array=array, trust_pickle=trust_pickle)
             for name, path in zip(names, inputs)}
    out = out or str(Path(store).with_suffix("")) + "_scores"
    table, summary, extremes, paths = run_scores(
        folds, store, out, batch="item_batch" if batch else None, convention=convention, metric=metric,
        sample_size=sample_size, seed=seed, block=block, umap=umap, client=client, overwrite=overwrite, log=log)
    log(summary.to_string(index=False))
    if extremes:
        log(f"lowest batch ASW: {extremes['lowest_fold']} ({extremes['lowest']:.4f}); "
            f"highest: {extremes['highest_fold']} ({extremes['highest']:.4f})")
    for p in paths:
        log(str(p))
    log(f"scores: tables in {out}")
    return None


_draw_embedding = draw_figures(render_embedding, "color")


def _embed_finish(params, *, store, group, log=print) -> None:
    """``write_h5ad``: the coordinates as AnnData ``.obsm['X_<method>']`` (``storage.h5ad_export``); then figures."""
    if params.get("write_h5ad"):
        from ..storage.h5ad_export import embedding_to_h5ad

        log(f"wrote {embedding_to_h5ad(open_group(store, group), params['write_h5ad'])}")
    _draw_embedding(params, store=store, group=group, log=log)


def _embed_from_cli(params: dict, model) -> None:
    """``--model`` embeds that model's nn.Embedding; ``--filter COLUMN[:MAX]`` is the background filter."""
    params["from_model"] = model is not None
    text = params.pop("filter", None)
    if text:
        col, sep, val = text.partition(":")
        params.update(filter_column=col, filter_max=float(val) if sep else 0.005)


INPUT = (
    Param("group_in", "str", None, step=True, doc="a group of an interpretome store input (of this job's store when "
                                                  "input is omitted: the step then runs after the step writing it)"),
    Param("variable", "str", None, doc="variable of an interpretome store input, e.g. attribution"),
    Param("array", "str", None, doc="array inside a zarr group input"),
    Param("obsm", "str", "X_pca", cli="--use-rep", aliases=("--obsm",),
          doc="AnnData .obsm key to embed, or X (scanpy's use_rep)"),
    Param("label", "str", None, doc="AnnData obs column: categorical label (item_label)"),
    Param("batch", "str", None, doc="AnnData obs column: batch (item_batch)"),
    Param("trust_pickle", "bool", False, doc="allow a pickled DataFrame input (runs code from the file: trusted "
                                             "files only)"),
    Param("item_chunk", "int", 10_000, doc="items per task"),
)

EMBED = JobKind(
    "embed", embed_job, group="embedding", model="optional", lazy=False, from_cli=_embed_from_cli,
    finish=_embed_finish,
    doc="UMAP / t-SNE / PCA of item vectors (h5ad, npy, zarr, a store group, a model's nn.Embedding)", params=(
        Param("input", "str", None, file=True, cli="input", doc="input file (.h5ad, .npy, zarr, store, .pkl)"),
        *INPUT,
        Param("columns", "list[str]", None, cli="--column", repeat=True, doc="other obs columns to keep"),
        Param("from_model", "bool", False, cli=None, doc="embed the [model]'s nn.Embedding instead of an input"),
        Param("layer", "str", None, doc="name of the nn.Embedding module (default: the only one)"),
        Param("kmer_bases", "int", 1, doc="label k-mers by their first N bases"),
        Param("filter", "str", None, in_file=False, to=None,
              doc="COLUMN[:MAX] background filter on annotation columns (default MAX 0.005)"),
        Param("filter_column", "str", None, cli=None, doc="background filter on this annotation column"),
        Param("filter_max", "float", None, cli=None, doc="keep items with filter_column <= this (default 0.005)"),
        Param("argmax", "list[str]", None, doc="annotation columns: label = the largest"),
        Param("method", "str", "umap", choices=tuple(METHODS), doc="the reducer"),
        Param("n_components", "int", 2, aliases=("--components",), doc="output dimensions: 2 or 3 (any for PCA)"),
        Param("seed", "int", 0, doc="seed of the fitted subsample and of the reducer"),
        Param("fit_size", "int", 100_000, doc="fit on this many items (seeded), transform the rest"),
        Param("backend", "str", "auto", choices=tuple(BACKENDS), doc="cpu, gpu (cuML) or auto"),
        Param("reducer", "table", None, cli="--reducer-kwargs", doc="keyword arguments for the reducer (JSON)"),
        Param("neighbors", "int", None, cli="--n-neighbors", aliases=("--neighbors",),
              doc="UMAP n_neighbors (default 15)"),
        Param("perplexity", "float", None, doc="t-SNE perplexity"),
        Param("color", "str", None, to="finish", doc="variable or coordinate to colour the figures by"),
        Param("write_h5ad", "str", None, output=True, to="finish",
              doc="also write the coordinates as AnnData OUT.h5ad: .obsm['X_<method>'] (labels in .obs)"),
        FIGURES,
    ))

SCORES = JobKind(
    "scores", scores_job, group="scores", model=False, lazy=False, fixed_group=True, depends=("embed",),
    doc="clustering scores (ASW, Davies-Bouldin, Calinski-Harabasz) across folds; groups scores, scores_<fold>",
    params=(
        Param("inputs", "list[str]", required=True, file=True, cli="inputs",
              doc="one embedding input per fold (split, model)"),
        Param("names", "list[str]", None, doc="fold names (default: file stems)"),
        Param("out", "str", None, output=True, cli="--figures", aliases=("--out",),
              doc="folder for tables, UMAP CSVs and PNGs (default STORE_scores)"),
        *INPUT,
        Param("convention", "str", "sklearn", choices=tuple(CONVENTIONS), doc="ASW convention"),
        Param("metric", "str", "euclidean", choices=("euclidean", "cosine"), doc="distance"),
        Param("sample_size", "int", None, doc="score a seeded subsample of this many items"),
        Param("seed", "int", 0, doc="seed of the subsample and of the UMAPs"),
        Param("block", "int", 2048, doc="items per side of a distance tile"),
        Param("umap", "bool", True, doc="per fold UMAP CSV and PNGs"),
    ))

KINDS = (EMBED, SCORES)
RENDERERS = {"embedding": render_embedding, "clustering_score_folds": render_folds}


# --- demo -------------------------------------------------------------------------------------------

def step_embedding(ctx) -> list:
    """PBMC (700 cells) X_pca -> UMAP + scores by cell type and phase over 3 seeded folds; k-mer PCA."""
    from ..datasets import data_path

    h5ad = data_path("pbmc68k_reduced.h5ad")
    ds, inputs = load_input(h5ad, obsm="X_pca", label="bulk_labels", batch="phase", chunk=256)
    rs = np.random.default_rng(0)
    fold_of = rs.integers(0, 3, ds.sizes[ITEM])
    folds = {f"fold{k}": (ds.isel({ITEM: np.flatnonzero(fold_of == k)}), inputs) for k in range(3)}
    out = ctx.out / "figures" / "embedding"
    table, summary, extremes, paths = run_scores(folds, ctx.store, out, batch="item_batch", seed=0, block=256,
                                                 client=ctx.client, overwrite=ctx.overwrite, log=ctx.log)
    ctx.log("scores across folds:\n" + summary.round(4).to_string(index=False))
    run_embed(ds, ctx.store, group="embedding_pbmc", method="umap", seed=0, inputs=inputs, client=ctx.client,
              overwrite=ctx.overwrite, log=ctx.log)
    paths += render_embedding(ctx.store, "embedding_pbmc", ctx.out / "figures")
    kmers, _ = load_input(model="interpretome.datasets:kmer_model", kmer_bases=1)
    run_embed(kmers, ctx.store, group="embedding_kmer", method="pca", n_components=3, seed=0, client=ctx.client,
              overwrite=ctx.overwrite, log=ctx.log, source="interpretome.datasets:kmer_model nn.Embedding")
    paths += render_embedding(ctx.store, "embedding_kmer", ctx.out / "figures")
    return [p for p in paths if Path(p).suffix in (".png", ".html")]
