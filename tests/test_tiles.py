"""Tiled prediction along genomes, pyramids, exports and the track figures."""

from __future__ import annotations

import gzip
import warnings

import dask.array as da
from dask.core import get_dependencies
import numpy as np
import pytest
import torch

from interpretome.datasets import profile_cnn, random_dna, reference_cnn
from interpretome.engine.models import ModelOutputError, ModelSpec
from interpretome.storage.alphabet import decode_bases
from interpretome.storage.export import export_bedgraph, export_bigwig
from interpretome.storage.genome import (InputError, Region, TrackGeometry, parse_region, read_bed, read_genome,
                                         track_bins)
from interpretome.storage.readers import write_fasta
from interpretome.storage.store import open_group, write_dataset
from interpretome.tasks.tiles import pyramid_level, predict_tiles, track_pyramid

SCALAR = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 8, "outputs": 2},
                   targets=("a", "b"), batch_size=16)
PROFILE_KW = {"channels": 8, "outputs": 2, "crop": 8, "bin_size": 4}
PROFILE = ModelSpec(factory="interpretome.datasets:profile_cnn", kwargs=PROFILE_KW, targets=("p", "q"), batch_size=16)
LENGTHS = {"chr1": 1003, "chr2": 517, "chrM": 130}


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """A 3-contig gzipped FASTA (with an N run and lower case) and its sequences."""
    seqs = {n: decode_bases(random_dna(1, length, seed=i)[0]) for i, (n, length) in enumerate(LENGTHS.items())}
    seqs["chr1"] = seqs["chr1"][:300] + "N" * 20 + seqs["chr1"][320:500].lower() + seqs["chr1"][500:]
    path = write_fasta(tmp_path_factory.mktemp("genome") / "g.fa.gz", seqs, width=50)
    return path, seqs


def _onehot(seq: str) -> torch.Tensor:
    idx = {"A": 0, "C": 1, "G": 2, "T": 3}
    x = torch.zeros(4, len(seq))
    for i, ch in enumerate(seq.upper()):
        if ch in idx:
            x[idx[ch], i] = 1
    return x


def _rc(seq: str) -> str:
    return seq.upper().translate(str.maketrans("ACGTN", "TGCAN"))[::-1]


def _loop_scalar(seq: str, window: int, stride: int, strand: str) -> np.ndarray:
    """Plain loop: windows every stride plus one ending at the sequence end; (n_windows, T)."""
    model = reference_cnn(channels=8, outputs=2).eval()
    starts = list(range(0, len(seq) - window + 1, stride))
    if starts[-1] + window < len(seq):
        starts.append(len(seq) - window)
    out = []
    with torch.no_grad():
        for s in starts:
            w = seq[s:s + window]
            f = model(_onehot(w)[None])[0].numpy()
            r = model(_onehot(_rc(w))[None])[0].numpy()
            out.append({"+": f, "-": r, "both": (f + r) / 2}[strand])
    return np.array(out)


def _loop_profile(seq: str, window: int, stride: int, strand: str, bin_size=4, crop=8) -> np.ndarray:
    """Plain loop for the profile model: each window's bins added into a genome grid, then the mean."""
    model = profile_cnn(**PROFILE_KW).eval()
    starts = list(range(0, len(seq) - window + 1, stride))
    tail = (len(seq) - window) // bin_size * bin_size
    if tail > starts[-1]:
        starts.append(tail)
    n_out = (window - 2 * crop) // bin_size
    n_bins = starts[-1] // bin_size + n_out
    sums, counts = np.zeros((n_bins, 2)), np.zeros(n_bins)
    with torch.no_grad():
        for s in starts:
            w = seq[s:s + window]
            f = model(_onehot(w)[None])[0].numpy()
            r = model(_onehot(_rc(w))[None])[0].numpy()[:, ::-1]
            p = {"+": f, "-": r, "both": (f + r) / 2}[strand]
            for k in range(n_out):
                sums[s // bin_size + k] += p[:, k]
                counts[s // bin_size + k] += 1
    return sums / counts[:, None]


@pytest.mark.parametrize("strand", ["+", "-", "both"])
def test_predict_tiles__scalar_equals_plain_loop(genome, strand):
    path, seqs = genome
    ds = read_genome(path, position_chunk=97)
    res = predict_tiles(ds, SCALAR, window=100, stride=30, strand=strand, merge=False).compute()
    assert list(res["contig"].values) == list(LENGTHS)
    for i, (name, seq) in enumerate(seqs.items()):
        want = _loop_scalar(seq, 100, 30, strand)
        got = res["track_prediction"].values[i]
        np.testing.assert_allclose(got[:len(want)], want, rtol=1e-5, atol=1e-6)
        assert np.isnan(got[len(want):]).all()
        assert (res["track_coverage"].values[i, :len(want)] == 1).all()


@pytest.mark.parametrize("strand", ["+", "-", "both"])
def test_predict_tiles__profile_equals_plain_loop(genome, strand):
    path, seqs = genome
    ds = read_genome(path, position_chunk=64)
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand=strand, merge=False).compute()
    for i, seq in enumerate(seqs.values()):
        want = _loop_profile(seq, 96, 40, strand)
        got = res["track_prediction"].values[i]
        np.testing.assert_allclose(got[:len(want)], want, rtol=1e-5, atol=1e-6)
        assert np.isnan(got[len(want):]).all()


def test_predict_tiles__identical_under_chunkings(genome):
    """No seams: with one window per forward pass the tracks are bit-identical whatever the chunking.

    With batched forwards torch's CPU kernels may round a window's output differently in a batch
    of another size (1 ulp of float32); the stitching adds nothing to that.
    """
    path, _ = genome
    for spec, kw in [(PROFILE, dict(window=96, stride=40, bin_size=4, crop=8, strand="both")),
                     (SCALAR, dict(window=100, stride=30))]:
        runs = {}
        for bs in (1, 16):
            for pc, bc in [(1 << 20, None), (64, 3), (97, 7), (200, 1)]:
                res = predict_tiles(read_genome(path, position_chunk=pc), spec.with_options(batch_size=bs),
                                    bin_chunk=bc, merge=False, **kw)
                runs.setdefault(bs, []).append(res["track_prediction"].values)
        for r in runs[1][1:]:
            np.testing.assert_array_equal(r, runs[1][0])
        for r in runs[16]:
            np.testing.assert_allclose(r, runs[1][0], rtol=1e-6, atol=1e-7)


def test_predict_tiles__tail_covered(genome):
    path, seqs = genome
    ds = read_genome(path, position_chunk=128)
    res = predict_tiles(ds, SCALAR, window=100, stride=30, merge=False).compute()
    geom = TrackGeometry.from_attrs(res.attrs)
    for i, (name, seq) in enumerate(seqs.items()):
        n = geom.n_bins(len(seq))
        starts = geom.window_starts(len(seq))
        assert starts[-1] + 100 == len(seq)  # the last window ends at the contig end
        assert np.isfinite(res["track_prediction"].values[i, :n]).all()
        s, e, c = geom.bin_intervals(len(seq))
        assert s[0] == 0 and e[-1] == len(seq) and (s[1:] == e[:-1]).all() and ((s <= c) & (c < e)).all()
        np.testing.assert_array_equal(c, starts + 50)
    # profile: every base from the crop to the last full bin before the crop at the end is predicted
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, merge=False).compute()
    geom = TrackGeometry.from_attrs(res.attrs)
    for i, seq in enumerate(seqs.values()):
        n = geom.n_bins(len(seq))
        s, e, _ = geom.bin_intervals(len(seq))
        assert s[0] == 8 and len(seq) - 8 - 4 < e[-1] <= len(seq) - 8
        assert (res["track_coverage"].values[i, :n] > 0).all() and (res["track_coverage"].values[i, n:] == 0).all()


def test_predict_tiles__regions_match_slices(genome):
    path, seqs = genome
    ds = read_genome(path, position_chunk=100)
    res = predict_tiles(ds, SCALAR, window=100, stride=25, regions=["chr1:201-700", Region("chr2", 17, 517)],
                        merge=False).compute()
    assert list(res["contig"].values) == ["chr1:201-700", "chr2:18-517"]
    assert list(res["region_start"].values) == [200, 17]
    bins = track_bins(res, 0)  # genome coordinates of the first region's bins
    assert bins["contig"] == "chr1" and bins["start"][0] == 200 and bins["end"][-1] == 700
    np.testing.assert_array_equal(bins["centre"][:3], [250, 275, 300])
    want = _loop_scalar(seqs["chr1"][200:700], 100, 25, "+")
    np.testing.assert_allclose(res["track_prediction"].values[0, :len(want)], want, rtol=1e-5, atol=1e-6)


@pytest.mark.graph
def test_predict_tiles__lazy(genome):
    path, _ = genome
    ds = read_genome(path, position_chunk=100)
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand="both")
    pyr = track_pyramid(res)
    assert isinstance(res["track_prediction"].data, da.Array) and isinstance(res["track_coverage"].data, da.Array)
    assert isinstance(pyr["track_pyramid_min"].data, da.Array)
    assert "sequence_code" in res  # merged into the input by default


@pytest.mark.graph
def test_predict_tiles__reads_only_the_blocks_it_needs(genome):
    path, _ = genome
    ds = read_genome(path, position_chunk=50)
    res = predict_tiles(ds, SCALAR, window=100, stride=30, bin_chunk=4, merge=False)
    arr = res["track_prediction"].data
    graph = dict(arr.__dask_graph__())
    codes_name = ds["sequence_code"].data.name
    n_tasks = 0
    for key in graph:
        if key[0].startswith("tiles-"):
            deps = [d for d in get_dependencies(graph, key) if d[0] == codes_name]
            assert len(deps) <= 5  # 4 bins x 30 + 100 bp of halo: at most 220 bp, 5 chunks of 50 bp
            n_tasks += 1
    assert n_tasks == 3 * 8  # chr1: 31 windows + the tail = 32 bins, in blocks of 4, for 3 rows


@pytest.mark.graph(max_computes=2)  # the two res.compute() that raise the model-output errors
def test_predict_tiles__bad_inputs(genome):
    path, _ = genome
    ds = read_genome(path)
    with pytest.raises(InputError, match="lies outside contig 'chr2'"):
        predict_tiles(ds, SCALAR, window=50, regions=["chr2:400-600"])
    with pytest.raises(InputError, match="names contig 'chrX', which the genome does not have"):
        predict_tiles(ds, SCALAR, window=50, regions=["chrX:1-100"])
    with pytest.raises(InputError, match=r"window 200 is longer than 'chrM' \(130 bp\)"):
        predict_tiles(ds, SCALAR, window=200)
    with pytest.raises(ValueError, match="stride 6 is not a multiple of bin_size 4"):
        predict_tiles(ds, PROFILE, window=96, stride=6, bin_size=4, crop=8)
    with pytest.raises(ValueError, match="is not a multiple of bin_size"):
        predict_tiles(ds, PROFILE, window=97, stride=40, bin_size=4, crop=8)
    with pytest.raises(ValueError, match="leaves gaps"):
        predict_tiles(ds, PROFILE, window=96, stride=84, bin_size=4, crop=8)
    with pytest.raises(ValueError, match="strand 'x' is not one of"):
        predict_tiles(ds, SCALAR, window=50, strand="x")
    with pytest.raises(InputError, match="1-based, inclusive"):
        parse_region("chr1:100")
    res = predict_tiles(ds, PROFILE, window=96, stride=40, regions=["chr2"], merge=False)  # no bin_size
    with pytest.raises(ModelOutputError, match="pass bin_size="):
        res.compute()
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=8, crop=8, regions=["chr2"], merge=False)
    with pytest.raises(ModelOutputError, match=r"expects a profile model output \(N, T, 10\)"):
        res.compute()


def test_read_bed__regions_and_errors(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\nchr1\t10\t50\tpeak1\nchr2\t0\t30\n")
    assert read_bed(bed) == [Region("chr1", 10, 50, "peak1"), Region("chr2", 0, 30, None)]
    assert parse_region("chr1:1,001-2,000") == Region("chr1", 1000, 2000)
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t10\t50\nchr1\tten\t50\n")
    with pytest.raises(InputError, match=r"bad.bed:2: malformed BED line"):
        read_bed(bad)


def test_track_pyramid__levels_equal_direct_reduction(genome):
    rs = np.random.default_rng(0)
    track = rs.normal(size=(2, 1000, 2)).astype(np.float32)
    track[1, 700:] = np.nan  # a shorter contig
    track[0, 5:9] = np.nan
    import xarray as xr

    ds = xr.Dataset({"track_prediction": (("contig", "bin", "target"), da.from_array(track, chunks=(1, 37, 2)))},
                    coords={"contig": ["a", "b"], "target": ["x", "y"]})
    pyr = track_pyramid(ds, factor=3, min_groups=5, chunk=50).compute()
    levels = pyr.attrs["pyramid_levels"]
    assert [lv for lv, _, _ in levels] == [1, 2, 3, 4, 5]
    for lv, off, n in levels:
        g = 3 ** lv
        padded = np.concatenate([track, np.full((2, n * g - 1000, 2), np.nan, np.float32)], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups
            want_min = np.nanmin(padded.reshape(2, n, g, 2), axis=2)
            want_max = np.nanmax(padded.reshape(2, n, g, 2), axis=2)
        lvl = pyramid_level(pyr, lv)
        np.testing.assert_array_equal(lvl["track_pyramid_min"].values, want_min)
        np.testing.assert_array_equal(lvl["track_pyramid_max"].values, want_max)


def test_track_points__whole_view_reads_a_pyramid_level(tmp_path):
    """A whole-contig view of 100,000 bins, 100 px wide, draws one pyramid level (work ~ pixels)."""
    import xarray as xr

    from interpretome.viz.tracks_long import plot_track, track_points

    n = 100_000
    y = np.sin(np.arange(n) / 3000.0).astype(np.float32)
    y[77_777] = 5.0  # a one-bin spike must survive the reduction
    geom = TrackGeometry(1, 1, 1, 0, 0)
    track = xr.Dataset({"track_prediction": (("contig", "bin", "target"), da.from_array(y[None, :, None], chunks=(1, 8192, 1)))},
                       coords={"contig": ["c"], "contig_name": ("contig", ["c"]), "contig_index": ("contig", [0]),
                               "region_start": ("contig", [0]), "region_end": ("contig", [n]), "target": ["t"]},
                       attrs=geom.to_attrs())
    write_dataset(track, tmp_path / "s.zarr", "tracks", task="tiled_prediction", params={})
    write_dataset(track_pyramid(open_group(tmp_path / "s.zarr", "tracks")), tmp_path / "s.zarr", "pyr",
                  task="track_pyramid", params={})
    tr, pyr = open_group(tmp_path / "s.zarr", "tracks"), open_group(tmp_path / "s.zarr", "pyr")
    pts, level = track_points(tr, "c", width=100, pyramid=pyr)
    assert level == 4 and len(pts) == 2 * -(-n // 4 ** 4)  # 391 groups of 256 bins: >= 2 per pixel column
    assert pts["y"].max() == 5.0 and pts["y"].min() == y.min()
    zoom, zl = track_points(tr, "c", start=1000, end=1150, width=100, pyramid=pyr)
    assert zl == 0 and list(zoom["x"]) == list(np.arange(1000, 1150) + 0.0)
    fig = plot_track(tr, "c", pyramid=pyr, width=100, height=50)
    assert "pyramid level 4" in fig._suptitle.get_text()


def test_tiles_store_export_and_render__client2(genome, client2, tmp_path):
    """One run on a real 2-worker cluster: store, pyramid, bedGraph/bigWig, PNG and HTML."""
    import pyBigWig

    from interpretome.jobs.genome import render_tiles, run_tiles
    from interpretome.storage.readers import fasta_records

    path, seqs = genome
    local = predict_tiles(read_genome(path, position_chunk=100), SCALAR, window=100, stride=30,
                          merge=False)["track_prediction"].values
    gtf = tmp_path / "g.gtf"
    gtf.write_text('chr1\tt\tgene\t101\t200\t.\t-\t.\tgene_id "g1"; gene "ONE";\n'
                   'chr1\tt\tgene\t601\t700\t.\t+\t.\tgene_id "g2";\n')
    store = tmp_path / "s.zarr"
    run_tiles(path, SCALAR, store, window=100, stride=30, annotation=gtf, position_chunk=100, bin_chunk=5,
              client=client2, log=lambda m: None)
    track = open_group(store, "tracks")
    np.testing.assert_array_equal(track["track_prediction"].values, local)  # 2 workers == local threads
    pyr = open_group(store, "tracks_pyramid")
    np.testing.assert_array_equal(pyramid_level(pyr, 1)["track_pyramid_max"].values[0, :2, 0],
                                  np.nanmax(local[0, :8, 0].reshape(2, 4), axis=1))
    bg = export_bedgraph(track, tmp_path / "t.bedgraph.gz", target="b")
    lines = [ln.split("\t") for ln in gzip.open(bg, "rt").read().splitlines()[1:]]
    geom = TrackGeometry.from_attrs(track.attrs)
    n1 = geom.n_bins(LENGTHS["chr1"])
    assert len(lines) == sum(geom.n_bins(v) for v in LENGTHS.values())
    assert lines[0][:3] == ["chr1", "0", "65"] and lines[n1 - 1][2] == str(LENGTHS["chr1"])
    np.testing.assert_allclose([float(x[3]) for x in lines[:n1]], local[0, :n1, 1], rtol=1e-5)
    bw = export_bigwig(track, tmp_path / "t.bw", fasta_records(path), target=1)
    with pyBigWig.open(str(bw)) as fh:
        assert fh.chroms() == LENGTHS
        vals = np.array(fh.values("chr1", 0, LENGTHS["chr1"]))
    s, e, _ = geom.bin_intervals(LENGTHS["chr1"])
    np.testing.assert_allclose(vals, np.repeat(local[0, :n1, 1], e - s), rtol=1e-5)
    figs = render_tiles(store, "tracks", tmp_path / "fig", sequences=["chr1"], start=50, end=900)
    assert [f.suffix for f in figs] == [".png", ".png", ".html"] and all(f.stat().st_size > 5000 for f in figs)
    html = figs[-1].read_text()
    assert "Bokeh" in html and "ONE" in html and "cdn.bokeh.org" not in html


def test_export_bigwig__message_when_pybigwig_missing(genome, monkeypatch, tmp_path):
    import builtins

    path, _ = genome
    track = predict_tiles(read_genome(path), SCALAR, window=100, stride=50, merge=False)
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "pyBigWig":
            raise ImportError("No module named 'pyBigWig'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(RuntimeError, match=r"pip install pyBigWig .*or export bedGraph"):
        export_bigwig(track, tmp_path / "x.bw", LENGTHS)


def test_write_dataset__track_resumes_identically(genome, store):
    path, _ = genome
    ds = read_genome(path, position_chunk=100)
    res = predict_tiles(ds, SCALAR, window=100, stride=30, bin_chunk=5, merge=False)
    write_dataset(res, store, "tracks", task="tiled_prediction", params={"w": 100})
    again = write_dataset(res, store, "tracks", task="tiled_prediction", params={"w": 100})
    assert again.computed_chunks == 0
    np.testing.assert_array_equal(open_group(store, "tracks")["track_prediction"].values,
                                  res["track_prediction"].values)


def test_cli__tiles_export_and_genome_ism(genome, client2, tmp_path, capsys):
    """The command line end to end on the shared 2-worker cluster, and a bad region's exit status."""
    from interpretome.cli import main

    path, seqs = genome
    gtf = tmp_path / "g.gtf"
    gtf.write_text('chr1\tt\tgene\t101\t200\t.\t-\t.\tgene_id "g1";\n')
    store = str(tmp_path / "c.zarr")
    model = ["--model", "interpretome.datasets:reference_cnn", "--model-kwargs", '{"channels": 8, "outputs": 2}',
             "--targets", "a,b", "--scheduler", client2.scheduler.address]
    assert main(["tiles", str(path), "-o", store, "--window", "100", "--stride", "50", "--region", "chr1:1-600",
                 "--region", "chr2", "--annotation", str(gtf), "--strand", "both", "--figures",
                 str(tmp_path / "figs"), *model]) == 0
    track = open_group(store, "tracks")
    assert list(track["contig"].values) == ["chr1:1-600", "chr2"]
    want = _loop_scalar(seqs["chr1"][:600], 100, 50, "both")
    np.testing.assert_allclose(track["track_prediction"].values[0, :len(want)], want, rtol=1e-5, atol=1e-6)
    assert main(["export-track", store, "--bedgraph", str(tmp_path / "t.bg"), "--bigwig", str(tmp_path / "t.bw")]) == 0
    assert (tmp_path / "t.bw").stat().st_size > 0 and (tmp_path / "t.bg").read_text().count("\n") > 10
    assert main(["genome-ism", str(path), "-o", store, "--input-length", "80", "--region", "chr2:11-20", *model]) == 0
    assert open_group(store, "genome_ism")["genome_ism_delta"].shape == (1, 10, 4, 2)
    assert main(["tiles", str(path), "-o", store, "--group", "bad", "--window", "100", "--region", "chr2:500-600",
                 *model]) == 2
    assert "lies outside contig 'chr2'" in capsys.readouterr().err


def test_track_html__renders_in_headless_chromium(tmp_path):
    """The track HTML opens offline in a real browser: BokehJS inlined, the figure drawn, no console errors."""
    import os
    import shutil
    import time

    import pandas as pd
    import xarray as xr

    from interpretome.viz.tracks_long import track_html

    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them with apt-get)")
    from selenium.webdriver.chrome.service import Service

    n = 5000
    geom = TrackGeometry(100, 50)
    nb = geom.n_bins(n)
    track = xr.Dataset({"track_prediction": (("contig", "bin", "target"), np.sin(np.arange(nb) / 7.0)[None, :, None])},
                       coords={"contig": ["c"], "contig_name": ("contig", ["c"]), "contig_index": ("contig", [0]),
                               "region_start": ("contig", [0]), "region_end": ("contig", [n]), "target": ["t"]},
                       attrs=geom.to_attrs())
    genes = pd.DataFrame({"contig": ["c", "c"], "tss": [1200, 3999], "strand": ["+", "-"], "name": ["GA", "GB"]})
    page = track_html(track, "c", tmp_path / "t.html", genes=genes)
    assert "cdn.bokeh.org" not in page.read_text()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page.resolve().as_uri())
        t0, ready = time.monotonic(), False
        while time.monotonic() - t0 < 20 and not ready:
            ready = driver.execute_script("return typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 && "
                                          "document.querySelectorAll('div[data-root-id], .bk-Figure').length > 0")
            time.sleep(0.2)
        assert ready, "BokehJS did not render the track"
        n_glyphs = driver.execute_script(
            "return Bokeh.documents[0].roots()[0].renderers.length")
        assert n_glyphs == 3  # the track line, the gene-start segments, the strand triangles
        assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []
    finally:
        driver.quit()
