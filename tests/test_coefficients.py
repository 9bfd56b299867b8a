"""Coefficient inputs, multi-class vs one-vs-rest correlations (== numpy / scipy / ccc-coef), figures, CLI."""

from __future__ import annotations

import joblib
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from ccc.coef import ccc as ccc_ref
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from interpretome.jobs.coefficients import fit_profile_models, phenotypic_profiles, run_coefficients
from interpretome.storage.coef_io import (InputError, coefficients_to_frame, combine_coefficients,
                                          read_coefficients)
from interpretome.tasks.ccc import permutations
from interpretome.tasks.coefficients import compare_coefficients, correlation_table, correlations


@pytest.fixture(scope="module")
def fitted():
    """Small multi-class + per-class binary logistic regressions on synthetic profiles."""
    x, y = phenotypic_profiles(n_cells=240, n_cp=12, n_dp=6, seed=1)
    multi = LogisticRegression(max_iter=2000).fit(x, y)
    binaries = {c: LogisticRegression(max_iter=2000).fit(x, y == c) for c in multi.classes_}
    return x, y, multi, binaries


@pytest.fixture(scope="module")
def coefs(fitted):
    _, _, multi, binaries = fitted
    parts = [read_coefficients(multi, model="final", feature_set="all")]
    parts += [read_coefficients(b, model="final", feature_set="all", kind="ovr", positive_class=c)
              for c, b in binaries.items()]
    return combine_coefficients(parts)


def test_read_coefficients__sklearn_models(fitted, coefs):
    x, _, multi, binaries = fitted
    assert list(coefs["model"].values) == ["final:all:multiclass", "final:all:ovr"]
    assert list(coefs["class"].values) == list(multi.classes_)
    assert list(coefs["feature"].values) == list(x.columns)  # feature_names_in_
    np.testing.assert_array_equal(coefs["coefficient"].values[0], multi.coef_)
    for k, c in enumerate(multi.classes_):
        np.testing.assert_array_equal(coefs["coefficient"].values[1, k], binaries[c].coef_[0])
    assert coefs["class_present"].values.all() and coefs["feature_present"].values.all()
    ovr = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(x, fitted[1])
    one = read_coefficients(ovr, kind="ovr")
    np.testing.assert_array_equal(one["coefficient"].values[0], np.stack([e.coef_[0] for e in ovr.estimators_]))


def test_read_coefficients__tables_arrays_and_pickles(tmp_path, coefs):
    multi = coefs.isel(model=[0])
    wide = pd.DataFrame(multi["coefficient"].values[0], index=multi["class"].values, columns=multi["feature"].values)
    wide.index.name = "class"
    wide.to_csv(tmp_path / "w.csv")
    wide.reset_index().rename(columns={"class": "phenotype"}).to_csv(tmp_path / "w.tsv", sep="\t", index=False)
    tidy = coefficients_to_frame(coefs)
    tidy.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "a.npy", multi["coefficient"].values[0])
    expect = multi["coefficient"].values[0]
    for got in (read_coefficients(tmp_path / "w.csv"),
                read_coefficients(tmp_path / "w.tsv", class_col="phenotype"),
                read_coefficients(tmp_path / "a.npy", classes=multi["class"].values, features=multi["feature"].values),
                read_coefficients(wide)):
        np.testing.assert_array_equal(got["coefficient"].values[0], expect)
        assert list(got["feature"].values) == list(multi["feature"].values)
    both = read_coefficients(tmp_path / "t.parquet")  # tidy: model columns give both entries
    assert list(both["model"].values) == list(coefs["model"].values)
    xr.testing.assert_equal(both["coefficient"], coefs["coefficient"].transpose(*both["coefficient"].dims))
    est = LogisticRegression().fit(np.random.default_rng(0).normal(size=(30, 4)), [0, 1, 2] * 10)
    joblib.dump(est, tmp_path / "m.joblib")
    got = read_coefficients(tmp_path / "m.joblib", trust_pickle=True, features=list("abcd"))
    np.testing.assert_array_equal(got["coefficient"].values[0], est.coef_)
    assert list(got["feature"].values) == list("abcd")


def test_read_coefficients__pickle_needs_opt_in(tmp_path):
    joblib.dump(LogisticRegression(), tmp_path / "m.joblib")
    with pytest.raises(PermissionError, match="runs arbitrary code: pass trust_pickle=True"):
        read_coefficients(tmp_path / "m.joblib")


def test_read_coefficients__bad_tables(tmp_path):
    df = pd.DataFrame({"class": ["a", "b"], "f1": [1.0, 2.0], "f2": [np.nan, np.nan]})
    with pytest.raises(InputError, match=r"all-NaN \(empty\) coefficients for feature\(s\) \['f2'\]"):
        read_coefficients(df)
    with pytest.raises(InputError, match="has 1 NaN coefficient\\(s\\), e.g. class 'b' feature 'f1'"):
        read_coefficients(pd.DataFrame({"class": ["a", "b"], "f1": [1.0, np.nan], "f2": [1.0, 2.0]}))
    with pytest.raises(InputError, match="is empty"):
        read_coefficients(df.iloc[:0])
    with pytest.raises(InputError, match="duplicate class names"):
        read_coefficients(np.ones((2, 3)), classes=["a", "a"])
    with pytest.raises(InputError, match="non-numeric feature column"):
        read_coefficients(pd.DataFrame({"class": ["a"], "f1": ["x"]}))
    with pytest.raises(TypeError, match="has no coef_"):
        read_coefficients(type("Fake", (), {"estimators_": []})())
    with pytest.raises(ValueError, match="model kind 'binary' is not one of"):
        read_coefficients(np.ones((2, 3)), kind="binary")


def test_compare_coefficients__equals_numpy_scipy_ccc(coefs):
    res = compare_coefficients(coefs, n_perms=30, seed=5, merge=False).compute(scheduler="sync")
    perms = permutations(coefs.sizes["feature"], 30, 5)
    for k, c in enumerate(coefs["class"].values):
        x = coefs["coefficient"].values[0, k]
        y = coefs["coefficient"].values[1, k]
        val = res["coefficient_correlation"].values[0, k]
        pv = res["coefficient_correlation_pvalue"].values[0, k]
        assert val[0] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
        assert val[0] == stats.pearsonr(x, y).statistic and pv[0] == stats.pearsonr(x, y).pvalue
        assert val[1] == stats.spearmanr(x, y).statistic and pv[1] == stats.spearmanr(x, y).pvalue
        assert val[2] == ccc_ref(x, y)
        null = np.array([ccc_ref(x, y[p]) for p in perms])
        assert pv[2] == (np.sum(null >= val[2]) + 1) / 31
    table = correlation_table(res)
    assert list(table.columns) == ["model", "feature_set", "class", "pearson", "spearman", "ccc",
                                   "pearson_pvalue", "spearman_pvalue", "ccc_pvalue"]
    assert len(table) == coefs.sizes["class"] and (table["model"] == "final").all()


def test_correlations__constant_vector_is_nan():
    out = correlations(np.arange(10.0), np.ones(10))
    assert np.isnan(out).all()


@pytest.mark.graph
def test_compare_coefficients__lazy_and_chunk_invariant(coefs):
    lazy = coefs.copy()
    lazy["coefficient"] = lazy["coefficient"].copy(data=da.from_array(coefs["coefficient"].values, chunks=(1, 2, 5)))
    res = compare_coefficients(lazy, merge=False)
    assert isinstance(res["coefficient_correlation"].data, da.Array)
    assert isinstance(res["coefficient_correlation_pvalue"].data, da.Array)
    with pytest.raises(Exception, match="compute happened"):
        res["coefficient_correlation"].values  # noqa: B018 - proves the graph is still lazy


def test_compare_coefficients__chunkings_agree(coefs):
    plain = compare_coefficients(coefs, merge=False).compute(scheduler="sync")
    lazy = coefs.copy()
    lazy["coefficient"] = lazy["coefficient"].copy(data=da.from_array(coefs["coefficient"].values, chunks=(1, 3, 4)))
    chunked = compare_coefficients(lazy, merge=False).compute(scheduler="threads")
    xr.testing.assert_identical(plain, chunked)


@pytest.mark.graph
def test_compare_coefficients__mismatched_classes_and_features(fitted):
    x, _, multi, binaries = fitted
    cls = list(multi.classes_)
    base = read_coefficients(multi, model="final", feature_set="all")
    ovr_missing = [read_coefficients(binaries[c], model="final", feature_set="all", kind="ovr", positive_class=c)
                   for c in cls[:-1]]
    with pytest.raises(ValueError, match=rf"classes of model 'final' feature set 'all' do not match: \['{cls[-1]}'\] "
                                         r"only in the multiclass model"):
        compare_coefficients(combine_coefficients([base] + ovr_missing))
    cols = list(x.columns[:-2])
    other = [read_coefficients(LogisticRegression(max_iter=500).fit(x[cols], fitted[1] == c), model="final",
                               feature_set="all", kind="ovr", positive_class=c) for c in cls]
    with pytest.raises(ValueError, match="features of model 'final' feature set 'all' do not match"):
        compare_coefficients(combine_coefficients([base] + other))
    with pytest.raises(ValueError, match="has only \\['multiclass'\\] coefficients"):
        compare_coefficients(base)
    dup = read_coefficients(binaries[cls[0]], model="final", feature_set="all", kind="ovr", positive_class=cls[0])
    with pytest.raises(InputError, match="given twice"):
        combine_coefficients([dup, dup])


def test_run_coefficients__store_tsv_and_figures(client2, tmp_path):
    from interpretome.jobs.coefficients import render_coefficients
    from interpretome.storage.store import open_group

    x, y = phenotypic_profiles(n_cells=180, n_cp=8, n_dp=4, seed=2)
    coefs = fit_profile_models(x, y, seed=2)
    assert sorted(set(coefs["model_name"].values)) == ["final", "shuffled"]
    assert sorted(set(coefs["feature_set"].values)) == ["CP", "CP_and_DP", "DP"]
    tsv = run_coefficients(coefs, tmp_path / "s.zarr", n_perms=10, tsv=tmp_path / "c.tsv", client=client2,
                           log=lambda m: None)
    table = pd.read_csv(tsv, sep="\t")
    assert len(table) == 2 * 3 * 6
    ref = correlation_table(compare_coefficients(coefs, n_perms=10).compute(scheduler="sync"))
    pd.testing.assert_frame_equal(table, ref, check_exact=False, rtol=1e-12)
    stored = open_group(tmp_path / "s.zarr", "coefficients")
    np.testing.assert_array_equal(stored["coefficient"].values, coefs["coefficient"].values)
    figs = render_coefficients(tmp_path / "s.zarr", "coefficients", tmp_path / "fig", models=["final:CP:multiclass"])
    names = sorted(p.name for p in figs)
    assert "coefficients_final_CP_multiclass_clustermap.png" in names and len(names) == 4 + 6
    assert all(p.stat().st_size > 1000 for p in figs)


def test_plot_scatter_grid__titles_carry_the_correlations(coefs):
    from interpretome.viz.coefficients import plot_class_kde, plot_class_means, plot_heatmap, plot_scatter_grid

    res = compare_coefficients(coefs).compute(scheduler="sync")
    fig = plot_scatter_grid(res, "final:all")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    val = res["coefficient_correlation"].values[0, 0]
    assert titles[0] == f"{res['class'].values[0]}\nPearson {val[0]:.2f}  Spearman {val[1]:.2f}  CCC {val[2]:.2f}"
    bars = plot_class_means(res, 0).axes[0].patches
    np.testing.assert_allclose([b.get_height() for b in bars], coefs["coefficient"].values[0].mean(axis=1))
    assert len(plot_class_kde(res, 0).axes[0].lines) == coefs.sizes["class"]
    assert plot_heatmap(res, "final:all:ovr").axes[0].images[0].get_array().shape == (6, 18)
    with pytest.raises(ValueError, match="not in the store"):
        plot_scatter_grid(res, "nope:x")


def test_coefficients_cli(client2, tmp_path, coefs):
    from interpretome.cli import main

    multi = coefs.isel(model=0)
    pd.DataFrame(multi["coefficient"].values, index=pd.Index(multi["class"].values, name="class"),
                 columns=multi["feature"].values).to_csv(tmp_path / "multi.csv")
    for k, c in enumerate(coefs["class"].values):
        est = LogisticRegression()
        est.coef_ = coefs["coefficient"].values[1, k][None, :]
        est.classes_ = np.array([False, True])
        est.feature_names_in_ = np.asarray(coefs["feature"].values, dtype=object)
        joblib.dump(est, tmp_path / f"{c}.joblib")
    args = ["coefficients", "--input", f"multiclass:final:all={tmp_path / 'multi.csv'}"]
    args += [a for c in coefs["class"].values for a in ("--input", f"ovr:final:all:{c}={tmp_path / f'{c}.joblib'}")]
    args += ["-o", str(tmp_path / "s.zarr"), "--tsv", str(tmp_path / "c.tsv"), "--scheduler", client2.scheduler.address]
    assert main(args) == 2  # refused: no --trust-pickle
    assert main(args + ["--trust-pickle"]) == 0
    table = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    ref = correlation_table(compare_coefficients(coefs).compute(scheduler="sync"))
    np.testing.assert_allclose(table[["pearson", "spearman", "ccc"]].values, ref[["pearson", "spearman", "ccc"]].values,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="must look like KIND:MODEL:FEATURESET"):
        from interpretome.jobs.coefficients import parse_input
        parse_input("final=x.csv")


def test_phenotypic_profiles__deterministic():
    a, ya = phenotypic_profiles(n_cells=60, seed=4)
    b, yb = phenotypic_profiles(n_cells=60, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (ya == yb).all() and len(set(ya)) == 6
