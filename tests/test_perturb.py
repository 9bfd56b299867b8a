"""Perturbation sweep and ISM: equal to plain loops, chunk/batch/worker invariant, lazy, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interpretome as it
from interpretome.datasets import random_dna
from interpretome.engine.models import ModelSpec, clear_runtimes
from interpretome.storage.alphabet import decode_bases
from interpretome.tasks.perturb import window_edits

LUT = np.eye(5, 4, dtype=np.float32)  # N -> zeros, independent of the engine's encoder


def _spec(**kw):
    base = dict(factory="interpretome.datasets:reference_cnn", kwargs={"seed": 3, "channels": 8, "outputs": 2},
                targets=("a", "b"), activation="sigmoid", batch_size=16)
    base.update(kw)
    return ModelSpec(**base)


def _sequences(n=5, lengths=(60, 45, 60, 33, 52), seed=1):
    codes = random_dna(n, max(lengths), seed=seed)
    seqs = {f"s{i}": decode_bases(codes[i, :lengths[i]]) for i in range(n)}
    seqs["s1"] = seqs["s1"][:10] + "N" + seqs["s1"][11:]  # an N inside
    return seqs


def _plain_predict(model, codes_1d, activation="sigmoid"):
    x = torch.from_numpy(LUT[codes_1d].T[None].copy())
    with torch.no_grad():
        out = model(x)
    return (torch.sigmoid(out) if activation == "sigmoid" else out)[0].numpy()


def _codes(seq):
    return np.frombuffer(seq.encode(), np.uint8).copy().__array__() if False else np.array(["ACGTN".index(c) for c in seq], np.uint8)


def _plain_sweep(spec, seqs, windows, positions, edits_fn):
    """Return a dict (seq i, window w, position p) -> delta over replicates (R, T), by a plain loop."""
    model = spec.build()
    out = {}
    for i, seq in enumerate(seqs.values()):
        ref_codes = _codes(seq)
        ref = _plain_predict(model, ref_codes)
        for w, k in enumerate(windows):
            for p in positions:
                if p + k > len(seq):
                    continue
                reps = []
                for new in edits_fn(i, ref_codes, p, k, w):
                    c = ref_codes.copy()
                    c[p:p + k] = new
                    reps.append(_plain_predict(model, c) - ref)
                out[i, w, p] = np.array(reps)
    return out


def test_perturbation_sweep__mask_equals_plain_loop():
    seqs = _sequences()
    spec = _spec()
    ds = it.sequences_to_dataset(seqs, sequence_chunk=2, position_chunk=16)
    res = it.perturbation_sweep(ds, spec, windows=[1, 4, 9], mode="mask", merge=False).compute(scheduler="sync")
    ref = _plain_sweep(spec, seqs, [1, 4, 9], range(60), lambda i, c, p, k, w: [np.full(k, 4)])
    got = res["sweep_delta_mean"].values
    for (i, w, p), d in ref.items():
        np.testing.assert_allclose(got[i, w, p], d.mean(0), atol=2e-6)
    # windows that do not fit are NaN, the rest are finite
    assert np.isnan(got[3, 2, 33 - 9 + 1:]).all() and np.isfinite(got[3, 2, :33 - 9 + 1]).all()
    assert (res["sweep_delta_std"].values[np.isfinite(got)] == 0).all()
    np.testing.assert_allclose(res["sweep_reference"].values[0], _plain_predict(spec.build(), _codes(seqs["s0"])), atol=1e-6)


def test_perturbation_sweep__insert_equals_plain_loop():
    seqs = _sequences()
    spec = _spec()
    inserts = ["TATAAT", "GC"]
    ds = it.sequences_to_dataset(seqs, sequence_chunk=3, position_chunk=20)
    res = it.perturbation_sweep(ds, spec, mode="insert", inserts=inserts, stride=3, merge=False).compute(scheduler="sync")
    assert list(res["window"].values) == inserts and list(res["window_length"].values) == [6, 2]
    ref = _plain_sweep(spec, seqs, [6, 2], range(0, 60, 3), lambda i, c, p, k, w: [_codes(inserts[w])])
    got = res["sweep_delta_mean"].values
    for (i, w, p), d in ref.items():
        np.testing.assert_allclose(got[i, w, p // 3], d.mean(0), atol=2e-6)


@pytest.mark.parametrize("mode", ["random", "shuffle"])
def test_perturbation_sweep__random_equals_plain_loop_fed_engine_draws(mode):
    seqs = _sequences()
    spec = _spec()
    windows, reps, seed = [3, 7], 3, 11
    ds = it.sequences_to_dataset(seqs, sequence_chunk=2, position_chunk=25)
    res = it.perturbation_sweep(ds, spec, windows=windows, mode=mode, replicates=reps, seed=seed, stride=2,
                                keep_replicates=True, merge=False).compute(scheduler="sync")

    def draws(i, c, p, k, w):
        return window_edits(mode, c, np.array([p]), k, reps, seed, i)[0]

    ref = _plain_sweep(spec, seqs, windows, range(0, 60, 2), draws)
    mean, std, raw = (res[v].values for v in ("sweep_delta_mean", "sweep_delta_std", "sweep_prediction"))
    refpred = res["sweep_reference"].values
    for (i, w, p), d in ref.items():
        np.testing.assert_allclose(mean[i, w, p // 2], d.mean(0), atol=2e-6)
        np.testing.assert_allclose(std[i, w, p // 2], d.std(0), atol=2e-6)
        np.testing.assert_allclose(raw[i, w, p // 2] - refpred[i], d, atol=2e-6)
    # draws are random: replicates differ somewhere, and shuffles keep the window's base counts
    assert (std[np.isfinite(std)] > 0).mean() > 0.3
    if mode == "shuffle":
        c = _codes(seqs["s0"])
        new = window_edits("shuffle", c, np.arange(0, 50), 7, reps, seed, 0)
        for p in range(50):
            for r in range(reps):
                assert sorted(new[p, r]) == sorted(c[p:p + 7])


def test_window_edits__depend_only_on_global_keys():
    c = random_dna(1, 100, seed=4)[0]
    full = window_edits("random", c, np.arange(0, 90), 5, 4, 7, 12)
    part = window_edits("random", c, np.array([17, 3, 60]), 5, 4, 7, 12)
    np.testing.assert_array_equal(part, full[[17, 3, 60]])
    assert not np.array_equal(window_edits("random", c, np.arange(90), 5, 4, 8, 12), full)  # seed matters
    assert not np.array_equal(window_edits("random", c, np.arange(90), 5, 4, 7, 13), full)  # sequence matters
    counts = np.bincount(window_edits("random", c, np.arange(90), 5, 200, 7, 12).ravel(), minlength=4)
    assert counts.min() > 0.23 * counts.sum()


def test_saturation_mutagenesis__equals_plain_loop():
    seqs = _sequences()
    spec = _spec()
    ds = it.sequences_to_dataset(seqs, sequence_chunk=2, position_chunk=16)
    res = it.saturation_mutagenesis(ds, spec, merge=False).compute(scheduler="sync")
    got = res["ism_delta"].values
    model = spec.build()
    for i, seq in enumerate(seqs.values()):
        c = _codes(seq)
        ref = _plain_predict(model, c)
        for p in range(len(seq)):
            for b in range(4):
                if b == c[p]:
                    assert (got[i, p, b] == 0).all()
                    continue
                m = c.copy()
                m[p] = b
                np.testing.assert_allclose(got[i, p, b], _plain_predict(model, m) - ref, atol=2e-6)
        assert np.isnan(got[i, len(seq):]).all()
    # the N at s1:10 has all four substitutions computed (none is the identity)
    assert (got[1, 10] != 0).all()


def test_saturation_mutagenesis__region():
    seqs = _sequences()
    spec = _spec()
    ds = it.sequences_to_dataset(seqs, sequence_chunk=5)
    full = it.saturation_mutagenesis(ds, spec, merge=False).compute(scheduler="sync")
    part = it.saturation_mutagenesis(ds, spec, start=20, end=41, position_chunk=7, merge=False).compute(scheduler="sync")
    assert list(part["position"].values) == list(range(20, 41))
    np.testing.assert_allclose(part["ism_delta"].values, full["ism_delta"].values[:, 20:41], atol=1e-6)


def test_sweep_and_ism__same_values_across_chunkings_and_batch_sizes():
    seqs = _sequences()
    results = []
    for (sc, pc), bs in [((1, 60), 16), ((2, 16), 7), ((5, 25), 64), ((3, 9), 1)]:
        clear_runtimes()
        spec = _spec(batch_size=bs)
        ds = it.sequences_to_dataset(seqs, sequence_chunk=sc, position_chunk=pc)
        sw = it.perturbation_sweep(ds, spec, windows=[2, 5], mode="random", replicates=2, seed=5, merge=False)
        ism = it.saturation_mutagenesis(ds, spec, merge=False)
        results.append((sw["sweep_delta_mean"].values, sw["sweep_delta_std"].values, ism["ism_delta"].values))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, atol=2e-6, equal_nan=True)


def _avg_head_cnn(length=120):
    import torch.nn as nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 6, 3, padding=2, dilation=2),
                         nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(24, 2))


def _flat_head_cnn(length=120):
    import torch.nn as nn

    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(4, 3, 7, padding=3), nn.BatchNorm1d(3).eval(), nn.GELU(), nn.Flatten(),
                         nn.Linear(3 * length, 2))


@pytest.mark.parametrize("factory, in_full", [
    ("interpretome.datasets:reference_cnn", set()),  # global max from the reference's running maxima
    ("tests.test_perturb:_avg_head_cnn", {"_3"}),  # AdaptiveAvgPool1d(4): the head runs on the spliced activations
    ("tests.test_perturb:_flat_head_cnn", {"_3"}),  # Flatten
])
def test_fast_path_equals_full_forward(factory, in_full):
    """The locality fast path equals full forward passes (edits at the sequence ends included)."""
    from interpretome.engine.models import Runtime

    kwargs = {"seed": 3, "channels": 8, "outputs": 2} if "reference" in factory else {}
    spec = _spec(factory=factory, kwargs=kwargs, batch_size=8)
    rt = Runtime(spec)
    ref = random_dna(1, 120, seed=9)[0]
    starts = np.arange(0, 115)
    new = window_edits("random", ref, starts, 6, 1, 0, 0)[:, 0]
    fast = rt.predict_edits(ref, starts, new)
    assert rt.locality and rt.locality.full_nodes == in_full
    rt.locality = False
    full = rt.predict_edits(ref, starts, new)
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-6)


def test_kmer_model__sweep_equals_plain_loop():
    """k-mer token models (Genomic-ULMFiT tokenisation) are swept through the same engine."""
    tok = it.KmerTokenizer(k=5, stride=2)
    spec = ModelSpec(factory="interpretome.datasets:kmer_model", kwargs={"seed": 1}, input_kind="kmer", kmer=tok,
                     targets=("x", "y"), select=("y",), activation="softmax", batch_size=8)
    seqs = {k: v for k, v in list(_sequences().items())[:3]}
    ds = it.sequences_to_dataset(seqs, sequence_chunk=2)
    res = it.perturbation_sweep(ds, spec, windows=[4], mode="mask", merge=False).compute(scheduler="sync")
    model = spec.build()
    table = tok.lookup()
    for i, seq in enumerate(seqs.values()):
        c = _codes(seq)

        def pred(cc):
            with torch.no_grad():
                return torch.softmax(model(torch.from_numpy(tok.encode(cc[None], table))), 1)[0, 1].item()

        r = pred(c)
        for p in range(0, len(seq) - 4 + 1, 5):
            m = c.copy()
            m[p:p + 4] = 4
            assert abs(res["sweep_delta_mean"].values[i, 0, p, 0] - (pred(m) - r)) < 1e-6
    ids = tok.encode(_codes("ACGTAC")[None], table)
    assert ids.tolist() == [[tok.vocab.index("xxbos"), tok.vocab.index("ACGTA")]]
    assert tok.encode(_codes("ACNTAC")[None], table)[0, 1] == tok.vocab.index("xxunk")


@pytest.mark.graph
def test_tasks__build_graphs_without_computing():
    seqs = _sequences()
    ds = it.sequences_to_dataset(seqs, sequence_chunk=2, position_chunk=16)
    spec = _spec()
    sw = it.perturbation_sweep(ds, spec, windows=[3], replicates=2, keep_replicates=True)
    ism = it.saturation_mutagenesis(ds, spec)
    for v in ("sweep_delta_mean", "sweep_delta_std", "sweep_prediction", "sweep_reference"):
        assert sw[v].chunks is not None
    assert ism["ism_delta"].chunks == ((2, 2, 1), (16, 16, 16, 12), (4,), (2,))
    assert sw["sweep_delta_mean"].dims == ("sequence", "window", "position", "target")


def test_sweep__on_two_worker_cluster_equals_local(client2):
    seqs = _sequences()
    ds = it.sequences_to_dataset(seqs, sequence_chunk=2, position_chunk=20)
    spec = _spec()
    sw = it.perturbation_sweep(ds, spec, windows=[2, 6], replicates=2, seed=1, merge=False)
    ism = it.saturation_mutagenesis(ds, spec, merge=False)
    dist = client2.compute([sw["sweep_delta_mean"].data, ism["ism_delta"].data], sync=True)
    local = [sw["sweep_delta_mean"].values, ism["ism_delta"].values]
    for a, b in zip(dist, local):
        np.testing.assert_allclose(a, b, atol=2e-6, equal_nan=True)
    assert len(client2.scheduler_info()["workers"]) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="blur"), "mode 'blur' is not one of"),
    (dict(windows=[0]), "windows must be positive integers"),
    (dict(windows=[2.5]), "windows must be positive integers"),
    (dict(windows=[61]), "window 61 is longer than every sequence"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(replicates=0), "replicates must be >= 1"),
    (dict(mode="mask", replicates=3), "mode 'mask' is deterministic: replicates must be 1"),
    (dict(mode="insert"), "mode 'insert' needs inserts="),
    (dict(mode="insert", inserts=["ACXT"]), "character 'X' at position 3"),
    (dict(mode="insert", inserts=["ACG"], windows=[3]), "drop windows="),
    (dict(mode="random", inserts=["ACG"]), "inserts= is only used by mode='insert'"),
])
@pytest.mark.graph
def test_perturbation_sweep__bad_input(kwargs, match):
    ds = it.sequences_to_dataset(_sequences())
    with pytest.raises(ValueError, match=match):
        it.perturbation_sweep(ds, _spec(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=50, end=40), "is empty or negative"),
    (dict(end=500), "past the longest sequence"),
])
@pytest.mark.graph
def test_saturation_mutagenesis__bad_input(kwargs, match):
    ds = it.sequences_to_dataset(_sequences())
    with pytest.raises(ValueError, match=match):
        it.saturation_mutagenesis(ds, _spec(), **kwargs)


@pytest.mark.graph
def test_tasks__missing_input_variable():
    import xarray as xr

    with pytest.raises(ValueError, match=r"has no \['sequence_code', 'sequence_length'\]: build it with"):
        it.perturbation_sweep(xr.Dataset(), _spec())


@pytest.mark.graph
def test_merge__refuses_disagreeing_coordinates():
    ds = it.sequences_to_dataset(_sequences())
    merged = it.perturbation_sweep(ds, _spec(), windows=[2])
    assert "sequence_code" in merged and "sweep_delta_mean" in merged
    with pytest.raises(ValueError, match="pass merge=False"):
        it.perturbation_sweep(ds, _spec(), windows=[2], stride=2)
