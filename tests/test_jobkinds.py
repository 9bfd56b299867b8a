"""The job kinds of the other families: each adapter calls that family's functions as their real
signatures allow (autospec mocks), and their steps plan from a job file without computing."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest

from interpretome.datasets import demo_model_spec
from interpretome.jobs import kinds
from interpretome.jobs.runner import JOB_KINDS, format_plan, load_job, plan_job

from tests.jobfiles import MODEL_TABLE


def _needs(kind: str):
    if kind not in JOB_KINDS:
        pytest.skip(f"the {kind!r} family is not installed in this tree")


def test_kinds__tiles_genome_sweep_genome_ism_call_their_runners():
    _needs("tiles")
    spec = demo_model_spec()
    with mock.patch("interpretome.jobs.genome.run_tiles", autospec=True) as run:
        kinds.run_tiles_step(fasta="g.fa", model=spec, store="s.zarr", group="tracks", window=200, stride=50,
                             regions=["chrI:1-1000"], strand="both", annotation="a.gtf", pyramid=False)
    run.assert_called_once()
    assert run.call_args.args == ("g.fa", spec, "s.zarr")
    kw = run.call_args.kwargs
    assert kw["window"] == 200 and kw["regions"] == ["chrI:1-1000"] and kw["strand"] == "both" and kw["group"] == "tracks"
    with mock.patch("interpretome.jobs.genome.run_genome_sweep", autospec=True) as run:
        kinds.run_genome_sweep_step(fasta="g.fa", model=spec, store="s.zarr", group="gs", input_length=200,
                                    windows=[5], replicates=2)
    assert run.call_args.kwargs["windows"] == [5] and run.call_args.kwargs["regions"] is None
    with mock.patch("interpretome.jobs.genome.run_genome_ism", autospec=True) as run:
        kinds.run_genome_ism_step(fasta="g.fa", model=spec, store="s.zarr", group="gi", input_length=200,
                                  regions=["chrI:101-200"], bin_size=1, crop=16, reductions=["delta_score"],
                                  delta_distance=20, strand="both", pad="N")
    kw = run.call_args.kwargs
    assert kw["input_length"] == 200 and kw["bin_size"] == 1 and kw["reductions"] == ["delta_score"]
    assert (kw["delta_distance"], kw["strand"], kw["pad"]) == (20, "both", "N")
    params = {p.name for p in JOB_KINDS["genome_ism"].params} & {p.name for p in JOB_KINDS["genome_sweep"].params}
    assert {"bin_size", "crop", "crop_right", "reductions", "delta_distance", "strand", "pad"} <= params
    assert "pad" in {p.name for p in JOB_KINDS["tiles"].params}


def test_kinds__attribute_calls_run_attribute(tmp_path):
    _needs("attribute")
    spec = demo_model_spec()
    base = tmp_path / "base.npy"
    np.save(base, np.zeros((4, 10), np.float32))
    with mock.patch("interpretome.jobs.attribution.run_attribute", autospec=True) as run:
        kinds.run_attribute_step(input="x.h5ad", model=spec, store="s.zarr", group="attributions", target="all",
                                 baseline=str(base), by="bulk_labels", layer_in_file="counts")
    kw = run.call_args.kwargs
    assert run.call_args.args == ("x.h5ad", spec, "s.zarr")
    assert kw["obs_layer"] == "counts" and kw["by"] == "bulk_labels" and kw["fastshap_options"] is None
    assert kw["baseline"] == str(base)  # run_attribute loads it, so its digest is fingerprinted
    with mock.patch("interpretome.jobs.attribution.run_attribute", autospec=True) as run:
        kinds.run_attribute_step(input="x.h5ad", model=spec, store="s.zarr", group="a", method="fastshap",
                                 fastshap_train=50, fastshap_epochs=2)
    assert run.call_args.kwargs["fastshap_options"] == {"n_train": 50, "epochs": 2}
    with mock.patch("interpretome.jobs.attribution.run_attribute", autospec=True), \
            mock.patch("interpretome.storage.store.open_group", autospec=True, return_value="summary") as opened, \
            mock.patch("interpretome.storage.attribution_export.export_attributions", autospec=True) as export:
        kinds.run_attribute_step(input="x.h5ad", model=spec, store="s.zarr", group="attr", export="t.tsv",
                                 log=lambda msg: None)
    assert opened.call_args.args == ("s.zarr", "attr_summary") and export.call_args.args == ("summary", "t.tsv")
    assert not JOB_KINDS["attribute"].is_lazy({"method": "fastshap"}) and JOB_KINDS["attribute"].is_lazy({"method": "ig"})


def test_kinds__embed_and_scores_call_their_runners(tmp_path):
    _needs("embed")
    ds = object()
    with mock.patch("interpretome.jobs.embedding.load_input", autospec=True, return_value=(ds, ["x.h5ad"])) as load, \
            mock.patch("interpretome.jobs.embedding.run_embed", autospec=True) as run:
        kinds.run_embed_step(store="s.zarr", group="embedding", input="x.h5ad", label="bulk_labels", neighbors=10,
                             reducer={"min_dist": 0.3}, method="umap")
    assert load.call_args.args == ("x.h5ad",) and load.call_args.kwargs["label"] == "bulk_labels"
    assert run.call_args.args == (ds, "s.zarr") and run.call_args.kwargs["params"] == {"min_dist": 0.3, "n_neighbors": 10}
    # a group of the job's own store
    with mock.patch("interpretome.jobs.embedding.load_input", autospec=True, return_value=(ds, [])) as load, \
            mock.patch("interpretome.jobs.embedding.run_embed", autospec=True):
        kinds.run_embed_step(store="s.zarr", group="emb", group_in="attributions", variable="attribution")
    assert load.call_args.args == ("s.zarr",) and load.call_args.kwargs["group"] == "attributions"
    with pytest.raises(ValueError, match="an embed step needs input = 'file', group_in"):
        kinds.run_embed_step(store="s.zarr", group="emb")
    summary = pd.DataFrame({"score": ["asw"], "mean": [0.5]})
    with mock.patch("interpretome.jobs.embedding.load_input", autospec=True, return_value=(ds, [])) as load, \
            mock.patch("interpretome.jobs.embedding.run_scores", autospec=True,
                       return_value=(summary, summary, {}, [])) as run:
        kinds.run_scores_step(store=str(tmp_path / "s.zarr"), group="scores", inputs=["a.h5ad", "b.h5ad"],
                              label="bulk_labels", batch="phase", umap=False)
    folds = run.call_args.args[0]
    assert list(folds) == ["a", "b"] and run.call_args.args[2] == str(tmp_path / "s") + "_scores"
    assert run.call_args.kwargs["batch"] == "item_batch" and run.call_args.kwargs["umap"] is False
    with pytest.raises(ValueError, match="names has 1 names for 2 inputs"):
        kinds.run_scores_step(store="s.zarr", group="scores", inputs=["a.h5ad", "b.h5ad"], names=["x"])


def test_kinds__coefficients_and_ccc_call_their_runners():
    _needs("coefficients")
    with mock.patch("interpretome.storage.coef_io.read_coefficients", autospec=True, return_value="part") as read, \
            mock.patch("interpretome.storage.coef_io.combine_coefficients", autospec=True, return_value="coefs"), \
            mock.patch("interpretome.jobs.coefficients.run_coefficients", autospec=True) as run:
        kinds.run_coefficients_step(store="s.zarr", group="coefficients",
                                    inputs=["multiclass:final:CP=/d/cp.csv", "ovr:final:CP:Mitosis=/d/m.csv"])
    assert read.call_args_list[1].args == ("/d/m.csv",)
    assert read.call_args_list[1].kwargs["positive_class"] == "Mitosis"
    assert run.call_args.args == ("coefs", "s.zarr") and run.call_args.kwargs["inputs"] == ["/d/cp.csv", "/d/m.csv"]
    assert run.call_args.kwargs["tsv"] == "s_correlations.tsv"
    with mock.patch("interpretome.jobs.coefficients.read_matrix", autospec=True, return_value="m") as read, \
            mock.patch("interpretome.jobs.coefficients.run_ccc", autospec=True) as run:
        kinds.run_ccc_step(store="s.zarr", group="ccc", matrix="x.npy", transpose=True, form="condensed")
    assert read.call_args.kwargs == {"transpose": True, "var": None}
    assert run.call_args.args == ("m", "s.zarr") and run.call_args.kwargs["form"] == "condensed"


def test_kinds__job_file_paths_and_plans(tmp_path, no_compute):
    _needs("ccc")
    _needs("coefficients")
    x = np.random.default_rng(0).normal(size=(12, 30))
    np.save(tmp_path / "m.npy", x)
    rs = np.random.default_rng(1)
    for name in ("cp", "ovr"):
        rows = [f"{c},f{j},{rs.normal():.4f}" for c in "ABC" for j in range(6)]
        (tmp_path / f"{name}.csv").write_text("class,feature,coefficient\n" + "\n".join(rows) + "\n")
    steps = ('[[step]]\nkind = "ccc"\nmatrix = "m.npy"\nfeature_chunk = 4\n\n'
             '[[step]]\nkind = "coefficients"\ninputs = ["multiclass:final:CP=cp.csv", "ovr:final:CP=ovr.csv"]\n'
             'tsv = "tables/corr.tsv"\n')
    path = tmp_path / "job.toml"
    path.write_text(f'store = "out.zarr"\n{MODEL_TABLE}\n{steps}')
    job = load_job(path)
    ccc, coef = job.steps
    assert ccc.params["matrix"] == str(tmp_path / "m.npy")
    assert coef.params["inputs"] == [f"multiclass:final:CP={tmp_path / 'cp.csv'}", f"ovr:final:CP={tmp_path / 'ovr.csv'}"]
    assert coef.params["tsv"] == str(tmp_path / "tables" / "corr.tsv")
    plans = plan_job(job)
    text = format_plan(job, plans)
    # 12 features in tiles of 4: the 6 upper (and diagonal) tiles of a 3 x 3 grid, or all 9
    assert plans[0].chunks >= 6 and "group 'ccc'" in text, text
    assert plans[1].writes[0].group == "coefficients" and plans[1].writes[0].nbytes > 0, text
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "tables" / "corr.tsv").exists()
    path.write_text(f'store = "out.zarr"\n{steps.replace("cp.csv", "nope.csv")}')
    with pytest.raises(ValueError, match=r"job.toml:\d+: key 'inputs' in \[\[step\]\] #2 \(kind 'coefficients'\): "
                                         r"file 'nope.csv' does not exist"):
        load_job(path)
