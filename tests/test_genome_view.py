"""Genome results selected by (contig name, 0-based genome position): off-by-one checks per layout.

Every check is against a plain loop: editing exactly FASTA base ``p`` of a window cut from the
sequence by hand (ISM), or the prediction of the window centred at ``p`` / the profile bin
centred at ``p`` (tiles).
"""

from __future__ import annotations

import numpy as np
import pytest

from interpretome import genome_view
from interpretome.datasets import random_dna
from interpretome.engine.models import ModelSpec, get_runtime
from interpretome.storage.genome import read_genome
from interpretome.storage.readers import decode_bases, encode_bases, write_fasta
from interpretome.storage.store import open_group, write_dataset
from interpretome.tasks.genome_perturb import genome_ism, genome_sweep
from interpretome.tasks.tiles import predict_tiles

SPEC = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 8, "outputs": 2},
                 targets=("a", "b"), batch_size=32)
PROFILE = ModelSpec(factory="interpretome.datasets:profile_cnn",
                    kwargs={"channels": 8, "outputs": 2, "crop": 8, "bin_size": 4}, targets=("p", "q"), batch_size=16)
W = 60


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    seqs = {"chr1": decode_bases(random_dna(1, 400, seed=3)[0]), "chr2": decode_bases(random_dna(1, 150, seed=4)[0])}
    path = write_fasta(tmp_path_factory.mktemp("g") / "g.fa", seqs)
    return path, {k: encode_bases(v) for k, v in seqs.items()}


def _ism_loop(seq: np.ndarray, p: int) -> np.ndarray:
    """(4, T): the context window centred on base p (shifted inward at the ends), base p set to A, C, G, T."""
    cs = min(max(p - W // 2, 0), len(seq) - W)
    ctx = seq[cs:cs + W]
    edited = np.repeat(ctx[None], 4, axis=0)
    edited[np.arange(4), p - cs] = np.arange(4)
    rt = get_runtime(SPEC)
    return rt.predict(edited) - rt.predict(ctx[None])


def _check_ism(view, codes, picks):
    for contig, p in picks:
        got = view["genome_ism_delta"].sel(contig=contig, position=p).values
        np.testing.assert_allclose(got, _ism_loop(codes[contig], p), rtol=1e-5, atol=1e-6)
        assert got[codes[contig][p]].tolist() == [0.0, 0.0]  # the reference base: exactly base p
        assert int(view["position"].sel(contig=contig, position=p)) == p


def test_genome_view__lazy(genome, no_compute):
    path, _ = genome
    ds = read_genome(path, position_chunk=64)
    res = genome_ism(ds, SPEC, input_length=W, regions=["chr1:101-130", "chr2:11-20", "chr1:121-160"])
    sel = res.genome.sel(contig="chr1", position=125)["genome_ism_delta"]
    assert sel.dims == ("base", "target") and sel.chunks is not None  # still a dask array
    tiles = predict_tiles(ds, SPEC, window=W, stride=20, regions=["chr1:201-300", "chr2"])
    assert genome_view(tiles)["track_prediction"].chunks is not None


def test_genome_view__single_region(genome):
    path, codes = genome
    res = genome_ism(read_genome(path, position_chunk=64), SPEC, input_length=W, regions=["chr1:101-120"])
    view = genome_view(res)
    assert view.sizes["site"] == 20 and list(view["position"].values) == list(range(100, 120))
    assert set(view["contig"].values) == {"chr1"} and set(view["region"].values) == {"chr1:101-120"}
    np.testing.assert_array_equal(view["offset"].values, np.arange(20))
    with pytest.raises(KeyError):
        view.sel(contig="chr1", position=120)  # past the region (1-based end 120 = 0-based 119)
    _check_ism(view.compute(), codes, [("chr1", 100), ("chr1", 111), ("chr1", 119)])
    # a DataArray (no Dataset attrs) gives the same view, as does the accessor
    np.testing.assert_array_equal(genome_view(res["genome_ism_delta"]).sel(contig="chr1", position=111).values,
                                  view["genome_ism_delta"].sel(contig="chr1", position=111).values)
    np.testing.assert_array_equal(res.genome.sel(contig="chr1", position=111)["genome_ism_delta"].values,
                                  view["genome_ism_delta"].sel(contig="chr1", position=111).values)


def test_genome_view__regions_on_different_contigs(genome):
    path, codes = genome
    res = genome_ism(read_genome(path, position_chunk=64), SPEC, input_length=W,
                     regions=["chr2:21-30", "chr1:301-315"], position_chunk=4)
    assert res.attrs["position_origin"] == "region_start"  # offsets along position: genome_view selects genome
    view = genome_view(res).compute()
    assert list(view["contig"].values) == ["chr1"] * 15 + ["chr2"] * 10  # FASTA order, then position
    assert list(view["position"].values) == list(range(300, 315)) + list(range(20, 30))
    _check_ism(view, codes, [("chr1", 300), ("chr1", 314), ("chr2", 20), ("chr2", 29)])
    arr = genome_view(res["genome_ism_reference"]).compute()  # origin told by genome_position, attrs gone
    np.testing.assert_array_equal(arr.values, view["genome_ism_reference"].values)
    assert list(arr["position"].values) == list(view["position"].values)
    with pytest.raises(KeyError):
        view.sel(contig="chr2", position=300)


def test_genome_view__two_regions_different_starts_one_contig(genome):
    path, codes = genome
    regions = ["chr1:141-170", "chr1:101-150", "chr2:1-5"]  # overlapping on chr1, listed out of order
    views = []
    for pc, c in [(64, None), (37, 7)]:  # chunk-invariant
        res = genome_ism(read_genome(path, position_chunk=pc), SPEC, input_length=W, regions=regions,
                         position_chunk=c)
        views.append(genome_view(res).compute())
    view = views[0]
    np.testing.assert_array_equal(views[1]["genome_ism_delta"].values, view["genome_ism_delta"].values)
    # one site per base: chr1 100..169 once (the overlap 140..149 from the region reaching farther), then chr2
    assert list(view["position"].values) == list(range(100, 170)) + list(range(0, 5))
    assert view.indexes["site"].is_unique
    assert list(view["region"].sel(site=[("chr1", 139), ("chr1", 140), ("chr1", 150)]).values) == [
        "chr1:101-150", "chr1:141-170", "chr1:141-170"]
    assert int(view["offset"].sel(contig="chr1", position=150)) == 10
    assert int(view["offset"].sel(contig="chr1", position=139)) == 39
    _check_ism(view, codes, [("chr1", 100), ("chr1", 145), ("chr1", 150), ("chr1", 169), ("chr2", 0), ("chr2", 4)])
    # the overlap holds the same values in both regions (the context depends only on the genome position)
    both = res["genome_ism_delta"].compute()
    np.testing.assert_array_equal(both.isel(contig=0, position=slice(0, 10)).values,
                                  both.isel(contig=1, position=slice(40, 50)).values)


def test_genome_view__sweep_span_start(genome):
    path, codes = genome
    res = genome_sweep(read_genome(path), SPEC, input_length=W, regions=["chr1:51-70", "chr2:31-40"], windows=[3],
                       mode="mask", stride=2)
    view = genome_view(res).compute()
    assert list(view["position"].sel(contig="chr2").values) == list(range(30, 40, 2))
    seq, rt = codes["chr2"], get_runtime(SPEC)
    p = 34  # span [34, 37) masked (N) in the context centred on the span
    cs = min(max(p + 1 - W // 2, 0), len(seq) - W)
    ctx = seq[cs:cs + W].copy()
    ref = rt.predict(ctx[None])
    ctx[p - cs:p - cs + 3] = 4
    np.testing.assert_allclose(view["genome_sweep_delta_mean"].sel(contig="chr2", position=p).values[0],
                               (rt.predict(ctx[None]) - ref)[0], rtol=1e-5, atol=1e-6)
    # overlapping regions: the span [68, 71) does not fit chr1:51-70 (NaN there) but fits chr1:61-90
    two = genome_sweep(read_genome(path), SPEC, input_length=W, regions=["chr1:51-70", "chr1:61-90"], windows=[3],
                       mode="mask").compute()
    assert np.isnan(two["genome_sweep_delta_mean"].isel(contig=0, position=18)).all()
    tv = genome_view(two)
    assert list(tv["position"].values) == list(range(50, 90)) and tv.indexes["site"].is_unique
    np.testing.assert_array_equal(tv["genome_sweep_delta_mean"].sel(contig="chr1", position=68).values,
                                  two["genome_sweep_delta_mean"].isel(contig=1, position=8).values)
    assert np.isfinite(tv["genome_sweep_delta_mean"].sel(contig="chr1", position=68).values).all()


def test_genome_view__tiles_scalar_window_centred_at_p(genome, tmp_path):
    path, codes = genome
    ds = read_genome(path, position_chunk=100)
    res = predict_tiles(ds, SPEC, window=W, stride=20, regions=["chr2", "chr1:201-300"])  # merged into ds
    view = genome_view(res).compute()
    rt = get_runtime(SPEC)
    for contig, p in [("chr1", 230), ("chr1", 270), ("chr2", 30), ("chr2", 110), ("chr2", 120)]:
        x = codes[contig][p - W // 2:p - W // 2 + W]  # the window centred at p (start + W // 2 = p)
        np.testing.assert_allclose(view["track_prediction"].sel(contig=contig, position=p).values,
                                   rt.predict(x[None])[0], rtol=1e-5, atol=1e-6)
    assert list(view["position"].sel(contig="chr2").values) == [30, 50, 70, 90, 110, 120]  # tail window 90..150
    with pytest.raises(KeyError):
        view.sel(contig="chr1", position=231)
    # from a store: same view
    write_dataset(predict_tiles(ds, SPEC, window=W, stride=20, regions=["chr2", "chr1:201-300"], merge=False),
                  tmp_path / "t.zarr", "tracks", task="tiled_prediction", params={})
    again = genome_view(open_group(tmp_path / "t.zarr", "tracks")).compute()
    np.testing.assert_array_equal(again["track_prediction"].values, view["track_prediction"].values)
    assert list(again["position"].values) == list(view["position"].values)


def test_genome_view__tiles_profile_bin_centred_at_p(genome):
    path, codes = genome
    ds = read_genome(path, position_chunk=64)
    # 160 bp region, pad N: padded windows [192, 288) and [272, 368), each bin covered once (stride = 80 bp out)
    res = predict_tiles(ds, PROFILE, window=96, stride=80, bin_size=4, crop=8, regions=["chr1:201-360", "chr2"],
                        bin_chunk=7, merge=False)
    view = genome_view(res).compute()
    rt = get_runtime(PROFILE)
    seq = codes["chr1"]
    want = {}
    for ws in (192, 272):
        out = rt.predict(seq[ws:ws + 96][None])[0]  # (T, 20): bin k = bases [ws + 8 + 4k, ws + 12 + 4k)
        for k in range(out.shape[1]):
            want[ws + 8 + 4 * k + 2] = out[:, k]
    assert list(view["position"].sel(contig="chr1").values) == sorted(want) == list(range(202, 360, 4))
    for p in (202, 206, 286, 290, 358):
        np.testing.assert_allclose(view["track_prediction"].sel(contig="chr1", position=p).values, want[p],
                                   rtol=1e-5, atol=1e-6)
        b = view.sel(contig="chr1", position=p)
        assert int(b["bin_start"]) == p - 2 and int(b["bin_end"]) == p + 2
    with pytest.raises(KeyError):
        view.sel(contig="chr1", position=203)  # not a bin centre
    # whole chr2 padded with N: centres 2, 6, ... up to the last base's bin, every one inside the contig
    c2 = view["position"].sel(contig="chr2").values
    assert c2[0] == 2 and c2[-1] < 150 and (np.diff(c2) == 4).all()


def test_predict_tiles__bin_is_the_genome_centre_when_rows_share_it(genome):
    path, codes = genome
    ds = read_genome(path, position_chunk=64)
    # whole contigs, profile model padded with N: bin k = bases [4k, 4k + 4) in every row, bin = 4k + 2
    res = predict_tiles(ds, PROFILE, window=96, stride=80, bin_size=4, crop=8, merge=False)
    assert res["bin"].values[0] == 2 and (np.diff(res["bin"].values) == 4).all()
    assert "0-based genome position of the bin centre" in res["bin"].attrs["description"]
    view = genome_view(res).compute()
    rt = get_runtime(PROFILE)
    for contig, p in [("chr1", 2), ("chr1", 206), ("chr1", 398), ("chr2", 146)]:
        got = res["track_prediction"].sel(contig=contig, bin=p).values
        np.testing.assert_array_equal(got, view["track_prediction"].sel(contig=contig, position=p).values)
        # plain loop: windows start at genome -8 + 80 m (N past the ends), bin j of one = [80 m + 4 j, + 4)
        padded = np.concatenate([np.full(8, 4, np.uint8), codes[contig], np.full(96, 4, np.uint8)])
        m, j = (p - 2) // 80, ((p - 2) % 80) // 4
        want = rt.predict(padded[80 * m:80 * m + 96][None])[0][:, j]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a scalar model's tail window (chr2's last bin is centred on 120, chr1's bin 5 on 130): no shared bin axis
    scalar = predict_tiles(ds, SPEC, window=W, stride=20, merge=False)
    assert "bin" not in scalar.coords
    # regions with different starts: none either
    assert "bin" not in predict_tiles(ds, PROFILE, window=96, stride=80, bin_size=4, crop=8,
                                      regions=["chr1:201-360", "chr2"], merge=False).coords
