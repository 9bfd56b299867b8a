"""FASTA input, ModelSpec resolution and the output-head checks, counter-based RNG, cluster options."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

import interpretome as it
from interpretome.engine import rng
from interpretome.engine.cluster import ClusterError, connect
from interpretome.engine.models import ModelOutputError, ModelSpecError, Runtime, local_split
from interpretome.errors import InputError
from interpretome.storage.readers import read_fasta, write_fasta


def test_read_fasta__gzip_many_records_lowercase_n_and_padding(tmp_path):
    seqs = {"chr_a": "ACGTacgtNN", "b": "ggcc", "c": "A" * 130}
    plain = write_fasta(tmp_path / "x.fa", seqs, width=7)
    gz = tmp_path / "x.fa.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, gz):
        ds = read_fasta(path, sequence_chunk=2, position_chunk=50)
        assert list(ds["sequence"].values) == ["chr_a", "b", "c"]
        assert ds["sequence_length"].values.tolist() == [10, 4, 130]
        assert ds["sequence_code"].chunks == ((2, 1), (50, 50, 30))
        codes = ds["sequence_code"].values
        assert codes[0, :10].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 4]
        assert codes[1, :4].tolist() == [2, 2, 1, 1] and (codes[1, 4:] == 4).all()
        assert (codes[2] == 0).all()


def test_read_fasta__bad_character_names_record_and_position(tmp_path):
    path = write_fasta(tmp_path / "bad.fa", {"ok": "ACGT", "chr2": "ACGTAC" * 20 + "ACRT"})
    with pytest.raises(InputError, match=r"record 'chr2' has the character 'R' at position 123 \(1-based\)"):
        read_fasta(path)


def test_read_fasta__missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="does not exist: check the path"):
        read_fasta(tmp_path / "nope.fa")
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(InputError, match="holds no records|cannot be indexed"):
        read_fasta(tmp_path / "empty.fa")
    (tmp_path / "broken.fa.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="is not readable gzip"):
        read_fasta(tmp_path / "broken.fa.gz")


def test_sequences_to_dataset__bad_input():
    with pytest.raises(InputError, match="no sequences given"):
        it.sequences_to_dataset([])
    with pytest.raises(InputError, match="2 names for 1 sequences"):
        it.sequences_to_dataset(["ACGT"], names=["a", "b"])
    with pytest.raises(InputError, match="names must be unique"):
        it.sequences_to_dataset(["A", "C"], names=["a", "a"])


# --- ModelSpec --------------------------------------------------------------------------------------

def test_model_spec__state_dict_file_and_torchscript(tmp_path):
    from interpretome.datasets import reference_cnn

    model = reference_cnn(seed=5, channels=4)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    spec = it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 4}, weights=str(tmp_path / "w.pt"))
    x = torch.rand(2, 4, 50)
    with torch.no_grad():
        np.testing.assert_allclose(spec.build()(x).numpy(), model(x).numpy(), atol=1e-6)
    assert len(spec.weights_sha256) == 64 and spec.describe()["weights_sha256"] == spec.weights_sha256
    ts = tmp_path / "m.ts"
    torch.jit.script(model).save(str(ts))
    spec2 = it.load_spec(str(ts))
    with torch.no_grad():
        np.testing.assert_allclose(spec2.build()(x).numpy(), model(x).numpy(), atol=1e-6)
    assert spec.token != spec2.token


def test_model_spec__refuses_pickles_without_opt_in(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Runtime}, fh)  # an arbitrary class: not a plain state_dict
    spec = it.ModelSpec(factory="interpretome.datasets:reference_cnn", weights=str(path))
    with pytest.raises(ModelSpecError, match="weights_only=True.*trust_pickle=True"):
        spec.build()


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of factory="),
    (dict(factory="nomodule_xyz:f"), "cannot import module 'nomodule_xyz'"),
    (dict(factory="interpretome.datasets:nothing"), "has no attribute 'nothing'"),
    (dict(factory="interpretome.datasets"), "must look like 'package.module:function'"),
    (dict(factory="interpretome.datasets:reference_cnn", input_kind="rna"), "input_kind 'rna' is not one of"),
    (dict(factory="interpretome.datasets:reference_cnn", activation="relu"), "activation 'relu' is not one of"),
    (dict(factory="interpretome.datasets:reference_cnn", weights="/no/such.pt"), "does not exist"),
    (dict(factory="interpretome.datasets:reference_cnn", select=("b",)), "selected by name but the declared targets"),
    (dict(factory="interpretome.datasets:reference_cnn", batch_size=0), "batch_size must be >= 1"),
])
def test_model_spec__bad_input(kwargs, match):
    with pytest.raises(ModelSpecError, match=match):
        it.ModelSpec(**kwargs).check()


def test_runtime__output_disagreeing_with_targets_fails_on_first_batch():
    seq = it.sequences_to_dataset(["ACGT" * 10])
    spec = it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 4, "outputs": 3},
                        targets=("a", "b"))
    res = it.perturbation_sweep(seq, spec, windows=[2], merge=False)  # building the graph is fine
    with pytest.raises(ModelOutputError, match=r"returned 3 outputs .* declares 2 targets \['a', 'b'\]"):
        res["sweep_delta_mean"].compute(scheduler="sync")
    undeclared = it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 4, "outputs": 3})
    with pytest.raises(ModelOutputError, match="declares no targets, which means one output"):
        Runtime(undeclared).predict(np.zeros((1, 20), np.uint8))


def test_runtime__head_select_and_softmax():
    spec = it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 4, "outputs": 3},
                        targets=("a", "b", "c"), select=("c", 0), activation="softmax")
    assert spec.target_names == ["c", "a"]
    codes = np.random.default_rng(0).integers(0, 5, (3, 40)).astype(np.uint8)
    got = Runtime(spec).predict(codes)
    with torch.no_grad():
        raw = spec.build()(torch.from_numpy(np.eye(5, 4, dtype=np.float32)[codes].transpose(0, 2, 1).copy()))
    np.testing.assert_allclose(got, torch.softmax(raw, 1).numpy()[:, [2, 0]], atol=1e-6)


def test_local_split__detects_convolutional_prefix():
    import torch.nn as nn

    from interpretome.datasets import promoter_cnn, reference_cnn

    assert local_split(reference_cnn(channels=4))[2:] == (11, 11)
    assert local_split(promoter_cnn(channels=4))[2:] == (23, 23)  # 7 + 16 each side
    assert local_split(nn.Sequential(nn.Conv1d(4, 4, 3, stride=2), nn.Flatten())) is None  # strided: not local
    assert local_split(nn.Sequential(nn.Conv1d(4, 4, 4, padding="same"), nn.Flatten()))[2:] == (1, 2)


# --- RNG -------------------------------------------------------------------------------------------

def test_rng__counter_based_and_uniform():
    a = rng.random_bases(1, np.arange(4)[:, None], 5, np.arange(100)[None, :], 0, 0)
    b = rng.random_bases(1, np.arange(4)[:, None], 5, np.arange(40, 60)[None, :], 0, 0)
    np.testing.assert_array_equal(a[:, 40:60], b)
    assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 1, 2, 3}
    u = rng.uniform(3, np.arange(200_000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    perm = rng.shuffle_order(0, 1, 7, np.arange(50)[:, None], 0, np.arange(7)[None, :])
    assert (np.sort(perm, axis=1) == np.arange(7)).all()
    assert len({tuple(p) for p in perm}) > 40  # permutations vary with the key


# --- cluster ---------------------------------------------------------------------------------------

def test_connect__bad_choices(tmp_path, monkeypatch):
    with pytest.raises(ClusterError, match="--scheduler and --gpus cannot be combined"):
        connect(scheduler="tcp://127.0.0.1:1", gpus=True, log=None)
    with pytest.raises(ClusterError, match="--workers must be at least 1"):
        connect(0, log=None)
    with pytest.raises(ClusterError, match="scheduler file .* does not exist"):
        connect(scheduler_file=str(tmp_path / "sched.json"), log=None)
    import builtins

    real_import = builtins.__import__

    def no_dask_cuda(name, *a, **k):
        if name.startswith("dask_cuda"):
            raise ImportError("No module named 'dask_cuda'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_dask_cuda)
    with pytest.raises(ClusterError, match=r"pip install 'interpretome\[gpu\]'"):
        connect(gpus=True, log=None)


def test_connect__gpus_without_gpu(monkeypatch):
    import sys
    import types

    from interpretome.engine import cluster

    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = lambda **kw: (_ for _ in ()).throw(AssertionError("must not start"))
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    with pytest.raises(ClusterError, match="no CUDA GPU is visible"):
        connect(gpus=True, log=None)


def test_connect__gpus_cluster_gets_single_threaded_workers_without_the_profiler(monkeypatch):
    """dask-cuda's LocalCUDACluster passes its keyword arguments to distributed's LocalCluster (a stand-in does that here)."""
    import sys
    import types

    from distributed import LocalCluster

    from interpretome.engine import cluster

    seen = {}

    def local_cuda_cluster(**kw):
        seen.update(kw)
        return LocalCluster(n_workers=1, processes=True, **kw)

    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = local_cuda_cluster
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 1)
    with connect(gpus=True, log=None) as client:
        assert seen["threads_per_worker"] == 1 and seen["ip"] == "127.0.0.1"
        assert set(client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled")).values()) == {False}
        assert set(client.run(lambda: __import__("torch").get_num_threads()).values()) == {1}
    with connect(gpus=True, threads_per_worker=2, log=None) as client:  # connect's threads reach dask-cuda
        assert seen["threads_per_worker"] == 2
        assert [w["nthreads"] for w in client.scheduler_info()["workers"].values()] == [2]


def test_connect__local_cluster_workers_are_single_threaded(client2):
    info = client2.scheduler_info()["workers"]
    assert len(info) == 2 and all(w["nthreads"] == 1 for w in info.values())
    assert all(a.startswith("tcp://127.0.0.1") for a in info)
    threads = client2.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}


def _profile_samples(dask_worker):
    return dask_worker.profile_recent["count"]


def test_connect__local_workers_run_without_the_task_profiler_unless_the_environment_asks(client2, monkeypatch):
    """distributed samples each task thread's stack every 10 ms by default (1-8 % of a model loop's CPU)."""
    import time

    from interpretome.engine.cluster import PROFILE_ENV, connect

    client2.submit(time.sleep, 0.5, pure=False).result()
    assert set(client2.run(_profile_samples).values()) == {0}
    assert set(client2.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled")).values()) == {False}
    # the rest of the config reaches the workers unchanged
    want = __import__("dask").config.get("distributed.comm.timeouts.connect")
    assert set(client2.run(lambda: __import__("dask").config.get("distributed.comm.timeouts.connect")).values()) == {want}
    monkeypatch.setenv(PROFILE_ENV, "True")
    with connect(1, log=None) as client:
        client.submit(time.sleep, 0.5, pure=False).result()
        assert min(client.run(_profile_samples).values()) > 0
