"""Clustering scores: silhouette / Davies-Bouldin / Calinski-Harabasz against sklearn, scib, folds."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats
from sklearn import metrics as skm

from interpretome.tasks.scores import (
    cluster_distance_sums,
    clustering_scores,
    fold_dataset,
    fold_table,
    summarize_folds,
)


def _data(n=240, seed=0, chunk=None):
    rs = np.random.default_rng(seed)
    lab = rs.integers(0, 4, n)
    bat = rs.integers(0, 3, n)
    x = rs.normal(size=(n, 6)) + 1.5 * lab[:, None] + 0.3 * bat[:, None]
    ds = xr.Dataset({"item_vector": (("item", "feature"), x),
                     "item_label": (("item",), np.array(list("abcd"))[lab]),
                     "item_batch": (("item",), np.array(["b0", "b1", "b2"])[bat])})
    if chunk:
        ds["item_vector"] = ds["item_vector"].chunk({"item": chunk})
    return ds, x, lab, bat


def _values(res):
    return dict(zip(res["metric"].values.tolist(), res["score_value"].values.tolist()))


@pytest.mark.parametrize("chunk,block", [(None, 1000), (64, 50), (37, 16)])
def test_clustering_scores__match_sklearn(chunk, block):
    ds, x, lab, bat = _data(chunk=chunk)
    res = clustering_scores(ds, batch="item_batch", block=block)
    with dask.config.set(scheduler="sync"):
        v = _values(res)
        s_lab = res["score_silhouette_label"].values
        s_bat = res["score_silhouette_batch"].values
        per_class = res["score_silhouette_class"].values
    assert v["asw_label"] == pytest.approx(skm.silhouette_score(x, lab), rel=1e-10)
    assert v["asw_batch"] == pytest.approx(skm.silhouette_score(x, bat), rel=1e-10)
    assert v["davies_bouldin_label"] == pytest.approx(skm.davies_bouldin_score(x, lab), rel=1e-10)
    assert v["calinski_harabasz_label"] == pytest.approx(skm.calinski_harabasz_score(x, lab), rel=1e-10)
    assert v["davies_bouldin_batch"] == pytest.approx(skm.davies_bouldin_score(x, bat), rel=1e-10)
    assert v["calinski_harabasz_batch"] == pytest.approx(skm.calinski_harabasz_score(x, bat), rel=1e-10)
    np.testing.assert_allclose(s_lab, skm.silhouette_samples(x, lab), atol=1e-12)
    np.testing.assert_allclose(s_bat, skm.silhouette_samples(x, bat), atol=1e-12)
    ref = pd.Series(skm.silhouette_samples(x, lab)).groupby(lab).mean().to_numpy()
    np.testing.assert_allclose(per_class, ref, atol=1e-12)
    assert list(res["class"].values) == list("abcd")


def test_clustering_scores__cosine_and_singletons():
    ds, x, lab, _ = _data(n=60)
    lab = lab.copy()
    lab[0] = 9                                   # a singleton cluster: sklearn gives it 0
    ds["item_label"] = ("item", lab)
    res = clustering_scores(ds, metric="cosine", block=16)
    np.testing.assert_allclose(res["score_silhouette_label"].values, skm.silhouette_samples(x, lab, metric="cosine"),
                               atol=1e-12)
    assert res["score_silhouette_label"].values[0] == 0.0


def test_cluster_distance_sums__distributed_equals_single_block():
    _, x, lab, _ = _data(n=150)
    xd = da.from_array(x, chunks=(150, 6))
    one = cluster_distance_sums(xd, da.from_array(lab, chunks=150), 4).compute()
    many = cluster_distance_sums(da.from_array(x, chunks=(23, 6)), da.from_array(lab, chunks=23), 4).compute()
    np.testing.assert_allclose(many, one, rtol=1e-12)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))      # plain reference
    ref = np.stack([d[:, lab == k].sum(1) for k in range(4)], axis=1)
    np.testing.assert_allclose(one, ref, rtol=1e-9)


def test_clustering_scores__scib_convention():
    ds, x, lab, bat = _data(n=200)
    bat = bat.copy()
    bat[lab == 0] = 0                            # label 0 has a single batch: scib skips it
    ds["item_batch"] = ("item", bat)
    v = _values(clustering_scores(ds, batch="item_batch", convention="scib", block=64))
    per_group = []
    for g in np.unique(lab):
        sel = lab == g
        nb = np.unique(bat[sel]).size
        if nb == 1 or nb == sel.sum():
            continue
        per_group.append((1 - np.abs(skm.silhouette_samples(x[sel], bat[sel]))).mean())
    assert len(per_group) == 3
    assert v["asw_batch"] == pytest.approx(np.mean(per_group), rel=1e-10)
    assert v["asw_label"] == pytest.approx((skm.silhouette_score(x, lab) + 1) / 2, rel=1e-10)


def test_clustering_scores__subsample_is_sklearn_sample_size():
    ds, x, lab, _ = _data(n=300, chunk=70)
    res = clustering_scores(ds, sample_size=120, seed=5, block=40)
    v = _values(res)
    assert v["asw_label"] == pytest.approx(skm.silhouette_score(x, lab, sample_size=120, random_state=5), rel=1e-10)
    rows = np.sort(np.random.RandomState(5).permutation(300)[:120])
    sampled = res["score_sampled"].values
    assert sampled.sum() == 120 and np.array_equal(np.flatnonzero(sampled), rows)
    s = res["score_silhouette_label"].values
    assert np.isnan(s[~sampled]).all()
    np.testing.assert_allclose(s[sampled], skm.silhouette_samples(x[rows], lab[rows]), atol=1e-12)
    assert v["davies_bouldin_label"] == pytest.approx(skm.davies_bouldin_score(x[rows], lab[rows]), rel=1e-10)


@pytest.mark.graph
def test_clustering_scores__lazy():
    ds, *_ = _data(chunk=50)
    res = clustering_scores(ds, batch="item_batch", sample_size=100, block=32)
    for v in res.data_vars:
        assert isinstance(res[v].data, da.Array), v


def test_clustering_scores__on_two_workers(client2):
    ds, x, lab, bat = _data(n=180, chunk=40)
    res = clustering_scores(ds, batch="item_batch", block=30)
    got = client2.compute(res["score_value"].data).result()
    assert got[0] == pytest.approx(skm.silhouette_score(x, lab), rel=1e-10)
    assert got[1] == pytest.approx(skm.silhouette_score(x, bat), rel=1e-10)


@pytest.mark.graph(max_computes=1)  # the one compute: .values raises the lazy label check
def test_clustering_scores__bad_input():
    ds, *_ = _data(n=40)
    with pytest.raises(ValueError, match="convention 'foo'"):
        clustering_scores(ds, convention="foo")
    with pytest.raises(ValueError, match="metric 'manhattan'"):
        clustering_scores(ds, metric="manhattan")
    lazy = ds.assign(item_label=ds["item_label"].chunk(10))
    with pytest.raises(ValueError, match="dask-backed.*label_classes="):
        clustering_scores(lazy)
    with pytest.raises(ValueError, match="not among the classes"):
        clustering_scores(lazy, label_classes=["a", "b"]).score_value.values
    with pytest.raises(ValueError, match="at least 2 labels"):
        clustering_scores(ds.assign(item_label=("item", np.array(["a"] * 40))))
    with pytest.raises(ValueError, match="has no \\['nope'\\]"):
        clustering_scores(ds, batch="nope")


def test_summarize_folds__against_scipy():
    rs = np.random.default_rng(1)
    vals = {"asw_label": rs.normal(0.5, 0.05, 5), "asw_batch": rs.normal(0.1, 0.02, 5)}
    table = pd.DataFrame([{"fold": f"f{i}", "metric": m, "value": v[i]} for m, v in vals.items() for i in range(5)])
    summary, extremes = summarize_folds(table)
    row = summary.set_index("metric").loc["asw_label"]
    v = vals["asw_label"]
    assert row["n"] == 5
    assert row["mean"] == pytest.approx(v.mean())
    assert row["sd"] == pytest.approx(np.std(v, ddof=1))
    assert row["sem"] == pytest.approx(stats.sem(v))
    lo, hi = stats.t.interval(0.95, 4, loc=v.mean(), scale=stats.sem(v))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    b = vals["asw_batch"]
    assert extremes["lowest_fold"] == f"f{int(np.argmin(b))}" and extremes["highest_fold"] == f"f{int(np.argmax(b))}"
    assert extremes["lowest"] == pytest.approx(b.min())
    ds = fold_dataset(table)
    assert ds["score_fold"].sel(fold="f2", metric="asw_batch").item() == pytest.approx(b[2])
    with pytest.raises(ValueError, match="no columns \\['value'\\]"):
        summarize_folds(table.drop(columns="value"))


def test_fold_table__from_results():
    results = {}
    for k in range(3):
        ds, *_ = _data(n=60, seed=k)
        results[f"fold{k}"] = clustering_scores(ds, batch="item_batch", block=32).compute()
    table = fold_table(results)
    assert len(table) == 3 * 6
    ref = skm.silhouette_score(_data(n=60, seed=2)[1], _data(n=60, seed=2)[2])
    got = table[(table.fold == "fold2") & (table.metric == "asw_label")]["value"].item()
    assert got == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_clustering_scores__strips_and_float32_match_sklearn(metric):
    # blocks of 700 rows: several cache strips per tile (diagonal zeros set in later strips too), an
    # uneven last block, off-diagonal tiles reduced on both sides; float32 input far from the origin
    # (the centring keeps |a|^2 + |b|^2 - 2ab accurate)
    rs = np.random.default_rng(3)
    n = 1500
    lab = rs.integers(0, 5, n)
    bat = rs.integers(0, 2, n)
    x = (50.0 + rs.normal(size=(n, 12)) + 2.0 * lab[:, None]).astype(np.float32)
    ds = xr.Dataset({"item_vector": (("item", "feature"), x), "item_label": (("item",), lab),
                     "item_batch": (("item",), bat)})
    res = clustering_scores(ds, batch="item_batch", metric=metric, block=700)
    with dask.config.set(scheduler="sync"):
        s_lab = res["score_silhouette_label"].values
        s_bat = res["score_silhouette_batch"].values
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s_lab, skm.silhouette_samples(x64, lab, metric=metric), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s_bat, skm.silhouette_samples(x64, bat, metric=metric), rtol=1e-6, atol=1e-9)


def test_cluster_distance_sums__strips_equal_plain_reference(monkeypatch):
    from interpretome.tasks import scores

    monkeypatch.setattr(scores, "_STRIP", 24)        # 5 strips per 100-row block: the diagonal in each
    _, x, lab, _ = _data(n=330)
    got = cluster_distance_sums(da.from_array(x, chunks=(100, 6)), da.from_array(lab, chunks=100), 4).compute(
        scheduler="sync")
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, 0.0)
    ref = np.stack([d[:, lab == k].sum(1) for k in range(4)], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
