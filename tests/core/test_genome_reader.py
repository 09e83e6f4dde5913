"""The npe2 genome reader returns layers and has no side effects (tasks.genome_reader)."""

from __future__ import annotations

import pytest

from napari_dlcb._sample_data import genome_sample_dir
from napari_dlcb.errors import DlcbError
from napari_dlcb.io.tabix import compress_and_index
from napari_dlcb.tasks.genome_reader import genome_fields, get_genome_reader, read_genome_files


def test_a_fasta_with_its_tracks_gives_the_layers_of_its_first_region():
    d = genome_sample_dir()
    paths = [str(d / n) for n in ("sample_genome.fa", "peaks.bed", "variants.vcf", "signal.bw")]
    layers = get_genome_reader(paths)(paths)
    kinds = [kw["metadata"]["kind"] for _, kw, _ in layers]
    assert kinds[0] == "sequence" and "signal" in kinds
    opened = layers[0][1]["metadata"]["genome_files"]
    assert opened["fasta"] == paths[0] and opened["bigwig"] == [paths[3]]
    assert opened["region"] == "chrS1:1-1,000"
    assert all(kw["metadata"]["genome_files"] is opened for _, kw, _ in layers)


def test_tracks_alone_are_drawn_on_their_first_region(tmp_path):
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
        "chr7\t25003\trs1\tA\tG\nchr7\t25050\trs2\tC\tT\n"
    )
    for path in (vcf, compress_and_index(vcf, preset="vcf")):  # whole, and through the index
        layers = read_genome_files(path)
        kinds = {kw["metadata"]["kind"] for _, kw, _ in layers}
        assert "variants" in kinds and "sequence" not in kinds
        assert layers[0][1]["metadata"]["genome_files"]["region"] == "chr7:20,001-30,000"


def test_two_genomes_at_once_are_refused_in_one_line():
    with pytest.raises(DlcbError, match="one FASTA at a time"):
        genome_fields(["a.fa", "b.fasta.gz"])
    assert get_genome_reader(["a.fa", "x.tif"]) is None
