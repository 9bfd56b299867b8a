"""GTF / GFF3 / BED gene readers and strand-aware gene starts."""

from __future__ import annotations

import numpy as np
import pytest

from interpretome.datasets import data_path
from interpretome.storage.annotation import (annotation_dataset, gene_starts, genes_from_dataset,
                                             read_annotation)
from interpretome.errors import InputError
from interpretome.storage.readers import fasta_records

GTF = ('#!genome-build test\n'
       'chrA\tsrc\tgene\t101\t200\t.\t-\t.\tgene_id "gm"; gene "MINUS";\n'
       'chrA\tsrc\texon\t101\t200\t.\t-\t.\tgene_id "gm"; transcript_id "t1";\n'
       'chrA\tsrc\tgene\t301\t450\t.\t+\t.\tgene_id "gp"; gene_name "PLUS";\n'
       'chrB\tsrc\tgene\t1\t10\t.\t.\t.\tgene_id "gu";\n')


def test_read_annotation__gtf_strand_aware_tss(tmp_path):
    path = tmp_path / "a.gtf"
    path.write_text(GTF)
    genes = read_annotation(path)
    assert list(genes["name"]) == ["MINUS", "PLUS", "gu"]
    assert list(genes["start"]) == [100, 300, 0] and list(genes["end"]) == [200, 450, 10]
    # minus strand: the TSS is the gene's end coordinate (1-based 200 -> 0-based 199)
    assert list(genes["tss"]) == [199, 300, 0]
    assert list(gene_starts(genes, "chrA", 150, 350)["name"]) == ["MINUS", "PLUS"]


def test_read_annotation__gff3_and_bed_agree_with_gtf(tmp_path):
    gff = tmp_path / "a.gff3"
    gff.write_text("##gff-version 3\n"
                   "chrA\tsrc\tgene\t101\t200\t.\t-\t.\tID=gene-gm;Name=MINUS\n"
                   "chrA\tsrc\tmRNA\t101\t200\t.\t-\t.\tID=rna1;Parent=gene-gm\n"
                   "chrA\tsrc\tgene\t301\t450\t.\t+\t.\tID=gene-gp;Name=PLUS\n")
    bed = tmp_path / "a.bed"
    bed.write_text("chrA\t100\t200\tMINUS\t0\t-\nchrA\t300\t450\tPLUS\t0\t+\n")
    for path in (gff, bed):
        genes = read_annotation(path)
        assert list(genes["name"]) == ["MINUS", "PLUS"]
        assert list(genes["tss"]) == [199, 300]


def test_read_annotation__yeast_matches_pyranges():
    """The shipped yeast chrI annotation read by us and by pyranges: same genes, same coordinates."""
    import pyranges as pr

    path = data_path("yeast_chrI.gtf.gz")
    ours = read_annotation(path)
    ref = pr.read_gtf(str(path), full=False).df  # full=True fails on a ";" inside a quoted value
    ref = ref[ref["Feature"] == "gene"].set_index("gene_id").loc[ours["gene_id"]].reset_index()  # our order
    assert len(ours) == len(ref) == 101
    np.testing.assert_array_equal(ours["start"], ref["Start"])
    np.testing.assert_array_equal(ours["end"], ref["End"])
    np.testing.assert_array_equal(ours["gene_id"], ref["gene_id"])
    minus = (ref["Strand"] == "-").to_numpy()
    want_tss = np.where(minus, ref["End"] - 1, ref["Start"])
    np.testing.assert_array_equal(ours["tss"], want_tss)
    assert minus.sum() > 30  # both strands present
    assert set(ours["contig"]) <= set(fasta_records(data_path("yeast_chrI.fna.gz")))


def test_annotation_dataset__round_trip_through_store(tmp_path):
    from interpretome.storage.store import open_group, write_dataset

    path = tmp_path / "a.gtf"
    path.write_text(GTF + 'chrB\tsrc\tgene\t21\t30\t.\t+\t.\tgene_id "gu";\n')  # a repeated id
    genes = read_annotation(path)
    ds = annotation_dataset(genes)
    assert list(ds["feature"].values) == ["gm", "gp", "gu#0", "gu#1"]
    write_dataset(ds, tmp_path / "s.zarr", "genes", task="gene_annotation", params={})
    back = genes_from_dataset(open_group(tmp_path / "s.zarr", "genes").load())
    assert back[["contig", "start", "end", "strand", "name", "tss"]].equals(
        genes[["contig", "start", "end", "strand", "name", "tss"]])


def test_read_annotation__errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.gtf"
    bad.write_text(GTF + "chrA\tsrc\tgene\t500\tfive\t.\t+\t.\tgene_id \"x\";\n")
    with pytest.raises(InputError, match=r"bad.gtf:6: malformed GTF line \(invalid literal"):
        read_annotation(bad)
    short = tmp_path / "short.gtf"
    short.write_text("chrA\tsrc\tgene\t1\t10\n")
    with pytest.raises(InputError, match=r"short.gtf:1: malformed GTF line \(5 tab-separated columns, GTF needs 9\)"):
        read_annotation(short)
    strand = tmp_path / "strand.gff"
    strand.write_text("chrA\tsrc\tgene\t1\t10\t.\tx\t.\tID=a\n")
    with pytest.raises(InputError, match=r"strand.gff:1: .*strand 'x'"):
        read_annotation(strand)
    with pytest.raises(InputError, match="has no 'gene' rows .*types present: \\['exon'\\]"):
        (tmp_path / "e.gtf").write_text('chrA\tsrc\texon\t1\t10\t.\t+\t.\tgene_id "a";\n')
        read_annotation(tmp_path / "e.gtf")
    with pytest.raises(InputError, match="unknown suffix"):
        (tmp_path / "a.txt").write_text("x")
        read_annotation(tmp_path / "a.txt")
