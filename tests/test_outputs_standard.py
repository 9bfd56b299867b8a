"""Self-describing, standard outputs: declared attrs on every stored variable, ``to_netcdf()`` of every group,
fixed-width strings, the ``interpretome_status`` mirror, and a shipped AnnData file that reads without warnings."""

from __future__ import annotations

import json
import warnings

import dask
import numpy as np
import pytest
import xarray as xr

from interpretome.storage import schema
from interpretome.storage.groups import (JSON_ATTRS, STATUS_ATTR, decoded_attr, group_info, list_groups,
                                         netcdf_attrs, verify_store)
from interpretome.storage.store import RunInterrupted, write_dataset


@pytest.fixture(scope="module")
def kinds_store(tmp_path_factory, client2):
    """A store holding many result kinds: sweeps, ISM, IG, attributions + summary, genome ISM, tiles + pyramid,
    annotations, embeddings, scores per fold, coefficients, CCC (the demo's steps, some of them smaller)."""
    import pytest as _pytest

    from interpretome.datasets import promoter_sequences
    from interpretome.jobs import demo
    from interpretome.jobs.coefficients import fit_profile_models, phenotypic_profiles, run_ccc, run_coefficients
    from interpretome.storage.schema import FEATURE, SAMPLE

    out = tmp_path_factory.mktemp("kinds")
    mp = _pytest.MonkeyPatch()
    mp.setattr(demo, "promoter_sequences", lambda n: promoter_sequences(4))
    mp.setattr(demo, "DEMO_STEPS", [demo.step_dna, demo.step_genome, demo.step_genome_profile, demo.step_attribution])
    try:
        ctx = demo.run_demo(out, client=client2, log=lambda m: None)
    finally:
        mp.undo()
    from interpretome.datasets import data_path
    from interpretome.jobs.embedding import load_input, run_embed, run_scores

    ds, inputs = load_input(data_path("pbmc68k_reduced.h5ad"), obsm="X_pca", label="bulk_labels", batch="phase",
                            chunk=256, log=lambda m: None)
    folds = {f"fold{k}": (ds.isel(item=slice(k, None, 2)), inputs) for k in range(2)}
    run_scores(folds, ctx.store, out / "scores", batch="item_batch", seed=0, block=256, umap=False, client=client2,
               log=lambda m: None)
    run_embed(ds, ctx.store, group="embedding_pbmc", method="pca", seed=0, inputs=inputs, client=client2,
              log=lambda m: None)
    kmers, _ = load_input(model="interpretome.datasets:kmer_model", kmer_bases=1, log=lambda m: None)
    run_embed(kmers, ctx.store, group="embedding_kmer", method="pca", n_components=3, seed=0, client=client2,
              log=lambda m: None)
    x, y = phenotypic_profiles(n_cells=120, n_cp=8, n_dp=6, seed=0)
    run_coefficients(fit_profile_models(x, y, seed=0, tol=1e-3), ctx.store, group="coefficients", n_perms=5,
                     client=client2, log=lambda m: None)
    matrix = xr.Dataset({"feature_value": ((FEATURE, SAMPLE), x.to_numpy().T)},
                        coords={FEATURE: np.asarray(x.columns, dtype=object)})
    run_ccc(matrix, ctx.store, group="ccc", form="square", feature_chunk=8, client=client2, log=lambda m: None)
    return ctx.store


KINDS = {"sweep", "sweep_mask", "ism", "promoter_ig", "attributions", "attributions_summary", "yeast_tata_ism",
         "yeast_chrI", "yeast_chrI_pyramid", "yeast_chrI_genes", "embedding_pbmc", "embedding_kmer", "scores",
         "scores_fold0", "coefficients", "ccc"}


def test_every_stored_variable_carries_its_declaration(kinds_store):
    groups = list_groups(kinds_store)
    assert KINDS <= set(groups), sorted(KINDS - set(groups))
    for g in groups:
        ds = xr.open_zarr(kinds_store, group=g)  # plain xarray
        for name, var in ds.variables.items():
            assert var.attrs.get("description") and var.attrs.get("long_name"), f"{g}/{name}: {var.attrs}"
            declared = schema.declared_attrs(name, var.dims)
            if name in ds.data_vars:  # every result variable is a registered one, described by its declaration
                assert declared, f"{g}/{name} is not declared in storage/schema.py"
            for key, value in declared.items():
                if key == "description" and name in ("position", "bin", "contig", "genome_position") \
                        or name.startswith(("bin_l", "genome_position_l")):
                    continue  # genome results state where their positions start (tasks.genome_perturb, tiles)
                assert var.attrs[key] == value, f"{g}/{name}.{key}: {var.attrs[key]!r} != {value!r}"
    ism = xr.open_zarr(kinds_store, group="ism")
    assert ism["position"].attrs["units"] == "bp" and ism["position"].attrs["convention"] == "0-based"
    genes = xr.open_zarr(kinds_store, group="yeast_chrI_genes")
    assert genes["gene_start"].attrs["convention"] == "0-based, half-open interval [start, end)"
    assert "'-' reverse strand" in genes["gene_strand"].attrs["convention"]
    attr = xr.open_zarr(kinds_store, group="attributions")
    assert attr["bulk_labels"].attrs["description"] == "bulk_labels: carried from the input (its own column, along sample)"


def test_to_netcdf_of_every_group_reopens_equal(kinds_store, tmp_path):
    engines = ["scipy"]
    try:
        import h5netcdf  # noqa: F401

        engines.append("h5netcdf")
    except ImportError:
        pass
    for g in list_groups(kinds_store):
        ds = xr.open_zarr(kinds_store, group=g)
        if g == "ccc":
            assert "ccc_k" in ds.attrs
        assert isinstance(ds.attrs["interpretome"], str) and json.loads(ds.attrs["interpretome"]) == \
            group_info(kinds_store, g)
        assert ds.attrs[STATUS_ATTR] == "complete" and ds.attrs["interpretome_task"] == group_info(kinds_store, g)["task"]
        for name, var in ds.variables.items():  # strings are stored one way: fixed-width unicode
            if var.dtype.kind in "OUST":
                assert var.dtype.kind == "U", f"{g}/{name} is stored as {var.dtype}"
        for engine in engines:
            f = tmp_path / f"{g}.{engine}.nc"
            with dask.config.set(scheduler="synchronous"):  # xarray's scipy writer refuses the distributed one
                ds.to_netcdf(f, engine=engine)
            with xr.open_dataset(f, engine=engine) as back:
                assert set(back.variables) == set(ds.variables), g
                for name in ds.variables:
                    a, b = ds[name].values, back[name].values
                    if a.dtype.kind == "f":
                        np.testing.assert_array_equal(a, b, err_msg=f"{g}/{name} ({engine})")
                    else:
                        assert (a == b).all() and a.shape == b.shape, f"{g}/{name} ({engine})"
                    assert back[name].attrs["description"] == ds[name].attrs["description"]
                assert json.loads(back.attrs["interpretome"]) == group_info(kinds_store, g)
    # attrs netCDF cannot hold come back through decoded_attr, from the store and from the netCDF file alike
    attr = xr.open_zarr(kinds_store, group="attributions")["attribution_predicted"]
    cats = decoded_attr(attr.attrs, "categories")
    assert isinstance(cats, list) and len(cats) == 10 and "CD14+ Monocyte" in cats
    track = xr.open_zarr(kinds_store, group="yeast_chrI")
    assert decoded_attr(track.attrs, "genome_contigs") == [["NC_001133.9", 230218]]


def test_netcdf_attrs__encodes_only_what_netcdf_cannot_hold(tmp_path):
    attrs = {"s": "x", "i": 3, "f": 1.5, "ints": [1, 2], "strs": ["a", "b"], "nested": [["c", 1]], "d": {"k": 1},
             "b": True, "none": None, "empty": [], "big": 2 ** 40}
    out = netcdf_attrs(attrs)
    assert {k: out[k] for k in ("s", "i", "f", "ints")} == {"s": "x", "i": 3, "f": 1.5, "ints": [1, 2]}
    assert set(out[JSON_ATTRS].split()) == {"strs", "nested", "d", "b", "none", "empty", "big"}
    for k in out[JSON_ATTRS].split():
        assert isinstance(out[k], str) and decoded_attr(out, k) == attrs[k]
    assert decoded_attr(attrs, "strs") == ["a", "b"]  # in-memory attrs are returned as they are
    assert decoded_attr(out, "absent", 7) == 7
    xr.Dataset({"v": ("x", [1.0])}, attrs=out).to_netcdf(tmp_path / "a.nc", engine="scipy")  # netCDF-3 holds them all
    with xr.open_dataset(tmp_path / "a.nc", engine="scipy") as back:
        assert decoded_attr(back.attrs, "d") == {"k": 1} and decoded_attr(back.attrs, "big") == 2 ** 40


def _lazy(n=6):
    import dask.array as da

    data = da.from_array(np.arange(n * 4, dtype=np.float32).reshape(n, 4), chunks=(2, 4))
    return xr.Dataset({"features": (("sample", "feature"), data)},
                      coords={"sample": np.array([f"s{i}" for i in range(n)], dtype=object),
                              "feature": np.array(["a", "bb", "ccc", "d"], dtype=np.dtypes.StringDType())})


def test_status_attr__running_interrupted_complete_damaged(tmp_path, monkeypatch):
    from interpretome.storage import chunk_io, store as store_mod

    path = tmp_path / "s.zarr"
    seen = []

    def interrupted(tasks, client, label, show):
        seen.append(xr.open_zarr(path, group="g").attrs[STATUS_ATTR])  # while the chunks are written
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "run_writes", interrupted)
    with pytest.raises(RunInterrupted):
        write_dataset(_lazy(), path, "g", task="t", params={"a": 1})
    assert seen == ["running"]
    plain = xr.open_zarr(path, group="g")  # what a user without interpretome sees
    assert plain.attrs[STATUS_ATTR] == "interrupted" and json.loads(plain.attrs["interpretome"])["complete"] is False
    assert plain["sample"].dtype == "<U2" and plain["feature"].dtype == "<U3"  # object / StringDType -> fixed width
    assert verify_store(path)["g"][0] == "incomplete"
    assert xr.open_zarr(path, group="g").attrs[STATUS_ATTR] == "interrupted"

    monkeypatch.setattr(store_mod, "run_writes", chunk_io.run_writes)
    write_dataset(_lazy(), path, "g", task="t", params={"a": 1})  # resumes
    assert xr.open_zarr(path, group="g").attrs[STATUS_ATTR] == "complete"
    assert verify_store(path)["g"][0] == "complete"

    (path / "g" / "features" / "1.0").write_bytes(b"garbage")  # damage: verify says so in the plain attr too
    assert verify_store(path)["g"][0] == "damaged"
    assert xr.open_zarr(path, group="g").attrs[STATUS_ATTR] == "damaged"
    write_dataset(_lazy(), path, "g", task="t", params={"a": 1})  # repairs
    assert xr.open_zarr(path, group="g").attrs[STATUS_ATTR] == "complete"
    np.testing.assert_array_equal(xr.open_zarr(path, group="g")["features"].values, _lazy().features.values)


def test_status_attr__a_failed_write_is_not_complete(tmp_path, monkeypatch):
    from interpretome.storage import store as store_mod

    def boom(*a, **k):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(store_mod, "run_writes", boom)
    with pytest.raises(RuntimeError, match="worker lost"):
        write_dataset(_lazy(), tmp_path / "s.zarr", "g", task="t", params={})
    assert xr.open_zarr(tmp_path / "s.zarr", group="g").attrs[STATUS_ATTR] == "interrupted"


def test_group_info__reads_stores_with_the_old_nested_record(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    write_dataset(_lazy(), path, "g", task="t", params={"a": 1})
    info = group_info(path, "g")
    zarr.open_group(str(path / "g"), mode="r+", zarr_format=2).attrs["interpretome"] = info  # interpretome 0.1
    assert group_info(path, "g") == info and info["task"] == "t" and info["complete"] is True


def test_shipped_h5ad_reads_without_warnings():
    import anndata

    from interpretome.pbmc import pbmc_path
    from interpretome.storage.anndata_io import read_h5ad
    from interpretome.storage.embedding_io import read_anndata

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = read_h5ad(pbmc_path(), sample_chunk=350)
        emb = read_anndata(pbmc_path(), obsm="X_pca", label="bulk_labels")
        full = anndata.read_h5ad(pbmc_path())
    assert ds["features"].shape == (700, 765) and emb["item_vector"].shape == (700, 50)
    np.testing.assert_array_equal(ds["features"][:5].values, np.asarray(full.X[:5], np.float32))
    assert sorted(set(ds["bulk_labels"].values)) == sorted(full.obs["bulk_labels"].cat.categories)


def test_store_root__creation_record_and_run_history_write_netcdf(tmp_path):
    """The root's own attrs (creation record, run history) are JSON text, so the root opens in plain
    xarray and writes to netCDF like every group; ``decoded_attr`` reads them back."""
    from interpretome.jobs.history import RUNS_ATTR, recording_run
    from interpretome.storage.groups import ensure_root
    from interpretome.version import __version__

    store = tmp_path / "s.zarr"
    ensure_root(store)
    with recording_run(store, {"job": "interpretome sweep", "command": "sweep"}):
        pass
    root = xr.open_zarr(store, consolidated=False)
    assert isinstance(root.attrs[RUNS_ATTR], str) and isinstance(root.attrs["interpretome"], str)
    (run,) = decoded_attr(root.attrs, RUNS_ATTR)
    assert run["job"] == "interpretome sweep" and run["status"] == "done"
    assert decoded_attr(root.attrs, "interpretome")["version"] == __version__
    root.to_netcdf(tmp_path / "root.nc", engine="scipy")
    with xr.open_dataset(tmp_path / "root.nc", engine="scipy") as back:
        assert decoded_attr(back.attrs, RUNS_ATTR) == decoded_attr(root.attrs, RUNS_ATTR)
