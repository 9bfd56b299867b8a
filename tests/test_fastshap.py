"""FastSHAP: exact Shapley enumeration against a planted truth, fidelity of the amortised explainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretome.engine.models import ModelSpec
from interpretome.storage.anndata_io import features_to_dataset
from interpretome.tasks.fastshap import exact_shapley, fastshap

FIDELITY_THRESHOLD = 0.9
"""FastSHAP must correlate at least this well with exact Shapley values of its surrogate game."""


def small_spec():
    return ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 6, "n_classes": 2,
                                                                        "hidden": 8, "seed": 4},
                     input_kind="dense", targets=("no", "yes"))


def test_exact_shapley__linear_game_planted_truth():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.5, 3.0], [2.0, 1.0]])
    x = torch.randn(5, 4)
    phi = exact_shapley(lambda xx, m: (xx * m) @ w + 7.0, x, 2)
    np.testing.assert_allclose(phi, (x[:, :, None] * w[None]).numpy(), atol=1e-5)
    # an interaction term x0*x1 is split equally between the two features
    phi2 = exact_shapley(lambda xx, m: ((xx * m)[:, :1] * (xx * m)[:, 1:2]), x[:, :3], 1)
    np.testing.assert_allclose(phi2[:, 0, 0], phi2[:, 1, 0], atol=1e-6)
    np.testing.assert_allclose(phi2[:, 2, 0], 0, atol=1e-6)


@pytest.mark.graph
def test_fastshap__fidelity_above_threshold_and_chunk_invariant(client2):
    x = np.random.default_rng(0).normal(size=(900, 6)).astype(np.float32)
    ds = features_to_dataset(x, sample_chunk=300)
    kw = dict(n_train=900, epochs=20, hidden=64, seed=1, n_validate=64, min_fidelity=FIDELITY_THRESHOLD, merge=False)
    a = client2.compute(fastshap(ds, small_spec(), **kw)).result()
    fid = float(a["fastshap_fidelity"])
    print(f"FastSHAP fidelity (Pearson r with exact Shapley of the surrogate game): {fid:.3f}")
    assert fid >= FIDELITY_THRESHOLD
    assert a["fastshap_attribution"].shape == (900, 6, 2)
    b = client2.compute(fastshap(features_to_dataset(x, sample_chunk=128), small_spec(), **kw)).result()
    np.testing.assert_allclose(a["fastshap_attribution"].values, b["fastshap_attribution"].values, atol=1e-6)


def test_fastshap__lazy_and_bad_inputs(no_compute):
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    r = fastshap(features_to_dataset(x, sample_chunk=20), small_spec(), n_train=40)
    assert r["fastshap_attribution"].chunks is not None
    with pytest.raises(ValueError, match="explains dense-feature models"):
        fastshap(features_to_dataset(x), ModelSpec(factory="interpretome.datasets:reference_cnn"))
    with pytest.raises(ValueError, match="does not accept 5 input features"):
        fastshap(features_to_dataset(x[:, :5]), small_spec())
    with pytest.raises(ValueError, match="fixed targets"):
        fastshap(features_to_dataset(x), small_spec(), target="predicted")


@pytest.mark.graph
def test_fastshap__untrusted_below_min_fidelity():
    from interpretome.tasks.fastshap import validate_fastshap

    x = np.random.default_rng(1).normal(size=(120, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="below min_fidelity=0.999"):
        validate_fastshap(small_spec(), x, epochs=1, hidden=8, n_validate=20, min_fidelity=0.999)
