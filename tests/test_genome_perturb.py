"""Sweeps and ISM along contigs: each position in its genomic context window."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from interpretome.datasets import random_dna
from interpretome.engine import rng
from interpretome.engine.models import ModelSpec, get_runtime
from interpretome.errors import InputError
from interpretome.storage.alphabet import decode_bases, encode_bases
from interpretome.storage.genome import read_genome
from interpretome.storage.readers import sequences_to_dataset, write_fasta
from interpretome.tasks.genome_perturb import genome_ism, genome_sweep
from interpretome.tasks.ism import saturation_mutagenesis
from interpretome.tasks.perturb import perturbation_sweep

SPEC = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 8, "outputs": 2},
                 targets=("a", "b"), batch_size=32)
W = 60


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    seqs = {"chr1": decode_bases(random_dna(1, 400, seed=3)[0]), "chr2": decode_bases(random_dna(1, 150, seed=4)[0])}
    seqs["chr1"] = seqs["chr1"][:200] + "NNNNN" + seqs["chr1"][205:]
    path = write_fasta(tmp_path_factory.mktemp("g") / "g.fa", seqs)
    return path, {k: encode_bases(v) for k, v in seqs.items()}


def _ctx_start(p, length, span, step):
    """Independent statement of the context rule: centre the window on the group's edit span."""
    g0 = (p // step) * step
    centre = g0 + (step - 1 + span) // 2
    return min(max(centre - W // 2, 0), length - W)


@pytest.mark.parametrize("step", [1, 4])
def test_genome_ism__equals_ism_of_extracted_windows(genome, step):
    path, codes = genome
    ds = read_genome(path, position_chunk=64)
    regions = ["chr1:181-240", "chr2:1-25", "chr2:131-150"]  # across the N run, both contig ends
    res = genome_ism(ds, SPEC, input_length=W, regions=regions, context_step=step, position_chunk=7,
                     merge=False).compute()
    for i, (contig, s0, s1) in enumerate([("chr1", 180, 240), ("chr2", 0, 25), ("chr2", 130, 150)]):
        seq = codes[contig]
        starts = sorted({_ctx_start(p, len(seq), 1, step) for p in range(s0, s1)})
        ctx = sequences_to_dataset({f"c{cs}": decode_bases(seq[cs:cs + W]) for cs in starts})
        ref = saturation_mutagenesis(ctx, SPEC, merge=False).compute()
        for p in range(s0, s1):
            cs = _ctx_start(p, len(seq), 1, step)
            want = ref["ism_delta"].sel(sequence=f"c{cs}").values[p - cs]
            np.testing.assert_allclose(res["genome_ism_delta"].values[i, p - s0], want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(res["genome_ism_reference"].values[i, p - s0],
                                       ref["ism_reference"].sel(sequence=f"c{cs}").values, rtol=1e-5, atol=1e-6)
        assert np.isnan(res["genome_ism_delta"].values[i, s1 - s0:]).all()


def test_genome_sweep__mask_equals_sweep_of_extracted_windows(genome):
    path, codes = genome
    ds = read_genome(path, position_chunk=50)
    res = genome_sweep(ds, SPEC, input_length=W, regions=["chr1:101-300"], windows=[1, 4], stride=3, mode="mask",
                       position_chunk=11, merge=False).compute()
    seq = codes["chr1"]
    positions = range(100, 300, 3)
    starts = sorted({_ctx_start(p, len(seq), 4, 1) for p in positions})
    ctx = sequences_to_dataset({f"c{cs}": decode_bases(seq[cs:cs + W]) for cs in starts})
    ref = perturbation_sweep(ctx, SPEC, windows=[1, 4], mode="mask", merge=False).compute()
    for j, p in enumerate(positions):
        cs = _ctx_start(p, len(seq), 4, 1)
        for w, k in enumerate([1, 4]):
            got = res["genome_sweep_delta_mean"].values[0, w, j]
            if p + k > 300:
                assert np.isnan(got).all()
                continue
            want = ref["sweep_delta_mean"].sel(sequence=f"c{cs}").values[w, p - cs]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_genome_sweep__random_uses_genome_position_keys(genome):
    """Random draws keyed by (seed, contig index, k, genome position, replicate, offset): a plain loop."""
    path, codes = genome
    ds = read_genome(path)
    res = genome_sweep(ds, SPEC, input_length=W, regions=["chr2:41-60"], windows=[3], replicates=3, seed=5,
                       merge=False).compute()
    rt = get_runtime(SPEC)
    seq = codes["chr2"]
    for j, p in enumerate(range(40, 60)):
        cs = _ctx_start(p, len(seq), 3, 1)
        ctx = seq[cs:cs + W]
        base = rt.predict(ctx[None])[0]
        edited = np.repeat(ctx[None], 3, axis=0)
        for r in range(3):
            edited[r, p - cs:p - cs + 3] = rng.random_bases(5, 1, 3, p, r, np.arange(3))  # contig index 1 = chr2
        delta = rt.predict(edited) - base
        if p + 3 > 60:  # the span leaves the region: not evaluated
            assert np.isnan(res["genome_sweep_delta_mean"].values[0, 0, j]).all()
            continue
        np.testing.assert_allclose(res["genome_sweep_delta_mean"].values[0, 0, j], delta.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res["genome_sweep_delta_std"].values[0, 0, j], delta.std(0), rtol=1e-4, atol=1e-6)
    # the same genome position gets the same draws inside another region and chunking
    other = genome_sweep(ds, SPEC, input_length=W, regions=["chr2:31-70"], windows=[3], replicates=3, seed=5,
                         position_chunk=4, merge=False).compute()
    np.testing.assert_allclose(other["genome_sweep_delta_mean"].values[0, 0, 10:28],
                               res["genome_sweep_delta_mean"].values[0, 0, :18], rtol=1e-6, atol=1e-7)


def test_genome_sweep__whole_contigs_chunk_invariant(genome):
    path, _ = genome
    runs = [genome_sweep(read_genome(path, position_chunk=pc), SPEC, input_length=W, windows=[2], stride=5,
                         mode="shuffle", replicates=2, position_chunk=c, merge=False)["genome_sweep_delta_mean"].values
            for pc, c in [(1 << 20, None), (37, 3), (100, 9)]]
    assert runs[0].shape == (2, 1, 80, 2)
    assert np.isfinite(runs[0][0]).all() and np.isnan(runs[0][1, :, 30:]).all()
    for r in runs[1:]:
        np.testing.assert_allclose(r, runs[0], rtol=1e-6, atol=1e-7)


@pytest.mark.graph
def test_genome_perturb__lazy(genome):
    path, _ = genome
    ds = read_genome(path, position_chunk=64)
    s = genome_sweep(ds, SPEC, input_length=W, windows=[1, 3])
    i = genome_ism(ds, SPEC, input_length=W, regions=["chr1:1-100"])
    for v in ("genome_sweep_delta_mean", "genome_sweep_delta_std", "genome_sweep_reference"):
        assert isinstance(s[v].data, da.Array)
    assert isinstance(i["genome_ism_delta"].data, da.Array)
    assert i["genome_ism_delta"].dims == ("contig", "position", "base", "target")


@pytest.mark.graph
def test_genome_perturb__bad_inputs(genome):
    path, _ = genome
    ds = read_genome(path)
    with pytest.raises(InputError, match=r"input_length 200 is longer than contig 'chr2' \(150 bp\)"):
        genome_ism(ds, SPEC, input_length=200)
    with pytest.raises(InputError, match="lies outside contig 'chr1'"):
        genome_ism(ds, SPEC, input_length=W, regions=["chr1:390-410"])
    with pytest.raises(InputError, match="names contig 'chr3'"):
        genome_sweep(ds, SPEC, input_length=W, regions=["chr3:1-10"])
    with pytest.raises(ValueError, match="needs 69 bp of context, more than input_length 60"):
        genome_sweep(ds, SPEC, input_length=W, windows=[10], context_step=60)
    with pytest.raises(ValueError, match="replicates must be 1"):
        genome_sweep(ds, SPEC, input_length=W, mode="mask", replicates=2)


# --- profile models, strands, padding ------------------------------------------------------------------

def _profile_spec(crop, bin_size):
    return ModelSpec(factory="interpretome.datasets:profile_cnn",
                     kwargs={"channels": 8, "outputs": 2, "crop": crop, "bin_size": bin_size}, targets=("p", "q"),
                     batch_size=5)


def _forward(spec, codes: np.ndarray, strand: str) -> np.ndarray:
    """Direct model call on one window of codes (N = zero column); '-': reverse complement, output flipped."""
    import torch

    from interpretome.datasets import profile_cnn

    model = profile_cnn(**spec.kwargs).eval()
    if strand == "-":
        codes = np.where(codes < 4, 3 - codes, 4)[::-1]
    x = torch.zeros(1, 4, len(codes))
    for i, c in enumerate(codes):
        if c < 4:
            x[0, c, i] = 1
    with torch.no_grad():
        out = model(x)[0].numpy().astype(np.float64)
    return out[:, ::-1] if strand == "-" else out


def _loop_reductions(diff, lo, hi, crop, bin_size, distance):
    """Plain statement of the reductions of one edit's profile change ``diff`` (T, L_out)."""
    n_out = diff.shape[1]
    c = (lo + hi) // 2
    at = np.full(diff.shape[0], np.nan)
    for k in range(n_out):
        if crop + k * bin_size <= c < crop + (k + 1) * bin_size:
            at = diff[:, k]
    near = [k for k in range(n_out) if crop + k * bin_size <= hi + distance
            and crop + (k + 1) * bin_size - 1 >= lo - distance]
    gain = np.array([max(diff[t, k] for k in near) for t in range(diff.shape[0])]) if near else np.full(2, np.nan)
    loss = np.array([max(-diff[t, k] for k in near) for t in range(diff.shape[0])]) if near else np.full(2, np.nan)
    return {"profile_at_edit": at, "profile_total": diff.sum(axis=1), "delta_gain": gain, "delta_loss": loss}


def _padded_window(seq, cs):
    """The ``W`` bases from genome start ``cs`` (may be < 0 or run past the end), N outside the contig."""
    return np.array([seq[i] if 0 <= i < len(seq) else 4 for i in range(cs, cs + W)], np.uint8)


@pytest.mark.parametrize("crop,bin_size,strand,pad", [(8, 4, "+", "N"), (10, 1, "-", "N"), (8, 4, "+", "none"),
                                                      (8, 4, "both", "N")])
def test_genome_ism__profile_reductions_equal_plain_loop(genome, crop, bin_size, strand, pad):
    path, codes = genome
    spec = _profile_spec(crop, bin_size)
    ds = read_genome(path, position_chunk=64)
    regions = ["chr1:196-215", "chr2:1-12", "chr2:141-150"]  # the N run, both contig ends
    res = genome_ism(ds, spec, input_length=W, regions=regions, bin_size=bin_size, crop=crop, delta_distance=7,
                     strand=strand, pad=pad, position_chunk=6, merge=False).compute()
    strands = ["+", "-"] if strand == "both" else [strand]
    names = ["profile_at_edit", "profile_total", "delta_gain", "delta_loss"]
    n_at_edit_nan = 0
    for i, (contig, s0, s1) in enumerate([("chr1", 195, 215), ("chr2", 0, 12), ("chr2", 140, 150)]):
        seq = codes[contig]
        for p in range(s0, s1):
            cs = p - W // 2 if pad == "N" else _ctx_start(p, len(seq), 1, 1)
            win = _padded_window(seq, cs)
            for si, sd in enumerate(strands):
                ref = _forward(spec, win, sd)
                for b in range(4):
                    edited = win.copy()
                    edited[p - cs] = b
                    want = _loop_reductions(_forward(spec, edited, sd) - ref, p - cs, p - cs, crop, bin_size, 7)
                    for n in names:
                        got = res[f"genome_ism_{n}"].values[i, p - s0, b]
                        got = got[:, si] if strand == "both" else got
                        np.testing.assert_allclose(got, want[n], rtol=1e-4, atol=1e-5, err_msg=f"{n} {contig}:{p} {b}")
                n_at_edit_nan += np.isnan(want["profile_at_edit"]).any()
    assert (n_at_edit_nan > 0) == (pad == "none")  # without padding, edits in the cropped ends have no bin
    if strand == "both":
        assert list(res["strand"].values) == ["+", "-"] and res["genome_ism_profile_total"].dims[-1] == "strand"
    assert res.attrs["pad"] == pad and res.attrs["reductions"] == ["at_edit", "total", "delta_score"]


def test_genome_sweep__profile_reductions_equal_plain_loop(genome):
    path, codes = genome
    spec = _profile_spec(8, 4)
    ds = read_genome(path, position_chunk=50)
    res = genome_sweep(ds, spec, input_length=W, regions=["chr2:121-150"], windows=[1, 4], stride=2, mode="random",
                       replicates=2, seed=3, bin_size=4, crop=8, reductions=["total", "delta_score"],
                       delta_distance=5, strand="-", position_chunk=4, merge=False).compute()
    assert "genome_sweep_profile_at_edit_mean" not in res and "genome_sweep_delta_mean" not in res
    seq = codes["chr2"]
    for j, p in enumerate(range(120, 150, 2)):
        cs = p + 4 // 2 - W // 2  # the _ctx_start rule for spans of 4, not clipped: N past the end
        win = _padded_window(seq, cs)
        ref = _forward(spec, win, "-")
        for w, k in enumerate([1, 4]):
            if p + k > 150:
                assert np.isnan(res["genome_sweep_profile_total_mean"].values[0, w, j]).all()
                continue
            per_rep = []
            for r in range(2):
                edited = win.copy()
                edited[p - cs:p - cs + k] = rng.random_bases(3, 1, k, p, r, np.arange(k))
                per_rep.append(_loop_reductions(_forward(spec, edited, "-") - ref, p - cs, p - cs + k - 1, 8, 4, 5))
            for n in ("profile_total", "delta_gain", "delta_loss"):
                vals = np.array([d[n] for d in per_rep])
                np.testing.assert_allclose(res[f"genome_sweep_{n}_mean"].values[0, w, j], vals.mean(0), rtol=1e-4,
                                           atol=1e-5)
                np.testing.assert_allclose(res[f"genome_sweep_{n}_std"].values[0, w, j], vals.std(0), rtol=1e-3,
                                           atol=1e-5)


def test_genome_ism__profile_chunk_invariant_batched_and_bad_options(genome, monkeypatch):
    """Chunking changes nothing; the model sees at most one batch of edits per call (memory bound)."""
    from interpretome.engine.models import Runtime

    path, _ = genome
    spec = _profile_spec(8, 4)
    real, sizes = Runtime.predict_edits, []

    def counted(self, ref, starts, new):
        sizes.append(len(starts))
        return real(self, ref, starts, new)

    monkeypatch.setattr(Runtime, "predict_edits", counted)
    grouped = genome_ism(read_genome(path), spec, input_length=W, regions=["chr2:1-40"], bin_size=4, crop=8,
                         context_step=8, merge=False)["genome_ism_profile_total"].compute(scheduler="threads").values
    assert max(sizes) == spec.batch_size and sum(sizes) == 3 * 40  # 8 positions x 3 edits per context
    assert np.isfinite(grouped).all()
    runs = [genome_ism(read_genome(path, position_chunk=pc), spec, input_length=W, regions=["chr2:91-150"], bin_size=4,
                       crop=8, strand="both", position_chunk=c, merge=False)["genome_ism_delta_gain"].values
            for pc, c in [(1 << 20, None), (37, 5)]]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=1e-6)
    ds = read_genome(path)
    with pytest.raises(ValueError, match="reductions .* must be distinct names from"):
        genome_ism(ds, spec, input_length=W, bin_size=4, crop=8, reductions=["peak"])
    with pytest.raises(ValueError, match="only apply to profile models: pass bin_size="):
        genome_ism(ds, spec, input_length=W, reductions=["total"])
    with pytest.raises(ValueError, match="needs crop == crop_right"):
        genome_ism(ds, spec, input_length=W, bin_size=4, crop=8, crop_right=4, strand="-")
    with pytest.raises(ValueError, match="strand 'x' is not one of"):
        genome_sweep(ds, SPEC, input_length=W, strand="x")
    from interpretome.engine.models import ModelOutputError

    with pytest.raises(ModelOutputError, match="pass bin_size="):  # a profile model read as scalar
        genome_ism(ds, spec, input_length=W, regions=["chr2:1-3"]).compute()


def test_genome_ism__sel_position_is_the_edited_genome_base(genome):
    """Off-by-one check: ``.sel(contig=, position=p)`` is the effect of editing base p (0-based) of the FASTA."""
    path, codes = genome
    ds = read_genome(path, position_chunk=64)
    res = genome_ism(ds, SPEC, input_length=W, regions=["chr1:101-120"], merge=False).compute()  # 1-based, inclusive
    assert res.attrs["position_origin"] == "genome" and list(res["position"].values) == list(range(100, 120))
    rt = get_runtime(SPEC)
    seq = codes["chr1"]
    for p in (100, 111, 119):
        cs = _ctx_start(p, len(seq), 1, 1)
        ctx = seq[cs:cs + W]
        edited = np.repeat(ctx[None], 4, axis=0)
        edited[np.arange(4), p - cs] = np.arange(4)
        want = rt.predict(edited) - rt.predict(ctx[None])
        got = res["genome_ism_delta"].sel(contig="chr1:101-120", position=p).values
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert got[seq[p]].tolist() == [0.0, 0.0]  # the reference base
    whole = genome_ism(ds, SPEC, input_length=W, regions=["chr2"], merge=False)
    assert whole["position"].values[0] == 0 and whole.sel(contig="chr2", position=149)["genome_ism_delta"].shape == (4, 2)
    # regions with different starts: offsets along position, genome coordinates in genome_position
    two = genome_ism(ds, SPEC, input_length=W, regions=["chr1:101-110", "chr2:21-25"], merge=False)
    assert two.attrs["position_origin"] == "region_start"
    np.testing.assert_array_equal(two["genome_position"].values, [np.arange(100, 110), np.arange(20, 30)])
    # ... and genome_view selects them by contig name and genome position
    from interpretome import genome_view

    view = genome_view(two).compute()
    assert view.sizes["site"] == 15 and list(view["position"].sel(contig="chr2").values) == list(range(20, 25))
    np.testing.assert_array_equal(view["genome_ism_delta"].sel(contig="chr1", position=105).values,
                                  res["genome_ism_delta"].sel(contig="chr1:101-120", position=105).values)


def test_cli__profile_genome_ism_both_strands(genome, client2, tmp_path):
    from interpretome.cli import main
    from interpretome.storage.store import group_info, open_group

    path, _ = genome
    store = str(tmp_path / "p.zarr")
    model = ["--model", "interpretome.datasets:profile_cnn", "--model-kwargs",
             '{"channels": 8, "outputs": 2, "crop": 8, "bin_size": 4}', "--targets", "p,q",
             "--scheduler", client2.scheduler.address]
    assert main(["genome-ism", str(path), "-o", store, "--input-length", str(W), "--region", "chr2:1-10",
                 "--bin-size", "4", "--crop", "8", "--reduction", "total", "--reduction", "delta_score",
                 "--delta-distance", "9", "--strand", "both", *model]) == 0
    got = open_group(store, "genome_ism")
    want = genome_ism(read_genome(path), _profile_spec(8, 4), input_length=W, regions=["chr2:1-10"], bin_size=4,
                      crop=8, reductions=["total", "delta_score"], delta_distance=9, strand="both", merge=False)
    assert sorted(got.data_vars) == ["genome_ism_delta_gain", "genome_ism_delta_loss", "genome_ism_profile_total",
                                     "genome_ism_reference"]
    for v in got.data_vars:
        np.testing.assert_allclose(got[v].values, want[v].values, rtol=1e-5, atol=1e-6)
    assert got["genome_ism_delta_gain"].dims == ("contig", "position", "base", "target", "strand")
    assert group_info(store, "genome_ism")["params"]["pad"] is None and got.attrs["pad"] == "N"


def test_cli__render_region_is_one_based_inclusive(genome, client2, tmp_path, monkeypatch):
    from interpretome.cli import main
    from interpretome.jobs import stores

    path, _ = genome
    store = str(tmp_path / "r.zarr")
    model = ["--model", "interpretome.datasets:reference_cnn", "--model-kwargs", '{"channels": 8, "outputs": 2}',
             "--targets", "a,b", "--scheduler", client2.scheduler.address]
    assert main(["genome-ism", str(path), "-o", store, "--input-length", str(W), "--region", "chr1:11-30", *model]) == 0
    seen = {}
    monkeypatch.setattr(stores, "render_store", lambda store, out, **kw: seen.update(kw) or [])
    assert main(["render", store, "--region", "chr1:15-20"]) == 0
    assert (seen["start"], seen["end"]) == (14, 20)  # 0-based start, exclusive end
    assert main(["render", store, "--region", "chr1:15-20", "--start", "3"]) == 2


def test_genome_ism__scalar_minus_strand_is_reverse_complement_by_hand(genome):
    """strand='-' for a scalar model: the edited window reverse-complemented by hand, then predicted."""
    path, codes = genome
    res = genome_ism(read_genome(path), SPEC, input_length=W, regions=["chr2:1-8", "chr2:141-150"], strand="both",
                     merge=False).compute()
    assert res["genome_ism_delta"].dims == ("contig", "position", "base", "target", "strand")
    rt = get_runtime(SPEC)
    seq = codes["chr2"]
    rc = lambda c: np.where(c < 4, 3 - c, 4).astype(np.uint8)[..., ::-1]  # noqa: E731
    for i, (s0, s1) in enumerate([(0, 8), (140, 150)]):
        for p in range(s0, s1):
            cs = _ctx_start(p, len(seq), 1, 1)  # scalar models: pad='none' by default, contexts shift inward
            edited = np.repeat(seq[cs:cs + W][None], 4, axis=0)
            edited[np.arange(4), p - cs] = np.arange(4)
            ref = rt.predict(np.ascontiguousarray(rc(seq[cs:cs + W][None])))
            want = rt.predict(np.ascontiguousarray(rc(edited))) - ref
            got = res["genome_ism_delta"].isel(contig=i).sel(position=p - s0 + res["position"].values[0],
                                                              strand="-").values
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cli__profile_model_without_bin_size_refused_before_a_cluster(genome, tmp_path, capsys):
    """A profile model run as scalar (or with a wrong crop) exits 2 naming the fix; no cluster is started."""
    from interpretome.cli import main

    path, _ = genome
    model = ["--model", "interpretome.datasets:profile_cnn", "--model-kwargs",
             '{"channels": 8, "outputs": 2, "crop": 8, "bin_size": 4}', "--targets", "p,q"]
    store = str(tmp_path / "x.zarr")
    assert main(["genome-ism", str(path), "-o", store, "--input-length", str(W), "--region", "chr2:1-5", *model]) == 2
    assert "no --bin-size was given: pass --bin-size" in capsys.readouterr().err
    assert main(["genome-sweep", str(path), "-o", store, "--input-length", str(W), "--region", "chr2:1-5",
                 "--bin-size", "4", "--crop", "4", *model]) == 2
    assert "expects a profile model output (N, T, 13)" in capsys.readouterr().err
    assert main(["tiles", str(path), "-o", store, "--window", "96", "--region", "chr2", *model]) == 2
    assert "no --bin-size was given: pass --bin-size" in capsys.readouterr().err


# --- strand="auto": each region on its gene's strand ------------------------------------------------------

def _genes_gtf(tmp_path):
    """chr1: gene P (+) at 11-60 and gene M (-) at 101-180 (1-based); chr2: both strands over 21-80."""
    rows = [("chr1", 11, 60, "+", "P"), ("chr1", 101, 180, "-", "M"), ("chr2", 21, 80, "+", "Q"),
            ("chr2", 41, 90, "-", "R")]
    path = tmp_path / "genes.gtf"
    path.write_text("".join(f'{c}\tt\tgene\t{a}\t{b}\t.\t{s}\t.\tgene_id "{n}"; gene_name "{n}";\n'
                            for c, a, b, s, n in rows))
    return path


def test_genome_ism__auto_strand_equals_each_region_alone(genome, tmp_path):
    """strand='auto': each region runs on its gene's strand; equal to that region alone with the explicit strand,
    and the minus-strand region equal to reverse-complement-and-flip by hand."""
    path, codes = genome
    gtf = _genes_gtf(tmp_path)
    spec = _profile_spec(8, 1)
    ds = read_genome(path)
    regions = ["chr1:21-30", "chr1:121-130"]
    kw = dict(input_length=W, bin_size=1, crop=8, reductions=["at_edit", "total"], position_chunk=4, merge=False)
    res = genome_ism(ds, spec, regions=regions, strand="auto", annotation=gtf, **kw).compute()
    assert list(res["region_strand"].values) == ["+", "-"] and "strand" not in res.dims
    assert res.attrs["strand"] == "auto"
    for i, (r, sd) in enumerate(zip(regions, "+-")):
        alone = genome_ism(ds, spec, regions=[r], strand=sd, **kw).compute()
        for v in ("genome_ism_profile_at_edit", "genome_ism_profile_total", "genome_ism_reference"):
            np.testing.assert_array_equal(res[v].isel(contig=i).values, alone[v].isel(contig=0).values)
    seq = codes["chr1"]
    for p in (120, 125, 129):  # the minus-strand gene's region, by hand: centred context, edit, rc, predict, flip
        cs = p - W // 2
        ref = _forward(spec, seq[cs:cs + W], "-")
        for b in range(4):
            ed = seq[cs:cs + W].copy()
            ed[p - cs] = b
            want = (_forward(spec, ed, "-") - ref).sum(axis=1)
            got = res["genome_ism_profile_total"].isel(contig=1, position=p - 120).sel(base="ACGT"[b]).values
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_genome_sweep__auto_strand_bed_strand_and_errors(genome, tmp_path):
    path, _ = genome
    ds = read_genome(path)
    bed = tmp_path / "r.bed"
    bed.write_text("chr2\t30\t40\tboth\t0\t-\nchr1\t20\t30\tp\t0\t.\n")
    gtf = _genes_gtf(tmp_path)
    kw = dict(input_length=W, windows=[2], mode="mask", merge=False)
    from interpretome.storage.genome import as_regions
    res = genome_sweep(ds, SPEC, regions=as_regions(bed), strand="auto", annotation=gtf, **kw).compute()
    assert list(res["region_strand"].values) == ["-", "+"]  # BED column 6 wins; else the gene's strand
    alone = genome_sweep(ds, SPEC, regions=["chr2:31-40"], strand="-", **kw).compute()
    np.testing.assert_array_equal(res["genome_sweep_delta_mean"].isel(contig=0).values,
                                  alone["genome_sweep_delta_mean"].isel(contig=0).values)
    with pytest.raises(InputError, match=r"'chr2:51-60' overlaps genes of both strands .*--strand \+/-/both"):
        genome_sweep(ds, SPEC, regions=["chr1:21-30", "chr2:51-60"], strand="auto", annotation=gtf, **kw)
    with pytest.raises(InputError, match=r"'chr1:301-310' overlaps no stranded gene.*strand column"):
        genome_ism(ds, SPEC, input_length=W, regions=["chr1:301-310"], strand="auto", annotation=gtf)
    with pytest.raises(InputError, match="--annotation FILE"):
        genome_ism(ds, SPEC, input_length=W, regions=["chr1:21-30"], strand="auto")


def test_cli__genome_ism_strand_auto(genome, client2, tmp_path, capsys):
    """--strand auto --annotation FILE on the command line; a region of both strands exits 2 before any work."""
    from interpretome.cli import main
    from interpretome.storage.store import open_group

    path, _ = genome
    gtf = _genes_gtf(tmp_path)
    store = str(tmp_path / "a.zarr")
    model = ["--model", "interpretome.datasets:reference_cnn", "--model-kwargs", '{"channels": 8, "outputs": 2}',
             "--targets", "a,b"]
    assert main(["genome-ism", str(path), "-o", store, "--input-length", str(W), "--region", "chr2:51-60",
                 "--strand", "auto", "--annotation", str(gtf), *model]) == 2
    err = capsys.readouterr().err
    assert "'chr2:51-60' overlaps genes of both strands" in err and "--strand +/-/both" in err
    assert main(["genome-ism", str(path), "-o", store, "--input-length", str(W), "--region", "chr1:121-125",
                 "--region", "chr1:21-25", "--strand", "auto", "--annotation", str(gtf), "--dry-run", *model]) == 0
    assert main(["genome-ism", str(path), "-o", store, "--input-length", str(W), "--region", "chr1:121-125",
                 "--region", "chr1:21-25", "--strand", "auto", "--annotation", str(gtf), *model,
                 "--scheduler", client2.scheduler.address]) == 0
    got = open_group(store, "genome_ism")
    assert list(got["region_strand"].values) == ["-", "+"]
    want = genome_ism(read_genome(path), SPEC, input_length=W, regions=["chr1:121-125"], strand="-",
                      merge=False)["genome_ism_delta"].values[0]
    np.testing.assert_allclose(got["genome_ism_delta"].values[0], want, rtol=1e-6)


def test_jobfile__strand_auto_annotation_relative_and_refused_in_the_plan(genome, tmp_path, capsys):
    """A job-file step takes strand = "auto" with annotation (resolved against the job file); a region of both
    strands fails in the dry-run plan, naming the fix."""
    import shutil

    from interpretome.cli import main

    path, _ = genome
    shutil.copy(path, tmp_path / "g.fa")
    _genes_gtf(tmp_path)
    model = ('[model]\nfactory = "interpretome.datasets:reference_cnn"\nkwargs = {channels = 8, outputs = 2}\n'
             'targets = ["a", "b"]\n')
    step = ('[[step]]\nkind = "genome_ism"\nfasta = "g.fa"\ninput_length = 60\nregions = ["{r}"]\n'
            'strand = "auto"\nannotation = "genes.gtf"\n')
    job = tmp_path / "job.toml"
    job.write_text(f'store = "out.zarr"\n{model}\n{step.replace("{r}", "chr1:121-125")}')
    assert main(["run", str(job), "--dry-run"]) == 0
    job.write_text(f'store = "out.zarr"\n{model}\n{step.replace("{r}", "chr2:51-60")}')
    assert main(["run", str(job), "--dry-run"]) == 2
    assert "'chr2:51-60' overlaps genes of both strands" in capsys.readouterr().err
