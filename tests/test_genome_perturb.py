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
