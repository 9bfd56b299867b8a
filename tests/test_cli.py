"""The command line: sweep / ism / info / render end to end on a real LocalCluster, and error exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import xarray as xr

from interpretome.cli import main
from interpretome.datasets import promoter_sequences
from interpretome.storage.readers import write_fasta

MODEL = ["--model", "interpretome.datasets:reference_cnn", "--model-kwargs", '{"channels": 4}', "--targets", "y"]


def test_cli__sweep_ism_info_render(tmp_path, capsys):
    fa = write_fasta(tmp_path / "p.fa", dict(list(promoter_sequences(3).items())))
    store = tmp_path / "s.zarr"
    assert main(["sweep", str(fa), "-o", str(store), "--windows", "2,4", "--replicates", "2", "--workers", "1",
                 "--position-chunk", "100", *MODEL]) == 0
    assert main(["ism", str(fa), "-o", str(store), "--start", "100", "--end", "160", "--workers", "1", *MODEL]) == 0
    out = capsys.readouterr().out
    assert "dask dashboard: http://127.0.0.1:" in out and "sweep: wrote 5 chunks" in out  # reference 1 + 2 vars x 2 position chunks
    ds = xr.open_zarr(str(store), group="sweep")
    assert ds["sweep_delta_mean"].shape == (3, 2, 200, 1) and ds.attrs["sweep_replicates"] == 2
    assert main(["info", str(store)]) == 0
    assert "[ism] task=saturation_mutagenesis complete" in capsys.readouterr().out
    assert main(["render", str(store), "-o", str(tmp_path / "figs"), "--marker", "TSS=150"]) == 0
    pngs = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert pngs == ["ism_promoter_00.png", "ism_promoter_01.png", "ism_promoter_02.png",
                    "sweep_promoter_00.png", "sweep_promoter_01.png", "sweep_promoter_02.png"]
    assert all((tmp_path / "figs" / p).stat().st_size > 5000 for p in pngs)
    # a changed-parameter rerun refuses with the fix, and exits 2
    assert main(["sweep", str(fa), "-o", str(store), "--windows", "3", "--workers", "1", *MODEL]) == 2
    err = capsys.readouterr()
    assert "--overwrite" in err.err and "overwrite=True" not in err.err  # the CLI's own spelling
    assert "holds a result computed with other parameters" in err.err and "dask dashboard" not in err.out


def test_cli__bad_input_messages(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.fa"), "-o", str(tmp_path / "s.zarr"), *MODEL]) == 2
    assert "does not exist: check the path" in capsys.readouterr().err
    fa = write_fasta(tmp_path / "p.fa", {"a": "ACGT" * 10})
    assert main(["sweep", str(fa), "-o", str(tmp_path / "s.zarr"), "--model", "nosuchpkg:f"]) == 2
    assert "cannot import module 'nosuchpkg'" in capsys.readouterr().err
    assert main(["sweep", str(fa), "-o", str(tmp_path / "s.zarr"), *MODEL, "--model-kwargs", "{bad"]) == 2
    assert "--model-kwargs is not valid JSON" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "s.zarr"), "--marker", "TSS"]) == 2


def test_cli__python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "interpretome", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("interpretome 0.")


# --- one grammar: help, aliases, output levels, results line, one-line errors ------------------------

def _subparsers():
    import argparse

    from interpretome.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_cli__every_option_has_help_and_defaults_are_shown():
    import argparse

    parser, choices = _subparsers()
    assert parser.description.startswith("Explain biological machine-learning models")
    for name, p in choices.items():
        assert p.description, f"{name} has no description"
        dests_shown = set()
        for a in p._actions:
            if a.help == argparse.SUPPRESS:
                continue
            assert a.help and a.help.strip(), f"{name} {a.option_strings or a.dest} has no help text"
            dests_shown.add(a.dest)
        for a in p._actions:  # a hidden alias is an older spelling of a shown option
            if a.help == argparse.SUPPRESS:
                assert a.dest in dests_shown, f"{name} {a.option_strings} is hidden but no shown option sets {a.dest}"
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose", "--debug"} <= flags, name
    text = choices["sweep"].format_help()
    for flag, default in (("--stride", "1"), ("--replicates", "1"), ("--mode", "random"), ("--seed", "0")):
        line = " ".join(text.split(f"\n  {flag} ", 1)[1].split("\n  -", 1)[0].split())
        assert f"(default: {default})" in line, (flag, line)
    assert "(default: integrated_gradients)" in " ".join(choices["attribute"].format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text


def test_cli__ecosystem_names_and_old_spellings_parse_alike():
    from interpretome.cli import build_parser
    from interpretome.jobs.commands import params_from_args
    from interpretome.jobs.registry import job_kinds

    parser, kinds = build_parser(), job_kinds()
    new = parser.parse_args(["embed", "a.h5ad", "-o", "e.zarr", "--use-rep", "X_umap", "--n-neighbors", "7",
                             "--n-components", "3"])
    old = parser.parse_args(["embed", "a.h5ad", "-o", "e.zarr", "--obsm", "X_umap", "--neighbors", "7",
                             "--components", "3"])
    pn, po = params_from_args(kinds["embed"], new), params_from_args(kinds["embed"], old)
    assert pn == po and (pn["obsm"], pn["neighbors"], pn["n_components"]) == ("X_umap", 7, 3)
    assert params_from_args(kinds["embed"], parser.parse_args(["embed", "a.h5ad", "-o", "e"]))["obsm"] == "X_pca"
    a = parser.parse_args(["attribute", "c.h5ad", "-o", "a.zarr", "--model", "m.json", "--baseline", "mean"])
    b = parser.parse_args(["attribute", "c.h5ad", "-o", "a.zarr", "--model", "m.json", "--baselines", "mean"])
    assert params_from_args(kinds["attribute"], a)["baseline"] == params_from_args(kinds["attribute"], b)["baseline"] \
        == "mean"
    s1 = parser.parse_args(["scores", "f1.h5ad", "-o", "s.zarr", "--out", "figs"])
    s2 = parser.parse_args(["scores", "f1.h5ad", "-o", "s.zarr", "--figures", "figs"])
    assert params_from_args(kinds["scores"], s1)["out"] == params_from_args(kinds["scores"], s2)["out"] == "figs"
    r1, r2 = parser.parse_args(["render", "s.zarr", "-o", "f"]), parser.parse_args(["render", "s.zarr", "--figures", "f"])
    assert r1.figures == r2.figures == "f"
    assert [getattr(parser.parse_args(["demo", *a]), "folder", "interpretome-demo") for a in (["d"], ["-o", "d"], ["--figures", "d"], [])] == \
        ["d", "d", "d", "interpretome-demo"]
    assert parser.parse_args(["-v", "info", "s.zarr"]).verbose and parser.parse_args(["info", "s.zarr", "-q"]).quiet


def test_cli__input_kinds_offered_are_those_that_work(capsys):
    import pytest

    from interpretome.cli import build_parser

    parser = build_parser()
    for cmd in (["sweep", "p.fa"], ["ism", "p.fa"], ["tiles", "g.fa", "--window", "10"]):
        for bad in ("dense", "image"):
            with pytest.raises(SystemExit):
                parser.parse_args([*cmd, "-o", "s.zarr", "--model", "m.json", "--input-kind", bad])
            assert "invalid choice" in capsys.readouterr().err
        assert parser.parse_args([*cmd, "-o", "s.zarr", "--model", "m.json", "--input-kind", "kmer"]).input_kind == "kmer"
    assert parser.parse_args(["attribute", "x.npy", "-o", "s", "--model", "m", "--input-kind", "image"]).input_kind \
        == "image"


def test_cli__method_aliases_fingerprint_alike(tmp_path):
    from interpretome.engine.models import load_spec
    from interpretome.jobs import plan_first
    from interpretome.jobs.attribution import run_attribute

    fa = write_fasta(tmp_path / "p.fa", dict(list(promoter_sequences(2).items())))
    spec = load_spec("interpretome.datasets:reference_cnn", kwargs={"channels": 4}, targets=("y",), input_kind="onehot")
    seen = {}
    for m in ("ig", "integrated_gradients"):
        plan = plan_first(lambda: run_attribute(fa, spec, tmp_path / "a.zarr", method=m, n_steps=4, log=lambda s: None))
        seen[m] = plan.params["attributions"][2]
    assert seen["ig"] == seen["integrated_gradients"] and seen["ig"]["method"] == "integrated_gradients"


def test_cli__one_line_errors_quiet_and_results_line(tmp_path, capsys):
    """Each of these used to end in a traceback: now one line naming the fix, exit 2."""
    import os

    import pytest
    import torch

    fa = write_fasta(tmp_path / "p.fa", dict(list(promoter_sequences(2).items())))
    store = tmp_path / "s.zarr"
    # a factory that returns something other than an nn.Module
    (tmp_path / "notamodule.py").write_text("def build(**kw):\n    return 42\n")
    import sys as _sys

    _sys.path.insert(0, str(tmp_path))
    try:
        assert main(["sweep", str(fa), "-o", str(store), "--model", "notamodule:build", "--targets", "y"]) == 2
    finally:
        _sys.path.remove(str(tmp_path))
    err = capsys.readouterr().err
    assert "returned an object of type int, not a torch.nn.Module" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        assert main(["sweep", str(fa), "-o", str(store), *MODEL, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--device cuda but this machine has no CUDA GPU" in err and "--device auto" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # quiet: nothing but the results line on stdout
    assert main(["sweep", str(fa), "-o", str(store), "--windows", "2", "--workers", "1", *MODEL, "-q"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"results: {store} group 'sweep' (open with xarray.open_zarr({str(store)!r}, "
                                    f"group='sweep'))"], out.out
    assert xr.open_zarr(str(store), group="sweep")["sweep_delta_mean"].shape == (2, 1, 200, 1)
    # render --sequence UNKNOWN names the sequences there are
    assert main(["render", str(store), "--figures", str(tmp_path / "f"), "--sequence", "UNKNOWN"]) == 2
    err = capsys.readouterr().err
    assert "--sequence 'UNKNOWN' is in no rendered group" in err and "promoter_00, promoter_01" in err
    # a negative marker label without the = spelling; the results line names the folder
    assert main(["render", str(store), "--figures", str(tmp_path / "f"), "--marker", "-10=40", "--marker", "TSS=150",
                 "--sequence", "promoter_01"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("results: 1 figures in ") and (tmp_path / "f" / "sweep_promoter_01.png").exists()
    # a folder figures cannot be written into
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    target = None
    for candidate in (readonly / "figs", "/sys/interpretome-figures"):  # root writes through 0o555; sysfs refuses
        try:
            os.mkdir(candidate)
            os.rmdir(candidate)
        except OSError:
            target = candidate
            break
    if target is None:
        pytest.skip("no read-only location available to this user")
    assert main(["render", str(store), "--figures", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write figures into {str(target)!r}" in err and "choose a writable folder with --figures DIR" in err
    assert "Traceback" not in err
    # the report checks its page and figure folders before drawing anything
    assert main(["report", str(store), "--figures", str(target)]) == 2
    err = capsys.readouterr().err
    assert "choose a writable folder with --figures DIR" in err and "Traceback" not in err
    page = Path(target) / "report.html"
    assert main(["report", str(store), "--html", str(page)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the report page {str(page)!r}" in err and "choose a writable path with --html PAGE" in err
    assert not list(tmp_path.glob("*_figures")), "nothing is drawn before the check"


def test_cli__embed_kmer_flags_reach_the_spec():
    from interpretome.cli import build_parser
    from interpretome.jobs import optional_model_from_args
    from interpretome.tasks.embedding_layer import from_embedding_layer

    parser = build_parser()
    args = parser.parse_args(["embed", "-o", "k.zarr", "--model", "interpretome.datasets:kmer_model",
                              "--model-kwargs", '{"vocab_size": 73}', "--kmer-k", "3", "--kmer-stride", "1"])
    spec = optional_model_from_args(args)
    assert (spec.kmer.k, spec.kmer.stride) == (3, 1) and len(spec.kmer.vocab) == 73
    items = [str(i) for i in from_embedding_layer(spec)["item"].values]
    assert sum(len(i) == 3 and set(i) <= set("ACGT") for i in items) == 64  # every 3-mer labels its row
    with __import__("pytest").raises(Exception, match="--kmer-k / --kmer-stride describe a model"):
        optional_model_from_args(parser.parse_args(["embed", "x.h5ad", "-o", "k.zarr", "--kmer-k", "3"]))
