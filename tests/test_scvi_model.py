"""scvi-tools models: interpretome's IG of ``module.classify`` against scvi-tools' own ``predict(ig_interpretability=True)``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from interpretome.engine.models import ModelSpec, ModelSpecError


def _tiny_scanvi(tmp_path):
    import anndata
    import pandas as pd
    import scvi

    scvi.settings.seed = 0
    rng = np.random.default_rng(0)
    n, g = 200, 40
    labels = rng.integers(0, 3, n)
    rates = rng.gamma(2, 1, (3, g))
    ad = anndata.AnnData(np.zeros((n, g), np.float32))
    ad.var_names = [f"g{i}" for i in range(g)]
    ad.obs_names = [f"c{i}" for i in range(n)]
    ad.layers["counts"] = rng.poisson(rates[labels] * 3).astype(np.float32)
    ad.obs["batch"] = pd.Categorical(np.where(rng.random(n) < 0.5, "b0", "b1"))
    lab = np.array(["A", "B", "C"], dtype=object)[labels]
    lab[rng.random(n) < 0.3] = "Unknown"
    ad.obs["cell_type"] = pd.Categorical(lab)
    scvi.model.SCANVI.setup_anndata(ad, layer="counts", batch_key="batch", labels_key="cell_type",
                                    unlabeled_category="Unknown")
    model = scvi.model.SCANVI(ad, n_latent=4, n_hidden=16, n_layers=1)
    model.train(max_epochs=3, accelerator="cpu", batch_size=64, enable_progress_bar=False)
    model.save(str(tmp_path / "model"), overwrite=True, save_anndata=False)
    ad.write_h5ad(tmp_path / "cells.h5ad")
    return model, ad


def test_scvi__ig_equals_scvi_tools_predict_ig_interpretability(tmp_path):
    try:
        import scvi  # noqa: F401
    except ImportError as e:
        pytest.skip(f"scvi-tools is not installed ({e}): pip install 'interpretome[scvi]'")
    from interpretome.storage.anndata_io import read_h5ad
    from interpretome.storage.attribution_export import export_attributions
    from interpretome.tasks.attribute import attribute
    from interpretome.tasks.summarize import summarize_attributions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        model, ad = _tiny_scanvi(tmp_path)
        grabbed = {}
        ranked = model.get_ranked_features

        def keep(adata=None, attrs=None):
            grabbed["per_cell"] = attrs
            return ranked(adata, attrs)

        model.get_ranked_features = keep
        pred, table = model.predict(ig_interpretability=True)
        with pytest.raises(ModelSpecError, match="full pickle"):
            ModelSpec.from_scvi(tmp_path / "model")
        spec = ModelSpec.from_scvi(tmp_path / "model", trust_pickle=True)
        assert spec.targets == ("A", "B", "C") and spec.layer == "counts" and spec.covariates == ("batch",)
        ds = read_h5ad(tmp_path / "cells.h5ad", layer=spec.layer, sample_chunk=64)
        res = attribute(ds, spec, target="predicted", merge=False).compute(scheduler="sync")
    ours = res["attribution"].values[..., 0]
    assert np.abs(ours - grabbed["per_cell"]).max() < 1e-5
    assert list(res["attribution_predicted"].values) == list(pred)
    import pandas as pd

    t = pd.read_csv(export_attributions(summarize_attributions(res).compute(), tmp_path / "ours.tsv"), sep="\t")
    t = t.sort_values("attribution_mean", ascending=False)
    assert list(t["feature"][:15]) == list(table["feature"][:15])
    ref = table.set_index("feature").loc[t["feature"]]
    np.testing.assert_allclose(t["attribution_mean"], ref["attribution_mean"], atol=1e-6)
    np.testing.assert_allclose(t["attribution_std"], ref["attribution_std"], atol=1e-6)
    assert (t["cells"] == ad.n_obs).all()
    # a gene order that differs from the saved var_names is refused, naming the fix
    with pytest.raises(ValueError, match="saved var_names"):
        attribute(ds.isel(feature=slice(None, None, -1)), spec)
    bad = ds.assign_coords(batch=("sample", np.array(["b9"] * ad.n_obs)))
    with pytest.raises(ValueError, match="was not trained with"):
        attribute(bad, spec)
    # the command line: --scvi-model reads the registered layer and passes the batch per cell
    from interpretome.cli import main
    from interpretome.storage.store import open_group

    assert main(["attribute", str(tmp_path / "cells.h5ad"), "-o", str(tmp_path / "a.zarr"), "--scvi-model",
                 str(tmp_path / "model"), "--trust-pickle", "--workers", "1", "--sample-chunk", "64"]) == 0
    stored = open_group(tmp_path / "a.zarr", "attributions")
    assert np.abs(stored["attribution"].values[..., 0] - grabbed["per_cell"]).max() < 1e-5


def test_state_dict_unwrapping_model_state_dict_and_lightning(tmp_path):
    from interpretome.pbmc import cell_classifier

    model = cell_classifier(6, 2, 4, seed=1)
    x = torch.randn(3, 6)
    want = model(x).detach()
    kw = {"n_features": 6, "n_classes": 2, "hidden": 4, "seed": 9}
    for name, obj in (("plain", {"model_state_dict": model.state_dict(), "epoch": 3}),
                      ("lightning", {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                                     "epoch": 3})):
        torch.save(obj, tmp_path / f"{name}.pt")
        spec = ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs=kw, weights=str(tmp_path / f"{name}.pt"),
                         input_kind="dense", targets=("a", "b"))
        torch.testing.assert_close(spec.build()(x).detach(), want)
