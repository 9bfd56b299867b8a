"""Coefficient jobs: ``interpretome coefficients`` (multi-class vs one-vs-rest) and ``interpretome ccc``.

``coefficients``: read coefficient tables / arrays / (trusted) scikit-learn models, store them
as ``coefficient`` (model, class, feature) with the per-class correlations, write the tidy TSV
and draw the figures. ``ccc``: all-pairs CCC of a (feature, sample) matrix on the cluster.
Also: a deterministic synthetic phenotypic-profiling data set for the demo and the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..storage.coef_io import KINDS as MODEL_KINDS, combine_coefficients, read_coefficients, read_table
from ..storage.readers import InputError
from ..storage.schema import FEATURE, SAMPLE
from ..storage.store import open_group
from ..tasks.ccc import all_pairs_ccc
from ..tasks.coefficients import compare_coefficients, correlation_table
from ..viz.coefficients import (plot_ccc_matrix, plot_class_kde, plot_class_means, plot_clustermap, plot_heatmap,
                                plot_scatter_grid, save)
from . import store_result
from .declare import FIGURES, JobKind, Param, draw_figures

PHENOTYPES = ("Interphase", "Prometaphase", "Metaphase", "Anaphase", "Apoptosis", "Binuclear")


# --- synthetic data --------------------------------------------------------------------------------

def phenotypic_profiles(n_cells: int = 600, n_cp: int = 40, n_dp: int = 24, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Return ``(features (cell x feature) DataFrame, phenotype labels (cell,))``, deterministic in ``seed``.

    Feature names ``CP__<compartment>_<i>`` (CellProfiler-like) and ``DP__<i>`` (DeepProfiler-like).
    Each phenotype shifts a few features; features come in correlated modules, some of them
    non-linearly (squares, absolute values), so all-pairs CCC finds structure Pearson misses.
    """
    r = np.random.default_rng(seed)
    y = np.array(PHENOTYPES)[np.arange(n_cells) % len(PHENOTYPES)]
    r.shuffle(y)
    onehot = (y[:, None] == np.array(PHENOTYPES)[None, :]).astype(float)
    n = n_cp + n_dp
    effects = np.zeros((len(PHENOTYPES), n))
    for k in range(len(PHENOTYPES)):
        idx = r.choice(n, size=6, replace=False)
        effects[k, idx] = r.normal(0, 1.5, size=6)
    latent = r.normal(size=(n_cells, 8))
    load = r.normal(0, 1, size=(8, n)) * (r.random((8, n)) < 0.3)
    x = onehot @ effects + latent @ load + r.normal(0, 1, size=(n_cells, n))
    for j in range(0, n, 7):  # non-linear partners
        if j + 1 < n:
            x[:, j + 1] = x[:, j] ** 2 + 0.3 * r.normal(size=n_cells)
        if j + 2 < n:
            x[:, j + 2] = np.abs(x[:, j]) + 0.3 * r.normal(size=n_cells)
    comps = ("Cells", "Nuclei", "Cytoplasm")
    names = [f"CP__{comps[i % 3]}_{i:02d}" for i in range(n_cp)] + [f"DP__{i:02d}" for i in range(n_dp)]
    x = (x - x.mean(0)) / x.std(0)
    return pd.DataFrame(x, columns=names), y


def fit_profile_models(x: pd.DataFrame, y: np.ndarray, *, feature_sets: dict[str, list[str]] | None = None,
                       seed: int = 0, C: float = 0.5, tol: float = 1e-4) -> xr.Dataset:
    """Fit multi-class and per-class one-vs-rest LogisticRegression, final and shuffled-label baselines.

    ``feature_sets`` maps a name to its columns (default CP, DP and CP_and_DP by prefix). The
    shuffled baseline permutes the labels with ``seed``. Returns the combined coefficient Dataset.
    """
    from sklearn.linear_model import LogisticRegression

    if feature_sets is None:
        cp = [c for c in x.columns if c.startswith("CP__")]
        dp = [c for c in x.columns if c.startswith("DP__")]
        feature_sets = {"CP": cp, "DP": dp, "CP_and_DP": cp + dp}
    shuffled = np.random.default_rng(seed).permutation(y)
    parts = []
    for model_name, labels in (("final", y), ("shuffled", shuffled)):
        for fset, cols in feature_sets.items():
            xs = x[cols]
            multi = LogisticRegression(C=C, tol=tol, max_iter=2000).fit(xs, labels)
            parts.append(read_coefficients(multi, model=model_name, feature_set=fset, kind="multiclass"))
            for c in multi.classes_:
                binary = LogisticRegression(C=C, tol=tol, max_iter=2000).fit(xs, labels == c)
                parts.append(read_coefficients(binary, model=model_name, feature_set=fset, kind="ovr",
                                               positive_class=c))
    return combine_coefficients(parts)


# --- jobs ------------------------------------------------------------------------------------------

def run_coefficients(coefficients: xr.Dataset, store, *, group: str = "coefficients", n_perms: int = 0,
                     seed: int = 0, tsv=None, inputs=(), client=None, overwrite: bool = False, log=print):
    """Compare multi-class and one-vs-rest coefficients, store both, write the tidy TSV; return its path."""
    res = compare_coefficients(coefficients, n_perms=n_perms, seed=seed, merge=True)
    params = dict(n_perms=int(n_perms), seed=int(seed), models=[str(m) for m in coefficients["model"].values])
    store_result(res, store, group, task="coefficient_comparison", params=params, inputs=inputs, client=client,
                 overwrite=overwrite, log=log)
    if tsv is not None:
        tsv = Path(tsv)
        tsv.parent.mkdir(parents=True, exist_ok=True)
        correlation_table(open_group(store, group)).to_csv(tsv, sep="\t", index=False)
        log(f"correlations: {tsv}")
    return tsv


def run_ccc(matrix: xr.Dataset, store, *, group: str = "ccc", form: str = "square", feature_chunk=None,
            n_perms: int = 0, seed: int = 0, internal_n_clusters=None, inputs=(), client=None,
            overwrite: bool = False, log=print):
    """All-pairs CCC of ``matrix['feature_value']`` (feature, sample) into ``store/group``; return the report."""
    res = all_pairs_ccc(matrix, form=form, feature_chunk=feature_chunk, n_perms=n_perms, seed=seed,
                        internal_n_clusters=internal_n_clusters)
    params = dict(form=form, n_perms=int(n_perms), seed=int(seed), internal_n_clusters=internal_n_clusters,
                  feature_chunk=feature_chunk)
    return store_result(res, store, group, task="all_pairs_ccc", params=params, inputs=inputs, client=client,
                        overwrite=overwrite, log=log)


def render_coefficients(store, group, out_dir, *, models=None, comparisons=None, **_) -> list[Path]:
    """Draw heatmap, clustered heatmap, KDE and class-mean bars per model entry (default all, or ``models``),
    and the multi-class vs one-vs-rest scatter grid per comparison (default all, or ``comparisons``)."""
    ds = open_group(store, group)
    out = Path(out_dir)
    paths = []
    labels = models or [str(m) for m in ds["model"].values]
    for m in labels:
        stem = f"{group}_{m.replace(':', '_')}"
        paths.append(save(plot_heatmap(ds, m), out / f"{stem}_heatmap.png"))
        paths.append(save(plot_clustermap(ds, m), out / f"{stem}_clustermap.png"))
        paths.append(save(plot_class_kde(ds, m), out / f"{stem}_kde.png"))
        paths.append(save(plot_class_means(ds, m), out / f"{stem}_class_means.png"))
    if "coefficient_correlation" in ds:
        for c in comparisons or ds["comparison"].values:
            paths.append(save(plot_scatter_grid(ds, str(c)), out / f"{group}_{str(c).replace(':', '_')}_scatter.png"))
    return paths


def render_ccc(store, group, out_dir, **_) -> list[Path]:
    """Draw the clustered all-pairs CCC matrix."""
    return [save(plot_ccc_matrix(open_group(store, group)), Path(out_dir) / f"{group}_matrix.png")]


# --- command line ----------------------------------------------------------------------------------

def parse_input(spec: str) -> tuple[dict, str]:
    """Parse ``KIND:MODEL:FEATURESET[:CLASS]=PATH`` (or a bare PATH of a tidy table) -> (meta, path)."""
    head, sep, path = spec.rpartition("=")
    if not sep:
        return {}, spec
    bits = head.split(":")
    if len(bits) not in (3, 4) or bits[0] not in MODEL_KINDS:
        raise ValueError(f"--input {spec!r} must look like KIND:MODEL:FEATURESET[:CLASS]=PATH with KIND in {MODEL_KINDS}, "
                         f"e.g. multiclass:final:CP=final_cp.csv or ovr:final:CP:Mitosis=mitosis.joblib")
    meta = {"kind": bits[0], "model": bits[1], "feature_set": bits[2]}
    if len(bits) == 4:
        meta["positive_class"] = bits[3]
    return meta, path


def coefficients_job(*, store, group, inputs, tsv=None, n_perms=0, seed=0, class_col="class", feature_col="feature",
                     value_col="coefficient", trust_pickle=False, client=None, overwrite=False, log=print):
    """The ``coefficients`` kind: parse and read each ``KIND:MODEL:FEATURESET[:CLASS]=PATH`` input, then
    ``run_coefficients`` (the tidy table into ``tsv``, default STORE_correlations.tsv)."""
    parts, paths = [], []
    for spec in inputs:
        meta, path = parse_input(spec)
        parts.append(read_coefficients(path, trust_pickle=trust_pickle, class_col=class_col, feature_col=feature_col,
                                       value_col=value_col, **meta))
        paths.append(path)
    tsv = tsv or str(Path(store).with_suffix("")) + "_correlations.tsv"
    return run_coefficients(combine_coefficients(parts), store, group=group, n_perms=n_perms, seed=seed, tsv=tsv,
                            inputs=paths, client=client, overwrite=overwrite, log=log)


def read_matrix(path, *, transpose: bool = False, var: str | None = None) -> xr.Dataset:
    """Return ``feature_value`` (feature, sample) from a CSV/TSV/Parquet (rows = features, first column
    = names), a ``.npy`` or a zarr store/group holding a 2-d variable; ``transpose`` if rows are samples."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.ndim != 2:
            raise InputError(f"{str(path)!r} holds a {x.ndim}-d array; CCC needs a 2-d (feature, sample) matrix")
        x = x.T if transpose else x
        names = np.array([f"f{i}" for i in range(x.shape[0])], dtype=object)
        return xr.Dataset({"feature_value": ((FEATURE, SAMPLE), x)}, coords={FEATURE: names})
    if path.suffix.lower() == ".zarr" or path.is_dir():
        ds = xr.open_zarr(path)
        name = var or next((v for v in ds.data_vars if ds[v].ndim == 2), None)
        if name is None:
            raise InputError(f"{str(path)!r} has no 2-d variable: pass --var NAME")
        a = ds[name]
        a = a.T if transpose else a
        return xr.Dataset({"feature_value": ((FEATURE, SAMPLE), a.data)},
                          coords={FEATURE: np.asarray(a[a.dims[0]].values)})
    df = read_table(path)
    df = df.set_index(df.columns[0]) if df[df.columns[0]].dtype.kind not in "fiu" else df
    df = df.T if transpose else df
    return xr.Dataset({"feature_value": ((FEATURE, SAMPLE), df.to_numpy(dtype=np.float64))},
                      coords={FEATURE: np.asarray(df.index.astype(str), dtype=object),
                              SAMPLE: np.asarray(df.columns.astype(str), dtype=object)})


def ccc_job(*, store, group, matrix, transpose=False, var=None, form="square", feature_chunk=None, n_perms=0,
            seed=0, client=None, overwrite=False, log=print):
    """The ``ccc`` kind: read ``matrix`` (``read_matrix``) and ``run_ccc`` it into ``store/group``."""
    ds = read_matrix(matrix, transpose=transpose, var=var)
    return run_ccc(ds, store, group=group, form=form, feature_chunk=feature_chunk, n_perms=n_perms, seed=seed,
                   inputs=[matrix] if Path(matrix).is_file() else [], client=client, overwrite=overwrite, log=log)


COEFFICIENTS = JobKind(
    "coefficients", coefficients_job, group="coefficients", model=False, finish=draw_figures(render_coefficients),
    doc="multi-class vs one-vs-rest coefficient maps and per-class Pearson/Spearman/CCC", params=(
        Param("inputs", "list[str]", required=True, file="=", cli="--input", repeat=True,
              doc="KIND:MODEL:FEATURESET[:CLASS]=PATH (KIND multiclass|ovr; PATH .csv/.tsv/.parquet/.npy/.joblib) "
                  "or a bare PATH of a tidy table with model_name/feature_set/model_kind columns"),
        Param("tsv", "str", None, output=True, doc="tidy correlation table (default STORE_correlations.tsv)"),
        FIGURES,
        Param("n_perms", "int", 0, doc="permutations for the CCC p-value (0: none)"),
        Param("seed", "int", 0, doc="seed of the permutations"),
        Param("class_col", "str", "class", doc="class column of a table"),
        Param("feature_col", "str", "feature", doc="feature column of a tidy table"),
        Param("value_col", "str", "coefficient", doc="value column of a tidy table"),
        Param("trust_pickle", "bool", False, doc="allow loading joblib/pickle model files (runs code from the file: "
                                                 "trusted files only)"),
    ))

CCC = JobKind(
    "ccc", ccc_job, group="ccc", model=False, finish=draw_figures(render_ccc),
    doc="distributed all-pairs Clustermatch Correlation Coefficient of a (feature, sample) matrix", params=(
        Param("matrix", "str", required=True, file=True, cli="matrix",
              doc="features x samples: .csv/.tsv/.parquet (first column = feature names), .npy, .zarr"),
        Param("transpose", "bool", False, doc="the file's rows are samples, columns features"),
        Param("var", "str", None, doc="variable of a zarr input"),
        Param("form", "str", "square", choices=("square", "condensed"), doc="square matrix or condensed pairs"),
        Param("feature_chunk", "int", None, doc="features per tile side"),
        Param("n_perms", "int", 0, doc="permutations for p-values (0: none)"),
        Param("seed", "int", 0, doc="seed of the permutations"),
        FIGURES,
    ))

KINDS = (COEFFICIENTS, CCC)
RENDERERS = {"coefficient_comparison": render_coefficients, "all_pairs_ccc": render_ccc}


# --- demo ------------------------------------------------------------------------------------------

def step_coefficients(ctx) -> list[Path]:
    """Demo: synthetic phenotypic profiles -> logistic-regression coefficients (final + shuffled,
    multi-class + one-vs-rest, three feature sets) -> per-class Pearson/Spearman/CCC, figures, and the
    all-pairs CCC of the features over the cells."""
    x, y = phenotypic_profiles(n_cells=360, seed=0)
    coefs = fit_profile_models(x, y, seed=0, tol=1e-3)
    out = Path(ctx.out)
    tsv = run_coefficients(coefs, ctx.store, group="coefficients", n_perms=100, seed=0,
                           tsv=out / "coefficient_correlations.tsv", client=ctx.client, overwrite=ctx.overwrite,
                           log=ctx.log)
    figs = render_coefficients(ctx.store, "coefficients", out / "figures",
                               models=["final:CP_and_DP:multiclass", "shuffled:CP_and_DP:multiclass"],
                               comparisons=["final:CP_and_DP", "shuffled:CP_and_DP"])
    table = pd.read_csv(tsv, sep="\t")
    for name, sub in table.groupby("model"):
        ctx.log(f"{name}: median pearson {sub.pearson.median():.2f}, ccc {sub.ccc.median():.2f} "
                f"over {len(sub)} class x feature-set comparisons")
    matrix = xr.Dataset({"feature_value": ((FEATURE, SAMPLE), x.to_numpy().T)},
                        coords={FEATURE: np.asarray(x.columns, dtype=object)})
    run_ccc(matrix, ctx.store, group="ccc", form="square", feature_chunk=16, client=ctx.client,
            overwrite=ctx.overwrite, log=ctx.log)
    figs += render_ccc(ctx.store, "ccc", out / "figures")
    return figs
