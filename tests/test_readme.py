"""The README's examples run as written.

Every ``bash`` block of README.md except the Quick start's two ``pip install`` lines runs here,
one test per README section, on the example inputs ``interpretome demo-data data`` writes (one
module-scoped folder shared by the tests): the commands in-process through
``interpretome.cli.main`` (the same parser and code as the shell) from that folder, each checked
for exit status 0 and no traceback on stderr, the results checked where cheap. Every ``python``
block runs as a script in a fresh interpreter from the same folder. The first ``toml`` block (the
job file of "Running on HPC") is written to ``data/job.toml`` and run by the section's own
``interpretome run`` lines (dry run, then the real run on the embedded LocalCluster); the
``[cluster.jobqueue]`` block needs a SLURM/PBS queue and is only validated as a job file with
``--dry-run --local`` (the flag replaces the table, as the README says). Blocks the README marks
``sh`` (the SLURM batch script) need a batch system and are not run. Every other ``interpretome``
command of the README is parsed by the real parser (``test_readme__every_command_parses``), and
``test_readme__every_bash_block_is_run`` checks that no bash block is left out.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

README = Path(__file__).resolve().parents[1] / "README.md"

RUN_SECTIONS = ("Using it", "Coefficients and CCC", "Embeddings and clustering scores",
                "Long sequences: tiled tracks, sweeps and ISM along genomes",
                "Attributions: Integrated Gradients, SHAP, FastSHAP", "Running on HPC")
"""The README sections whose bash blocks run here (one test each)."""


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Return the block's commands as argv lists (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")  # "## T" or "### T"
    nxt = re.search(r"\n#{2,} ", text[start + 3:])  # up to the next heading, of any level
    return text[start:start + 3 + nxt.start() if nxt else None]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder holding ``data/`` as ``interpretome demo-data data`` writes it."""
    from interpretome.cli import main

    root = tmp_path_factory.mktemp("readme")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["demo-data", "data"]) in (0, None)
    finally:
        os.chdir(cwd)
    return root


IN_PROCESS = ("Coefficients and CCC", "Embeddings and clustering scores",
              "Long sequences: tiled tracks, sweeps and ISM along genomes",
              "Attributions: Integrated Gradients, SHAP, FastSHAP")
"""Sections whose commands run with ``INTERPRETOME_EXECUTOR=threads`` (in this process: no worker
processes to start, numba and torch warmed up once). "Using it" and "Running on HPC" keep the
default, so the README's commands also run on the embedded cluster of worker processes as written;
the other tests run every task on a real 2-worker cluster."""


@pytest.fixture(autouse=True)
def _executor(request, monkeypatch):
    """Run the commands of the ``IN_PROCESS`` sections in this process (see there)."""
    section = getattr(request.function, "section", None)
    if section in IN_PROCESS:
        monkeypatch.setenv("INTERPRETOME_EXECUTOR", "threads")


def _in_section(title: str):
    """Mark a test as the test of README section ``title``."""
    def mark(fn):
        fn.section = title
        return fn
    return mark


def _run(block: str, capsys) -> list[tuple[list[str], str]]:
    """Run every command of ``block`` in-process; return ``[(argv, stdout)]``."""
    from interpretome.cli import main

    done = []
    for argv in _commands(block):
        assert argv[0] == "interpretome", argv
        if argv[1:] == ["demo-data", "data"]:  # the module fixture wrote it
            continue
        rc = main(argv[1:])
        out = capsys.readouterr()
        assert rc in (0, None), (argv, out.err[-3000:])
        assert "Traceback" not in out.err, (argv, out.err[-3000:])
        done.append((argv, out.out))
    return done


def _script(code: str, name: str) -> str:
    Path(name).write_text(code)
    env = {**os.environ, "PYTHONPATH": str(README.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, name], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run.stdout


def _section_blocks(title: str, lang: str) -> list[str]:
    return _blocks(_section(README.read_text(), title), lang)


def test_readme__using_it_runs_as_written(work, monkeypatch, capsys):
    (bash,) = _section_blocks("Using it", "bash")
    (python,) = _section_blocks("Using it", "python")
    assert _commands(bash)[0] == ["interpretome", "demo-data", "data"]
    monkeypatch.chdir(work)
    for argv, out in _run(bash, capsys):
        if argv[1] in ("sweep", "ism") and "--dry-run" not in argv:
            assert out.splitlines()[-1] == (f"results: results.zarr group {argv[1]!r} (open with "
                                            f"xarray.open_zarr('results.zarr', group={argv[1]!r}))")
        if "--dry-run" in argv:
            assert "complete in the store" in out
    sweep = xr.open_zarr("results.zarr", group="sweep")
    assert sweep.sizes["sequence"] == 16 and list(sweep["window"].values) == [1, 5, 9]
    assert sweep.attrs["sweep_replicates"] == 4
    assert xr.open_zarr("results.zarr", group="ism")["ism_delta"].sizes["position"] == 70
    assert sorted(p.name for p in Path("figs").glob("*.png"))[:1] == ["ism_promoter_00.png"]
    # the Python snippet, as a script (its worker processes need the __main__ guard)
    _script(python, "snippet_using_it.py")
    py = xr.open_zarr("python.zarr", group="sweep")
    assert py["sweep_delta_mean"].sizes == sweep["sweep_delta_mean"].sizes
    # same model, input, windows, replicates and seed: the same numbers as the command line's
    xr.testing.assert_allclose(py["sweep_delta_mean"].load(), sweep["sweep_delta_mean"].load(), atol=1e-6)


@_in_section('Coefficients and CCC')
def test_readme__coefficients_and_ccc(work, monkeypatch, capsys):
    (bash,) = _section_blocks("Coefficients and CCC", "bash")
    monkeypatch.chdir(work)
    _run(bash, capsys)
    coef = xr.open_zarr("coefs.zarr", group="coefficients")
    assert set(coef["class"].values) >= {"Mitosis", "Apoptosis"}
    ccc = xr.open_zarr("ccc.zarr", group="ccc")
    assert ccc.sizes["pair"] == 24 * 23 // 2  # condensed: every pair of the 24 features once


@_in_section('Embeddings and clustering scores')
def test_readme__embeddings_and_scores(work, monkeypatch, capsys):
    (bash,) = _section_blocks("Embeddings and clustering scores", "bash")
    monkeypatch.chdir(work)
    _run(bash, capsys)
    emb = xr.open_zarr("emb.zarr", group="embedding")
    assert emb.sizes["item"] == 700
    scores = xr.open_zarr("scores.zarr", group="scores")
    assert scores.sizes["fold"] == 3


@_in_section('Long sequences: tiled tracks, sweeps and ISM along genomes')
def test_readme__long_sequences(work, monkeypatch, capsys):
    title = "Long sequences: tiled tracks, sweeps and ISM along genomes"
    (bash,) = _section_blocks(title, "bash")
    (python,) = _section_blocks(title, "python")
    monkeypatch.chdir(work)
    _run(bash, capsys)
    assert Path("promoter.bedgraph.gz").stat().st_size > 0
    track = xr.open_zarr("tracks.zarr", group="tracks")
    assert "track_prediction" in track and track.sizes["strand"] == 2
    profile = xr.open_zarr("t.zarr", group="tracks")["track_prediction"]
    assert profile.sizes["bin"] == 20480 // 8  # the region's 20480 bases in bins of 8 (N-padded past the crop)
    splice = xr.open_zarr("ism.zarr", group="splice")
    assert "genome_ism_delta_gain" in splice
    _script(python + "\nprint('snippet ok')\n", "snippet_long.py")


@_in_section('Attributions: Integrated Gradients, SHAP, FastSHAP')
def test_readme__attributions(work, monkeypatch, capsys):
    (bash,) = _section_blocks("Attributions: Integrated Gradients, SHAP, FastSHAP", "bash")
    monkeypatch.chdir(work)
    _run(bash, capsys)
    ig = xr.open_zarr("attr.zarr", group="promoter_ig")
    assert ig["sequence_attribution"].sizes["sequence"] == 16
    patches = xr.open_zarr("attr.zarr", group="patches")
    maps = [v for v in patches.data_vars.values() if v.ndim >= 4]  # (sample, C, H, W[, target]) maps
    assert maps and all(v.shape[0] == 24 for v in maps)
    assert Path("attributions.tsv").stat().st_size > 0


def test_readme__running_on_hpc(work, monkeypatch, capsys):
    from interpretome.cli import main

    text = _section(README.read_text(), "Running on HPC")
    job, jobqueue = _blocks(text, "toml")
    (bash,) = _blocks(text, "bash")
    monkeypatch.chdir(work)
    Path("data/job.toml").write_text(job)  # the README's job file is the one demo-data writes
    done = _run(bash, capsys)
    assert "sweep" in done[0][1] and "ism" in done[0][1]
    res = xr.open_zarr("data/results.zarr", group="sweep")
    assert list(res["window"].values) == [1, 5, 9]
    assert Path("report.html").stat().st_size > 0
    # the [cluster.jobqueue] table needs a batch system: validated, with --local replacing it
    Path("data/jobqueue.toml").write_text(job + "\n" + jobqueue)
    assert main(["run", "data/jobqueue.toml", "--dry-run", "--local"]) in (0, None)
    assert "Traceback" not in capsys.readouterr().err


def test_readme__every_bash_block_is_run():
    text = README.read_text()
    run = sum((_blocks(_section(text, t), "bash") for t in RUN_SECTIONS), [])
    quick = _blocks(_section(text, "Quick start"), "bash")
    assert all(argv[0] == "pip" for b in quick for argv in _commands(b))
    left = [b for b in _blocks(text, "bash") if b not in run and b not in quick]
    assert not left, f"README bash blocks no test runs: {left}"


def test_readme__every_command_parses():
    from interpretome.cli import build_parser

    parser = build_parser()
    n = 0
    for block in _blocks(README.read_text(), "bash"):
        for argv in _commands(block):
            if argv[0] != "interpretome":
                continue
            try:
                parser.parse_args(argv[1:])
            except SystemExit as e:  # argparse's own exit: a flag or subcommand the README spells wrongly
                pytest.fail(f"README command does not parse ({e}): {' '.join(argv)}")
            n += 1
    assert n >= 25
