"""The job kinds: every family's kinds are declared (a broken declaration fails, nothing is
skipped), each declaration calls that family's functions as their real signatures allow
(autospec mocks), its subcommand is generated from it, and its steps plan from a job file
without computing."""

from __future__ import annotations

import importlib
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from interpretome.cli import build_parser
from interpretome.datasets import demo_model_spec
from interpretome.jobs import registry
from interpretome.jobs.commands import params_from_args
from interpretome.jobs.declare import JobKind, Param
from interpretome.jobs.runner import format_plan, load_job, plan_job

from tests.jobfiles import MODEL_TABLE

JOB_KINDS = registry.job_kinds()
EXPECTED = {"sweep", "ism", "tiles", "genome_sweep", "genome_ism", "attribute", "embed", "scores", "coefficients",
            "ccc", "genomap"}


def test_kinds__every_family_declares_its_kinds_and_renderers():
    assert set(JOB_KINDS) == EXPECTED  # a kind missing from its family's KINDS fails here
    for module in registry.FAMILIES:
        mod = importlib.import_module(module)
        assert mod.KINDS and all(isinstance(k, JobKind) for k in mod.KINDS), module
        assert mod.RENDERERS and all(callable(r) for r in mod.RENDERERS.values()), module
    assert {"perturbation_sweep", "saturation_mutagenesis", "tiled_prediction", "genome_sweep", "genome_ism",
            "attribute", "fastshap", "summarize_attributions", "embedding", "clustering_score_folds",
            "coefficient_comparison", "all_pairs_ccc", "genomap"} <= set(registry.renderers())


def test_kinds__a_name_declared_twice_is_an_error(monkeypatch):
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, "interpretome.jobs.dna"))
    registry.job_kinds.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="KINDS 'sweep' is declared twice"):
            registry.job_kinds()
    finally:
        monkeypatch.undo()
        registry.job_kinds.cache_clear()


def test_kinds__each_subcommand_is_generated_from_its_declaration(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for kind in JOB_KINDS.values():
        p = sub[kind.subcommand]
        options = {s for a in p._actions for s in a.option_strings}
        dests = {a.dest for a in p._actions}
        for param in kind.params:
            if param.flag is None:
                continue
            assert (param.flag in options) if param.flag.startswith("-") else (param.name in dests), \
                f"{kind.subcommand}: no {param.flag} for {param.name}"
        assert {"-o", "--store", "--overwrite", "--dry-run", "--workers", "--scheduler"} <= options
        assert ("--model" in options) == bool(kind.model), kind.name
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "--help"])
    help_text = capsys.readouterr().out
    assert "--windows A,B,..." in help_text and "positions between window starts (default: 1)" in help_text
    # flags become the kind's parameters: lists split, repeated flags, --no-x, JSON tables, parsed targets
    args = parser.parse_args(["tiles", "g.fa", "-o", "s.zarr", "--window", "100", "--region", "chrI:1-10",
                              "--region", "chrII", "--no-pyramid", "--model", "m:f"])
    p = params_from_args(JOB_KINDS["tiles"], args)
    assert p["regions"] == ["chrI:1-10", "chrII"] and p["pyramid"] is False and p["window"] == 100
    args = parser.parse_args(["sweep", "x.fa", "-o", "s.zarr", "--windows", "2,4", "--inserts", "TATA", "--model", "m:f"])
    p = params_from_args(JOB_KINDS["sweep"], args)
    assert p["windows"] == [2, 4] and p["inserts"] == ["TATA"] and p["fasta"] == "x.fa"
    args = parser.parse_args(["embed", "x.npy", "-o", "s.zarr", "--reducer-kwargs", '{"min_dist": 0.1}',
                              "--components", "3", "--column", "a", "--column", "b"])
    p = params_from_args(JOB_KINDS["embed"], args)
    assert p["reducer"] == {"min_dist": 0.1} and p["n_components"] == 3 and p["columns"] == ["a", "b"]
    args = parser.parse_args(["attribute", "x.h5ad", "-o", "s.zarr", "--target", "1,b", "--model", "m:f"])
    assert params_from_args(JOB_KINDS["attribute"], args)["target"] == [1, "b"]
    args = parser.parse_args(["coefficients", "-o", "s.zarr", "--input", "a=x.csv", "--input", "b.csv"])
    assert params_from_args(JOB_KINDS["coefficients"], args)["inputs"] == ["a=x.csv", "b.csv"]


def test_kinds__task_parameters_fill_their_defaults():
    sweep = JOB_KINDS["sweep"]
    assert sweep.task_params({"windows": [3]}) == {"windows": [3], "stride": 1, "replicates": 1, "mode": "random",
                                                   "seed": 0, "inserts": None, "keep_replicates": False}
    with pytest.raises(TypeError, match="unexpected keyword argument 'windos'"):
        sweep.task_params({"windos": [3]})
    assert Param("pyramid", "bool", True).flag == "--no-pyramid" and Param("n_steps", "int").flag == "--n-steps"


def _call(kind: str, **params):
    """Call ``kind``'s declared function as a job step or a subcommand does."""
    store, group = params.pop("store", "s.zarr"), params.pop("group", JOB_KINDS[kind].group)
    return JOB_KINDS[kind].invoke(params, store=store, group=group, model=params.pop("model", None),
                                  log=params.pop("log", print))


def test_kinds__tiles_genome_sweep_genome_ism_call_their_runners():
    spec = demo_model_spec()
    with mock.patch("interpretome.jobs.genome.run_tiles", autospec=True) as run:
        _call("tiles", fasta="g.fa", model=spec, store="s.zarr", group="tracks", window=200, stride=50,
              regions=["chrI:1-1000"], strand="both", annotation="a.gtf", pyramid=False)
    run.assert_called_once()
    kw = run.call_args.kwargs
    assert (kw["fasta"], kw["model"], kw["store"]) == ("g.fa", spec, "s.zarr")
    assert kw["window"] == 200 and kw["regions"] == ["chrI:1-1000"] and kw["strand"] == "both" and kw["group"] == "tracks"
    with mock.patch("interpretome.jobs.genome.run_genome_sweep", autospec=True) as run:
        _call("genome_sweep", fasta="g.fa", model=spec, store="s.zarr", group="gs", input_length=200,
              windows=[5], replicates=2)
    assert run.call_args.kwargs["windows"] == [5] and run.call_args.kwargs["regions"] is None
    with mock.patch("interpretome.jobs.genome.run_genome_ism", autospec=True) as run:
        _call("genome_ism", fasta="g.fa", model=spec, store="s.zarr", group="gi", input_length=200,
              regions=["chrI:101-200"], bin_size=1, crop=16, reductions=["delta_score"], delta_distance=20,
              strand="both", pad="N")
    kw = run.call_args.kwargs
    assert kw["input_length"] == 200 and kw["bin_size"] == 1 and kw["reductions"] == ["delta_score"]
    assert (kw["delta_distance"], kw["strand"], kw["pad"]) == (20, "both", "N")
    params = {p.name for p in JOB_KINDS["genome_ism"].params} & {p.name for p in JOB_KINDS["genome_sweep"].params}
    assert {"bin_size", "crop", "crop_right", "reductions", "delta_distance", "strand", "pad"} <= params
    assert "pad" in {p.name for p in JOB_KINDS["tiles"].params}


def test_kinds__attribute_calls_run_attribute(tmp_path):
    from interpretome.jobs.attribution import fastshap_settings

    spec = demo_model_spec()
    base = tmp_path / "base.npy"
    np.save(base, np.zeros((4, 10), np.float32))
    with mock.patch("interpretome.jobs.attribution.run_attribute", autospec=True) as run:
        _call("attribute", input="x.h5ad", model=spec, store="s.zarr", group="attributions", target="all",
              baseline=str(base), by="bulk_labels", layer_in_file="counts")
    kw = run.call_args.kwargs
    assert (kw["input"], kw["model"], kw["store"]) == ("x.h5ad", spec, "s.zarr")
    assert kw["layer_in_file"] == "counts" and kw["by"] == "bulk_labels" and kw["method"] == "integrated_gradients"
    assert fastshap_settings(kw["method"], kw["fastshap_train"], kw["fastshap_epochs"]) is None
    assert kw["baseline"] == str(base)  # run_attribute loads it, so its digest is fingerprinted
    assert "export" not in kw  # the finish hook writes it, after the run
    with mock.patch("interpretome.jobs.attribution.run_attribute", autospec=True) as run:
        _call("attribute", input="x.h5ad", model=spec, store="s.zarr", group="a", method="fastshap",
              fastshap_train=50, fastshap_epochs=2)
    kw = run.call_args.kwargs
    assert fastshap_settings(kw["method"], kw["fastshap_train"], kw["fastshap_epochs"]) == {"n_train": 50, "epochs": 2, "transform": "auto"}
    with mock.patch("interpretome.jobs.attribution.open_group", autospec=True, return_value="summary") as opened, \
            mock.patch("interpretome.storage.attribution_export.export_attributions", autospec=True) as export:
        JOB_KINDS["attribute"].finished({"input": "x.h5ad", "export": "t.tsv"}, store="s.zarr", group="attr",
                                        log=lambda msg: None)
    assert opened.call_args.args == ("s.zarr", "attr_summary") and export.call_args.args == ("summary", "t.tsv")
    assert not JOB_KINDS["attribute"].is_lazy({"method": "fastshap"}) and JOB_KINDS["attribute"].is_lazy({"method": "ig"})


def test_kinds__embed_and_scores_call_their_runners(tmp_path):
    ds = object()
    with mock.patch("interpretome.jobs.embedding.load_input", autospec=True, return_value=(ds, ["x.h5ad"])) as load, \
            mock.patch("interpretome.jobs.embedding.run_embed", autospec=True) as run:
        _call("embed", store="s.zarr", group="embedding", input="x.h5ad", label="bulk_labels", neighbors=10,
              reducer={"min_dist": 0.3}, method="umap")
    assert load.call_args.args == ("x.h5ad",) and load.call_args.kwargs["label"] == "bulk_labels"
    assert run.call_args.args == (ds, "s.zarr") and run.call_args.kwargs["params"] == {"min_dist": 0.3, "n_neighbors": 10}
    # a group of the job's own store
    with mock.patch("interpretome.jobs.embedding.load_input", autospec=True, return_value=(ds, [])) as load, \
            mock.patch("interpretome.jobs.embedding.run_embed", autospec=True):
        _call("embed", store="s.zarr", group="emb", group_in="attributions", variable="attribution")
    assert load.call_args.args == ("s.zarr",) and load.call_args.kwargs["group"] == "attributions"
    with pytest.raises(ValueError, match="an embed step needs input = 'file', group_in"):
        _call("embed", store="s.zarr", group="emb")
    # the command line's --filter and --model
    params = {"filter": "background:0.01"}
    JOB_KINDS["embed"].from_cli(params, None)
    assert params == {"from_model": False, "filter_column": "background", "filter_max": 0.01}
    summary = pd.DataFrame({"score": ["asw"], "mean": [0.5]})
    with mock.patch("interpretome.jobs.embedding.load_input", autospec=True, return_value=(ds, [])) as load, \
            mock.patch("interpretome.jobs.embedding.run_scores", autospec=True,
                       return_value=(summary, summary, {}, [])) as run:
        _call("scores", store=str(tmp_path / "s.zarr"), group="scores", inputs=["a.h5ad", "b.h5ad"],
              label="bulk_labels", batch="phase", umap=False, log=lambda msg: None)
    folds = run.call_args.args[0]
    assert list(folds) == ["a", "b"] and run.call_args.args[2] == str(tmp_path / "s") + "_scores"
    assert run.call_args.kwargs["batch"] == "item_batch" and run.call_args.kwargs["umap"] is False
    with pytest.raises(ValueError, match="names has 1 names for 2 inputs"):
        _call("scores", store="s.zarr", group="scores", inputs=["a.h5ad", "b.h5ad"], names=["x"])


def test_kinds__coefficients_and_ccc_call_their_runners():
    with mock.patch("interpretome.jobs.coefficients.read_coefficients", autospec=True, return_value="part") as read, \
            mock.patch("interpretome.jobs.coefficients.combine_coefficients", autospec=True, return_value="coefs"), \
            mock.patch("interpretome.jobs.coefficients.run_coefficients", autospec=True) as run:
        _call("coefficients", store="s.zarr", group="coefficients",
              inputs=["multiclass:final:CP=/d/cp.csv", "ovr:final:CP:Mitosis=/d/m.csv"])
    assert read.call_args_list[1].args == ("/d/m.csv",)
    assert read.call_args_list[1].kwargs["positive_class"] == "Mitosis"
    assert run.call_args.args == ("coefs", "s.zarr") and run.call_args.kwargs["inputs"] == ["/d/cp.csv", "/d/m.csv"]
    assert run.call_args.kwargs["tsv"] == "s_correlations.tsv"
    with mock.patch("interpretome.jobs.coefficients.read_matrix", autospec=True, return_value="m") as read, \
            mock.patch("interpretome.jobs.coefficients.run_ccc", autospec=True) as run:
        _call("ccc", store="s.zarr", group="ccc", matrix="x.npy", transpose=True, form="condensed")
    assert read.call_args.kwargs == {"transpose": True, "var": None}
    assert run.call_args.args == ("m", "s.zarr") and run.call_args.kwargs["form"] == "condensed"


def test_kinds__job_file_paths_and_plans(tmp_path, no_compute):
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


def test_kinds__adding_a_parameter_is_one_edit(tmp_path, monkeypatch):
    """The worked example of docs/DESIGN.md ("Jobs"): one Param, and the subcommand, the job file,
    ``run --kinds`` and the task call (hence the fingerprint) all have it."""
    import dataclasses

    from interpretome.jobs import dna
    from interpretome.jobs.jobfile.run import describe_kinds

    from tests.jobfiles import STEPS, write_job

    flank = Param("flank", "int", 0, task=True, doc="bases kept unperturbed at each window edge")
    sweep = dataclasses.replace(dna.SWEEP, params=(*dna.SWEEP.params, flank))  # the one edit
    monkeypatch.setattr(dna, "SWEEP", sweep)
    monkeypatch.setattr(dna, "KINDS", (sweep, dna.ISM))
    registry.job_kinds.cache_clear()
    try:
        args = build_parser().parse_args(["sweep", "x.fa", "-o", "s.zarr", "--flank", "2", "--model", "m:f"])
        assert params_from_args(sweep, args)["flank"] == 2
        job = load_job(write_job(tmp_path, steps=STEPS.replace("replicates = 2", "replicates = 2\nflank = 3")))
        assert job.steps[1].params["flank"] == 3
        assert "flank: int, default 0  bases kept unperturbed" in describe_kinds()
        with mock.patch("interpretome.jobs.dna.perturbation_sweep", side_effect=RuntimeError("stop")) as task:
            with pytest.raises(RuntimeError, match="stop"):
                dna.run_sweep(tmp_path / "promoters.fa", demo_model_spec(), tmp_path / "s.zarr", windows=[3], flank=4)
        assert task.call_args.kwargs["flank"] == 4 and task.call_args.kwargs["windows"] == [3]
    finally:
        monkeypatch.undo()
        registry.job_kinds.cache_clear()
