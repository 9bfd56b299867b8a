"""Results you can trust, at the command line: model and input identity in the fingerprint, every
check before a cluster starts (``--dry-run`` for every compute subcommand), a failed run that does
not block its fix, the run history's interrupted runs, and messages that name flags."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from interpretome.storage.groups import decoded_attr

from interpretome.cli import build_parser, main
from interpretome.datasets import DEMO_WEIGHTS, data_path, promoter_sequences
from interpretome.engine.models import ModelSpec
from interpretome.jobs import model_from_args
from interpretome.jobs.dna import run_sweep
from interpretome.jobs.runner import RUNS_ATTR, load_job, recording_run
from interpretome.storage.readers import write_fasta
from interpretome.storage.store import group_info

from .jobfiles import save_dir_model, write_job

DASHBOARD = "dask dashboard"
"""What ``engine.cluster.connect`` prints once a cluster is up: never before the checks are done."""
MODEL = ["--model", "interpretome.datasets:reference_cnn", "--model-kwargs", '{"channels": 4}', "--targets", "y"]


@pytest.fixture
def fasta(tmp_path):
    return write_fasta(tmp_path / "p.fa", dict(list(promoter_sequences(3).items())))


@pytest.fixture
def genome(tmp_path):
    rs = np.random.default_rng(1)
    seqs = {c: "".join(rs.choice(list("ACGT"), size=n)) for c, n in (("chr1", 900), ("chr2", 400))}
    return write_fasta(tmp_path / "g.fa", seqs)


@pytest.fixture
def cells(tmp_path):
    import anndata

    rs = np.random.default_rng(0)
    x = rs.normal(size=(30, 12)).astype(np.float32)
    ad = anndata.AnnData(X=x, obs=pd.DataFrame({"kind": list("ab") * 15, "batch": ["x"] * 15 + ["y"] * 15},
                                               index=[f"c{i}" for i in range(30)]),
                         var=pd.DataFrame(index=[f"g{j}" for j in range(12)]))
    ad.obsm["X_lat"] = x[:, :4].copy()
    ad.write_h5ad(tmp_path / "cells.h5ad")
    return tmp_path / "cells.h5ad"


def _refused(capsys, argv, *needles, one_line=True) -> str:
    """Run ``argv``: exit 2 with a one-line message holding ``needles``, and no cluster started."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert DASHBOARD not in out, "a cluster started before the check"
    line = err.strip()
    assert line.startswith(f"interpretome {argv[0]}: error: ") and (line.count("\n") == 0 or not one_line), err
    for n in needles:
        assert n in line, line
    return line


def _dry(capsys, argv) -> str:
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert DASHBOARD not in out and "nothing computed, no cluster started" in out
    return out


# --- A: the model's and the inputs' identity are fingerprinted ------------------------------------

def test_fingerprint__retrained_factory_model_is_refused(tmp_path, fasta, capsys):
    """A factory loading its own checkpoint (``--model-kwargs '{"model_dir": ...}'``), retrained in
    place: the spec is unchanged, the model digest is not, so a rerun is refused unless --overwrite."""
    mdir = save_dir_model(tmp_path / "m", seed=0)
    spec = ModelSpec(factory="tests.jobfiles:dir_model", kwargs={"model_dir": str(mdir)}, targets=("y",))
    store = tmp_path / "s.zarr"
    run_sweep(fasta, spec, store, windows=[3], log=lambda m: None)
    info = group_info(store, "sweep")
    digest = info["params"]["model_digest"]
    assert digest.startswith("sha256:") and info["provenance"]["model_digest"] == digest
    assert set(info["params"]["input_digests"]) == {"p.fa"}
    argv = ["sweep", str(fasta), "-o", str(store), "--windows", "3", "--model", "tests.jobfiles:dir_model",
            "--model-kwargs", json.dumps({"model_dir": str(mdir)}), "--targets", "y"]
    out = _dry(capsys, argv)  # same model: the group is complete
    assert "complete in the store" in out
    save_dir_model(mdir, seed=1)  # retrained in place
    _refused(capsys, argv, "holds a result computed with other parameters", "model_digest", "--overwrite")
    assert "CONFLICT" not in _dry(capsys, [*argv, "--overwrite"])


def test_fingerprint__changed_fasta_is_refused(tmp_path, fasta, capsys):
    spec = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 4}, targets=("y",))
    store = tmp_path / "s.zarr"
    run_sweep(fasta, spec, store, windows=[3], log=lambda m: None)
    seqs = dict(list(promoter_sequences(3).items()))
    first = next(iter(seqs))
    seqs[first] = "T" + seqs[first][1:] if seqs[first][0] != "T" else "A" + seqs[first][1:]
    write_fasta(fasta, seqs)  # same names and lengths, one base changed
    _refused(capsys, ["sweep", str(fasta), "-o", str(store), "--windows", "3", *MODEL],
             "input_digests.p.fa", "--overwrite")


# --- B: every check before a cluster, and --dry-run -------------------------------------------------

def test_checks_first__bad_models_and_inputs_exit_2_before_a_cluster(tmp_path, fasta, genome, cells, capsys):
    store = str(tmp_path / "s.zarr")
    # sweep: a misspelt factory keyword (the model is built in-process)
    _refused(capsys, ["sweep", str(fasta), "-o", store, "--model", "interpretome.datasets:reference_cnn",
                      "--model-kwargs", '{"chanels": 4}'], "chanels", "--model-kwargs")
    # ism: weights of another architecture
    _refused(capsys, ["ism", str(fasta), "-o", store, "--model", "interpretome.datasets:reference_cnn",
                      "--weights", str(data_path(DEMO_WEIGHTS))], "do not fit", one_line=False)  # torch's list
    # tiles: the model's outputs disagree with the declared targets (run on a real genome window)
    _refused(capsys, ["tiles", str(genome), "-o", store, "--window", "100", *MODEL[:4], "--targets", "a,b"],
             "2 targets", "--targets")
    # genome-sweep: a bad region
    _refused(capsys, ["genome-sweep", str(genome), "-o", store, "--input-length", "80", "--region", "chr9:1-10",
                      *MODEL], "chr9")
    # attribute: a dense model taking 20 features, an h5ad with 12
    _refused(capsys, ["attribute", str(cells), "-o", store, "--model", "interpretome.pbmc:cell_classifier",
                      "--model-kwargs", '{"n_features": 20, "n_classes": 2}'], "12 input features")
    # embed: a model whose nn.Embedding is embedded, with a misspelt keyword
    _refused(capsys, ["embed", "-o", store, "--model", "interpretome.datasets:kmer_model",
                      "--model-kwargs", '{"dimm": 4}'], "dimm")
    # scores: an .obsm key the file does not have
    _refused(capsys, ["scores", str(cells), "-o", store, "--out", str(tmp_path / "o"), "--obsm", "X_nope",
                      "--label", "kind"], "X_nope")
    # coefficients and ccc: inputs that cannot be read
    bad = tmp_path / "bad.csv"
    bad.write_text("nothing,here\n")
    _refused(capsys, ["coefficients", "-o", store, "--input", f"multiclass:final:CP={tmp_path / 'none.csv'}"],
             "none.csv")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    _refused(capsys, ["ccc", str(tmp_path / "cube.npy"), "-o", store], "3-d array")
    assert not (tmp_path / "s.zarr").exists()


def test_dry_run__every_family_plans_and_starts_nothing(tmp_path, fasta, genome, cells, capsys):
    store = str(tmp_path / "s.zarr")
    out = _dry(capsys, ["sweep", str(fasta), "-o", store, "--windows", "2,4", "--position-chunk", "100", *MODEL])
    assert "group 'sweep': 5 chunks (5 to compute)" in out and "store location: writable" in out
    assert "group 'ism'" in _dry(capsys, ["ism", str(fasta), "-o", store, "--start", "10", "--end", "20", *MODEL])
    out = _dry(capsys, ["tiles", str(genome), "-o", store, "--window", "100", "--stride", "50", *MODEL])
    assert "group 'tracks'" in out
    assert "group 'genome_ism'" in _dry(capsys, ["genome-ism", str(genome), "-o", store, "--input-length", "80",
                                                 "--region", "chr2:11-20", *MODEL])
    assert "group 'genome_sweep'" in _dry(capsys, ["genome-sweep", str(genome), "-o", store, "--input-length", "80",
                                                   "--region", "chr2:11-20", "--windows", "3", *MODEL])
    out = _dry(capsys, ["attribute", str(cells), "-o", store, "--model", "interpretome.pbmc:cell_classifier",
                        "--model-kwargs", '{"n_features": 12, "n_classes": 2}', "--targets", "a,b", "--n-steps", "4"])
    assert "group 'attributions'" in out
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 5)))
    assert "group 'embedding'" in _dry(capsys, ["embed", str(tmp_path / "x.npy"), "-o", store, "--method", "pca"])
    assert "group 'scores_cells'" in _dry(capsys, ["scores", str(cells), "-o", store, "--out", str(tmp_path / "o"),
                                                   "--obsm", "X_lat", "--label", "kind", "--no-umap"])
    pd.DataFrame(np.random.default_rng(0).normal(size=(6, 20)), index=[f"f{i}" for i in range(6)]).to_csv(
        tmp_path / "m.csv")
    assert "group 'ccc'" in _dry(capsys, ["ccc", str(tmp_path / "m.csv"), "-o", store])
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "o").exists()


def test_run_dry_run__catches_misspelt_kwarg_and_wrong_weights(tmp_path, capsys):
    model = ('[model]\nfactory = "interpretome.datasets:reference_cnn"\nkwargs = { chanels = 4 }\n'
             'targets = ["y"]\n')
    path = write_job(tmp_path, model=model)
    assert main(["run", str(path), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "chanels" in err and "job.toml:3" in err and DASHBOARD not in out
    model = (f'[model]\nfactory = "interpretome.datasets:reference_cnn"\nweights = "{data_path(DEMO_WEIGHTS)}"\n'
             'targets = ["y"]\n')
    path = write_job(tmp_path, model=model, name="job2.toml")
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "do not fit" in capsys.readouterr().err


# --- C: a failed run does not block its own fix ------------------------------------------------------

def test_failed_run__does_not_block_its_fix(tmp_path, capsys):
    seqs = dict(list(promoter_sequences(2).items()))
    seqs["all_n"] = "N" * 200
    fa = write_fasta(tmp_path / "p.fa", seqs)
    store = tmp_path / "s.zarr"
    spec = ModelSpec(factory="tests.jobfiles:picky_cnn", targets=("y",))
    with pytest.raises(ValueError, match="picky_cnn"):  # passes the check on the first items, fails computing
        run_sweep(fa, spec, store, windows=[3], log=lambda m: None)
    assert group_info(store, "sweep") is not None and not group_info(store, "sweep")["complete"]
    argv = ["sweep", str(fa), "-o", str(store), "--windows", "3", "--model", "tests.jobfiles:picky_cnn",
            "--model-kwargs", '{"strict": false}', "--targets", "y", "--workers", "1"]
    out = _dry(capsys, argv)  # the empty group holds no result: planned as new, no conflict
    assert "group 'sweep': 3 chunks (3 to compute)" in out and "CONFLICT" not in out
    assert main(argv) == 0, capsys.readouterr().err
    assert group_info(store, "sweep")["complete"]
    assert group_info(store, "sweep")["params"]["model"]["kwargs"] == {"strict": False}


# --- D: the run history records interrupted runs -----------------------------------------------------

def _runs(store):
    attrs = json.loads((store / ".zattrs").read_text())
    assert isinstance(attrs[RUNS_ATTR], str)  # JSON text: netCDF and plain xarray can hold it
    return decoded_attr(attrs, RUNS_ATTR)


def test_run_history__running_failed_interrupted_and_stale(tmp_path):
    store = tmp_path / "s.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with recording_run(store, {"job": "a"}) as run:
        (entry,) = _runs(store)
        assert entry["status"] == "running" and entry["pid"] == os.getpid() and entry["host"] == platform.node()
        assert run["run_id"] == entry["run_id"]
    assert _runs(store)[0]["status"] == "done" and _runs(store)[0]["finished"]
    with pytest.raises(ValueError), recording_run(store, {"job": "b"}):
        raise ValueError("the model broke\nsecond line")
    with pytest.raises(KeyboardInterrupt), recording_run(store, {"job": "c"}):
        raise KeyboardInterrupt
    runs = _runs(store)
    assert [(r["job"], r["status"]) for r in runs] == [("a", "done"), ("b", "failed"), ("c", "interrupted")]
    assert runs[1]["error"] == "the model broke"
    # a SIGKILLed run leaves its entry "running": the next run marks it interrupted (its pid is dead)
    import zarr

    root = zarr.open_group(str(store), mode="a", zarr_format=2)
    stale = {"job": "killed", "status": "running", "pid": dead.pid, "host": platform.node(), "started": "then"}
    alive = {"job": "alive", "status": "running", "pid": os.getppid(), "host": platform.node(), "started": "now"}
    root.attrs[RUNS_ATTR] = runs + [stale, alive]
    with recording_run(store, {"job": "d"}):
        pass
    runs = {r["job"]: r for r in _runs(store)}
    assert runs["killed"]["status"] == "interrupted" and "process had ended" in runs["killed"]["note"]
    assert runs["alive"]["status"] == "running" and runs["d"]["status"] == "done"


def test_run_history__a_job_run_records_its_steps(tmp_path, client2, capsys):
    path = write_job(tmp_path, steps='[[step]]\nkind = "ism"\nfasta = "promoters.fa"\nstart = 10\nend = 20\n')
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 0
    (run,) = _runs(tmp_path / "out.zarr")
    assert run["status"] == "done" and run["pid"] == os.getpid() and run["steps"][0]["name"] == "ism"
    assert run["job_sha256"].startswith("sha256:")


# --- E, F: messages name flags; --allow-nonfinite ----------------------------------------------------

def test_messages__name_flags_not_python_keywords(tmp_path, fasta, capsys):
    store = str(tmp_path / "s.zarr")
    line = _refused(capsys, ["sweep", str(fasta), "-o", store, "--mode", "insert", *MODEL], "--inserts")
    assert "inserts=" not in line
    line = _refused(capsys, ["sweep", str(fasta), "-o", store, "--inserts", "TATAAT", *MODEL], "--inserts", "--mode")
    assert "mode=" not in line
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    import pickle

    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"a": 1}))
    line = _refused(capsys, ["embed", str(tmp_path / "x.pkl"), "-o", store], "--trust-pickle")
    assert "trust_pickle=" not in line


def test_allow_nonfinite__flag_and_job_file_key(tmp_path):
    args = build_parser().parse_args(["sweep", "x.fa", "-o", "s.zarr", *MODEL, "--allow-nonfinite"])
    assert model_from_args(args).allow_nonfinite is True
    args = build_parser().parse_args(["sweep", "x.fa", "-o", "s.zarr", *MODEL])
    assert model_from_args(args).allow_nonfinite is False
    model = ('[model]\nfactory = "interpretome.datasets:reference_cnn"\nkwargs = { channels = 4 }\n'
             'targets = ["y"]\nallow_nonfinite = true\n')
    assert load_job(write_job(tmp_path, model=model)).model.allow_nonfinite is True
