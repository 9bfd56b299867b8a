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
            out.append({"+": f, "-": r, "mean": (f + r) / 2, "both": np.stack([f, r], axis=-1)}[strand])
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
    sums, counts = np.zeros((n_bins, 2) + ((2,) if strand == "both" else ())), np.zeros(n_bins)
    with torch.no_grad():
        for s in starts:
            w = seq[s:s + window]
            f = model(_onehot(w)[None])[0].numpy()
            r = model(_onehot(_rc(w))[None])[0].numpy()[:, ::-1]
            p = {"+": f, "-": r, "mean": (f + r) / 2, "both": np.stack([f, r], axis=-1)}[strand]
            for k in range(n_out):
                sums[s // bin_size + k] += p[:, k]
                counts[s // bin_size + k] += 1
    return sums / counts.reshape((-1,) + (1,) * (sums.ndim - 1))


@pytest.mark.parametrize("strand", ["+", "-", "mean", "both"])
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


@pytest.mark.parametrize("strand", ["+", "-", "mean", "both"])
def test_predict_tiles__profile_equals_plain_loop(genome, strand):
    path, seqs = genome
    ds = read_genome(path, position_chunk=64)
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand=strand, pad="none",
                        merge=False).compute()
    for i, seq in enumerate(seqs.values()):
        want = _loop_profile(seq, 96, 40, strand)
        got = res["track_prediction"].values[i]
        np.testing.assert_allclose(got[:len(want)], want, rtol=1e-5, atol=1e-6)
        assert np.isnan(got[len(want):]).all()


@pytest.mark.parametrize("strand", ["+", "both"])
def test_predict_tiles__padded_profile_covers_every_base(genome, tmp_path, strand):
    """pad='N' (the profile default): the contig is padded with N and every base gets a prediction."""
    path, seqs = genome
    ds = read_genome(path, position_chunk=64)
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand=strand, merge=False).compute()
    assert res.attrs["track_pad"] == "N"
    for i, (name, seq) in enumerate(seqs.items()):
        padded = "N" * 8 + seq + "N" * (8 + (-len(seq)) % 4)  # a padded direct forward: N past both ends
        want = _loop_profile(padded, 96, 40, strand)
        n = -(-len(seq) // 4)
        got = res["track_prediction"].values[i]
        assert len(want) == n and (res["track_coverage"].values[i, :n] > 0).all()
        np.testing.assert_allclose(got[:n], want, rtol=1e-5, atol=1e-6)
        assert np.isnan(got[n:]).all()
        bins = track_bins(res, i)
        assert bins["start"][0] == 0 and bins["end"][-1] >= len(seq) > bins["end"][-1] - 4
        np.testing.assert_array_equal(res["genome_position"].values[i, :n], np.arange(n) * 4 + 2)
    sub = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, regions=["chr1:101-300"],
                        merge=False).compute()  # inside a contig the padding is the real flanking sequence
    np.testing.assert_allclose(sub["track_prediction"].values[0, :50],
                               _loop_profile(seqs["chr1"][92:308], 96, 40, "+"), rtol=1e-5, atol=1e-6)
    bg = export_bedgraph(res if strand == "+" else res.sel(strand="+"), tmp_path / "p.bedgraph")
    last = [ln.split("\t") for ln in bg.read_text().splitlines() if ln.startswith("chrM")][-1]
    assert last[2] == str(LENGTHS["chrM"])  # clipped to the contig end
    with pytest.raises(ValueError, match="pad='N' applies to profile models"):
        predict_tiles(ds, SCALAR, window=100, pad="N")


def test_predict_tiles__identical_under_chunkings(genome):
    """No seams: with one window per forward pass the tracks are bit-identical whatever the chunking.

    With batched forwards torch's CPU kernels may round a window's output differently in a batch
    of another size (1 ulp of float32); the stitching adds nothing to that.
    """
    path, _ = genome
    for spec, kw in [(PROFILE, dict(window=96, stride=40, bin_size=4, crop=8, strand="mean")),
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
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, pad="none", merge=False).compute()
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
    n0 = len(bins["centre"])  # the bin axis carries genome positions (bin centres), -1 past a row's bins
    np.testing.assert_array_equal(res["genome_position"].values[0, :n0], bins["centre"])
    assert (res["genome_position"].values[0, n0:] == -1).all()
    np.testing.assert_array_equal(res["genome_position"].values[1, :3], [17 + 50, 17 + 75, 17 + 100])
    want = _loop_scalar(seqs["chr1"][200:700], 100, 25, "+")
    np.testing.assert_allclose(res["track_prediction"].values[0, :len(want)], want, rtol=1e-5, atol=1e-6)


@pytest.mark.graph
def test_predict_tiles__lazy(genome):
    path, _ = genome
    ds = read_genome(path, position_chunk=100)
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand="both")
    pyr = track_pyramid(res)
    assert isinstance(res["track_prediction"].data, da.Array) and isinstance(res["track_coverage"].data, da.Array)
    assert isinstance(pyr["track_min_l1"].data, da.Array) and isinstance(pyr["genome_position_l1"].data, da.Array)
    assert "sequence_code" in res  # merged into the input by default


def test_predict_tiles__both_strands_pyramid_and_export(genome, tmp_path):
    """strand='both' keeps a trailing strand dim through the pyramid; exports and figures pick one strand."""
    from interpretome.viz.tracks_long import track_points

    path, seqs = genome
    ds = read_genome(path, position_chunk=100)
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand="both", merge=False).compute()
    assert res["track_prediction"].dims == ("contig", "bin", "target", "strand")
    mean = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, strand="mean", merge=False).compute()
    np.testing.assert_allclose(res["track_prediction"].mean("strand").values, mean["track_prediction"].values,
                               rtol=1e-5, atol=1e-6)
    pyr = pyramid_level(track_pyramid(res, factor=4, min_groups=4).compute(), 1)
    minus = res["track_prediction"].sel(strand="-").values
    assert pyr["track_max_l1"].dims == ("contig", "bin_l1", "target", "strand")
    np.testing.assert_allclose(pyr["track_max_l1"].sel(strand="-").values[0, :3], np.nanmax(
        minus[0, :12].reshape(3, 4, 2), axis=1), rtol=1e-6)
    bg = export_bedgraph(res, tmp_path / "m.bedgraph", target="q", strand="-")
    vals = [float(ln.split("\t")[3]) for ln in bg.read_text().splitlines()[1:]]
    n1 = TrackGeometry.from_attrs(res.attrs).n_bins(LENGTHS["chr1"])
    np.testing.assert_allclose(vals[:n1], minus[0, :n1, 1], rtol=1e-5)
    pts, _ = track_points(res, "chr2", strand="-", start=100, end=140)
    np.testing.assert_allclose(pts["y"].to_numpy(), minus[1, 25:35, 0], rtol=1e-6)  # N-padded: bin g = [4g, 4g + 4)
    from interpretome.viz.tracks_long import plot_track

    fig = plot_track(res, "chr2", pyramid=track_pyramid(res, factor=4, min_groups=4), width=200, height=60)
    assert fig.axes  # a two-strand track draws (its first strand)


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
    bed12 = tmp_path / "r.bed12"
    bed12.write_text("chr1\t10\t50\ttx\t0\t+\t10\t50\t0\t2\t5,10\t0,30\n")
    from interpretome.storage.genome import as_regions

    assert as_regions(str(bed12)) == [Region("chr1", 10, 50, "tx", "+")]  # column 6: the region's strand
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
    assert levels == [1, 2, 3, 4, 5]
    assert "genome_position_l1" not in pyr.coords  # no geometry attrs: no genome coordinate to give
    for lv in levels:
        g = 3 ** lv
        n = -(-1000 // g)
        assert pyr.sizes[f"bin_l{lv}"] == n
        padded = np.concatenate([track, np.full((2, n * g - 1000, 2), np.nan, np.float32)], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups
            want_min = np.nanmin(padded.reshape(2, n, g, 2), axis=2)
            want_max = np.nanmax(padded.reshape(2, n, g, 2), axis=2)
        lvl = pyramid_level(pyr, lv)
        assert set(lvl.data_vars) == {f"track_min_l{lv}", f"track_max_l{lv}"} and set(lvl.dims) == {
            "contig", f"bin_l{lv}", "target"}  # one level only: no other level's axis
        np.testing.assert_array_equal(lvl[f"track_min_l{lv}"].values, want_min)
        np.testing.assert_array_equal(lvl[f"track_max_l{lv}"].values, want_max)
        np.testing.assert_array_equal(pyr[f"track_min_l{lv}"].values, want_min)  # same variable in the whole pyramid
    with pytest.raises(ValueError, match="has levels"):
        pyramid_level(pyr, 6)


def _loop_group_centres(starts, centres_of_row, n_rows_bins, g):
    """Plain loop: each level bin's genome centre per row (midway between its first and last bin centres, floor)."""
    n_max = max(n_rows_bins)
    out = np.full((len(starts), -(-n_max // g)), -1, np.int64)
    for i, nb in enumerate(n_rows_bins):
        for j in range(-(-nb // g)):
            first, last = j * g, min(j * g + g, nb) - 1
            out[i, j] = starts[i] + (centres_of_row(i, first) + centres_of_row(i, last)) // 2
    return out


def test_track_pyramid__levels_carry_genome_positions(genome):
    """Every level's bins carry the 0-based genome centre; a shared bin axis gives bin_lK to sel by position."""
    path, seqs = genome
    ds = read_genome(path, position_chunk=100)
    # whole contigs, N-padded profile model: bin k = [4k, 4k + 4) in every row, so bin_lK is shared
    res = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, merge=False).compute()
    assert res["bin"].values[0] == 2  # the track's own shared genome axis (bin centres)
    pyr = track_pyramid(res, factor=3, min_groups=2, chunk=7)
    geom = TrackGeometry.from_attrs(res.attrs)
    lengths = [int(e - s) for s, e in zip(res["region_start"].values, res["region_end"].values)]
    n_rows = [geom.n_bins(n) for n in lengths]
    direct = res["track_prediction"].values
    assert len(pyr.attrs["pyramid_levels"]) >= 3
    for lv in pyr.attrs["pyramid_levels"]:
        g = 3 ** lv
        gp = pyr[f"genome_position_l{lv}"]
        assert gp.dims == ("contig", f"bin_l{lv}")
        want = _loop_group_centres([0] * len(lengths), lambda i, b: 4 * b + 2, n_rows, g)
        np.testing.assert_array_equal(gp.values, want)
        # bin_lK: the level-bin centres over the full bin axis, as a plain loop over the track's bin coordinate
        c = res["bin"].values
        np.testing.assert_array_equal(pyr[f"bin_l{lv}"].values, [
            (c[j * g] + c[min(j * g + g, len(c)) - 1]) // 2 for j in range(pyr.sizes[f"bin_l{lv}"])])
        # select by genome position: the level bin holding base p is the direct reduction of its bins
        p = 123
        sel = pyr[f"track_max_l{lv}"].sel(contig="chr1").sel({f"bin_l{lv}": p}, method="nearest")
        j = (p // 4) // g  # bin p // 4 holds base p; level bin j holds that bin
        assert int(sel[f"bin_l{lv}"]) == int(pyr[f"bin_l{lv}"].values[j])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_array_equal(sel.values, np.nanmax(direct[0, j * g:(j + 1) * g], axis=0))
    # regions with different starts: no shared axis, but each row's centres are still exact
    regs = predict_tiles(ds, PROFILE, window=96, stride=40, bin_size=4, crop=8, merge=False,
                         regions=["chr1:201-700", "chr2:18-300"]).compute()
    rp = track_pyramid(regs, factor=4, min_groups=2)
    assert "bin_l1" not in rp.coords
    rg = TrackGeometry.from_attrs(regs.attrs)
    starts = [int(s) for s in regs["region_start"].values]
    rl = [int(e) - s for s, e in zip(starts, regs["region_end"].values)]
    for lv in rp.attrs["pyramid_levels"]:
        want = _loop_group_centres(starts, lambda i, b: int(rg.centres(rl[i], [b])[0]), [rg.n_bins(n) for n in rl],
                                   4 ** lv)
        np.testing.assert_array_equal(rp[f"genome_position_l{lv}"].values, want)
    # chr1:201-700, N-padded: bin 0 is bases 200..203, so level-1 bin 0 (bins 0..3, bases 200..215) is centred
    # midway between the bin centres 202 and 214: base 208 (0-based); level-1 bin 1: 224
    np.testing.assert_array_equal(rp["genome_position_l1"].values[0, :2], [208, 224])


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
                               "region_start": ("contig", [0]), "region_end": ("contig", [n]), "target": ["t"],
                               "bin": np.arange(n)},  # bin k centred on base k
                       attrs=geom.to_attrs())
    write_dataset(track, tmp_path / "s.zarr", "tracks", task="tiled_prediction", params={})
    write_dataset(track_pyramid(open_group(tmp_path / "s.zarr", "tracks")), tmp_path / "s.zarr", "pyr",
                  task="track_pyramid", params={})
    tr, pyr = open_group(tmp_path / "s.zarr", "tracks"), open_group(tmp_path / "s.zarr", "pyr")
    assert "track_min_l3" in pyr and pyr["bin_l4"].values[0] == (0 + 255) // 2 and pyr["genome_position_l4"].values[0, -1] == (
        (390 * 256) + (n - 1)) // 2  # bin k centred on base k: the last, partial group's centre
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

    from interpretome.engine.cluster import InProcess

    path, seqs = genome
    with InProcess("threads"):  # torch at one intra-op thread, as on the workers
        local = predict_tiles(read_genome(path, position_chunk=100), SCALAR, window=100, stride=30,
                              merge=False)["track_prediction"].values
    gtf = tmp_path / "g.gtf"
    gtf.write_text('chr1\tt\tgene\t101\t200\t.\t-\t.\tgene_id "g1"; gene "ONE";\n'
                   'chr1\tt\tgene\t601\t700\t.\t+\t.\tgene_id "g2";\n')
    store = tmp_path / "s.zarr"
    run_tiles(path, SCALAR, store, window=100, stride=30, annotation=gtf, position_chunk=100, bin_chunk=5,
              client=client2, log=lambda m: None)
    track = open_group(store, "tracks")
    # 2 workers == local threads, to float32 rounding: torch's CPU convolutions are not bit-reproducible across
    # processes (one element in 192 was seen 1 ulp apart, at one intra-op thread on both sides)
    np.testing.assert_allclose(track["track_prediction"].values, local, rtol=1e-6, atol=0)
    pyr = open_group(store, "tracks_pyramid")
    np.testing.assert_array_equal(pyramid_level(pyr, 1)["track_max_l1"].values[0, :2, 0],
                                  np.nanmax(track["track_prediction"].values[0, :8, 0].reshape(2, 4), axis=1))
    assert pyr["genome_position_l1"].dims == ("contig", "bin_l1")  # stored with its genome coordinate
    assert (pyr["genome_position_l1"].values[0, :2] > 0).all()
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
    first = open_group(store, "tracks")["track_prediction"].values
    again = write_dataset(res, store, "tracks", task="tiled_prediction", params={"w": 100})
    assert again.computed_chunks == 0
    np.testing.assert_array_equal(open_group(store, "tracks")["track_prediction"].values, first)  # kept as stored
    # a fresh computation, perhaps in other processes (a session client may be the default scheduler): torch's
    # CPU convolutions agree across processes to float32 rounding, not always to the bit
    np.testing.assert_allclose(first, res["track_prediction"].values, rtol=1e-6, atol=0)


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
                 "--region", "chr2", "--annotation", str(gtf), "--strand", "mean", "--figures",
                 str(tmp_path / "figs"), *model]) == 0
    track = open_group(store, "tracks")
    assert list(track["contig"].values) == ["chr1:1-600", "chr2"]
    want = _loop_scalar(seqs["chr1"][:600], 100, 50, "mean")
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


# --- strand="auto" and exons ---------------------------------------------------------------------------------

def _bed12(tmp_path):
    """chr1: gene PLUS (+) over 0-300 (one block), gene MINUS (-) over 500-900 (exons 500-560, 700-900)."""
    path = tmp_path / "genes.bed12"
    path.write_text("chr1\t0\t300\tPLUS\t0\t+\t0\t300\t0\t1\t300,\t0,\n"
                    "chr1\t500\t900\tMINUS\t0\t-\t500\t900\t0\t2\t60,200,\t0,200,\n")
    return path


def test_predict_tiles__auto_strand_equals_each_region_alone(genome, tmp_path):
    """strand='auto': each region on its gene's strand (region_strand), equal to that region alone with the
    explicit strand; the minus-strand gene's region equal to reverse-complement-and-flip by hand."""
    from interpretome.storage.annotation import read_annotation

    path, seqs = genome
    ds = read_genome(path, position_chunk=64)
    genes = read_annotation(_bed12(tmp_path))
    regions = ["chr1:1-250", "chr1:601-800"]
    kw = dict(window=96, stride=40, bin_size=4, crop=8, pad="none", merge=False)
    res = predict_tiles(ds, PROFILE, regions=regions, strand="auto", annotation=genes, **kw).compute()
    assert list(res["region_strand"].values) == ["+", "-"] and "strand" not in res.dims
    assert res.attrs["track_strand"] == "auto"
    for i, (r, sd) in enumerate(zip(regions, "+-")):
        alone = predict_tiles(ds, PROFILE, regions=[r], strand=sd, **kw).compute()
        n = alone.sizes["bin"]
        np.testing.assert_array_equal(res["track_prediction"].values[i, :n], alone["track_prediction"].values[0])
    want = _loop_profile(seqs["chr1"][600:800], 96, 40, "-")  # by hand: rc each window, predict, flip back
    np.testing.assert_allclose(res["track_prediction"].values[1, :len(want)], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"'chr2' overlaps no stranded gene.*--strand \+/-/both"):
        predict_tiles(ds, PROFILE, regions=["chr2"], strand="auto", annotation=genes, **kw)
    with pytest.raises(ValueError, match="crop == crop_right"):  # a minus region needs a mirrorable crop
        predict_tiles(ds, PROFILE, regions=regions, strand="auto", annotation=genes,
                      **(kw | {"crop_right": 4, "window": 92}))


def test_run_tiles__auto_strand_and_exons_reach_the_figures(genome, tmp_path, monkeypatch):
    """--strand auto through the job, and the BED12 exons stored with the track and handed to the figures."""
    import interpretome.jobs.genome as jg
    from interpretome.viz.tracks_long import plot_track

    path, _ = genome
    bed12 = _bed12(tmp_path)
    store = tmp_path / "s.zarr"
    jg.run_tiles(path, SCALAR, store, window=100, stride=50, regions=["chr1:1-250", "chr1:551-900"],
                 annotation=bed12, strand="auto", pyramid=False, log=lambda m: None)
    track = open_group(store, "tracks")
    assert list(track["region_strand"].values) == ["+", "-"]
    seen = []

    def spy(*a, **kw):
        seen.append(kw.get("exons"))
        return plot_track(*a, **kw)

    monkeypatch.setattr(jg, "plot_track", spy)
    monkeypatch.setattr(jg, "track_html", lambda *a, **kw: seen.append(kw.get("exons")) or tmp_path / "x.html")
    jg.render_tiles(store, "tracks", tmp_path / "figs")
    assert len(seen) == 6
    for ex in seen:
        assert sorted(zip(ex["start"], ex["end"])) == [(0, 300), (500, 560), (700, 900)]
    fig = plot_track(track, "chr1:551-900", exons=seen[0], width=100, height=50)
    boxes = [p for p in fig.axes[0].patches if p.get_gid() == "exon"]
    assert sorted((b.get_x(), b.get_x() + b.get_width()) for b in boxes) == [(550, 560), (700, 900)]


# --- overlapping tiles through a shared trunk (engine.tile_trunk) ------------------------------------------

def test_split_trunk__reach_pool_and_refusals():
    """The reference CNN splits at its global max (reach 7 + 4 each side), bpnet_tower's counts head at its
    mean (10 + 2 + 4 + 8); a profile output and a strided pool in the trunk are refused, and a runtime whose
    model cannot be split warns once and gets no plan. ~0.1 s."""
    import torch.nn as nn

    from interpretome.engine.tile_trunk import NotSplittable, split_trunk, trunk_plan
    from interpretome.zoo import bpnet_tower

    s = split_trunk(reference_cnn(channels=8, outputs=2).eval())
    assert (s.pool, s.keepdim, s.left, s.right) == ("max", True, 11, 11)
    x = torch.from_numpy(np.eye(5, 4, dtype=np.float32)[random_dna(3, 60, seed=1)].transpose(0, 2, 1).copy())
    with torch.no_grad():
        ref = reference_cnn(channels=8, outputs=2).eval()(x)
        np.testing.assert_allclose(s.head(s.trunk(x).amax(dim=-1, keepdim=True)).numpy(), ref.numpy(), rtol=1e-6)
    t = split_trunk(bpnet_tower(channels=4, layers=3, output="counts"))
    assert (t.pool, t.keepdim, t.left, t.right) == ("mean", False, 24, 24)
    with pytest.raises(NotSplittable, match=r"getattr on the trunk reads its \.shape"):
        split_trunk(bpnet_tower(channels=4, layers=3, output="profile"))
    pooled = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.MaxPool1d(2), nn.AdaptiveMaxPool1d(1), nn.Flatten())
    with pytest.raises(NotSplittable, match="MaxPool1d"):
        split_trunk(pooled)

    class FakeRuntime:
        model = pooled
        locality = type("Plan", (), {"gm": torch.fx.symbolic_trace(pooled)})()
        spec = SCALAR.with_options(kwargs={"channels": 3, "outputs": 2})

    with pytest.warns(RuntimeWarning, match="one forward per window.*MaxPool1d"):
        assert trunk_plan(FakeRuntime()) is None


def _per_window(model, seq: str, starts, window: int, strand: str) -> np.ndarray:
    with torch.no_grad():
        f = model(torch.stack([_onehot(seq[s:s + window]) for s in starts])).numpy()
        r = model(torch.stack([_onehot(_rc(seq[s:s + window])) for s in starts])).numpy()
    return {"+": f, "-": r, "both": np.stack([f, r], axis=-1), "mean": (f + r) / 2}[strand]


@pytest.mark.parametrize("strand", ["+", "-", "both"])
def test_predict_tiles__shared_trunk_equals_per_window_forwards(genome, strand, monkeypatch):
    """Stride 10, window 200: the shared-trunk path (checked to run) equals per-window forwards of the reference
    CNN (global max) and of a residual dilated tower (bpnet_tower counts: global mean) at float32 rounding, on
    whole contigs in one task each and a region in tasks of 5 windows; the tail window runs alone. ~3 s each
    on a loaded 2-core machine."""
    import interpretome.tasks.tiles as tiles_mod
    from interpretome.zoo import bpnet_tower, zoo_spec

    calls = []
    real = tiles_mod.trunk_window_outputs
    monkeypatch.setattr(tiles_mod, "trunk_window_outputs", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    path, seqs = genome
    whole = ["chr1:1-1003", "chr2:1-517"]  # chrM (130 bp) is shorter than the windows
    tower = zoo_spec("bpnet_tower", channels=4, layers=3, output="counts", options={"batch_size": 16})
    for spec, model, window, stride in [(SCALAR, reference_cnn(channels=8, outputs=2).eval(), 200, 10),
                                        (tower, bpnet_tower(channels=4, layers=3, output="counts"), 256, 8)]:
        for pc, bc, regions in [(1 << 20, None, whole), (64, 5, ["chr1:101-900"])]:
            res = predict_tiles(read_genome(path, position_chunk=pc), spec, window=window, stride=stride,
                                strand=strand, bin_chunk=bc, regions=regions, merge=False)
            # in this process (where the patched trunk_window_outputs counts), whatever client the session left
            got_all = res["track_prediction"].compute(scheduler="threads").values
            for i, name in enumerate(res["contig_name"].values):
                seq = seqs[name]
                r0, r1 = int(res["region_start"].values[i]), int(res["region_end"].values[i])
                seq = seq[r0:r1]
                starts = list(range(0, len(seq) - window + 1, stride))
                if starts[-1] + window < len(seq):
                    starts.append(len(seq) - window)
                want = _per_window(model, seq, starts, window, strand)
                got = got_all[i, :len(starts)]
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
                assert np.isnan(got_all[i, len(starts):]).all()
    assert sum(calls) > 0
