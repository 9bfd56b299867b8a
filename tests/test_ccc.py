"""All-pairs CCC: equal to ccc-coef for several tilings and 1 vs 2 workers, p-values, errors, laziness."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from ccc.coef import ccc as ccc_ref

from interpretome.tasks import ccc as cccmod
from interpretome.tasks.ccc import all_pairs_ccc, ccc_dataset, ccc_values, permutations


def _matrix(n_feat=23, n_samp=150, seed=0):
    """Features with the cases that matter: constants, heavy ties, binary, rare events, non-linear pairs."""
    r = np.random.default_rng(seed)
    x = r.normal(size=(n_feat, n_samp))
    x[1] = x[0] ** 2 + 0.1 * r.normal(size=n_samp)  # non-linear partner
    x[2] = 3.0  # constant -> NaN
    x[3] = r.integers(0, 3, n_samp)  # three values, many ties
    x[4] = np.round(r.normal(size=n_samp), 1)  # rounded, ties
    x[5, : n_samp // 3] = 0.0
    x[5, n_samp // 3:] = 1.0  # binary, unbalanced
    x[6] = (r.random(n_samp) < 0.04).astype(float)  # rare events
    x[7] = -x[0]  # perfect negative
    x[8] = np.sin(3 * x[0]) + 0.05 * r.normal(size=n_samp)
    x[9] = r.integers(0, 1000, n_samp)  # integers
    return x


@pytest.fixture(scope="module")
def data():
    x = _matrix()
    return x, ccc_ref(x, n_jobs=1)


@pytest.mark.graph
@pytest.mark.parametrize("feature_chunk", [1, 4, 7, 23])
def test_all_pairs_ccc__equals_ccc_coef_square(data, feature_chunk):
    x, ref = data
    res = all_pairs_ccc(ccc_dataset(x), feature_chunk=feature_chunk).compute(scheduler="sync")
    m = res["ccc_matrix"].values
    ii, jj = np.triu_indices(x.shape[0], 1)
    assert np.array_equal(m[ii, jj], ref, equal_nan=True)  # bit-identical, NaN where ccc-coef has NaN
    assert np.array_equal(m, m.T, equal_nan=True)
    assert np.isnan(m[2]).all() and np.isnan(ref[ii == 2]).all()
    diag = np.diag(m)
    assert np.isnan(diag[2]) and np.all(np.delete(diag, 2) == 1.0)
    assert m[0, 7] == 1.0 and m[0, 1] > 0.3 > np.nanmax(m[10:, 11:][np.triu_indices(12, 1)])
    assert list(res["feature_i"].values[:2]) == ["f0", "f1"]


@pytest.mark.parametrize("feature_chunk", [3, 10])
def test_all_pairs_ccc__equals_ccc_coef_condensed(data, feature_chunk):
    x, ref = data
    res = all_pairs_ccc(ccc_dataset(x, chunks=(5, -1)), form="condensed", feature_chunk=feature_chunk).compute()
    assert np.array_equal(res["ccc_pair"].values, ref, equal_nan=True)
    ii, jj = np.triu_indices(x.shape[0], 1)
    assert list(res["feature_i"].values) == [f"f{i}" for i in ii]
    assert list(res["feature_j"].values) == [f"f{j}" for j in jj]


def test_all_pairs_ccc__one_vs_two_workers(client2, data):
    x, ref = data
    two = all_pairs_ccc(ccc_dataset(x), feature_chunk=5, form="condensed").compute()  # client2 is the default
    assert len(client2.scheduler_info()["workers"]) == 2
    one = all_pairs_ccc(ccc_dataset(x), feature_chunk=6, form="condensed").compute(scheduler="sync")
    assert np.array_equal(two["ccc_pair"].values, ref, equal_nan=True)
    assert np.array_equal(one["ccc_pair"].values, two["ccc_pair"].values, equal_nan=True)


@pytest.mark.parametrize("n_samp", [3, 5, 16, 99, 400])
def test_ccc_values__equals_ccc_coef_on_vectors(n_samp):
    r = np.random.default_rng(n_samp)
    for _ in range(5):
        x = r.normal(size=n_samp)
        y = np.where(r.random(n_samp) < 0.5, x ** 2, r.normal(size=n_samp))
        assert ccc_values(x, y)[0] == ccc_ref(x, y)
    x = r.normal(size=n_samp)
    assert np.isnan(ccc_values(x, np.ones(n_samp))[0]) and np.isnan(ccc_ref(x, np.ones(n_samp)))


@pytest.mark.parametrize("k", [5, [2, 4, 7]])
def test_all_pairs_ccc__internal_n_clusters_equals_ccc_coef(data, k):
    x, _ = data
    ref = ccc_ref(x[:8], internal_n_clusters=k, n_jobs=1)
    res = all_pairs_ccc(ccc_dataset(x[:8]), form="condensed", feature_chunk=3, internal_n_clusters=k)
    assert np.array_equal(res["ccc_pair"].values, ref, equal_nan=True)


def test_all_pairs_ccc__pvalues_equal_plain_loop():
    x = _matrix(10, 60, seed=3)[[0, 1, 2, 3, 6, 8]]
    n_perms, seed = 40, 7
    res = all_pairs_ccc(ccc_dataset(x), n_perms=n_perms, seed=seed, feature_chunk=4).compute(scheduler="sync")
    perms = permutations(60, n_perms, seed)
    assert sorted(perms[0].tolist()) == list(range(60)) and not np.array_equal(perms[0], perms[1])
    for i in range(6):
        for j in range(i + 1, 6):
            obs = ccc_ref(x[i], x[j])
            if np.isnan(obs):
                assert np.isnan(res["ccc_matrix_pvalue"].values[i, j])
                continue
            null = np.array([ccc_ref(x[i], x[j][p]) for p in perms])  # ccc-coef on permuted data
            expect = (np.sum(null >= obs) + 1) / (n_perms + 1)
            assert res["ccc_matrix_pvalue"].values[i, j] == pytest.approx(expect, abs=0)
            assert res["ccc_matrix_pvalue"].values[j, i] == res["ccc_matrix_pvalue"].values[i, j]
    other = all_pairs_ccc(ccc_dataset(x), n_perms=n_perms, seed=seed, feature_chunk=2, form="condensed").compute()
    ii, jj = np.triu_indices(6, 1)
    assert np.array_equal(other["ccc_pair_pvalue"].values, res["ccc_matrix_pvalue"].values[ii, jj], equal_nan=True)


@pytest.mark.graph
def test_all_pairs_ccc__float_path_matches_exact(data, monkeypatch):
    x, ref = data
    monkeypatch.setattr(cccmod, "EXACT_MAX_SAMPLES", 0)  # force the float64 branch used above 60,000 samples
    res = all_pairs_ccc(ccc_dataset(x), form="condensed", feature_chunk=8).compute(scheduler="sync")
    np.testing.assert_allclose(res["ccc_pair"].values, ref, rtol=1e-12, atol=1e-14)


def test_all_pairs_ccc__lazy(no_compute, data):
    x, _ = data
    ds = ccc_dataset(da.from_array(x, chunks=(4, -1)))
    for form, var in (("square", "ccc_matrix"), ("condensed", "ccc_pair")):
        res = all_pairs_ccc(ds, form=form, n_perms=3)
        assert isinstance(res[var].data, da.Array)
        assert isinstance(res[var + "_pvalue"].data, da.Array)


@pytest.mark.graph
def test_all_pairs_ccc__partitions_computed_once_per_block(data):
    x, _ = data
    for form in ("square", "condensed"):
        res = all_pairs_ccc(ccc_dataset(x), feature_chunk=5, form=form)
        graph = dict(res["ccc_matrix" if form == "square" else "ccc_pair"].data.__dask_graph__())
        prep = [k for k in graph if isinstance(k, tuple) and k[0].startswith("ccc-partitions-")]
        tiles = [k for k in graph if isinstance(k, tuple) and k[0].startswith("ccc-tile-")]
        assert len(prep) == 5  # ceil(23 / 5) feature blocks, each partitioned once
        assert len(tiles) == 5 * 6 // 2  # one kernel task per upper tile; lower tiles are transposes


@pytest.mark.graph
def test_all_pairs_ccc__nan_feature_raises():
    x = _matrix()
    x[4, 10] = np.nan
    with pytest.raises(ValueError, match="feature 'f4' has 1 NaN/inf values .* drop those features or impute"):
        all_pairs_ccc(ccc_dataset(x))
    x[4] = np.nan
    with pytest.raises(ValueError, match="feature 'f4' is all-NaN \\(empty\\)"):
        all_pairs_ccc(ccc_dataset(x))
    lazy = all_pairs_ccc(ccc_dataset(da.from_array(x, chunks=(6, -1))))  # dask input: raised at compute
    with pytest.raises(ValueError, match="feature 'f4' is all-NaN"):
        lazy.compute(scheduler="sync")


@pytest.mark.graph
def test_all_pairs_ccc__bad_shapes_raise():
    with pytest.raises(ValueError, match="too few for CCC"):
        all_pairs_ccc(ccc_dataset(np.ones((3, 2))))
    with pytest.raises(ValueError, match="needs at least 2"):
        all_pairs_ccc(ccc_dataset(np.ones((1, 20))))
    with pytest.raises(ValueError, match="no samples"):
        all_pairs_ccc(ccc_dataset(np.ones((3, 0))))
    ds = xr.Dataset({"feature_value": (("sample", "feature"), np.ones((5, 3)))})
    with pytest.raises(ValueError, match="needs \\('feature', 'sample'\\): transpose"):
        all_pairs_ccc(ds)
    with pytest.raises(ValueError, match="form 'dense' is not"):
        all_pairs_ccc(ccc_dataset(np.ones((3, 20))), form="dense")
    with pytest.raises(ValueError, match="x and y have different lengths"):
        ccc_values(np.ones(5), np.ones(6))


def test_ccc_cli__store_and_figure(client2, tmp_path, data):
    import pandas as pd

    from interpretome.cli import main
    from interpretome.storage.store import open_group

    x, ref = data
    pd.DataFrame(x, index=[f"g{i}" for i in range(len(x))]).to_csv(tmp_path / "m.csv")
    rc = main(["ccc", str(tmp_path / "m.csv"), "-o", str(tmp_path / "s.zarr"), "--form", "condensed",
               "--feature-chunk", "6", "--figures", str(tmp_path / "fig"), "--scheduler", client2.scheduler.address])
    assert rc == 0
    stored = open_group(tmp_path / "s.zarr", "ccc")
    assert np.array_equal(stored["ccc_pair"].values, ref, equal_nan=True)
    assert str(stored["feature_j"].values[0]) == "g1"
    assert (tmp_path / "fig" / "ccc_matrix.png").stat().st_size > 1000
    again = xr.open_zarr(tmp_path / "s.zarr", group="ccc")  # readable without interpretome
    assert again["ccc_pair"].shape == ref.shape


@pytest.mark.graph
def test_sync_vs_threads(data):
    x, ref = data
    with dask.config.set(scheduler="threads"):
        res = all_pairs_ccc(ccc_dataset(x), feature_chunk=4, form="condensed").compute()
    assert np.array_equal(res["ccc_pair"].values, ref, equal_nan=True)
