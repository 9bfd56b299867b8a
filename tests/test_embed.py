"""Embeddings: inputs, UMAP / t-SNE / PCA (fit on a subsample), filters, labels, backends, figures."""

from __future__ import annotations

import json
import sys
import types

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from interpretome.storage import embedding_io as eio
from interpretome.storage.readers import InputError
from interpretome.tasks import embed as emb
from interpretome.tasks.embed import argmax_label, background_filter, embed, resolve_backend

UMAP_SMALL = dict(n_neighbors=10, n_epochs=60)   # tiny, fast settings for tests


def _blobs(n=300, d=8, k=3, seed=0, sep=12.0):
    rs = np.random.default_rng(seed)
    lab = np.repeat(np.arange(k), n // k)
    x = (rs.normal(size=(lab.size, d)) + sep * np.eye(k, d)[lab]).astype(np.float32)
    return xr.Dataset({"item_vector": (("item", "feature"), x), "item_label": (("item",), lab.astype(str))}), x, lab


# --- inputs ------------------------------------------------------------------------------------------

def test_kmer_helpers__known_tokens():
    toks = ["xxpad", "ACGTA", "GGCCA", "TTTTT"]
    assert list(eio.first_bases(toks, 2)) == ["special", "AC", "GG", "TT"]
    assert list(eio.last_bases(toks, 1)) == ["special", "A", "A", "T"]
    gc = eio.gc_fraction(toks)
    assert np.isnan(gc[0]) and gc[1:].tolist() == [0.4, 0.8, 0.0]
    with pytest.raises(ValueError, match="n >= 1"):
        eio.first_bases(toks, 0)


def test_from_embedding_layer__kmer_model():
    from interpretome.datasets import kmer_model
    from interpretome.engine.tokenize import KmerTokenizer
    from interpretome.tasks.embedding_layer import from_embedding_layer

    ds = from_embedding_layer("interpretome.datasets:kmer_model")
    ref = kmer_model().embedding.weight.detach().numpy()
    np.testing.assert_array_equal(ds["item_vector"].values, ref)
    vocab = KmerTokenizer().vocab
    assert list(ds["item"].values) == list(vocab)
    assert ds["item_label"].values[9] == "A" and ds["item_label"].values[0] == "special"
    with pytest.raises(InputError, match="vocabulary has 3 tokens"):
        from_embedding_layer(kmer_model(), vocab=["a", "b", "c"])
    with pytest.raises(InputError, match="not an nn.Embedding"):
        from_embedding_layer(kmer_model(), layer="conv")


def test_read_anndata__obsm_and_obs(tmp_path):
    import anndata

    from interpretome.datasets import data_path

    path = data_path("pbmc68k_reduced.h5ad")
    ds = eio.read_anndata(path, obsm="X_pca", label="bulk_labels", batch="phase", columns=["n_genes"], chunk=200)
    ad = anndata.read_h5ad(path)
    np.testing.assert_array_equal(ds["item_vector"].values, ad.obsm["X_pca"].astype(np.float32))
    assert list(ds["item_label"].values[:3]) == list(ad.obs["bulk_labels"].astype(str)[:3])
    assert ds["item_vector"].data.chunks[0][0] == 200
    with pytest.raises(InputError, match="no obsm key 'X_tsne'.*X_pca"):
        eio.read_anndata(path, obsm="X_tsne")
    with pytest.raises(InputError, match="no obs column 'donor'"):
        eio.read_anndata(path, batch="donor")


def test_read_array__npy_zarr_and_store(tmp_path):
    import zarr

    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "a.npy", x)
    assert np.array_equal(eio.read_array(tmp_path / "a.npy", chunk=7)["item_vector"].values, x)
    zarr.save_array(str(tmp_path / "a.zarr"), x)
    got = eio.read_embedding_input(tmp_path / "a.zarr", chunk=5)
    assert got["item_vector"].data.chunks[0] == (5, 5, 5, 5)
    np.testing.assert_array_equal(got["item_vector"].values, x)
    np.save(tmp_path / "b.npy", np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="must be 2-D"):
        eio.read_array(tmp_path / "b.npy")
    # an attribution-like store variable: (sequence, position, base) flattened to features
    from interpretome.storage.store import write_dataset

    att = xr.Dataset({"attribution": (("sequence", "position", "base"), np.arange(24.0).reshape(2, 3, 4))},
                     coords={"sequence": ["s0", "s1"]})
    write_dataset(att.chunk({"sequence": 1}), tmp_path / "s.zarr", "attr", task="t", params={})
    v = eio.from_store(tmp_path / "s.zarr", "attr", "attribution")
    assert v["item_vector"].shape == (2, 12) and list(v["item"].values) == ["s0", "s1"]
    np.testing.assert_array_equal(v["item_vector"].values[1], np.arange(12.0, 24.0))


def test_read_pickled_embeddings__needs_opt_in(tmp_path):
    df = pd.DataFrame({0: [0.1, 0.2, 0.3], 1: [1.0, 2.0, 3.0], "background": [0.0, 0.5, 0.001],
                       "tumor": [0.9, 0.1, 0.2], "ID": ["p0", "p1", "p2"], "x": [0, 1, 2], "y": [5, 6, 7]})
    path = tmp_path / "emb.pkl"
    df.to_pickle(path)
    with pytest.raises(InputError, match="pickle.*trust_pickle=True \\(--trust-pickle\\)"):
        eio.read_embedding_input(path)
    ds = eio.read_embedding_input(path, trust_pickle=True)
    np.testing.assert_array_equal(ds["item_vector"].values, df[[0, 1]].to_numpy(np.float32))
    assert list(ds["class"].values) == ["background", "tumor"]
    assert list(ds["item"].values) == ["p0", "p1", "p2"]


# --- filters and labels ------------------------------------------------------------------------------

def _annotated():
    ann = np.array([[0.000, 0.7, 0.3], [0.2, 0.5, 0.3], [0.004, 0.1, 0.9], [0.006, 0.4, 0.4], [np.nan] * 3])
    return xr.Dataset({"item_annotation": (("item", "class"), ann)}, coords={"class": ["background", "a", "b"]})


def test_background_filter__known_input():
    ds = _annotated()
    keep = background_filter(ds.chunk({"item": 2}), "background", 0.005)["item_keep"]
    assert isinstance(keep.data, da.Array)
    assert keep.values.tolist() == [True, False, True, False, False]
    with pytest.raises(ValueError, match="'tissue' not found.*background"):
        background_filter(ds, "tissue")


def test_argmax_label__known_input():
    ds = _annotated()
    lab = argmax_label(ds.chunk({"item": 2}), ["a", "b"])["item_argmax"]
    assert lab.values.tolist() == ["a", "a", "b", "a", ""]     # tie (0.4, 0.4) -> the first column
    assert argmax_label(ds)["item_argmax"].values.tolist()[:2] == ["a", "a"]
    with pytest.raises(ValueError, match="\\['c'\\] not found"):
        argmax_label(ds, ["a", "c"])


# --- reducers ------------------------------------------------------------------------------------------

def test_embed__pca_matches_sklearn_and_is_chunk_invariant():
    from sklearn.decomposition import PCA

    ds, x, _ = _blobs()
    ref = PCA(n_components=3, random_state=0).fit_transform(x)
    for chunk in (None, 41, 300):
        d = ds if chunk is None else ds.chunk({"item": chunk})
        got = embed(d, method="pca", n_components=3, item_chunk=64)["embedding_pca"]
        assert list(got["component"].values) == ["pca1", "pca2", "pca3"]
        np.testing.assert_allclose(got.values, ref, rtol=1e-4, atol=1e-4)


def test_embed__lazy(no_compute):
    ds, _, _ = _blobs()
    res = embed(ds.chunk({"item": 50}), method="umap", fit_size=100, item_chunk=64, **UMAP_SMALL)
    assert isinstance(res["embedding_umap"].data, da.Array)
    assert isinstance(res["embedding_fitted"].data, da.Array)
    assert res["embedding_umap"].data.chunks[0] == (64, 64, 64, 64, 44)


def test_embed__umap_fit_all_equals_umap_learn():
    import umap

    ds, x, _ = _blobs(n=150)
    got = embed(ds, method="umap", seed=3, fit_size=None, **UMAP_SMALL)
    with emb.numba_cache():   # only loads compiled code from the disk cache; the computation is umap-learn's
        ref = umap.UMAP(random_state=3, transform_seed=3, **UMAP_SMALL).fit_transform(x)
    np.testing.assert_array_equal(got["embedding_umap"].values, ref.astype(np.float32))
    assert got["embedding_fitted"].values.all()


def _knn_agreement(coords, lab, fitted, k=5):
    """Fraction of transformed items whose k nearest fitted items (2-D) mostly share their label."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(k).fit(coords[fitted], lab[fitted])
    return float((clf.predict(coords[~fitted]) == lab[~fitted]).mean())


def test_embed__umap_subsample_fit_then_transform():
    import umap

    ds, x, lab = _blobs(n=300)
    res = embed(ds, method="umap", seed=0, fit_size=150, item_chunk=64, **UMAP_SMALL)
    with dask.config.set(scheduler="sync"):
        coords = res["embedding_umap"].values
        fitted = res["embedding_fitted"].values
    idx = np.sort(np.random.default_rng(0).choice(300, 150, replace=False))
    assert np.array_equal(np.flatnonzero(fitted), idx)
    # the fit subset keeps exactly the coordinates umap-learn gives when fitted on those rows
    with emb.numba_cache():
        ref = umap.UMAP(random_state=0, transform_seed=0, **UMAP_SMALL).fit(x[idx])
    np.testing.assert_array_equal(coords[idx], ref.embedding_.astype(np.float32))
    # transformed points land among fitted points of their own cluster (threshold: 95 % kNN agreement)
    assert _knn_agreement(coords, lab, fitted) >= 0.95
    # seeded runs repeat exactly; other input chunkings give the same values
    again = embed(ds.chunk({"item": 37}), method="umap", seed=0, fit_size=150, item_chunk=64, **UMAP_SMALL)
    np.testing.assert_array_equal(again["embedding_umap"].values, coords)


def test_embed__tsne_subsample_3d_and_repeat():
    ds, x, lab = _blobs(n=240)
    kw = dict(method="tsne", n_components=2, seed=1, fit_size=120, item_chunk=50, perplexity=10, n_iter=250)
    kw.pop("n_iter")
    res = embed(ds, **kw)
    coords = res["embedding_tsne"].values
    fitted = res["embedding_fitted"].values
    assert fitted.sum() == 120 and np.isfinite(coords).all()
    assert _knn_agreement(coords, lab, fitted) >= 0.95
    np.testing.assert_array_equal(embed(ds.chunk({"item": 33}), **kw)["embedding_tsne"].values, coords)
    three = embed(ds, method="tsne", n_components=3, seed=1, fit_size=None, perplexity=10)["embedding_tsne"]
    assert three.shape == (240, 3) and np.isfinite(three.values).all()


def test_embed__on_two_workers(client2):
    ds, _, _ = _blobs(n=200)
    kw = dict(method="pca", n_components=2, seed=0, fit_size=80, item_chunk=30)
    local = embed(ds, **kw)["embedding_pca"].values
    res = embed(ds.chunk({"item": 45}), **kw)
    got = client2.compute(res["embedding_pca"].data).result()
    np.testing.assert_array_equal(got, local)


def test_embed__bad_input():
    ds, x, _ = _blobs(n=60)
    with pytest.raises(ValueError, match="n_components=9 but 'item_vector' has 8 features"):
        embed(ds, method="pca", n_components=9)
    with pytest.raises(ValueError, match="method 'mds'"):
        embed(ds, method="mds")
    with pytest.raises(ValueError, match="backend 'tpu'"):
        embed(ds, backend="tpu")
    bad = x.copy()
    bad[[5, 17]] = np.nan
    nan_ds = ds.assign(item_vector=(("item", "feature"), bad))
    with pytest.raises(ValueError, match="NaN or infinite values in 2 rows \\(item indices \\[5, 17\\]\\)"):
        embed(nan_ds, method="pca")
    lazy = embed(nan_ds.chunk({"item": 20}), method="pca", fit_size=30)   # lazy input: found when computed
    with pytest.raises(ValueError, match="NaN or infinite values"):
        lazy["embedding_pca"].values
    with pytest.raises(ValueError, match="fit_size=2 is too small"):
        embed(ds, method="pca", fit_size=2)
    with pytest.raises(ValueError, match="2 or 3 components"):
        embed(ds, method="tsne", n_components=4)


# --- backends --------------------------------------------------------------------------------------

def test_resolve_backend__dispatch(monkeypatch):
    monkeypatch.setattr(emb, "gpu_available", lambda: False)
    assert resolve_backend("auto") == "cpu"
    assert resolve_backend("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="interpretome\\[gpu\\]"):
        resolve_backend("gpu")
    monkeypatch.setattr(emb, "gpu_available", lambda: True)
    assert resolve_backend("auto") == "gpu"
    assert resolve_backend("auto", "tsne", subsample=True) == "cpu"   # cuML t-SNE cannot transform
    with pytest.raises(ValueError, match="cuML's t-SNE has no transform"):
        resolve_backend("gpu", "tsne", subsample=True)
    with pytest.raises(ValueError, match="backend 'x'"):
        resolve_backend("x")


@pytest.mark.graph
def test_embed__gpu_path_uses_cuml(monkeypatch):
    """The GPU path on CPU: a stand-in ``cuml`` module records what the task builds and calls."""
    from sklearn.decomposition import PCA

    calls = []

    class FakePCA:
        def __init__(self, **kw):
            calls.append(("PCA", kw))
            self._pca = PCA(n_components=kw["n_components"])

        def fit_transform(self, x):
            return self._pca.fit_transform(x)

        def transform(self, x):
            calls.append(("transform", len(x)))
            return self._pca.transform(x)

    fake = types.ModuleType("cuml")
    fake.decomposition = types.SimpleNamespace(PCA=FakePCA)
    fake.manifold = types.SimpleNamespace(UMAP=None, TSNE=None)
    monkeypatch.setitem(sys.modules, "cuml", fake)
    monkeypatch.setattr(emb, "gpu_available", lambda: True)
    ds, x, _ = _blobs(n=90)
    with dask.config.set(scheduler="sync"):
        got = embed(ds, method="pca", backend="gpu", fit_size=45, item_chunk=30)["embedding_pca"].values
    assert calls[0] == ("PCA", {"n_components": 2, "output_type": "numpy"})
    assert sum(n for what, n in calls[1:] if what == "transform") == 45
    assert got.shape == (90, 2) and np.isfinite(got).all()


def test_numba_cache__configured(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nb"))
    with emb.numba_cache():
        import numba.core.config

        assert numba.core.config.CACHE_DIR == str(tmp_path / "nb")
        import umap.layouts

        assert type(umap.layouts.clip._cache).__name__ != "NullCache"


# --- figures ----------------------------------------------------------------------------------------

def test_datashader_png__chunked_equals_whole(tmp_path):
    from PIL import Image

    from interpretome.viz.scatter import aggregate, datashader_png

    rs = np.random.default_rng(0)
    xy = rs.normal(size=(20_000, 2)).astype(np.float32)
    lab = np.where(xy[:, 0] > 0, "right", "left")
    whole, cats = aggregate(xy, labels=lab, x_range=(-5, 5), y_range=(-5, 5), width=100, height=80)
    parts, _ = aggregate(da.from_array(xy, chunks=(7_000, 2)), labels=lab, x_range=(-5, 5), y_range=(-5, 5),
                         width=100, height=80, chunk=7_000)
    np.testing.assert_array_equal(whole.values, parts.values)
    assert list(cats) == ["left", "right"] and int(whole.values.sum()) == int((np.abs(xy) < 5).all(1).sum())
    png = datashader_png(xy, tmp_path / "c.png", labels=lab, spread=1, title="side")
    im = Image.open(png)
    assert im.size[0] > 800 and im.size[1] == 800                     # legend panel on the right
    datashader_png(xy, tmp_path / "n.png")
    datashader_png(xy, tmp_path / "v.png", values=xy[:, 1])
    assert Image.open(tmp_path / "n.png").size == (800, 800)


def test_patch_canvas__places_thumbnails(tmp_path):
    from PIL import Image

    from interpretome.viz.scatter import patch_canvas

    imgs = np.zeros((3, 3, 8, 8), np.uint8)            # channels first
    imgs[0, 0] = 255                                    # red at (0, 0)
    imgs[1, 1] = 255                                    # green at (1, 1)
    imgs[2, 2] = 255                                    # blue at (0, 1)
    np.save(tmp_path / "p.npy", imgs)
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    out = patch_canvas(coords, np.load(tmp_path / "p.npy", mmap_mode="r"), tmp_path / "c.png", canvas=100,
                       thumb=10, chunk=2)
    a = np.asarray(Image.open(out))
    assert a[95, 5].tolist() == [255, 0, 0]             # bottom-left
    assert a[5, 95].tolist() == [0, 255, 0]             # top-right
    assert a[5, 5].tolist() == [0, 0, 255]              # top-left
    assert a[50, 50].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="2 images but 3 coordinates"):
        patch_canvas(coords, imgs[:2], tmp_path / "x.png")


def test_html_pages(tmp_path):
    from interpretome.viz.scatter import scatter3d_html, scatter_html

    rs = np.random.default_rng(0)
    xy = rs.normal(size=(300, 3))
    lab = np.array(["a", "b", "c"])[rs.integers(0, 3, 300)]
    small = scatter_html(xy, tmp_path / "s.html", labels=lab, hover={"id": np.arange(300)})
    big = scatter_html(xy, tmp_path / "b.html", labels=lab, max_points=100)
    assert "bokeh" in small.read_text()[:20000].lower() and big.stat().st_size > 10_000
    page = scatter3d_html(xy, tmp_path / "t.html", labels=lab).read_text()
    data = json.loads(page.split("const D = ")[1].split(";\n")[0])
    assert len(data["x"]) == 300 and data["cats"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="too many for the 3-D page"):
        scatter3d_html(xy, tmp_path / "t.html", max_points=100)


# --- jobs and CLI -----------------------------------------------------------------------------------

def test_cli_embed_and_scores(tmp_path):
    from interpretome.cli import main
    from interpretome.jobs.stores import render_store
    from interpretome.storage.store import open_group

    rs = np.random.default_rng(0)
    for k in range(2):
        x = rs.normal(size=(60, 5)) + np.repeat(np.eye(3, 5) * 8, 20, axis=0)
        np.save(tmp_path / f"f{k}.npy", x)
    store = tmp_path / "o.zarr"
    assert main(["embed", str(tmp_path / "f0.npy"), "-o", str(store), "--method", "pca", "--workers", "1",
                 "--figures", str(tmp_path / "figs")]) == 0
    assert open_group(store, "embedding")["embedding_pca"].shape == (60, 2)
    assert main(["embed", str(tmp_path / "x.pkl"), "-o", str(store), "--workers", "1"]) == 2   # no --trust-pickle
    # scores over two "folds" of an h5ad-free input: labels come from an AnnData file here
    import anndata

    for k in range(2):
        ad = anndata.AnnData(X=np.load(tmp_path / f"f{k}.npy").astype(np.float32),
                             obs=pd.DataFrame({"cell": np.repeat(list("abc"), 20), "batch": ["x", "y"] * 30},
                                              index=[f"c{i}" for i in range(60)]))
        ad.obsm["X_lat"] = ad.X.copy()
        ad.write_h5ad(tmp_path / f"f{k}.h5ad")
    out = tmp_path / "scores"
    assert main(["scores", str(tmp_path / "f0.h5ad"), str(tmp_path / "f1.h5ad"), "-o", str(store), "--out", str(out),
                 "--obsm", "X_lat", "--label", "cell", "--batch", "batch", "--no-umap", "--workers", "1"]) == 0
    table = pd.read_csv(out / "scores_by_fold.tsv", sep="\t")
    from sklearn.metrics import silhouette_score

    x0 = np.load(tmp_path / "f0.npy").astype(np.float32)
    got = table[(table.fold == "f0") & (table.metric == "asw_label")]["value"].item()
    assert got == pytest.approx(silhouette_score(x0, np.repeat(list("abc"), 20)), rel=1e-5)
    summary = pd.read_csv(out / "scores_summary.tsv", sep="\t")
    assert set(summary.columns) >= {"metric", "n", "mean", "sd", "sem", "ci_low", "ci_high"}
    assert json.loads((out / "scores_extremes.json").read_text())["metric"] == "asw_batch"
    figs = render_store(store, tmp_path / "r", groups=["embedding", "scores"])
    assert {p.suffix for p in figs} == {".png", ".html"}


def test_scatter3d_html__draws_in_a_real_browser(tmp_path):
    import shutil
    import subprocess

    from interpretome.viz.scatter import scatter3d_html

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on this machine")
    xy = np.random.default_rng(0).normal(size=(250, 3))
    page = scatter3d_html(xy, tmp_path / "t.html", labels=np.array(["a", "b"])[np.arange(250) % 2])
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-drawn="250"' in dom                 # the page's script ran and drew every point
