"""--write-h5ad: embeddings into .obsm, attribution summaries into .varm / .uns, checked against numpy."""

from __future__ import annotations

import warnings

import anndata
import numpy as np

from interpretome.cli import main


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anndata.read_h5ad(path)


def test_attribute_write_h5ad__varm_and_uns_equal_numpy_summaries(tmp_path):
    import pandas as pd
    import torch

    from interpretome.pbmc import cell_classifier

    rs = np.random.default_rng(0)
    x = rs.normal(size=(40, 8)).astype(np.float32)
    labels = np.array(["t1", "t2"] * 20)
    ad = anndata.AnnData(x, obs=pd.DataFrame({"kind": pd.Categorical(labels)}, index=[f"c{i}" for i in range(40)]),
                         var=pd.DataFrame(index=[f"g{j}" for j in range(8)]))
    ad.write_h5ad(tmp_path / "cells.h5ad")
    torch.save(cell_classifier(8, 2, 6, seed=2).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "summary.h5ad"
    assert main(["attribute", str(tmp_path / "cells.h5ad"), "-o", str(tmp_path / "a.zarr"), "--model",
                 "interpretome.pbmc:cell_classifier", "--model-kwargs", '{"n_features": 8, "n_classes": 2, "hidden": 6}',
                 "--weights", str(tmp_path / "w.pt"), "--targets", "no,yes", "--target", "all", "--by", "kind",
                 "--write-h5ad", str(out), "--workers", "1"]) == 0
    from captum.attr import IntegratedGradients

    model = cell_classifier(8, 2, 6, seed=2)
    model.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    ig = np.stack([IntegratedGradients(model).attribute(torch.from_numpy(x), target=t, n_steps=50).detach().numpy()
                   for t in range(2)], axis=-1)  # (cells, genes, targets)
    h = _read(out)
    assert list(h.var_names) == [f"g{j}" for j in range(8)] and list(h.obs["predicted"].unique()) != []
    for g in ("all", "t1", "t2"):
        rows = slice(None) if g == "all" else labels == g
        np.testing.assert_allclose(h.varm[f"attribution_mean_{g}"][["no", "yes"]].to_numpy(), ig[rows].mean(0), atol=1e-5)
        np.testing.assert_allclose(h.varm[f"attribution_std_{g}"][["no", "yes"]].to_numpy(), ig[rows].std(0), atol=1e-5)
    t = h.uns["attribution_table"]
    assert set(t.columns) >= {"group", "target", "feature", "attribution_mean", "attribution_std", "cells"}
    top = t[(t["group"] == "all") & (t["target"] == "yes")].iloc[0]
    assert top["feature"] == f"g{int(np.argmax(ig[:, :, 1].mean(0)))}"


def test_embed_write_h5ad__obsm_equals_store(tmp_path):
    import xarray as xr

    from interpretome.datasets import data_path

    out = tmp_path / "emb.h5ad"
    assert main(["embed", str(data_path("pbmc68k_reduced.h5ad")), "--obsm", "X_pca", "--label", "bulk_labels",
                 "--method", "pca", "-o", str(tmp_path / "e.zarr"), "--write-h5ad", str(out), "--workers", "1"]) == 0
    h = _read(out)
    g = xr.open_zarr(tmp_path / "e.zarr", group="embedding")
    np.testing.assert_array_equal(h.obsm["X_pca"], g["embedding_pca"].values)
    src = _read(data_path("pbmc68k_reduced.h5ad"))
    assert list(h.obs_names) == list(src.obs_names)
    assert list(h.obs["label"]) == list(src.obs["bulk_labels"].astype(str))
    # the coordinates are scikit-learn's PCA of the cells' X_pca (up to each component's sign)
    from sklearn.decomposition import PCA

    ref = PCA(2).fit_transform(np.asarray(src.obsm["X_pca"], np.float64))
    for c in range(2):
        assert abs(np.corrcoef(h.obsm["X_pca"][:, c], ref[:, c])[0, 1]) > 0.9999
