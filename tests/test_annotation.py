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


BED12 = ("track name=tx\n"
         "chrA\t100\t200\ttxm\t0\t-\t100\t200\t0\t2\t20,30,\t0,70,\n"
         "chrA\t300\t450\ttxp\t0\t+\t300\t450\t0\t3\t10,20,50\t0,40,100\n")


def test_read_annotation__bed12_exons_and_spans(tmp_path):
    for name in ("tx.bed12", "tx.bed", "tx.txt"):  # told by content: any suffix, or none known
        path = tmp_path / name
        path.write_text(BED12)
        exons = read_annotation(path, feature="exon")
        assert list(exons["gene_id"]) == ["txm:exon1", "txm:exon2", "txp:exon1", "txp:exon2", "txp:exon3"]
        assert list(exons["start"]) == [100, 170, 300, 340, 400] and list(exons["end"]) == [120, 200, 310, 360, 450]
        assert list(exons["tss"]) == [119, 199, 300, 340, 400] and list(exons["name"]) == ["txm"] * 2 + ["txp"] * 3
        genes = read_annotation(path)
        assert list(genes["start"]) == [100, 300] and list(genes["tss"]) == [199, 300]
    bad = tmp_path / "bad.bed12"
    bad.write_text("chrA\t100\t200\tx\t0\t+\t100\t200\t0\t2\t20,30,\t0,60,\n")  # last block ends at 190, not 200
    with pytest.raises(InputError, match=r"bad.bed12:1: malformed BED12 line \(blocks must .*end at chromEnd"):
        read_annotation(bad, feature="exon")
    with pytest.raises(InputError, match="BED12 annotation gives feature 'gene'"):
        read_annotation(tmp_path / "tx.bed12", feature="CDS")


def test_read_annotation__format_by_content_not_suffix(tmp_path):
    import gzip

    gtf = tmp_path / "genes.gff3"  # a GTF misnamed .gff3, gzipped without a .gz suffix
    with gzip.open(gtf, "wt") as fh:
        fh.write(GTF)
    assert list(read_annotation(gtf)["name"]) == ["MINUS", "PLUS", "gu"]
    gff = tmp_path / "genes.gtf"
    gff.write_text("chrA\tsrc\tgene\t101\t200\t.\t-\t.\tID=gene-gm;Name=MINUS\n")
    assert list(read_annotation(gff)["gene_id"]) == ["gene-gm"]


def test_read_exons__gtf_bed12_and_none(tmp_path):
    """Exons for the figures: GTF exon rows, BED12 blocks; a plain BED or a GTF without exons has none."""
    from interpretome.storage.annotation import read_exons

    gtf = tmp_path / "a.gtf"
    gtf.write_text('c\tt\tgene\t1\t100\t.\t-\t.\tgene_id "g"; gene_name "G";\n'
                   'c\tt\texon\t1\t20\t.\t-\t.\tgene_id "g"; gene_name "G";\n'
                   'c\tt\texon\t61\t100\t.\t-\t.\tgene_id "g"; gene_name "G";\n')
    ex = read_exons(gtf)
    assert list(zip(ex["start"], ex["end"], ex["name"])) == [(0, 20, "G"), (60, 100, "G")]
    genes_only = tmp_path / "b.gtf"
    genes_only.write_text('c\tt\tgene\t1\t100\t.\t-\t.\tgene_id "g";\n')
    assert read_exons(genes_only) is None
    bed = tmp_path / "c.bed"
    bed.write_text("c\t0\t100\tg\t0\t+\n")
    assert read_exons(bed) is None
    bed12 = tmp_path / "d.bed12"
    bed12.write_text("c\t10\t50\ttx\t0\t+\t10\t50\t0\t2\t5,10\t0,30\n")
    assert list(zip(read_exons(bed12)["start"], read_exons(bed12)["end"])) == [(10, 15), (40, 50)]
