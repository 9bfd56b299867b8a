"""The locality fast path (engine.fx_locality): equal to independent full forward passes on every zoo design."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from interpretome.datasets import random_dna
from interpretome.engine import fx_locality
from interpretome.engine.fx_locality import _WARNED
from interpretome.engine.models import ModelSpec, Runtime
from interpretome.engine.tokenize import KmerTokenizer
from interpretome.tasks.perturb import window_edits
from interpretome.zoo import zoo_spec

LUT = np.eye(5, 4, dtype=np.float32)  # N -> zeros, independent of the engine's encoder


def _direct(spec, ref, starts, new):
    """Return the first raw output of the model on every edited sequence, one plain forward each batch."""
    model = spec.build()
    out = []
    for i in range(0, len(starts), 32):
        rows = []
        for s, nw in zip(starts[i:i + 32], new[i:i + 32]):
            c = ref.copy()
            c[s:s + len(nw)] = nw
            rows.append(c)
        codes = np.stack(rows)
        if spec.input_kind == "kmer":
            x = torch.from_numpy(spec.kmer.encode(codes))
        else:
            x = torch.from_numpy(LUT[codes].transpose(0, 2, 1).copy())
        with torch.no_grad():
            y = model(x)
        out.append((y[0] if isinstance(y, tuple) else y).numpy())
    return np.concatenate(out)


def _edits(length, k, seed=0):
    ref = random_dna(1, length, seed=seed)[0]
    starts = np.arange(0, length - k + 1)
    new = window_edits("random", ref, starts, k, 1, seed, 0)[:, 0]
    return ref, starts, new


CASES = [
    ("reference_cnn", ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"seed": 2, "channels": 16}), 160),
    ("bpnet_tower profile", zoo_spec("bpnet_tower", channels=8, layers=4, crop=20), 200),
    ("bpnet_tower counts", zoo_spec("bpnet_tower", channels=8, layers=4, output="counts"), 200),
    ("spliceai_like", zoo_spec("spliceai_like", channels=8, crop=40), 200),
    ("basenji_like (pooling)", zoo_spec("basenji_like", channels=8, dilations=(2, 4), crop=2), 240),
    ("bpnet_like (planted, F.pad)", zoo_spec("bpnet_like", crop=16, bin_size=4), 128),
    ("ulmfit_like (LSTM)", zoo_spec("ulmfit_like", dim=8, hidden=12, layers=2), 90),
]


FORMS = {"cone": dict(DELTA_MIN_SAVING=float("inf")), "change": dict(DELTA_MIN_CHANNELS=0)}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("name, spec, length", CASES, ids=[c[0] for c in CASES])
def test_locality__equals_independent_full_forwards(name, spec, length, k, form, monkeypatch):
    """Every edit (the sequence ends included) equals a plain forward pass, and no op ran in full.

    Both forms of a stride-1 convolution are checked on every design: recomputing the window (``cone``)
    and the reference output plus the convolved change (``change``; by default only for wide channels)."""
    for attr, value in FORMS[form].items():
        monkeypatch.setattr(fx_locality, attr, value)
    rt = Runtime(spec)
    ref, starts, new = _edits(length, k, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warnings on these designs
        got = rt.predict_edits(ref, starts, new)
    assert rt.locality, f"{name}: no locality plan"
    assert rt.locality.full_nodes == set(), f"{name}: ran in full from {rt.locality.full_nodes}"
    want = _direct(spec, ref, starts, new)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the edits really change the outputs (a test that cannot fail is a defect)
    base = _direct(spec, ref, starts[:1], ref[None, :k])
    assert np.abs(want - base).max() > 1e-4


class _Odd(nn.Module):
    """Strided conv, channel concat with a dilated branch, F.pad, crop, padded avg pooling, transposes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv1d(4, 6, 5, padding="same")
        self.b = nn.Conv1d(4, 3, 3, dilation=3, padding=3)
        self.s = nn.Conv1d(9, 8, 4, stride=2, padding=1)
        self.pool = nn.AvgPool1d(3, stride=2, padding=1)
        self.bn = nn.BatchNorm1d(8).eval()
        self.head = nn.Conv1d(8, 2, 1)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], dim=1)
        h = self.s(nn.functional.pad(h, (2, 1)))
        h = self.pool(nn.functional.gelu(self.bn(h)))
        h = h[:, :, 3:h.shape[-1] - 2] * 0.5 + 1.0
        return torch.sigmoid(self.head(h)).transpose(1, 2).transpose(1, 2)


class _Gru(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(1033, 6)
        self.gru = nn.GRU(6, 10, 2, batch_first=True)
        self.out = nn.Linear(10, 2)

    def forward(self, ids):
        h, _ = self.gru(self.emb(ids))
        return self.out(h.amax(dim=1) + h.sum(dim=1) / 10)


class _Flip(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.c = nn.Conv1d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.c(torch.flip(x, dims=[2])).amax(dim=2)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c = nn.Conv1d(4, 2, 3, padding=1)

    def forward(self, x):
        h = self.c(x)
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            h = -h
        return h.amax(dim=2)


class _LogGap(nn.Module):
    """A ``-inf`` in the reference's activations where the sequence has an A (log of a zero), then a conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(4, 2, 1, bias=False)
        self.b = nn.Conv1d(2, 2, 3, padding=1)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 2.0, 1.0, 3.0]])[:, :, None])
            self.b.weight.copy_(torch.arange(1.0, 13.0).view(2, 2, 3) / 10)  # positive: -inf stays -inf, never NaN
            self.b.bias.zero_()

    def forward(self, x):
        return self.b(torch.log(self.a(x))).amax(dim=2)


def _spec(factory, **kw):
    return ModelSpec(factory=f"tests.test_locality:{factory}", targets=("a", "b"), batch_size=8, **kw)


def test_locality__strides_concat_pad_crop_pool():
    spec = _spec("_Odd")
    rt = Runtime(spec)
    ref, starts, new = _edits(101, 3, seed=4)
    got = rt.predict_edits(ref, starts, new)
    assert rt.locality.full_nodes == set()
    np.testing.assert_allclose(got, _direct(spec, ref, starts, new), rtol=1e-5, atol=1e-6)


def test_locality__a_non_finite_reference_activation_is_not_differenced():
    """A conv whose reference input holds -inf: edits that remove it give the finite full-forward values.

    (The linear form adds ``w (x - x_ref)`` to the reference output: inf - inf would be NaN there.)"""
    spec = _spec("_LogGap")
    rt = Runtime(spec)
    ref = np.array([1, 2, 3, 1, 2, 0, 3, 3, 1, 2, 2, 3], np.uint8)  # one A, at 5
    starts = np.arange(len(ref))
    new = ((ref + 1) % 4)[:, None].astype(np.uint8)  # the A becomes C (the max over length stays finite)
    got = rt.predict_edits(ref, starts, new)
    want = _direct(spec, ref, starts, new)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert rt.locality.full_nodes == set()


def test_locality__gru_prefix_states():
    spec = _spec("_Gru", input_kind="kmer", kmer=KmerTokenizer(k=5, stride=2))
    rt = Runtime(spec)
    ref, starts, new = _edits(70, 2, seed=5)
    got = rt.predict_edits(ref, starts, new)
    assert rt.locality.full_nodes == set()
    np.testing.assert_allclose(got, _direct(spec, ref, starts, new), rtol=1e-5, atol=1e-6)


def test_locality__unknown_op_runs_in_full_and_says_so_once():
    _WARNED.clear()
    spec = ModelSpec(factory="tests.test_locality:_Flip", targets=("a", "b", "c"), batch_size=8)
    rt = Runtime(spec)
    ref, starts, new = _edits(40, 1, seed=6)
    with pytest.warns(RuntimeWarning, match=r"recomputed in full from function torch\.flip"):
        got = rt.predict_edits(ref, starts, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.predict_edits(ref, starts, new)  # once per process
    np.testing.assert_allclose(got, _direct(spec, ref, starts, new), rtol=1e-5, atol=1e-6)


def test_locality__untraceable_model_falls_back_and_says_so_once():
    _WARNED.clear()
    spec = _spec("_Untraceable")
    rt = Runtime(spec)
    ref, starts, new = _edits(30, 1, seed=7)
    with pytest.warns(RuntimeWarning, match="_Untraceable cannot be traced by torch.fx"):
        got = rt.predict_edits(ref, starts, new)
    assert rt.locality is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Runtime(spec).predict_edits(ref, starts, new)
    np.testing.assert_allclose(got, _direct(spec, ref, starts, new), rtol=1e-5, atol=1e-6)


def test_locality__unsorted_edits_and_error_rows():
    """Edits in any order come back in their order; several references in turn use their own cache."""
    spec = zoo_spec("ulmfit_like", dim=8, hidden=12, layers=1)
    rt = Runtime(spec)
    ref, starts, new = _edits(60, 1, seed=8)
    perm = np.random.default_rng(0).permutation(len(starts))
    got = rt.predict_edits(ref, starts[perm], new[perm])
    other = random_dna(1, 60, seed=9)[0]
    rt.predict_edits(other, starts[:5], new[:5])
    np.testing.assert_allclose(got, _direct(spec, ref, starts[perm], new[perm]), rtol=1e-5, atol=1e-6)
