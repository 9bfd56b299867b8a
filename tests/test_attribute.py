"""Attributions: IG / SHAP / layer IG against captum and shap called directly, chunk and worker invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretome.engine.models import ModelSpec, get_runtime
from interpretome.storage.anndata_io import features_to_dataset, read_h5ad, read_images
from interpretome.storage.readers import sequences_to_dataset
from interpretome.tasks.attribute import attribute

CLASSES = ("alpha", "beta", "gamma")


def dense_spec(**kw):
    return ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 12, "n_classes": 3,
                                                                        "hidden": 16, "seed": 1},
                     input_kind="dense", targets=CLASSES, **kw)


def dense_data(n=30, f=12, seed=0, chunk=8):
    x = np.random.default_rng(seed).normal(size=(n, f)).astype(np.float32)
    labels = np.array([CLASSES[i % 3] for i in range(n)])
    return x, features_to_dataset(x, sample_chunk=chunk, obs={"label": labels})


def captum_ig(model, x, target, baselines=None, n_steps=50, method="gausslegendre"):
    from captum.attr import IntegratedGradients

    a, d = IntegratedGradients(model).attribute(torch.from_numpy(x), baselines=baselines, target=target,
                                                n_steps=n_steps, method=method, return_convergence_delta=True)
    return a.detach().numpy(), d.detach().numpy()


@pytest.mark.graph
def test_attribute__ig_equals_captum_dense_chunkings_and_workers(client2):
    x, ds = dense_data()
    spec = dense_spec()
    model = get_runtime(spec).model
    ref = np.stack([captum_ig(model, x, t)[0] for t in range(3)], axis=-1)
    ref_delta = np.stack([captum_ig(model, x, t)[1] for t in range(3)], axis=-1)
    results = []
    for chunk, batch in ((30, None), (7, 5), (16, 64)):
        r = attribute(ds, spec, target="all", sample_chunk=chunk, internal_batch_size=batch, merge=False)
        results.append(r.compute(scheduler="sync"))
    results.append(client2.compute(attribute(ds, spec, target="all", sample_chunk=7, merge=False)).result())
    for r in results:
        np.testing.assert_allclose(r["attribution"].values, ref, atol=1e-5)
        np.testing.assert_allclose(r["attribution_delta"].values, ref_delta, atol=1e-5)
        assert list(r["target"].values) == list(CLASSES)


@pytest.mark.graph
def test_attribute__ig_equals_captum_dna_conv(client2):
    from interpretome.datasets import random_dna
    from interpretome.storage.readers import decode_bases

    codes = random_dna(6, 120, seed=3)
    ds = sequences_to_dataset([decode_bases(c) for c in codes], sequence_chunk=4)
    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 16, "outputs": 2},
                     targets=("a", "b"))
    model = get_runtime(spec).model
    onehot = np.eye(5, 4, dtype=np.float32)[codes].transpose(0, 2, 1).copy()
    ref, ref_delta = captum_ig(model, onehot, 1, n_steps=40)
    for res in (attribute(ds, spec, target="b", n_steps=40, merge=False).compute(scheduler="sync"),
                client2.compute(attribute(ds, spec, target="b", n_steps=40, sample_chunk=2,
                                          internal_batch_size=17, merge=False)).result()):
        got = res["sequence_attribution"].values[..., 0].transpose(0, 2, 1)
        np.testing.assert_allclose(got, ref, atol=1e-5)
        np.testing.assert_allclose(res["sequence_attribution_delta"].values[:, 0], ref_delta, atol=1e-5)


def test_sparse_conv_gradient__equals_autograd():
    from interpretome.datasets import reference_cnn
    from interpretome.engine.sparse_conv import gradient_model

    model = reference_cnn(channels=8).eval()
    x = torch.from_numpy(np.eye(4, dtype=np.float32)[np.random.default_rng(0).integers(0, 4, (5, 300))]
                         .transpose(0, 2, 1).copy())
    fast = gradient_model(model)
    x0 = x.clone().requires_grad_()
    g_ref = torch.autograd.grad(model(x0).sum(), x0)[0]
    xx = x.detach().clone().requires_grad_()
    g = torch.autograd.grad(fast(xx).sum(), xx)[0]
    np.testing.assert_allclose(g.numpy(), g_ref.numpy(), atol=1e-6)


@pytest.mark.graph
def test_attribute__dna_positions_past_length_are_nan():
    ds = sequences_to_dataset(["ACGTACGTACGTACGTACGT", "ACGTACGTAC"], sequence_chunk=1)
    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 4})
    res = attribute(ds, spec, n_steps=8, merge=False).compute(scheduler="sync")
    a = res["sequence_attribution"].values
    assert np.isnan(a[1, 10:]).all() and np.isfinite(a[1, :10]).all() and np.isfinite(a[0]).all()


@pytest.mark.graph
def test_attribute__mean_and_custom_baselines_equal_captum():
    x, ds = dense_data(n=20)
    spec = dense_spec()
    model = get_runtime(spec).model
    mean = x.mean(0, keepdims=True)
    ref, ref_delta = captum_ig(model, x, 2, baselines=torch.from_numpy(mean), n_steps=30, method="riemann_trapezoid")
    for base in ("mean", mean[0]):
        r = attribute(ds, spec, target="gamma", baseline=base, n_steps=30, ig_method="riemann_trapezoid",
                      sample_chunk=6, merge=False).compute(scheduler="sync")
        np.testing.assert_allclose(r["attribution"].values[..., 0], ref, atol=1e-5)
        np.testing.assert_allclose(r["attribution_delta"].values[:, 0], ref_delta, atol=1e-5)


@pytest.mark.graph
def test_attribute__completeness_matches_stored_delta():
    x, ds = dense_data(n=16)
    r = attribute(ds, dense_spec(), target="predicted", n_steps=300, merge=False).compute(scheduler="sync")
    total = r["attribution"].values.sum(1)
    gap = total - (r["attribution_output"].values - r["attribution_reference"].values)
    np.testing.assert_allclose(gap, r["attribution_delta"].values, atol=1e-5)
    assert np.abs(r["attribution_delta"].values).max() < 1e-3  # IG completeness with 300 Gauss-Legendre steps
    model = get_runtime(dense_spec()).model
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(r["attribution_target_index"].values[:, 0], out.argmax(1))
    assert list(r["attribution_predicted"].values) == [CLASSES[i] for i in out.argmax(1)]
    np.testing.assert_allclose(r["attribution_output"].values[:, 0], out.max(1), atol=1e-6)


@pytest.mark.graph
def test_attribute__deep_shap_equals_shap(client2):
    import shap

    x, ds = dense_data(n=24)
    spec = dense_spec()
    res = client2.compute(attribute(ds, spec, method="deep_shap", target="all", background=10, seed=3,
                                    sample_chunk=9, merge=False)).result()
    idx = res["attribution_background_index"].values
    assert len(idx) == 10 and len(set(idx)) == 10
    np.testing.assert_array_equal(idx, np.sort(np.random.default_rng(3).choice(24, 10, replace=False)))
    model = get_runtime(spec).model
    ref = shap.DeepExplainer(model, torch.from_numpy(x[idx])).shap_values(torch.from_numpy(x), check_additivity=False)
    np.testing.assert_allclose(res["attribution"].values, np.asarray(ref), atol=1e-5)
    # DeepLIFT-SHAP is complete with respect to the background mean
    np.testing.assert_allclose(res["attribution_delta"].values, 0, atol=1e-4)


def test_attribute__shap_methods_thread_safe():
    """shap's explainers hook and seed shared state (the per-process model, torch's generator): on
    dask's threaded scheduler, many chunks at once, DeepSHAP and GradientSHAP equal their one-thread
    values (``engine.attribution.SHAP_LOCK``); without the lock DeepExplainer's hooks collide."""
    x, ds = dense_data(n=48)
    spec = dense_spec()
    for kw in (dict(method="deep_shap", target="all", background=10),
               dict(method="gradient_shap", target="beta", background=5, nsamples=8)):
        res = attribute(ds, spec, sample_chunk=3, seed=3, merge=False, **kw)["attribution"]
        one = res.compute(scheduler="sync").values
        for _ in range(2):
            np.testing.assert_array_equal(res.compute(scheduler="threads", num_workers=8).values, one)


@pytest.mark.graph
def test_attribute__gradient_shap_equals_shap_per_sample_seed(client2):
    import shap

    from interpretome.engine.attribution import sample_seed as _sample_seed
    from interpretome.engine.heads import head_module

    x, ds = dense_data(n=6)
    spec = dense_spec()
    kw = dict(method="gradient_shap", target="beta", background=5, seed=11, nsamples=16, local_smoothing=0.1)
    a = attribute(ds, spec, sample_chunk=6, merge=False, **kw).compute(scheduler="sync")
    b = client2.compute(attribute(ds, spec, sample_chunk=2, merge=False, **kw)).result()
    np.testing.assert_allclose(a["attribution"].values, b["attribution"].values, atol=1e-6)
    model = get_runtime(spec).model
    bg = torch.from_numpy(x[a["attribution_background_index"].values])
    ex = shap.GradientExplainer(head_module(model, "none", [1]), bg, batch_size=64, local_smoothing=0.1)
    for j in (0, 4):
        s = _sample_seed(11, j)
        torch.manual_seed(s)
        ref = np.asarray(ex.shap_values(torch.from_numpy(x[j:j + 1]), nsamples=16, rseed=s)).reshape(-1)
        np.testing.assert_allclose(a["attribution"].values[j, :, 0], ref, atol=1e-5)


@pytest.mark.graph
def test_attribute__kmer_layer_ig_equals_captum():
    from captum.attr import LayerIntegratedGradients

    from interpretome.datasets import random_dna
    from interpretome.storage.readers import decode_bases

    codes = random_dna(3, 41, seed=5)
    ds = sequences_to_dataset([decode_bases(c) for c in codes], sequence_chunk=2)
    spec = ModelSpec(factory="interpretome.datasets:kmer_model", input_kind="kmer", targets=("x", "y"))
    res = attribute(ds, spec, target="y", n_steps=20, merge=False).compute(scheduler="sync")
    rt = get_runtime(spec)
    ids = rt.encode(codes)
    base = torch.full_like(ids, spec.kmer.vocab.index("xxpad"))
    base[:, 0] = ids[:, 0]
    ref, delta = LayerIntegratedGradients(rt.model, rt.model.embedding).attribute(
        ids, baselines=base, target=1, n_steps=20, return_convergence_delta=True)
    per_token = ref.sum(-1).detach().numpy()[:, 1:]
    got = np.nansum(res["sequence_attribution"].values[..., 0], axis=2)  # (S, L): per-base scores
    np.testing.assert_allclose(got.sum(1), per_token.sum(1), atol=1e-5)
    # a base's score is the sum over the tokens covering it of token score / k
    k, stride = spec.kmer.k, spec.kmer.stride
    expect = np.zeros_like(got)
    for t, s0 in enumerate(spec.kmer.token_starts(41)):
        expect[:, s0:s0 + k] += per_token[:, t:t + 1] / k
    np.testing.assert_allclose(got, expect, atol=1e-6)
    np.testing.assert_allclose(res["sequence_attribution_delta"].values[:, 0], delta.detach().numpy(), atol=1e-5)


@pytest.mark.graph
def test_attribute__image_ig_equals_captum(tmp_path):
    x = np.random.default_rng(2).normal(size=(5, 3, 6, 7)).astype(np.float32)
    np.save(tmp_path / "img.npy", x)
    ds = read_images(tmp_path / "img.npy", sample_chunk=2, labels=list("abaab"))
    spec = ModelSpec(factory="interpretome.pbmc:image_classifier", input_kind="image", targets=("no", "yes"))
    res = attribute(ds, spec, target="yes", n_steps=25, merge=False).compute(scheduler="sync")
    ref, _ = captum_ig(get_runtime(spec).model, x, 1, n_steps=25)
    np.testing.assert_allclose(res["image_attribution"].values[..., 0], ref, atol=1e-5)
    assert res["image_attribution"].dims == ("sample", "channel", "height", "width", "target")


def test_read_h5ad__dense_and_sparse_layer_chunks(tmp_path):
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    x = np.random.default_rng(0).poisson(0.4, size=(23, 9)).astype(np.float32)
    adata = anndata.AnnData(X=x, obs=pd.DataFrame({"cell": pd.Categorical(list("ab" * 11 + "a"))},
                                                  index=[f"c{i}" for i in range(23)]),
                            var=pd.DataFrame(index=[f"g{j}" for j in range(9)]))
    adata.layers["counts"] = sp.csr_matrix(x * 2)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    ds = read_h5ad(path, sample_chunk=5)
    np.testing.assert_array_equal(ds["features"].values, x)
    assert ds["features"].data.chunks[0] == (5, 5, 5, 5, 3)
    assert list(ds["cell"].values[:3]) == ["a", "b", "a"] and list(ds["feature"].values[:2]) == ["g0", "g1"]
    np.testing.assert_array_equal(read_h5ad(path, layer="counts", sample_chunk=4)["features"].values, 2 * x)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        read_h5ad(path, layer="nope")


def test_attribute__lazy(no_compute):
    x, ds = dense_data(n=12)
    for method in ("integrated_gradients", "gradient_shap", "deep_shap"):
        r = attribute(ds, dense_spec(), method=method, baseline="mean", target="all", merge=True)
        assert r["attribution"].chunks is not None and r["attribution_predicted"].chunks is not None
        assert "features" in r


@pytest.mark.graph(max_computes=1)  # the test's own: making the numpy-backed input
def test_attribute__bad_inputs(tmp_path):
    x, ds = dense_data(n=10)
    with pytest.raises(ValueError, match="class 'delta' is not one of the model's targets"):
        attribute(ds, dense_spec(), target="delta")
    wrong = ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 11, "n_classes": 3},
                      input_kind="dense", targets=CLASSES)
    with pytest.raises(ValueError, match="does not accept 12 input features"):
        attribute(ds, wrong)
    bad = x.copy()
    bad[3, 2] = np.nan
    eager = features_to_dataset(bad)
    eager["features"] = eager["features"].compute()  # numpy-backed: checked before any graph is built
    with pytest.raises(ValueError, match=r"samples \[3\].*NaN"):
        attribute(eager, dense_spec())
    lazy_bad = features_to_dataset(bad, sample_chunk=4)
    with pytest.raises(ValueError, match=r"samples \[3\].*NaN"):
        attribute(lazy_bad, dense_spec()).compute(scheduler="sync")
    with pytest.raises(ValueError, match="baseline of shape"):
        attribute(ds, dense_spec(), baseline=np.zeros(5))
    with pytest.raises(ValueError, match="method 'lime' is not one of"):
        attribute(ds, dense_spec(), method="lime")
    with pytest.raises(ValueError, match="no \\['features'\\]"):
        attribute(ds.drop_vars("features"), dense_spec())


def test_cli_attribute__store_summary_export(tmp_path):
    import anndata
    import pandas as pd

    from interpretome.cli import main
    from interpretome.pbmc import train_cell_classifier
    from interpretome.storage.store import open_group

    x, _ = dense_data(n=40)
    labels = np.array([CLASSES[int(v > 0) + int(v > 1)] for v in x[:, 0]])
    adata = anndata.AnnData(X=x, obs=pd.DataFrame({"kind": labels}, index=[f"c{i}" for i in range(40)]),
                            var=pd.DataFrame(index=[f"g{j}" for j in range(12)]))
    adata.write_h5ad(tmp_path / "cells.h5ad")
    spec, rep = train_cell_classifier(tmp_path / "w.pt", h5ad=tmp_path / "cells.h5ad", label="kind", epochs=40,
                                      hidden=16)
    spec_json = tmp_path / "spec.json"
    import json

    spec_json.write_text(json.dumps({**spec.to_dict(), "kmer": None, "weights_sha256": None}))
    args = [str(tmp_path / "cells.h5ad"), "-o", str(tmp_path / "s.zarr"), "--model", str(spec_json),
            "--target", "all", "--by", "kind", "--n-steps", "16", "--workers", "1", "--sample-chunk", "16",
            "--export", str(tmp_path / "t.tsv")]
    assert main(["attribute", *args]) == 0
    stored = open_group(tmp_path / "s.zarr", "attributions")
    assert stored["attribution"].shape == (40, 12, len(rep["classes"]))
    table = pd.read_csv(tmp_path / "t.tsv", sep="\t")
    assert list(table.columns[:7]) == ["group", "target", "feature", "feature_idx", "attribution_mean",
                                       "attribution_std", "cells"]
    sub = table[(table.group == "all") & (table.target == rep["classes"][0])]
    a = stored["attribution"].values[:, :, 0]
    row = sub.iloc[0]
    assert row.feature == f"g{row.feature_idx}"
    np.testing.assert_allclose(row.attribution_mean, a[:, row.feature_idx].mean(), rtol=1e-5, atol=1e-7)
    from interpretome.jobs.attribution import run_attribute

    with pytest.raises(ValueError, match="label column 'missing_col' is not in"):
        run_attribute(tmp_path / "cells.h5ad", spec, tmp_path / "s2.zarr", by="missing_col", n_steps=4)


def test_demo_step__known_markers_rank_top(tmp_path, client2):
    from interpretome.jobs.attribution import step_attribution
    from interpretome.jobs.demo import DemoContext
    from interpretome.storage.store import open_group
    from interpretome.tasks.summarize import class_tables

    logs = []
    ctx = DemoContext(out=tmp_path, store=tmp_path / "demo.zarr", client=client2, log=logs.append)
    figs = step_attribution(ctx)
    assert {p.name for p in figs} >= {"attributions_summary_classes.png", "attributions_summary_stacked.png",
                                      "promoter_ig_promoter_00_logo.png"}
    tables = class_tables(open_group(ctx.store, "attributions_summary").compute(), n=5)
    assert {"CD79A", "MS4A1"} <= set(tables["CD19+ B"]["positive"]["feature"])
    assert "NKG7" in set(tables["CD56+ NK"]["positive"]["feature"])
    assert "CST3" in set(tables["Dendritic"]["positive"]["feature"])
    assert any("have a known marker among their top-10 IG genes" in m for m in logs)
    # the promoter logo: IG mass concentrates on the planted boxes
    from interpretome.datasets import MOTIF_10_START, MOTIF_35_START

    a = np.nansum(np.abs(open_group(ctx.store, "promoter_ig")["sequence_attribution"].values[0, :, :, 0]), axis=1)
    boxes = np.r_[MOTIF_35_START:MOTIF_35_START + 6, MOTIF_10_START:MOTIF_10_START + 6]
    assert a[boxes].mean() > 3 * np.median(a)
