"""Results you can trust, model side: model digests, real-input checks, non-finite outputs, bad weights files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

import interpretome as it
from interpretome.datasets import random_dna, reference_cnn
from interpretome.engine.models import (ModelOutputError, ModelSpec, ModelSpecError, Runtime, check_model,
                                        clear_runtimes, get_runtime, model_digest, state_digest)
from interpretome.storage.readers import decode_bases, sequences_to_dataset
from interpretome.tasks.attribute import attribute
from interpretome.tasks.ism import saturation_mutagenesis
from interpretome.tasks.perturb import perturbation_sweep
from interpretome.tasks.scores import clustering_scores
from interpretome.tasks.tiles import predict_tiles

CNN = "interpretome.datasets:reference_cnn"


# --- factories used by the specs below (importable as tests.test_integrity_model:...) ---------------

def checkpoint_model(directory: str, hidden: int = 3):
    """A factory that loads its own weights from ``directory/model.pt`` (as scvi-tools / Lightning do)."""
    model = nn.Linear(4, hidden)
    model.load_state_dict(torch.load(os.path.join(directory, "model.pt"), weights_only=True))
    return model


def forwarding(**kwargs):
    """A factory taking ``**kwargs`` and passing them on (no signature to check before the call)."""
    return reference_cnn(**kwargs)


class _TNaN(nn.Module):
    """reference_cnn whose output 'b' is NaN for inputs that are mostly T (> 80 % of the bases)."""

    def __init__(self):
        super().__init__()
        self.cnn = reference_cnn(seed=3, channels=8, outputs=2)

    def forward(self, x):
        out = self.cnn(x).clone()
        t_frac = x[:, 3].sum(-1) / x.sum((1, 2)).clamp(min=1)
        out[t_frac > 0.8, 1] = float("nan")
        return out


def t_nan_model():
    return _TNaN()


def nan_bias_cnn():
    """A convolutional nn.Sequential (receptive-field fast path) whose last bias is NaN: every output is NaN."""
    model = reference_cnn(seed=1, channels=8, outputs=2)
    with torch.no_grad():
        model[-1].bias[1] = float("nan")
    return model


class _BigNaN(nn.Module):
    """A dense classifier whose output 'y' is NaN for samples with feature 0 above 50."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        out = self.mlp(x).clone()
        out[x[:, 0] > 50, 1] = float("nan")
        return out


def big_nan_dense():
    torch.manual_seed(0)
    return _BigNaN()


def nan_head_cnn():
    """reference_cnn (traceable: its trunk is shared by overlapping tiles) whose output 'b' is NaN everywhere."""
    model = reference_cnn(seed=3, channels=8, outputs=2)
    with torch.no_grad():
        model[-1].bias[1] = float("nan")
    return model


def _t_nan_spec(**kw):
    return ModelSpec(factory="tests.test_integrity_model:t_nan_model", targets=("a", "b"), batch_size=16, **kw)


def _sequences():
    codes = random_dna(2, 40, seed=5)
    return sequences_to_dataset({"s0": decode_bases(codes[0]), "polyT": "T" * 38 + "GA",
                                 "s2": decode_bases(codes[1])}, sequence_chunk=2)


# --- 1. model_digest ---------------------------------------------------------------------------------

def test_model_digest__notices_a_factory_reloading_retrained_weights(tmp_path):
    torch.save(nn.Linear(4, 3).state_dict(), tmp_path / "model.pt")
    spec = ModelSpec(factory="tests.test_integrity_model:checkpoint_model", kwargs={"directory": str(tmp_path)},
                     input_kind="dense", targets=("x", "y", "z"))
    clear_runtimes()
    first = model_digest(spec)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert model_digest(spec) == first
    assert first == state_digest(get_runtime(spec).model)
    clear_runtimes()
    assert model_digest(spec) == first  # same file, rebuilt: same digest

    torch.save(nn.Linear(4, 3).state_dict(), tmp_path / "model.pt")  # "retrained": new weights, same spec token
    assert model_digest(spec) == first  # this process still runs the model it built: its digest
    assert model_digest(spec, fresh=True) != first  # rebuilt from the file on disk
    clear_runtimes()
    retrained = model_digest(spec)
    assert retrained != first and spec.token == spec.token
    assert model_digest(spec.to_dict()) == retrained  # anything load_spec takes


def test_model_digest__weights_file_and_torchscript_digest_the_loaded_state(tmp_path):
    model = reference_cnn(seed=7, channels=4, outputs=2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.jit.script(model).save(str(tmp_path / "m.ts"))
    with_weights = ModelSpec(factory=CNN, kwargs={"channels": 4, "outputs": 2}, weights=str(tmp_path / "w.pt"),
                             targets=("a", "b"))
    plain = ModelSpec(factory=CNN, kwargs={"channels": 4, "outputs": 2}, targets=("a", "b"))
    script = ModelSpec(torchscript=str(tmp_path / "m.ts"), targets=("a", "b"))
    assert model_digest(with_weights) == state_digest(model) == model_digest(script)
    assert model_digest(plain) != model_digest(with_weights)  # seed 0 weights, not the saved seed 7 ones
    h = state_digest(nn.Linear(2, 2, bias=False))
    assert h != state_digest(nn.Linear(2, 2, bias=True))


# --- 2. check_model ----------------------------------------------------------------------------------

def test_check_model__runs_real_items_and_reports():
    spec = ModelSpec(factory=CNN, kwargs={"channels": 4, "outputs": 3}, targets=("a", "b", "c"), select=("c",))
    rep = check_model(spec, random_dna(3, 50, seed=1))
    assert rep == {"digest": model_digest(spec), "n_outputs": 3, "output_shape": (3, 3), "targets": ["c"]}
    dense = ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 6, "n_classes": 2},
                      input_kind="dense", targets=("x", "y"))
    assert check_model(dense, np.random.default_rng(0).normal(size=(4, 6)))["output_shape"] == (4, 2)


def test_check_model__errors_name_the_problem_and_the_fix(tmp_path):
    dna = random_dna(2, 30, seed=2)
    wrong_targets = ModelSpec(factory=CNN, kwargs={"channels": 4, "outputs": 3}, targets=("a", "b"))
    with pytest.raises(ModelOutputError, match=r"returned 3 outputs .* declares 2 targets \['a', 'b'\]: fix targets= \(--targets\)"):
        check_model(wrong_targets, dna)
    misspelt = ModelSpec(factory=CNN, kwargs={"chanels": 4})
    with pytest.raises(ModelSpecError, match=r"factory 'interpretome.datasets:reference_cnn' has no parameter "
                                             r"'chanels' \(did you mean 'channels'\?\).*kwargs= \(--model-kwargs\)"):
        misspelt.check()
    with pytest.raises(ModelSpecError, match="has no parameter 'chanels'"):
        check_model(misspelt, dna)
    through = ModelSpec(factory="tests.test_integrity_model:forwarding", kwargs={"chanels": 4})
    with pytest.raises(ModelSpecError, match=r"'tests.test_integrity_model:forwarding' has no parameter 'chanels'"):
        check_model(through, dna)
    torch.save(reference_cnn(channels=8).state_dict(), tmp_path / "w8.pt")
    misfit = ModelSpec(factory=CNN, kwargs={"channels": 4}, weights=str(tmp_path / "w8.pt"))
    with pytest.raises(ModelSpecError, match=r"do not fit 'interpretome.datasets:reference_cnn'.*--weights"):
        check_model(misfit, dna)
    with pytest.raises(ModelSpecError, match=r"input_kind 'onehot' takes base codes \(N, L\) uint8, but the sample "
                                             r"has shape \(2, 3, 4, 5\)"):
        check_model(ModelSpec(factory=CNN), np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ModelSpecError, match="takes base codes 0..4 .* set input_kind='dense' \\(--input-kind dense\\)"):
        check_model(ModelSpec(factory=CNN), np.full((2, 30), 0.5))
    with pytest.raises(ModelSpecError, match=r"does not accept 7 input features .*--input-kind"):
        check_model(ModelSpec(factory="interpretome.pbmc:cell_classifier", kwargs={"n_features": 6, "n_classes": 2},
                              input_kind="dense", targets=("x", "y")), np.zeros((2, 7)))
    with pytest.raises(ModelOutputError, match="sample item 0: the model output for target 'b' is nan"):
        check_model(ModelSpec(factory="tests.test_integrity_model:nan_bias_cnn", targets=("a", "b")), dna)


# --- 3. non-finite outputs ---------------------------------------------------------------------------

@pytest.mark.graph
def test_nan_output__sweep_and_ism_name_the_sequence():
    ds = _sequences()
    sweep = perturbation_sweep(ds, _t_nan_spec(), windows=[3], stride=5, replicates=2, merge=False)
    with pytest.raises(ModelOutputError, match=r"sequence 'polyT' \(index 1\): the model output for target 'b' "
                                               r"is nan.*allow_nonfinite=True \(--allow-nonfinite\)"):
        sweep["sweep_delta_mean"].compute(scheduler="sync")
    with pytest.raises(ModelOutputError, match=r"sequence 'polyT' \(index 1\)"):
        sweep["sweep_reference"].compute(scheduler="threads")
    ism = saturation_mutagenesis(ds, _t_nan_spec(), start=10, end=20, merge=False)
    with pytest.raises(ModelOutputError, match=r"sequence 'polyT' \(index 1\): the model output for target 'b'"):
        ism["ism_delta"].compute(scheduler="sync")


@pytest.mark.graph
def test_nan_output__fast_path_edits_are_checked():
    spec = ModelSpec(factory="tests.test_integrity_model:nan_bias_cnn", targets=("a", "b"), batch_size=8)
    assert get_runtime(spec).locality  # the locality fast path applies
    rt = get_runtime(spec)
    ref = random_dna(1, 60, seed=3)[0]
    with pytest.raises(ModelOutputError, match=r"batch row 0: the model output for target 'b' is nan") as e:
        rt.predict_edits(ref, np.array([30, 31]), np.array([[0], [1]], np.uint8))
    again = pickle.loads(pickle.dumps(e.value))  # travels from dask workers intact
    assert type(again) is type(e.value) and str(again) == str(e.value) and again.target == "b"
    ds = _sequences().chunk({"sequence": 3})  # one block: its first sequence fails first
    res = saturation_mutagenesis(ds, spec, start=20, end=25, merge=False)
    with pytest.raises(ModelOutputError, match=r"sequence 's0' \(index 0\)"):
        res["ism_delta"].compute(scheduler="sync")


@pytest.mark.graph
def test_nan_output__tiles_and_attribution_name_the_sequence():
    genome = sequences_to_dataset({"chrA": decode_bases(random_dna(1, 120, seed=4)[0]), "chrT": "T" * 120})
    tiles = predict_tiles(genome, _t_nan_spec(), window=40, stride=20, merge=False)
    with pytest.raises(ModelOutputError, match=r"region 'chrT', window \[0, 40\) \(\+\): the model output for target 'b'"):
        tiles["track_prediction"].compute(scheduler="sync")
    attr = attribute(_sequences(), _t_nan_spec(), target="all", n_steps=4, merge=False)
    with pytest.raises(ModelOutputError, match=r"sequence 'polyT' \(index 1\): the model output for target 'b'"):
        attr["sequence_attribution"].compute(scheduler="sync")


def test_nan_output__shared_trunk_tiles_name_the_window():
    """Overlapping tiles through the shared trunk (engine.tile_trunk) check outputs as per-window forwards do."""
    from interpretome.engine.models import get_runtime
    from interpretome.engine.tile_trunk import trunk_plan

    spec = ModelSpec(factory="tests.test_integrity_model:nan_head_cnn", targets=("a", "b"), batch_size=16)
    assert trunk_plan(get_runtime(spec)) is not None  # the shared path is the one taken
    genome = sequences_to_dataset({"chrA": decode_bases(random_dna(1, 120, seed=4)[0])})
    tiles = predict_tiles(genome, spec, window=40, stride=10, merge=False)
    with pytest.raises(ModelOutputError, match=r"region 'chrA', window \[0, 40\) \(\+\): the model output for target 'b'"):
        tiles["track_prediction"].compute(scheduler="sync")


@pytest.mark.graph
def test_nan_output__dense_attribution_and_fastshap_name_the_sample():
    from interpretome.storage.anndata_io import features_to_dataset
    from interpretome.tasks.fastshap import fastshap

    x = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    x[9, 0] = 99.0
    ds = features_to_dataset(x, samples=[f"cell{i}" for i in range(12)], sample_chunk=5)
    spec = ModelSpec(factory="tests.test_integrity_model:big_nan_dense", input_kind="dense", targets=("x", "y"))
    for method in ("integrated_gradients", "gradient_shap"):
        res = attribute(ds, spec, method=method, target="x", n_steps=4, nsamples=4, background=3, merge=False)
        with pytest.raises(ModelOutputError, match=r"sample 'cell9' \(index 9\): the model output for target 'y' is nan"):
            res["attribution"].compute(scheduler="sync")
    res = fastshap(ds, spec, target="all", n_train=12, epochs=1, min_fidelity=None, merge=False)
    with pytest.raises(ModelOutputError, match=r"sample 'cell9' \(index 9\): the model output for target 'y'"):
        res["fastshap_attribution"].compute(scheduler="sync")


@pytest.mark.graph
def test_nan_output__allowed_when_the_spec_says_so():
    ds = _sequences()
    spec = _t_nan_spec(allow_nonfinite=True)
    assert spec.to_dict()["allow_nonfinite"] is True and spec.describe()["allow_nonfinite"] is True
    assert spec.token != _t_nan_spec().token
    res = perturbation_sweep(ds, spec, windows=[3], stride=5, merge=False).compute(scheduler="sync")
    ref = res["sweep_reference"].values
    assert np.isnan(ref[1, 1]) and np.isfinite(np.delete(ref.reshape(-1), 3)).all()
    assert np.isnan(res["sweep_delta_mean"].values[1, ..., 1]).all()
    assert np.isfinite(res["sweep_delta_mean"].values[0]).all()
    attr = attribute(ds, spec, target="all", n_steps=4, merge=False).compute(scheduler="sync")
    assert np.isnan(attr["sequence_attribution_output"].values[1, 1])


@pytest.mark.graph
def test_softmax_over_one_output_is_refused():
    with pytest.raises(ModelSpecError, match=r"activation='softmax' over a model with one output is always 1.*"
                                             r"--activation sigmoid"):
        ModelSpec(factory=CNN, targets=("promoter",), activation="softmax")
    undeclared = ModelSpec(factory=CNN, kwargs={"channels": 4}, activation="softmax")
    with pytest.raises(ModelOutputError, match=r"model returned 1 output per sample .*softmax"):
        Runtime(undeclared).predict(random_dna(1, 30))
    with pytest.raises(ModelOutputError, match="softmax"):
        attribute(_sequences(), undeclared)  # the graph-build probe applies the same check


# --- 4. clustering scores refuse non-finite rows -----------------------------------------------------

def test_clustering_scores__refuses_nan_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    x[[3, 7]] = np.nan
    ds = xr_items(x)
    msg = (r"item_vector has NaN or infinite values in 2 rows \(item indices \[3, 7\]\), items \['c3', 'c7'\]: "
           r"drop those items .* before scoring")
    with pytest.raises(ValueError, match=msg):
        clustering_scores(ds)  # numpy-backed: refused before any graph is built
    lazy = clustering_scores(ds.assign(item_vector=ds["item_vector"].chunk({"item": 16})), block=16)  # when computed
    with pytest.raises(ValueError, match=msg):
        lazy["score_value"].values
    with pytest.raises(ValueError, match="in 2 rows"):
        lazy["score_silhouette_label"].values
    fine = xr_items(np.nan_to_num(x))
    ok = clustering_scores(fine.assign(item_vector=fine["item_vector"].chunk({"item": 16})), block=16).compute()
    assert np.isfinite(ok["score_value"].values).all()


def xr_items(x):
    import xarray as xr

    return xr.Dataset({"item_vector": (("item", "feature"), x),
                       "item_label": (("item",), np.array(["u", "v"])[np.arange(len(x)) % 2])},
                      coords={"item": [f"c{i}" for i in range(len(x))]})


# --- 5. weights files that are not torch files --------------------------------------------------------

@pytest.mark.parametrize("content", [b"conv1.weight 0.1 0.2\n", bytes(range(7, 200))])
def test_weights__a_non_torch_file_is_not_told_to_trust_pickle(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    spec = ModelSpec(factory=CNN, weights=str(path))
    with pytest.raises(ModelSpecError, match=r"is not a torch state_dict file: it starts with .*zip archive "
                                             r"\(b'PK...'\).*pickles \(b'\\x80...'\)") as e:
        spec.build()
    assert "trust" not in str(e.value)


def test_weights__only_a_real_pickle_gets_the_trust_hint(tmp_path):
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"state_dict": Runtime}, fh)
    with pytest.raises(ModelSpecError, match=r"a torch pickle file.*weights_only=True.*trust_pickle=True "
                                             r"\(--trust-pickle\)"):
        ModelSpec(factory=CNN, weights=str(legacy)).build()
    archive = tmp_path / "archive.pt"
    torch.save({"model": Runtime}, archive)
    with pytest.raises(ModelSpecError, match=r"a torch zip file.*trust_pickle=True \(--trust-pickle\)"):
        ModelSpec(factory=CNN, weights=str(archive)).build()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(ModelSpecError, match="looks like a torch zip file but cannot be read") as e:
        ModelSpec(factory=CNN, weights=str(broken)).build()
    assert "trust" not in str(e.value)
    assert it.ModelSpec  # the public name is unchanged


def test_runtime__cuda_float32_is_ieee_not_tf32(monkeypatch):
    """torch lets cuDNN run float32 convolutions in TF32 by default; a built runtime switches that off."""
    conv = torch.backends.cudnn.conv
    monkeypatch.setattr(conv, "fp32_precision", "tf32")
    monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "tf32")
    monkeypatch.setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32")
    clear_runtimes()
    get_runtime(ModelSpec(factory=CNN, kwargs={"channels": 4}))
    assert conv.fp32_precision == "ieee"
    assert torch.backends.cudnn.rnn.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
