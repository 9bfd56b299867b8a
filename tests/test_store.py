"""The zarr store: plain xr.open_zarr, provenance, crash + resume identical, refusal of changed params."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import xarray as xr

import interpretome as it
from interpretome.datasets import promoter_sequences
from interpretome.jobs.dna import run_ism, run_sweep
from interpretome.storage import store as store_mod
from interpretome.storage.readers import write_fasta
from interpretome.storage.store import StoreError, group_info, open_group, store_summary, write_dataset


def _spec():
    return it.ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"seed": 2, "channels": 8},
                        targets=("y",), batch_size=32)


@pytest.fixture
def fasta(tmp_path):
    return write_fasta(tmp_path / "p.fa.gz", dict(list(promoter_sequences(6).items())))


def _values(path, group):
    ds = xr.open_zarr(str(path), group=group)
    return {v: ds[v].values for v in ds.data_vars}


def test_write_dataset__plain_open_zarr_and_provenance(fasta, store):
    spec = _spec()
    rep = run_sweep(fasta, spec, store, windows=[3], mode="mask", sequence_chunk=2, position_chunk=50, log=lambda m: None)
    assert rep.computed_chunks == 3 + 2 * 3 * 4 and rep.skipped_chunks == 0  # reference 3 + (3 seq x 4 pos) x 2 vars
    ds = xr.open_zarr(str(store), group="sweep")  # plain xarray, no interpretome needed
    assert ds["sweep_delta_mean"].dims == ("sequence", "window", "position", "target")
    assert ds["sweep_delta_mean"].encoding["chunks"] == (2, 1, 50, 1)
    raw = json.load(open(store / "sweep" / ".zattrs"))
    assert isinstance(raw["interpretome"], str)  # JSON text: netCDF holds it (to_netcdf works)
    info = json.loads(raw["interpretome"])
    assert info == group_info(store, "sweep")
    assert raw["interpretome_status"] == "complete" and raw["interpretome_task"] == "perturbation_sweep"
    assert info["complete"] is True and info["task"] == "perturbation_sweep"
    assert info["params"]["windows"] == [3] and info["params"]["mode"] == "mask"
    prov = info["provenance"]
    assert prov["model"]["weights_sha256"] == "-" and prov["model"]["source"] == "interpretome.datasets:reference_cnn"
    assert prov["versions"]["dask"] and prov["versions"]["zarr"] and prov["versions"]["torch"]
    assert list(prov["inputs"].values())[0].startswith("sha256:")
    direct = it.perturbation_sweep(it.read_fasta(fasta), spec, windows=[3], mode="mask", merge=False)
    # other chunking and batch composition: equal to float32 rounding (bit-identity needs the same chunks)
    np.testing.assert_allclose(ds["sweep_delta_mean"].values, direct["sweep_delta_mean"].values, atol=1e-6)
    text = store_summary(store)
    assert "[sweep] task=perturbation_sweep complete" in text and "sweep_delta_mean (sequence, window, position, target)" in text


def test_write_dataset__crash_then_rerun_resumes_identically(fasta, tmp_path, monkeypatch):
    spec = _spec()
    clean = tmp_path / "clean.zarr"
    run_ism(fasta, spec, clean, sequence_chunk=2, position_chunk=40, log=lambda m: None)

    crashed = tmp_path / "crashed.zarr"
    real = store_mod._write_chunk
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt("simulated crash")
        return real(*args)

    monkeypatch.setattr(store_mod, "_write_chunk", dying)
    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="sync"):  # sync: exactly 7 chunks land
        run_ism(fasta, spec, crashed, sequence_chunk=2, position_chunk=40, log=lambda m: None)
    monkeypatch.setattr(store_mod, "_write_chunk", real)
    assert group_info(crashed, "ism")["complete"] is False  # never looks complete
    with pytest.raises(StoreError, match="is incomplete .* rerun the same job to resume"):
        open_group(crashed, "ism")
    rep = run_ism(fasta, spec, crashed, sequence_chunk=2, position_chunk=40, log=lambda m: None)
    total = 3 * 5 + 3  # ism_delta: 3 x 5 chunks; ism_reference: 3 chunks
    assert rep.skipped_chunks == 7 and rep.computed_chunks == total - 7
    a, b = _values(clean, "ism"), _values(crashed, "ism")
    for v in a:
        np.testing.assert_array_equal(a[v], b[v])
    again = run_ism(fasta, spec, crashed, sequence_chunk=2, position_chunk=40, log=lambda m: None)
    assert again.computed_chunks == 0 and again.skipped_chunks == total


def test_write_dataset__changed_parameters_refuse_unless_overwrite(fasta, store):
    spec = _spec()
    run_sweep(fasta, spec, store, windows=[3], mode="mask", log=lambda m: None)
    with pytest.raises(StoreError, match=r"other parameters \(windows: \[3\] -> \[5\]\).*--overwrite"):
        run_sweep(fasta, spec, store, windows=[5], mode="mask", log=lambda m: None)
    other = spec.with_options(kwargs={"seed": 3, "channels": 8})
    with pytest.raises(StoreError, match="other parameters"):
        run_sweep(fasta, other, store, windows=[3], mode="mask", log=lambda m: None)
    rep = run_sweep(fasta, spec, store, windows=[5], mode="mask", overwrite=True, log=lambda m: None)
    assert rep.skipped_chunks == 0
    assert xr.open_zarr(str(store), group="sweep")["window"].values.tolist() == [5]


def test_write_dataset__groups_coexist_and_numpy_variables(store):
    ds = xr.Dataset({"sequence_length": ("sequence", np.array([3, 4]))}, coords={"sequence": ["a", "b"]})
    rep = write_dataset(ds, store, "meta", task="t", params={})
    assert rep.computed_chunks == 0
    ds2 = it.sequences_to_dataset(["ACGT", "AC"], sequence_chunk=1)
    write_dataset(ds2, store, "seqs", task="t2", params={"x": 1})
    assert store_mod.list_groups(store) == ["meta", "seqs"]
    np.testing.assert_array_equal(xr.open_zarr(str(store), group="seqs")["sequence_code"].values,
                                  [[0, 1, 2, 3], [0, 1, 4, 4]])


def test_check_writable__errors(tmp_path, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(StoreError, match="exists and is not a directory"):
        store_mod.check_writable(f)

    class Usage:
        free = 1000

    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(StoreError, match=r"has 0.0 MB free but the results need about 2.0 MB"):
        store_mod.check_writable(tmp_path / "new.zarr", needed_bytes=2_000_000)


def test_open_group__missing_group(store):
    write_dataset(xr.Dataset({"a": ("x", np.arange(3))}), store, "g", task="t", params={})
    with pytest.raises(StoreError, match=r"has no group 'nope'; it has \['g'\]"):
        open_group(store, "nope")


def test_store_summary__not_a_store(tmp_path):
    with pytest.raises(StoreError, match="is not an interpretome store"):
        store_summary(tmp_path)
