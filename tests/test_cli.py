"""The command line: sweep / ism / info / render end to end on a real LocalCluster, and error exits."""

from __future__ import annotations

import subprocess
import sys

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
