"""The results of each analysis as the report shows them: title, what it measures, key tables, captions.

Everything here reads stored Datasets (``xr.Dataset`` of one group) and returns plain rows; the
page (``viz.report``) turns them into HTML. Tables are computed from the stored values only
(never from a model), e.g. the sweep's mean effect at each marker, the positions where a
mutation changes the prediction most, the top features per class, fold scores with 95 %
t-intervals.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

TASKS: dict[str, tuple[str, str]] = {
    "perturbation_sweep": ("Perturbation sweep",
                           "change in the model's prediction when a window of k bases is perturbed, "
                           "slid along each sequence (negative: the window holds something the prediction needs)"),
    "saturation_mutagenesis": ("In-silico mutagenesis (ISM)",
                               "change in the prediction for every single-base substitution at every position"),
    "tiled_prediction": ("Genome track", "the model's prediction tiled along the genome, bin by bin"),
    "genome_sweep": ("Genomic perturbation sweep", "perturbation sweep of windows in genomic context"),
    "genome_ism": ("Genomic mutagenesis", "single-base substitutions in genomic context"),
    "summarize_attributions": ("Attributions per class",
                               "mean attribution of each feature over the samples of each group (class)"),
    "attribute": ("Attributions", "attribution of each input feature to each model output, per sample"),
    "fastshap": ("FastSHAP attributions", "amortised Shapley-value estimates of each feature per sample"),
    "embedding": ("Embedding", "low-dimensional embedding of the items, coloured by label"),
    "clustering_score_folds": ("Clustering scores across folds",
                               "how well the embedding separates labels (and mixes batches), per fold, "
                               "with the mean and its 95 % t-interval"),
    "clustering_scores": ("Clustering scores", "silhouette and cluster-separation scores of one embedding"),
    "coefficient_comparison": ("Coefficient comparison",
                               "agreement (Pearson, Spearman, CCC) between the coefficients of pairs of models, per class"),
    "all_pairs_ccc": ("Feature-feature CCC", "clustermatch correlation coefficient between every pair of features"),
    "genomap": ("Genomaps", "cells as images, genes placed on a grid by optimal transport"),
    "gene_annotation": ("Gene annotation", "genes read from an annotation file (used by the genome tracks)"),
}
"""task -> (section title, one line on what the analysis measures)."""

ORDER = ["perturbation_sweep", "saturation_mutagenesis", "genome_sweep", "genome_ism", "tiled_prediction",
         "summarize_attributions", "attribute", "fastshap", "embedding", "clustering_score_folds",
         "clustering_scores", "coefficient_comparison", "all_pairs_ccc", "genomap", "gene_annotation"]
"""The order of the results sections: sequence analyses, attributions, embeddings, comparisons."""

AUXILIARY = frozenset({"gene_annotation", "track_pyramid"})
"""Tasks whose groups serve other results (gene models for tracks, zoom levels): no results section of
their own unless they have figures; they are listed with the provenance and compute accounting."""

MAX_ROWS = 12
"""Rows of a key table (the strongest ones)."""


@dataclass
class Table:
    """One key table of a result: caption, header, rows (numbers formatted by the page)."""

    caption: str
    header: list[str]
    rows: list[list]
    numeric: set[int] = field(default_factory=set)


def title(task: str) -> str:
    """Return the section title of ``task`` (the task name itself for an unknown one)."""
    return TASKS.get(task, (task.replace("_", " ").capitalize(), ""))[0]


def purpose(task: str) -> str:
    """Return one line on what ``task`` measures ("" for an unknown one)."""
    return TASKS.get(task, ("", ""))[1]


def order_key(task: str, group: str) -> tuple:
    """Sort key of a section: the task's place in ``ORDER``, then the group name (numbers as numbers)."""
    rank = ORDER.index(task) if task in ORDER else len(ORDER)
    return (rank, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", group)])


# --- captions -----------------------------------------------------------------------------------

def caption(task: str, group: str, info: dict, path: str | Path) -> str:
    """Return what the figure ``path`` of ``group`` shows, from the task, its parameters and the file name."""
    path = Path(path)
    stem = path.stem
    rest = stem[len(group) + 1:] if stem.startswith(group + "_") else stem
    params = (info or {}).get("params") or {}
    interactive = " Interactive (zoom, pan, hover)." if path.suffix.lower() in (".html", ".htm") else ""
    if task in ("perturbation_sweep", "genome_sweep"):
        mode = params.get("mode", "random")
        reps = params.get("replicates")
        windows = params.get("windows")
        return (f"Perturbation sweep of {rest}: change in prediction (perturbed − reference) when a window of k bp "
                f"({mode} perturbation{f', {reps} replicates, band ±1 sd' if reps and reps > 1 else ''}) is slid "
                f"along the sequence; one line per window size{f' (k = {_list(windows)})' if windows else ''}, "
                f"plotted at the window centre; red lines mark the given positions.{interactive}")
    if task in ("saturation_mutagenesis", "genome_ism"):
        return (f"Saturation mutagenesis of {rest}: change in prediction for each substituted base (rows) at each "
                f"position (columns); blue lowers, red raises the prediction; 0 at the reference base.{interactive}")
    if task == "tiled_prediction":
        zoom = re.search(r"_(\d+)-(\d+)$", rest)
        where = (f"{rest[:zoom.start()]}, {int(zoom.group(1)):,}–{int(zoom.group(2)):,} bp" if zoom else
                 f"the whole of {rest}")
        return (f"Tiled prediction along {where}: model output per bin (mean over overlapping windows"
                f"{' and both strands' if params.get('strand') == 'both' else ''}), with gene models below."
                f"{interactive}")
    if task in ("attribute", "fastshap"):
        if rest.endswith("_logo"):
            return (f"Attribution logo of {rest[:-5]}: height of each letter = attribution of the observed base at "
                    f"that position (above the axis: raises the prediction).{interactive}")
        if rest.startswith("image"):
            return f"Attribution overlay on input image {rest[5:]}: red raises, blue lowers the prediction."
        if rest == "top":
            return "Features with the largest mean |attribution| over all samples (positive and negative)."
    if task == "summarize_attributions":
        if rest == "top":
            return ("Top features by mean attribution over the samples of the first group to the first output: "
                    "bars = mean (red raises, blue lowers the prediction), whiskers = 95 % interval.")
        if rest == "classes":
            return ("Top positive (red) and negative (blue) features of each class: mean attribution to the class's "
                    "own output over that class's samples, whiskers = 95 % interval.")
        if rest == "stacked":
            return "Share of each class's mean attribution carried by its top features (stacked bars)."
    if task == "embedding":
        kind = "3-D " if rest.endswith("_3d") else ""
        method = str(params.get("method", "")).upper() or "embedding"
        by = "batch" if rest.endswith("batch") else "label"
        return f"{kind}{method} of {group}: one point per item, coloured by its {by}.{interactive}"
    if task == "clustering_score_folds":
        return ("Clustering scores of each fold (points) with their mean and 95 % t-interval (black): "
                "label separation (higher is better, except Davies-Bouldin) and batch mixing.")
    if task == "coefficient_comparison":
        m = re.match(r"(.+?)_(heatmap|clustermap|kde|class_means|scatter)$", rest)
        if m:
            what = {"heatmap": "heatmap of the coefficients (classes × features)",
                    "clustermap": "clustered heatmap of the coefficients (classes and features ordered by similarity)",
                    "kde": "distribution (kernel density) of the coefficients of each class",
                    "class_means": "mean coefficient of each class, with its spread",
                    "scatter": "coefficients of the two models of this comparison, one panel per class"}[m.group(2)]
            name = next((str(x) for x in params.get("models") or [] if str(x).replace(":", "_") == m.group(1)),
                        m.group(1).replace("_", ":", 1))
            return f"{name}: {what}."
    if task == "all_pairs_ccc":
        return "Clustermatch correlation coefficient (CCC) between every pair of features, clustered."
    if task == "genomap":
        return f"Genomap {rest}: each cell as an image, genes placed on the grid by Gromov-Wasserstein transport."
    label = rest.replace("_", " ")
    return f"{title(task)}: {label}.{interactive}" if label else f"{title(task)} of {group}.{interactive}"


def _list(values) -> str:
    return ", ".join(map(str, values)) if isinstance(values, (list, tuple)) else str(values)


def arrange(task: str, group: str, paths: list[Path]) -> list[Path]:
    """Return ``paths`` with the figure that best summarises the result first (e.g. the class grid of
    attribution summaries), otherwise in the given order."""
    first = {"summarize_attributions": "_classes", "coefficient_comparison": "_heatmap"}.get(task)
    if first is None:
        return list(paths)
    return sorted(paths, key=lambda p: not Path(p).stem.endswith(first))


def is_key_figure(task: str, group: str, path: str | Path, rank: int) -> bool:
    """Whether ``path`` is a key figure of its section (shown large) rather than a supporting one.

    The first figure of a section is key; so is a class grid of attributions, a sweep / ISM of the
    first two sequences, and each model's heatmap of a coefficient comparison.
    """
    stem = Path(path).stem
    if rank == 0:
        return True
    if task == "summarize_attributions":
        return stem.endswith("_classes")
    if task in ("perturbation_sweep", "saturation_mutagenesis", "genome_sweep", "genome_ism"):
        return rank < 2
    return False


# --- key tables ---------------------------------------------------------------------------------

def _other_dim(da: xr.DataArray, known: tuple[str, ...]) -> str:
    return next(d for d in da.dims if d not in known)


def _first_target(da: xr.DataArray) -> tuple[xr.DataArray, str]:
    name = ""
    if "target" in da.dims:
        name = str(da["target"].values[0]) if "target" in da.coords else "0"
        da = da.isel(target=0)
    if "strand" in da.dims:
        da = da.mean("strand")
    return da, name


def _nearest_marker(pos: float, markers: dict[str, float]) -> str:
    if not markers:
        return ""
    label, at = min(markers.items(), key=lambda kv: abs(kv[1] - pos))
    off = pos - at
    return label if off == 0 else f"{label} {off:+g}"


def sweep_tables(ds: xr.Dataset, info: dict, markers: dict[str, float] | None = None) -> list[Table]:
    """Key tables of a perturbation sweep: mean effect per window size (strongest position, at each
    marker) over the sequences, and the strongest effect of each sequence."""
    name = next(v for v in ds.data_vars if v.endswith("sweep_delta_mean"))
    da, target = _first_target(ds[name])
    seq_dim = _other_dim(da, ("window", "position"))
    lengths = (ds["window_length"].values if "window_length" in ds.coords else da["window"].values).astype(float)
    positions = da["position"].values.astype(float)
    values = da.transpose(seq_dim, "window", "position").values.astype(np.float64)
    n_seq = values.shape[0]
    tables = []
    markers = markers or {}
    on = f" (target {target})" if target else ""
    if seq_dim == "sequence":
        with np.errstate(all="ignore"), _quiet():
            mean = np.nanmean(values, axis=0)
        rows = []
        for w, length in enumerate(lengths):
            centre = positions + (length - 1) / 2
            m = mean[w]
            if not np.isfinite(m).any():
                continue
            i = int(np.nanargmax(np.abs(m)))
            row = [f"k={int(length)}", centre[i], m[i], _nearest_marker(centre[i], markers)]
            for at in markers.values():
                row.append(m[int(np.argmin(np.abs(centre - at)))])
            rows.append(row)
        header = ["window", "strongest at (centre)", "mean Δ there", "nearest marker"] + [f"mean Δ at {k}" for k in markers]
        tables.append(Table(
            f"Mean change in prediction over the {n_seq} sequences{on}, per window size: where it is strongest "
            f"(largest |mean Δ|)" + (", and for the window centred at each marker" if markers else "") + ".",
            header, rows, numeric={1, 2} | set(range(4, 4 + len(markers)))))
    best = []
    for s in range(n_seq):
        v = values[s]
        if not np.isfinite(v).any():
            continue
        w, p = np.unravel_index(int(np.nanargmax(np.abs(v))), v.shape)
        centre = positions[p] + (lengths[w] - 1) / 2
        best.append([str(da[seq_dim].values[s]), f"k={int(lengths[w])}", centre, v[w, p],
                     _nearest_marker(centre, markers)])
    best.sort(key=lambda r: -abs(r[3]))
    tables.append(Table(f"Strongest effect in each {seq_dim}{on} (largest |Δ| over windows and positions; "
                        f"{min(MAX_ROWS, len(best))} of {len(best)}, strongest first).",
                        [seq_dim, "window", "at (centre)", "Δ prediction", "nearest marker"], best[:MAX_ROWS],
                        numeric={2, 3}))
    return tables


def ism_tables(ds: xr.Dataset, info: dict, markers: dict[str, float] | None = None) -> list[Table]:
    """Key tables of saturation mutagenesis: the positions where a substitution changes the prediction
    most (mean over sequences), and the strongest single substitutions."""
    name = next(v for v in ds.data_vars if {"position", "base"} <= set(ds[v].dims) and "reference" not in v)
    da, target = _first_target(ds[name])
    seq_dim = _other_dim(da, ("position", "base"))
    values = da.transpose(seq_dim, "position", "base").values.astype(np.float64)
    positions = da["position"].values
    bases = [str(b) for b in da["base"].values]
    markers = markers or {}
    on = f" (target {target})" if target else ""
    tables = []
    with np.errstate(all="ignore"), _quiet():
        filled = np.where(np.isfinite(values), values, 0.0)
        pick = np.abs(filled).argmax(axis=2)
        strongest = np.take_along_axis(filled, pick[..., None], axis=2)[..., 0]  # (seq, position), signed
        strongest[~np.isfinite(values).any(axis=2)] = np.nan
    if seq_dim == "sequence" and values.shape[0] > 1:
        with np.errstate(all="ignore"), _quiet():
            mean = np.nanmean(strongest, axis=0)
        order = [int(i) for i in np.argsort(-np.nan_to_num(np.abs(mean), nan=-1))[:MAX_ROWS] if np.isfinite(mean[i])]
        tables.append(Table(
            f"Positions where one substitution changes the prediction most{on}: per sequence the substitution with the "
            f"largest |Δ|, averaged over the {values.shape[0]} sequences ({len(order)} strongest positions).",
            ["position", "mean Δ of the strongest substitution", "nearest marker"],
            [[positions[i], mean[i], _nearest_marker(float(positions[i]), markers)] for i in order], numeric={0, 1}))
    flat = np.abs(filled).reshape(-1)
    top = [int(i) for i in np.argsort(-flat)[:MAX_ROWS] if flat[i] > 0]
    rows = []
    for i in top:
        s, p, b = np.unravel_index(i, values.shape)
        rows.append([str(da[seq_dim].values[s]), positions[p], bases[b], values[s, p, b],
                     _nearest_marker(float(positions[p]), markers)])
    tables.append(Table(f"The {len(rows)} single substitutions with the largest effect{on}, strongest first.",
                        [seq_dim, "position", "to base", "Δ prediction", "nearest marker"], rows, numeric={1, 3}))
    return tables


def summary_tables(ds: xr.Dataset, info: dict, n: int = 5) -> list[Table]:
    """Top positive features of each group (class) of ``summarize_attributions``: mean attribution to the
    group's own output where one is named like the group (else the first output), ± 95 % half-width."""
    mean = ds["feature_attribution_mean"]
    ci = ds["feature_attribution_ci95"] if "feature_attribution_ci95" in ds.data_vars else None
    targets = [str(t) for t in mean["target"].values] if "target" in mean.dims else []
    feats = mean["feature"].values
    rows = []
    for g in mean["group"].values[:MAX_ROWS * 2]:
        t = str(g) if str(g) in targets else (targets[0] if targets else None)
        m = mean.sel(group=g) if t is None else mean.sel(group=g, target=t)
        v = m.values.astype(np.float64)
        order = [i for i in np.argsort(-np.nan_to_num(v, nan=-np.inf))[:n] if np.isfinite(v[i])]
        cells = []
        for i in order:
            half = ""
            if ci is not None:
                c = ci.sel(group=g) if t is None else ci.sel(group=g, target=t)
                half = f" ± {float(c.values[i]):.2g}"
            cells.append(f"{feats[i]} ({v[i]:.3g}{half})")
        rows.append([str(g), "" if t is None else t] + cells + [""] * (n - len(cells)))
    return [Table(f"Top {n} features of each group by mean attribution to the group's own output (the output named "
                  f"like the group, else the first one){' ± half-width of the 95 % interval' if ci is not None else ''}.",
                  ["group", "output"] + [f"#{i + 1}" for i in range(n)], rows)]


def attribution_tables(ds: xr.Dataset, info: dict, n: int = 5) -> list[Table]:
    """Top features by mean |attribution| over the samples, one row per output; for sequences, the
    positions with the largest attribution of each sequence."""
    tables = []
    name = next((v for v in ("attribution", "fastshap_attribution") if v in ds.data_vars), None)
    if name is not None:
        da = ds[name]
        da = da if "target" in da.dims else da.expand_dims(target=["output"])
        feats = da["feature"].values
        rows = []
        for t in da["target"].values[:MAX_ROWS * 2]:
            v = da.sel(target=t).transpose("sample", "feature").values.astype(np.float64)
            with np.errstate(all="ignore"), _quiet():
                mabs, mean = np.nanmean(np.abs(v), axis=0), np.nanmean(v, axis=0)
            order = [i for i in np.argsort(-np.nan_to_num(mabs, nan=-1))[:n] if np.isfinite(mabs[i])]
            rows.append([str(t)] + [f"{feats[i]} ({mean[i]:+.3g})" for i in order] + [""] * (n - len(order)))
        tables.append(Table(f"Top {n} features of each output by mean |attribution| over the {da.sizes['sample']} "
                            f"samples (signed mean in brackets).", ["output"] + [f"#{i + 1}" for i in range(n)], rows))
    if "sequence_attribution" in ds.data_vars:
        da, target = _first_target(ds["sequence_attribution"])
        v = np.nansum(da.transpose("sequence", "position", "base").values.astype(np.float64), axis=2)
        positions = da["position"].values
        rows = []
        for s in range(v.shape[0])[:MAX_ROWS]:
            order = np.argsort(-np.abs(v[s]))[:n]
            rows.append([str(da["sequence"].values[s])] + [f"{positions[i]} ({v[s, i]:+.3g})" for i in order])
        tables.append(Table(f"Positions with the largest |attribution| of the observed base in each sequence"
                            f"{f' (target {target})' if target else ''}, attribution in brackets.",
                            ["sequence"] + [f"#{i + 1}" for i in range(n)], rows))
    if "fastshap_validation" in ds.data_vars:
        val = ds["fastshap_validation"]
        tables.append(Table("FastSHAP against the reference Shapley values (held-out samples).",
                            ["metric", "value"], [[str(m), float(val.sel(metric=m))] for m in val["metric"].values],
                            numeric={1}))
    return tables


def embedding_tables(ds: xr.Dataset, info: dict) -> list[Table]:
    """Items per label of an embedding (and per batch), the colours of its figure."""
    tables = []
    for var, what in (("item_label", "label"), ("item_batch", "batch")):
        if var not in ds.variables:
            continue
        labels, counts = np.unique(ds[var].values.astype(str), return_counts=True)
        order = np.argsort(-counts)
        rows = [[labels[i], int(counts[i]), counts[i] / counts.sum()] for i in order[:MAX_ROWS]]
        if len(labels) > MAX_ROWS:
            rows.append([f"({len(labels) - MAX_ROWS} more)", int(counts[order[MAX_ROWS:]].sum()), ""])
        tables.append(Table(f"Items per {what} ({int(counts.sum())} items, {len(labels)} {what}s).",
                            [what, "items", "fraction"], rows, numeric={1, 2}))
    return tables


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Return (mean, low, high) of the ``level`` t-interval of the mean of ``values`` (NaN bounds for n < 2)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half


def fold_tables(ds: xr.Dataset, info: dict) -> list[Table]:
    """Clustering scores across folds: mean, 95 % t-interval, range, one row per metric."""
    da = ds["score_fold"].transpose("metric", "fold")
    rows = []
    for m, v in zip(da["metric"].values, da.values):
        mean, lo, hi = t_interval(v)
        rows.append([str(m), mean, lo, hi, float(np.nanmin(v)), float(np.nanmax(v))])
    return [Table(f"Scores over {da.sizes['fold']} folds: mean and its 95 % t-interval, and the range of the folds.",
                  ["metric", "mean", "95 % CI low", "95 % CI high", "min", "max"], rows, numeric={1, 2, 3, 4, 5})]


def score_tables(ds: xr.Dataset, info: dict) -> list[Table]:
    """One embedding's scores, and the silhouette of each class."""
    tables = [Table("Scores of this embedding.", ["metric", "value"],
                    [[str(m), float(v)] for m, v in zip(ds["metric"].values, ds["score_value"].values)], numeric={1})]
    if "score_silhouette_class" in ds.data_vars:
        s = ds["score_silhouette_class"]
        order = np.argsort(-np.nan_to_num(s.values, nan=-np.inf))
        tables.append(Table("Mean silhouette width of each class (higher: better separated), best first.",
                            ["class", "silhouette"], [[str(s["class"].values[i]), float(s.values[i])] for i in order],
                            numeric={1}))
    return tables


def coefficient_tables(ds: xr.Dataset, info: dict) -> list[Table]:
    """Per comparison, each metric's median over classes (range), and its p-value."""
    da = ds["coefficient_correlation"]
    pv = ds.get("coefficient_correlation_pvalue")
    metrics = [str(m) for m in da["metric"].values]
    rows = []
    for c in da["comparison"].values:
        row = [str(c)]
        for m in metrics:
            v = da.sel(comparison=c, metric=m).values.astype(np.float64)
            with np.errstate(all="ignore"), _quiet():
                row.append(f"{np.nanmedian(v):.3g} ({np.nanmin(v):.2g} to {np.nanmax(v):.2g})"
                           if np.isfinite(v).any() else "")
        if pv is not None:
            p = pv.sel(comparison=c).values.astype(np.float64)
            row.append(float(np.nanmax(p)) if np.isfinite(p).any() else "")
        rows.append(row)
    header = ["comparison"] + [f"{m}: median over classes (range)" for m in metrics]
    if pv is not None:
        header.append("largest p-value")
    return [Table(f"Agreement of the two models' coefficients in each comparison, over the {da.sizes['class']} "
                  f"classes.", header, rows, numeric={len(header) - 1} if pv is not None else set())]


def ccc_tables(ds: xr.Dataset, info: dict) -> list[Table]:
    """The most strongly associated feature pairs (CCC), square or condensed form."""
    if "ccc_matrix" in ds.data_vars:
        m = ds["ccc_matrix"].values.astype(np.float64)
        fi, fj = ds["feature_i"].values, ds["feature_j"].values
        iu = np.triu_indices(min(m.shape), k=1)
        vals = m[iu]
        pairs = [(str(fi[a]), str(fj[b]), v) for a, b, v in zip(*iu, vals)]
    elif "ccc_pair" in ds.data_vars:
        vals = ds["ccc_pair"].values.astype(np.float64)
        pairs = [(str(a), str(b), v) for a, b, v in zip(ds["feature_i"].values, ds["feature_j"].values, vals)]
    else:
        return []
    pairs = [p for p in pairs if np.isfinite(p[2])]
    pairs.sort(key=lambda p: -p[2])
    return [Table(f"The {min(MAX_ROWS, len(pairs))} most associated feature pairs of {len(pairs)} (CCC, highest first).",
                  ["feature", "feature", "CCC"], [list(p) for p in pairs[:MAX_ROWS]], numeric={2})]


def track_tables(ds: xr.Dataset, info: dict) -> list[Table]:
    """Per contig: bins predicted, mean / max prediction and where the maximum is (genome position)."""
    da = ds["track_prediction"]
    if "strand" in da.dims:
        da = da.mean("strand")
    target = ""
    if "target" in da.dims:
        target = str(da["target"].values[0]) if "target" in da.coords else "0"
        da = da.isel(target=0)
    where = ds["genome_position"] if "genome_position" in ds.coords else None
    names = ds["contig_name"].values if "contig_name" in ds.coords else None
    rows = []
    for c in range(da.sizes["contig"]):
        v = da.isel(contig=c).values.astype(np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            continue
        i = int(np.nanargmax(v))
        at = f"{int(where.isel(contig=c).values[i]):,} bp" if where is not None else f"bin {i}"
        rows.append([str(names[c]) if names is not None else c, int(ok.sum()), float(np.nanmean(v)), float(v[i]), at])
    return [Table(f"Prediction along each contig{f' (target {target})' if target else ''}: bins predicted, mean and "
                  f"maximum, and where the maximum is.", ["contig", "bins", "mean", "max", "max at"], rows,
                  numeric={1, 2, 3})]


def key_tables(task: str, ds: xr.Dataset, info: dict, *, markers: dict[str, float] | None = None) -> list[Table]:
    """Return the key tables of one group's results (``[]`` for a task without one)."""
    if task in ("perturbation_sweep", "genome_sweep"):
        return sweep_tables(ds, info, markers)
    if task in ("saturation_mutagenesis", "genome_ism"):
        return ism_tables(ds, info, markers)
    if task == "summarize_attributions":
        return summary_tables(ds, info)
    if task in ("attribute", "fastshap"):
        return attribution_tables(ds, info)
    if task == "embedding":
        return embedding_tables(ds, info)
    if task == "clustering_score_folds":
        return fold_tables(ds, info)
    if task == "clustering_scores":
        return score_tables(ds, info)
    if task == "coefficient_comparison":
        return coefficient_tables(ds, info)
    if task == "all_pairs_ccc":
        return ccc_tables(ds, info)
    if task == "tiled_prediction":
        return track_tables(ds, info)
    return []


@contextlib.contextmanager
def _quiet():
    """Silence numpy's all-NaN RuntimeWarnings: such slices are reported as empty cells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
