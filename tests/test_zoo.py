"""The model zoo: planted weights whose biology the interpretations must recover."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretome.datasets import random_dna
from interpretome.storage.genome import read_genome
from interpretome.storage.readers import decode_bases, write_fasta
from interpretome.tasks.genome_perturb import genome_ism
from interpretome.zoo import ACCEPTOR_SITE, BPNET_MOTIF, bpnet_like, splice_like, zoo_spec

MOTIF_AT, SITE_AT = 300, 200  # 0-based starts of the planted motif / acceptor site


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    a = decode_bases(random_dna(1, 600, seed=11)[0])
    b = decode_bases(random_dna(1, 400, seed=12)[0])
    a = a[:MOTIF_AT] + BPNET_MOTIF + a[MOTIF_AT + len(BPNET_MOTIF):]
    b = b[:SITE_AT] + ACCEPTOR_SITE + b[SITE_AT + len(ACCEPTOR_SITE):]
    return write_fasta(tmp_path_factory.mktemp("zoo") / "planted.fa", {"tf": a, "splice": b}), {"tf": a, "splice": b}


def _onehot(seq):
    x = torch.zeros(1, 4, len(seq))
    for i, c in enumerate(seq):
        x[0, "ACGT".index(c), i] = 1
    return x


def test_bpnet_like__heads_and_shapes():
    seq = decode_bases(random_dna(1, 128, seed=1)[0])
    with torch.no_grad():
        prof, counts = bpnet_like(crop=16, bin_size=4, output="both")(_onehot(seq))
        alone = bpnet_like(crop=16, bin_size=4, output="counts")(_onehot(seq))
    assert prof.shape == (1, 1, 24) and counts.shape == (1, 1)
    np.testing.assert_allclose(counts.numpy(), np.log1p(prof.numpy().sum(-1) * 4), rtol=1e-6)
    np.testing.assert_allclose(alone.numpy(), counts.numpy())
    assert list(zoo_spec("bpnet_like", output="counts").target_names) == ["counts"]
    with pytest.raises(ValueError, match="is not one of"):
        zoo_spec("enformer")


def test_bpnet_like__planted_motif_tops_the_profile_ism(planted):
    path, _ = planted
    spec = zoo_spec("bpnet_like", crop=16, options={"batch_size": 64})
    res = genome_ism(read_genome(path), spec, input_length=96, regions=["tf:251-350"], bin_size=1, crop=16,
                     reductions=["total", "at_edit"], merge=False).compute()
    loss = -res["genome_ism_profile_total"].isel(contig=0).sel(target="profile").min("base")  # largest drop per base
    top = np.sort(loss["position"].values[np.argsort(-loss.values)[:len(BPNET_MOTIF)]])
    np.testing.assert_array_equal(top, np.arange(MOTIF_AT, MOTIF_AT + len(BPNET_MOTIF)))
    assert float(loss.sel(position=MOTIF_AT)) > 1.0 and float(loss.sel(position=MOTIF_AT - 20)) == 0.0


def test_splice_like__ag_dominates_the_delta_scores(planted):
    path, seqs = planted
    ag = SITE_AT + len(ACCEPTOR_SITE) - 2  # 0-based position of the A of the planted AG
    spec = zoo_spec("splice_like", crop=20, options={"batch_size": 64})
    res = genome_ism(read_genome(path), spec, input_length=80, regions=["splice:171-240"], bin_size=1, crop=20,
                     reductions=["delta_score"], delta_distance=10, strand="both", merge=False).compute()
    loss = res["genome_ism_delta_loss"].isel(contig=0).sel(target="acceptor").max("base")
    plus = loss.sel(strand="+")
    top = np.sort(plus["position"].values[np.argsort(-plus.values)[:2]])
    np.testing.assert_array_equal(top, [ag, ag + 1])  # the key dinucleotide
    assert float(plus.sel(position=ag)) > 0.7
    tract = plus.sel(position=np.arange(SITE_AT, ag))
    assert 0 < float(tract.min()) and float(tract.max()) < 0.5 * float(plus.sel(position=ag))  # they matter, far less
    assert float(loss.sel(strand="-", position=ag)) < 0.1  # a stranded model: the site is not on the minus strand
    # the site's own score, from a direct model call on the centred window
    with torch.no_grad():
        direct = splice_like(crop=20)(_onehot(seqs["splice"][ag + 2 - 40:ag + 2 + 40]))[0, 0].numpy()
    assert direct.argmax() == 20 and direct.max() > 0.8  # the exon starts right after the AG


def test_random_zoo_designs__shapes_and_specs():
    """The seeded designs have the documented output shapes; their specs declare matching targets."""
    from interpretome.engine.models import check_model
    from interpretome.zoo import basenji_like, bpnet_tower, spliceai_like, ulmfit_like

    x = _onehot(decode_bases(random_dna(1, 400, seed=2)[0]))
    with torch.no_grad():
        prof, counts = bpnet_tower(channels=8, crop=32)(x)
        assert prof.shape == (1, 1, 336) and counts.shape == (1, 1)
        assert bpnet_tower(channels=8, output="counts")(x).shape == (1, 1)
        sp = spliceai_like(channels=8, crop=50)(x)
        assert sp.shape == (1, 3, 300)
        np.testing.assert_allclose(sp.sum(1).numpy(), 1.0, rtol=1e-5)  # a softmax over the three classes
        assert basenji_like(channels=8, crop=8)(x).shape == (1, 2, 400 // 8 - 16)
        assert ulmfit_like()(torch.zeros(3, 50, dtype=torch.long)).shape == (3, 2)
    codes = random_dna(2, 300, seed=3)
    assert check_model(zoo_spec("ulmfit_like"), codes)["targets"] == ["class0", "class1"]
    assert check_model(zoo_spec("spliceai_like", channels=8), codes)["output_shape"] == (2, 3, 200)
    assert check_model(zoo_spec("basenji_like", channels=8), codes)["targets"] == ["track0", "track1"]
    assert check_model(zoo_spec("bpnet_tower", channels=8), codes)["output_shape"] == (2, 1, 236)
    with pytest.raises(ValueError, match="is not 'profile', 'counts' or 'both'"):
        bpnet_tower(output="bias")
