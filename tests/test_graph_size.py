"""Genome ISM / sweep graphs grow with the number of chunks, never with the number of positions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from interpretome.engine.models import ModelSpec
from interpretome.storage.genome import read_genome
from interpretome.tasks.genome_perturb import genome_ism, genome_sweep

SPEC = ModelSpec(factory="interpretome.datasets:reference_cnn", kwargs={"channels": 8}, targets=("y",), batch_size=64)


def _fasta(path, length, seed=0):
    """Write a one-contig FASTA of ``length`` random bases (60 per line) and return its path."""
    rng = np.random.default_rng(seed)
    seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, length)].tobytes()
    with open(path, "wb") as f:
        f.write(b">chrS\n" + b"\n".join(seq[i:i + 60] for i in range(0, length, 60)) + b"\n")
    return path


def _graph_bytes(res) -> int:
    """Return the pickled size of the whole task graph of a lazy result."""
    return len(pickle.dumps(dict(res.__dask_graph__())))


@pytest.mark.parametrize("task", ["ism", "sweep"])
def test_graph_bytes_grow_with_chunks_not_positions(tmp_path, task):
    """The same number of chunks over 10x more positions: the graph stays the same size (within
    the few digits more its keys and offsets take); twice the chunks: about twice the graph."""
    small, big = _fasta(tmp_path / "s.fa", 400_000), _fasta(tmp_path / "b.fa", 4_000_000)

    def run(path, chunk):
        ds = read_genome(path, position_chunk=chunk, validate=False)
        if task == "ism":
            return genome_ism(ds, SPEC, input_length=1000, context_step=1000, position_chunk=chunk)
        return genome_sweep(ds, SPEC, input_length=1000, windows=[5], stride=1, context_step=500, position_chunk=chunk)

    same_chunks = [_graph_bytes(run(small, 50_000)), _graph_bytes(run(big, 500_000))]  # 8 chunks each
    assert abs(same_chunks[1] - same_chunks[0]) < 0.05 * same_chunks[0], same_chunks
    assert same_chunks[1] < 200 * 8 * 50  # far below 8 bytes per position (4 M positions = 32 MB)
    double = _graph_bytes(run(big, 250_000))  # 16 chunks
    assert 1.6 * same_chunks[1] < double < 2.4 * same_chunks[1], (same_chunks, double)


def test_position_axis_is_lazy(tmp_path):
    """Whole contigs keep ``position`` as a range (no 8 bytes per position in the client), with
    the same values as the positions themselves."""
    import pandas as pd

    ds = read_genome(_fasta(tmp_path / "s.fa", 200_000), validate=False)
    res = genome_sweep(ds, SPEC, input_length=1000, windows=[5], stride=3)
    assert isinstance(res.indexes["position"], pd.RangeIndex)
    np.testing.assert_array_equal(res["position"].values[:4], [0, 3, 6, 9])
    assert res.sizes["position"] == -(-200_000 // 3)


def test_default_chunking_gives_several_tasks_per_region(tmp_path):
    """A 40 kb contig (one 1 Mb sequence chunk) splits into 16 ISM tasks by default; a 250 Mb-scale
    contig keeps one task per 1 Mb sequence chunk; tiny regions keep blocks of >= 1000 positions."""
    from interpretome.tasks.genome_perturb import default_position_chunk

    ds = read_genome(_fasta(tmp_path / "s.fa", 40_000), validate=False)
    res = genome_ism(ds, SPEC, input_length=1000, context_step=1000)
    assert res["genome_ism_delta"].data.chunks[1] == (2500,) * 16
    assert default_position_chunk(250_000_000, 1 << 20) == 1 << 20
    assert default_position_chunk(5_000, 1 << 20) == 1000
    assert default_position_chunk(300, 50) == 50  # never more than one sequence chunk
