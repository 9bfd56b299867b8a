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

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.cluster import add_cluster_arguments, connect_from_args
from ..storage.embedding_io import first_bases, from_embedding_layer, read_embedding_input
from ..storage.schema import ITEM
from ..storage.store import open_group
from ..tasks.embed import BACKENDS, METHODS, argmax_label, background_filter, embed
from ..tasks.scores import CONVENTIONS, clustering_scores, fold_dataset, fold_table, summarize_folds
from ..viz.scatter import datashader_png, matplotlib_png, scatter3d_html, scatter_html
from . import RENDERERS, store_result

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
              item_chunk=10_000, backend="auto", params=None, inputs=(), client=None, overwrite=False, log=print,
              source=None):
    """Embed ``ds`` (from ``load_input``) and write ``store/group``; return the WriteReport."""
    params = dict(params or {})
    res = embed(ds, method=method, n_components=n_components, seed=seed, fit_size=fit_size, item_chunk=item_chunk,
                backend=backend, merge=False, **params)
    for v in ("item_label", "item_batch", "item_argmax", "item_annotation"):
        if v in ds.data_vars:
            res[v] = ds[v].astype(str) if v != "item_annotation" else ds[v]
    all_params = dict(method=method, n_components=n_components, seed=seed, fit_size=fit_size, item_chunk=item_chunk,
                      backend=backend, reducer=params, source=source or ds.attrs.get("source"))
    return store_result(res, store, group, task="embedding", params=all_params, inputs=inputs, client=client,
                        overwrite=overwrite, log=log)


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


RENDERERS["embedding"] = render_embedding
RENDERERS["clustering_score_folds"] = render_folds


def run_scores(folds: dict, store, out_dir, *, label="item_label", batch=None, convention="sklearn",
               metric="euclidean", sample_size=None, seed=0, block=2048, umap=True, umap_fit_size=100_000,
               client=None, overwrite=False, log=print):
    """Score each fold's embedding and summarise across folds; return (table, summary, extremes, paths).

    ``folds`` maps a fold name to ``(dataset, inputs)`` with ``item_vector`` and the label (batch)
    variables. Writes ``scores_<fold>`` groups, the ``scores`` group (``score_fold``), TSV/JSON
    tables in ``out_dir`` and, with ``umap``, per fold ``umap_<fold>.csv`` and PNGs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, paths = {}, []
    params = dict(label=label, batch=batch, convention=convention, metric=metric, sample_size=sample_size,
                  seed=seed, block=block)
    for name, (ds, inputs) in folds.items():
        res = clustering_scores(ds, label=label, batch=batch, **{k: v for k, v in params.items()
                                                                  if k not in ("label", "batch")})
        store_result(res, store, f"scores_{name}", task="clustering_scores", params=params, inputs=inputs,
                     client=client, overwrite=overwrite, log=log)
        results[name] = open_group(store, f"scores_{name}")
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
                 client=None, overwrite=overwrite, log=log)
    table.to_csv(out_dir / "scores_by_fold.tsv", sep="\t", index=False)
    summary.to_csv(out_dir / "scores_summary.tsv", sep="\t", index=False)
    (out_dir / "scores_extremes.json").write_text(json.dumps(extremes, indent=1, default=str))
    paths += [out_dir / "scores_by_fold.tsv", out_dir / "scores_summary.tsv", out_dir / "scores_extremes.json"]
    if len(results) > 1:
        paths += render_folds(store, "scores", out_dir)
    return table, summary, extremes, paths


# --- CLI ------------------------------------------------------------------------------------------

def _input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument("--obsm", default="X_pca", help="AnnData .obsm key to embed, or X (default X_pca)")
    g.add_argument("--label", default=None, help="AnnData obs column: categorical label (item_label)")
    g.add_argument("--batch", default=None, help="AnnData obs column: batch (item_batch)")
    g.add_argument("--column", action="append", default=[], help="other obs columns to keep (repeatable)")
    g.add_argument("--group-in", default=None, help="group of an interpretome store input")
    g.add_argument("--variable", default=None, help="variable of an interpretome store input, e.g. attribution")
    g.add_argument("--array", default=None, help="array inside a zarr group input")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow reading a pickled DataFrame (runs code from the file: trusted files only)")
    g.add_argument("--item-chunk", type=int, default=10_000, help="items per task")


def _embed_cmd(args) -> int:
    params = json.loads(args.reducer_kwargs)
    if args.neighbors is not None:
        params["n_neighbors"] = args.neighbors
    if args.perplexity is not None:
        params["perplexity"] = args.perplexity
    model = None
    if args.model:
        from ..engine.models import load_spec

        model = load_spec(args.model, **({"kwargs": json.loads(args.model_kwargs)} if args.model_kwargs else {}),
                          **({"weights": args.weights} if args.weights else {}))
    if model is None and args.input is None:
        raise ValueError("give an input file, or --model for the embedding layer of a model")
    filt = None
    if args.filter:
        col, sep, val = args.filter.partition(":")
        filt = (col, float(val) if sep else 0.005)
    ds, inputs = load_input(args.input, model=model, layer=args.layer, kmer_bases=args.kmer_bases, obsm=args.obsm,
                            label=args.label, batch=args.batch, columns=args.column, group=args.group_in,
                            variable=args.variable, array=args.array, trust_pickle=args.trust_pickle,
                            chunk=args.item_chunk, filter_column=filt[0] if filt else None,
                            filter_max=filt[1] if filt else None,
                            argmax=args.argmax.split(",") if args.argmax else None)
    with connect_from_args(args) as client:
        run_embed(ds, args.store, group=args.group, method=args.method, n_components=args.components, seed=args.seed,
                  fit_size=args.fit_size, item_chunk=args.item_chunk, backend=args.backend, params=params,
                  inputs=inputs, client=client, overwrite=args.overwrite)
    if args.write_h5ad:
        from ..storage.h5ad_export import embedding_to_h5ad

        print(f"wrote {embedding_to_h5ad(open_group(args.store, args.group), args.write_h5ad)}")
    if args.figures:
        for p in render_embedding(args.store, args.group, args.figures, color=args.color):
            print(p)
    return 0


def _scores_cmd(args) -> int:
    names = args.names.split(",") if args.names else [Path(p).stem for p in args.inputs]
    if len(names) != len(args.inputs):
        raise ValueError(f"--names has {len(names)} names for {len(args.inputs)} inputs: give one name per input")
    if len(set(names)) != len(names):
        raise ValueError(f"fold names {names} repeat: pass distinct --names")
    folds = {}
    for name, path in zip(names, args.inputs):
        ds, inputs = load_input(path, obsm=args.obsm, label=args.label, batch=args.batch, group=args.group_in,
                                variable=args.variable, array=args.array, trust_pickle=args.trust_pickle,
                                chunk=args.item_chunk)
        folds[name] = (ds, inputs)
    with connect_from_args(args) as client:
        table, summary, extremes, paths = run_scores(
            folds, args.store, args.out, batch="item_batch" if args.batch else None, convention=args.convention,
            metric=args.metric, sample_size=args.sample_size, seed=args.seed, block=args.block,
            umap=not args.no_umap, client=client, overwrite=args.overwrite)
    print(summary.to_string(index=False))
    if extremes:
        print(f"lowest batch ASW: {extremes['lowest_fold']} ({extremes['lowest']:.4f}); "
              f"highest: {extremes['highest_fold']} ({extremes['highest']:.4f})")
    for p in paths:
        print(p)
    return 0


def register(sub) -> None:
    """Add the ``embed`` and ``scores`` subcommands."""
    p = sub.add_parser("embed", help="UMAP / t-SNE / PCA of item vectors (h5ad, npy, zarr, store, model)")
    p.add_argument("input", nargs="?", default=None, help="input file (.h5ad, .npy, zarr, store, .pkl)")
    p.add_argument("-o", "--store", required=True, help="output zarr store")
    p.add_argument("--group", default="embedding", help="group name in the store")
    p.add_argument("--method", default="umap", choices=METHODS)
    p.add_argument("--write-h5ad", default=None, metavar="OUT.h5ad",
                   help="also write the coordinates as AnnData .obsm['X_<method>'] (labels in .obs)")
    p.add_argument("--components", type=int, default=2, help="2 or 3 (any for PCA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-size", type=int, default=100_000, help="fit on this many items (seeded), transform the rest")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="cpu, gpu (cuML) or auto")
    p.add_argument("--neighbors", type=int, default=None, help="UMAP n_neighbors (default 15)")
    p.add_argument("--perplexity", type=float, default=None, help="t-SNE perplexity")
    p.add_argument("--reducer-kwargs", default="{}", help="JSON keyword arguments for the reducer")
    p.add_argument("--model", default=None, help="embed the nn.Embedding of this model ('pkg.mod:factory' or spec)")
    p.add_argument("--model-kwargs", default=None, help="JSON keyword arguments for the model factory")
    p.add_argument("--weights", default=None, help="state_dict for the model factory")
    p.add_argument("--layer", default=None, help="name of the nn.Embedding module (default: the only one)")
    p.add_argument("--kmer-bases", type=int, default=1, help="label k-mers by their first N bases")
    p.add_argument("--filter", default=None, help="COLUMN[:MAX] background filter on annotation columns (default MAX 0.005)")
    p.add_argument("--argmax", default=None, help="comma-separated annotation columns: label = the largest")
    p.add_argument("--color", default=None, help="variable or coordinate to colour the figures by")
    p.add_argument("--figures", default=None, help="folder for PNG/HTML figures")
    p.add_argument("--overwrite", action="store_true")
    _input_arguments(p)
    add_cluster_arguments(p)
    p.set_defaults(func=_embed_cmd)

    p = sub.add_parser("scores", help="clustering scores (ASW, Davies-Bouldin, Calinski-Harabasz) across folds")
    p.add_argument("inputs", nargs="+", help="one embedding input per fold (split, model)")
    p.add_argument("-o", "--store", required=True, help="output zarr store")
    p.add_argument("--out", required=True, help="folder for tables, UMAP CSVs and PNGs")
    p.add_argument("--names", default=None, help="comma-separated fold names (default: file stems)")
    p.add_argument("--convention", default="sklearn", choices=CONVENTIONS)
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    p.add_argument("--sample-size", type=int, default=None, help="score a seeded subsample of this many items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block", type=int, default=2048, help="items per side of a distance tile")
    p.add_argument("--no-umap", action="store_true", help="skip the per-fold UMAP CSV and PNGs")
    p.add_argument("--overwrite", action="store_true")
    _input_arguments(p)
    add_cluster_arguments(p)
    p.set_defaults(func=_scores_cmd)


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
