"""FastSHAP: exact and permutation-sampled Shapley references, fidelity of the amortised explainer at 6 and 765 features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretome.engine.models import ModelSpec
from interpretome.storage.anndata_io import features_to_dataset
from interpretome.tasks.fastshap import (Game, exact_shapley, fastshap, fidelity_figures, permutation_shapley,
                                         reference_shapley, validate_fastshap)

FIDELITY_THRESHOLD = 0.9
"""FastSHAP must correlate at least this well (mean per-sample Pearson r) with the reference of its surrogate game."""


def small_spec():
    return ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 6, "n_classes": 2,
                                                                        "hidden": 8, "seed": 4},
                     input_kind="dense", targets=("no", "yes"))


def random_game(f, t=2, hidden=16, seed=0):
    from interpretome.tasks.fastshap import _mlp

    torch.manual_seed(seed)
    net = _mlp(2 * f, t, hidden).eval()
    return Game(net, torch.randn(f) * 0.1, torch.rand(f) + 0.5, torch.randn(t), torch.rand(t) + 0.5)


def test_exact_shapley__linear_game_planted_truth():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.5, 3.0], [2.0, 1.0]])
    x = torch.randn(5, 4)
    phi = exact_shapley(lambda xx, m: (xx * m) @ w + 7.0, x, 2)
    np.testing.assert_allclose(phi, (x[:, :, None] * w[None]).numpy(), atol=1e-5)
    # an interaction term x0*x1 is split equally between the two features
    phi2 = exact_shapley(lambda xx, m: ((xx * m)[:, :1] * (xx * m)[:, 1:2]), x[:, :3], 1)
    np.testing.assert_allclose(phi2[:, 0, 0], phi2[:, 1, 0], atol=1e-6)
    np.testing.assert_allclose(phi2[:, 2, 0], 0, atol=1e-6)


def test_permutation_shapley__converges_to_exact_within_its_standard_error():
    game = random_game(10)
    x = torch.randn(3, 10)
    exact = exact_shapley(game, x, 2)
    # the cumulative first-layer walk gives the game's own values at every prefix
    perms = torch.stack([torch.randperm(10) for _ in range(4)])
    walk = game.walk(x[0], perms).detach().numpy()
    for p in range(4):
        m = torch.zeros(11, 10)
        for k in range(1, 11):
            m[k, perms[p, :k]] = 1
        np.testing.assert_allclose(walk[p], game(x[0:1].expand(11, -1), m).detach().numpy(), atol=1e-5)
    # paired values (masks, then complements, by the first layer's linearity) equal the game's direct ones,
    # for several masks per input
    zz, mm = game.z(torch.randn(5, 10)), (torch.rand(15, 10) < 0.4).float()
    with torch.no_grad():
        np.testing.assert_allclose(game.paired(zz, mm).numpy(),
                                   game.raw(zz, torch.cat([mm, 1 - mm])).numpy(), rtol=1e-5, atol=1e-5)
    phi, se = permutation_shapley(game, x, n_permutations=2000, seed=1)
    z = np.abs(phi - exact) / np.maximum(se, 1e-9)
    assert np.mean(z < 3) > 0.97 and np.abs(phi - exact).max() < 6 * se.max()
    np.testing.assert_allclose(phi.sum(1), exact.sum(1), atol=1e-4)  # efficiency holds per permutation
    assert fidelity_figures(phi, exact, top_k=3)["fidelity"] > 0.99
    # the adaptive reference reaches its stated noise bound (here for a 16-feature game)
    game16 = random_game(16, seed=2)
    ref, noise, n_perm = reference_shapley(game16, torch.randn(2, 16), se_bound=0.1, seed=0)
    assert noise <= 0.1 and n_perm >= 32 and ref.shape == (2, 16, 2)


def test_draw_masks__the_lowest_uniforms_of_each_row_ties_included(monkeypatch):
    from interpretome.tasks.fastshap import _draw_masks, _shapley_kernel_sizes

    rand = torch.rand
    for kernel, f, coarse in ((True, 765, False), (False, 765, False), (True, 50, True), (False, 50, True)):
        # coarse: uniforms on 16 levels, so that most rows tie at their threshold (float32's rarely do)
        monkeypatch.setattr(torch, "rand", (lambda *a, **k: torch.floor(rand(*a, **k) * 16) / 16) if coarse else rand)
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        n = 2000
        m = _draw_masks(g1, n, f, kernel)
        # the reference: the same draws (sizes, then uniforms), ranked by a sort
        sizes = (torch.multinomial(torch.as_tensor(_shapley_kernel_sizes(f)), n, replacement=True, generator=g2) + 1
                 if kernel else torch.randint(0, f + 1, (n,), generator=g2))
        ranks = torch.rand(n, f, generator=g2).argsort(1).argsort(1)
        assert torch.equal(m, (ranks < sizes[:, None]).float())
        assert set(m.sum(1).long().tolist()) <= set(range(1 if kernel else 0, f if kernel else f + 1))


@pytest.mark.graph
def test_fastshap__fidelity_above_threshold_and_chunk_invariant(client2):
    x = np.random.default_rng(0).normal(size=(900, 6)).astype(np.float32)
    ds = features_to_dataset(x, sample_chunk=300)
    kw = dict(n_train=900, epochs=30, seed=1, n_validate=64, min_fidelity=FIDELITY_THRESHOLD, merge=False)
    a = client2.compute(fastshap(ds, small_spec(), **kw)).result()
    fid = float(a["fastshap_fidelity"])
    val = dict(zip(a["metric"].values, a["fastshap_validation"].values))
    print(f"FastSHAP fidelity (mean per-sample r with exact Shapley of the surrogate game): {fid:.3f}; {val}")
    assert fid >= FIDELITY_THRESHOLD and val["fidelity"] == pytest.approx(fid)
    assert val["reference_permutations"] == 0 and val["reference_noise"] == 0  # exact at 6 features
    assert a["fastshap_attribution"].shape == (900, 6, 2)
    b = client2.compute(fastshap(features_to_dataset(x, sample_chunk=128), small_spec(), **kw)).result()
    np.testing.assert_allclose(a["fastshap_attribution"].values, b["fastshap_attribution"].values, atol=1e-6)


def test_fastshap__pbmc_765_features_fidelity_against_permutation_reference(tmp_path):
    """The shipped PBMC demo classifier (765 genes, 10 cell types): fidelity >= 0.9, validated, never skipped."""
    import anndata

    from interpretome.pbmc import pbmc_path, train_cell_classifier

    spec, _ = train_cell_classifier(tmp_path / "clf.pt")
    x = np.asarray(anndata.read_h5ad(pbmc_path()).X, np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        st = validate_fastshap(spec, x, n_validate=8, seed=0, min_fidelity=FIDELITY_THRESHOLD)
    finally:
        torch.set_num_threads(threads)
    v = st["validation"]
    print(f"PBMC FastSHAP: {v}")
    assert x.shape[1] >= 700
    assert v["fidelity"] >= FIDELITY_THRESHOLD and v["fidelity_min"] >= 0.75
    assert v["reference_permutations"] >= 32 and v["reference_noise"] <= 0.15
    assert v["topk_agreement"] >= 0.6 and v["surrogate_r2"] >= 0.9


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
def test_fastshap__untrusted_below_min_fidelity_at_any_size():
    x = np.random.default_rng(1).normal(size=(120, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="below min_fidelity=0.999"):
        validate_fastshap(small_spec(), x, epochs=1, n_validate=20, min_fidelity=0.999)
    wide = ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 40, "n_classes": 2,
                                                                        "hidden": 8, "seed": 4},
                     input_kind="dense", targets=("no", "yes"))
    x40 = np.random.default_rng(2).normal(size=(120, 40)).astype(np.float32)
    with pytest.raises(ValueError, match="permutation-sampled .* below min_fidelity=0.999"):
        validate_fastshap(wide, x40, epochs=1, n_validate=4, min_fidelity=0.999)
    with pytest.raises(ValueError, match="at least 8 training samples"):
        validate_fastshap(small_spec(), x[:12], n_validate=4)


def test_fastshap__log1p_counts_and_a_trained_state():
    """Counts with transform='log1p' (exact reference at 6 features), then fastshap(trained=state) in the graph."""
    from interpretome.tasks.fastshap import explain_with, load_fastshap

    x = np.random.default_rng(3).poisson(3.0, size=(300, 6)).astype(np.float32)
    st = validate_fastshap(small_spec(), x, epochs=30, seed=1, n_validate=32, transform="log1p", hidden=32,
                           min_fidelity=FIDELITY_THRESHOLD)
    assert st["transform"] == "log1p" and st["validation"]["reference_permutations"] == 0
    game, expl = load_fastshap(st)
    # the game standardises log1p counts: z of the training mean of log1p is 0
    assert torch.allclose(game.z(torch.expm1(game.x_mean)[None]), torch.zeros(1, 6), atol=1e-5)
    want = explain_with(expl, game, torch.from_numpy(x), 6, 2)
    r = fastshap(features_to_dataset(x, sample_chunk=150), small_spec(), trained=st, merge=False)
    got = r.compute(scheduler="sync")
    np.testing.assert_allclose(got["fastshap_attribution"].values, want, atol=1e-6)
    assert float(got["fastshap_fidelity"]) == pytest.approx(st["fidelity"])
    with pytest.raises(ValueError, match="negative inputs"):
        fastshap(features_to_dataset(-x), small_spec(), trained=st, merge=False).compute(scheduler="sync")
    with pytest.raises(ValueError, match="is for counts"):
        validate_fastshap(small_spec(), -x, transform="log1p")
    with pytest.raises(ValueError, match="trained for 6 features and 2 targets"):
        fastshap(features_to_dataset(x), small_spec(), target="yes", trained=st)
    with pytest.raises(ValueError, match=r"trained= state's FastSHAP fidelity .* below min_fidelity=0.9999"):
        fastshap(features_to_dataset(x), small_spec(), trained=st, min_fidelity=0.9999)


def test_fastshap__transform_auto_is_log1p_for_scvi_models_and_the_cli_passes_it(monkeypatch):
    """``transform="auto"`` (the default of ``fastshap`` and of ``--fastshap-transform``): log1p for a
    ``ModelSpec.from_scvi`` model (counts in), the input as it is otherwise; a bad value is refused."""
    import dataclasses

    from interpretome.engine.scvi import FACTORY
    from interpretome.jobs.attribution import fastshap_settings
    from interpretome.tasks import fastshap as fs

    scvi_like = dataclasses.replace(small_spec(), factory=FACTORY)
    assert fs.resolve_transform("auto", scvi_like) == "log1p"
    assert fs.resolve_transform("auto", small_spec()) is None
    assert fs.resolve_transform(None, scvi_like) is None
    with pytest.raises(ValueError, match="transform must be 'auto' or one of"):
        fs.resolve_transform("sqrt", small_spec())
    assert fastshap_settings("fastshap", 100, 5, transform="none")["transform"] is None
    assert fastshap_settings("fastshap", 100, 5, transform="log1p")["transform"] == "log1p"
    assert fastshap_settings("fastshap", 100, 5)["transform"] == "auto"
    # the resolved transform is what the training node is given
    seen = {}

    def train(xtrain, spec, *, targets, **params):
        seen.update(params)
        raise RuntimeError("stop")

    monkeypatch.setattr(fs, "train_fastshap", train)
    x = np.random.default_rng(0).poisson(2.0, size=(60, 6)).astype(np.float32)
    with pytest.raises(RuntimeError, match="stop"):
        fastshap(features_to_dataset(x), small_spec(), n_train=40, merge=False).compute(scheduler="sync")
    assert seen["transform"] is None and seen["hidden"] == fs.TRAINING["hidden"]
    assert seen["n_masks"] == fs.TRAINING["n_masks"] and seen["experts"] == fs.TRAINING["experts"]
