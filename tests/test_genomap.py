"""Genomaps: interpretome's lazy transform against the genomap package's construct_genomap on a small input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("genomap", reason="genomaps need the genomap package: pip install 'interpretome[genomap]'")

from interpretome.storage.anndata_io import features_to_dataset  # noqa: E402
from interpretome.tasks.genomap import genomap, top_variable_genes, write_genomap_files  # noqa: E402


def test_top_variable_genes__per_batch_variance():
    rs = np.random.default_rng(0)
    x = rs.normal(size=(40, 5))
    x[:, 1] *= 5  # variable within every batch
    x[:20, 3] += 50  # differs only between the two batches
    batches = np.repeat(["a", "b"], 20)
    assert list(top_variable_genes(x, 1, batches)) == [1]
    assert 3 in top_variable_genes(x, 1)  # without batches the batch effect ranks first
    assert list(top_variable_genes(x, 2, batches)) == sorted(top_variable_genes(x, 2, batches))


def test_genomap__equals_package_and_chunk_invariant(tmp_path, no_compute):
    import dask
    import genomap as G

    x = np.random.default_rng(0).normal(size=(60, 30)).astype(np.float32)
    sel = top_variable_genes(x, 25)
    lazy = genomap(features_to_dataset(x, sample_chunk=16), rows=5, cols=5, genes=sel, num_iter=200, merge=False)
    with dask.config.set(scheduler="sync"):
        r = lazy.compute()
        r2 = genomap(features_to_dataset(x, sample_chunk=60), rows=5, cols=5, genes=sel, num_iter=200,
                     merge=False).compute()
    ref, coupling = G.construct_genomap_returnT(x[:, sel].astype(np.float64), 5, 5, num_iter=200)
    # the package leaves its last cell's image at zero; every other cell must agree
    np.testing.assert_allclose(r["genomap_image"].values[:-1], ref[:-1, :, :, 0], atol=1e-5)
    np.testing.assert_allclose(r["genomap_coupling"].values, coupling, atol=1e-6)
    np.testing.assert_allclose(r["genomap_image"].values, r2["genomap_image"].values, atol=1e-6)
    # each gene sits where a cell expressing only that gene is brightest
    for i in range(len(sel)):
        one = np.zeros((1, 30), np.float32)
        one[0, sel[i]] = 1.0
        img = (one[:, sel] @ (coupling * 25)).reshape(5, 5, order="F")
        assert np.unravel_index(np.argmax(img), img.shape) == (r["genomap_gene_row"].values[i],
                                                                r["genomap_gene_col"].values[i])
    files = write_genomap_files(r, tmp_path, "demo", cells=[0, 1, 2], png=2)
    names = sorted(p.name for p in files)
    assert names[:3] == ["gene_coordinates_demo.csv", "genomap_demo.npy", "genomap_demo_s0.png"]
    saved = np.load(tmp_path / "genomap_demo.npy")
    assert saved.shape == (3, 5, 5, 1) and np.allclose(saved[..., 0], r["genomap_image"].values[:3])
    with pytest.raises(ValueError, match="1..25 genes"):
        genomap(features_to_dataset(x), rows=5, cols=5, genes=list(range(30)))


def test_genomap_demo_step_on_pbmc(tmp_path):
    from interpretome.jobs.demo import DemoContext
    from interpretome.jobs.genomaps import step_genomap
    from interpretome.storage.store import open_group

    ctx = DemoContext(out=tmp_path, store=tmp_path / "demo.zarr", client=None, log=lambda m: None)
    pngs = step_genomap(ctx)
    assert len(pngs) == 4 and all(p.is_file() for p in pngs)
    g = open_group(ctx.store, "genomap")
    assert g["genomap_image"].shape == (700, 16, 16) and g.sizes["feature"] == 256
    assert (tmp_path / "genomap" / "gene_coordinates_genomap.csv").is_file()
    assert np.load(tmp_path / "genomap" / "genomap_genomap.npy").shape == (8, 16, 16, 1)


def test_genomap_cli_on_pbmc(tmp_path):
    """``interpretome genomap`` on the shipped PBMC cells: store group and scMEDAL's files, against the package."""
    import anndata
    import genomap as G
    import pandas as pd

    from interpretome.cli import main
    from interpretome.jobs.registry import job_kinds
    from interpretome.pbmc import pbmc_path
    from interpretome.storage.store import open_group

    assert "genomap" in job_kinds()
    store, out = tmp_path / "g.zarr", tmp_path / "files"
    assert main(["genomap", str(pbmc_path()), "-o", str(store), "--rows", "6", "--cols", "6", "--batch", "phase",
                 "--cells", "3,5,7", "--png", "2", "--num-iter", "200", "--out", str(out), "--name", "pbmc",
                 "--workers", "1"]) == 0
    g = open_group(store, "genomap")
    assert g["genomap_image"].shape == (700, 6, 6) and g.sizes["feature"] == 36
    # independent reference: the 36 genes of largest mean per-phase variance, then genomap's own transform
    ad = anndata.read_h5ad(pbmc_path())
    x = np.asarray(ad.X.toarray() if hasattr(ad.X, "toarray") else ad.X, np.float64)
    phase = ad.obs["phase"].astype(str).to_numpy()
    var = np.mean([x[phase == p].var(0) for p in np.unique(phase)], axis=0)
    genes = np.sort(np.argsort(-var, kind="stable")[:36])
    assert list(g["feature"].values) == list(ad.var_names[genes])
    ref, _ = G.construct_genomap_returnT(x[:, genes], 6, 6, num_iter=200)
    np.testing.assert_allclose(g["genomap_image"].values[:-1], ref[:-1, :, :, 0], atol=1e-4)
    coords = pd.read_csv(out / "gene_coordinates_pbmc.csv")
    assert list(coords["gene"]) == list(ad.var_names[genes])
    assert np.array_equal(coords["row"], g["genomap_gene_row"].values)
    saved = np.load(out / "genomap_pbmc.npy")
    assert saved.shape == (3, 6, 6, 1)
    np.testing.assert_allclose(saved[..., 0], g["genomap_image"].values[[3, 5, 7]])
    assert sorted(p.name for p in out.glob("*.png")) == [f"genomap_pbmc_{ad.obs_names[i]}.png" for i in (3, 5)]
    # bad input: one line naming the fix
    assert main(["genomap", str(pbmc_path()), "-o", str(store), "--group", "g2", "--batch", "nope",
                 "--workers", "1"]) == 2


def test_genomap_and_fastshap_take_the_variable_name():
    from interpretome.storage.anndata_io import features_to_dataset

    x = np.random.default_rng(0).normal(size=(20, 9)).astype(np.float32)
    ds = features_to_dataset(x).rename({"features": "counts"})
    res = genomap(ds, rows=3, cols=3, genes=list(range(9)), num_iter=50, var="counts", merge=False)
    assert res["genomap_image"].shape == (20, 3, 3)
    with pytest.raises(ValueError, match="features"):
        genomap(ds, rows=3, cols=3, genes=list(range(9)))
