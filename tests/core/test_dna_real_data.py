"""Integration: a DeepBind model trained on real ENCODE GATA3 ChIP-seq learns a GATA motif.

The CLI path a user takes (``train sequence`` then ``motifs``) on
``../shared/data/deepbind_encode_chipseq`` (GATA3 ``_AC``), matched against the
640 HOCOMOCO v10 human motifs and the
shipped JASPAR 2024 CORE vertebrates (memelite TOMTOM q-values). A short run (6 epochs, 16 filters, ~10 s on 2
CPU cores); the full-length benchmark is in ``benchmarks/bench_deepbind.py``.
"""

from __future__ import annotations

import pandas as pd

from napari_dlcb.cli import main


def test_gata3_filters_match_a_gata_family_motif(shared_data, tmp_path):
    data = shared_data / "deepbind_encode_chipseq"
    train = next((data / "train").glob("GATA3_*_AC.seq.gz"))
    hoc = shared_data / "motifs_hocomoco_v10_human" / "HOCOMOCOv10_pcms_HUMAN_mono.txt"
    model = tmp_path / "gata3"
    assert main(["train", "sequence", "--table", str(train), "--out", str(model), "--epochs", "6", "--filters", "16", "--device", "cpu", "--seed", "0"]) == 0  # fmt: skip
    out = tmp_path / "motifs"
    assert main(["motifs", "--model", str(model), "--table", str(train), "--out", str(out), "--database", str(hoc), "--no-logos"]) == 0  # fmt: skip
    m = pd.read_csv(out / "matches.tsv", sep="\t")
    best = m.sort_values("p_value").drop_duplicates("filter")
    top = best.head(3)  # the three filters with the strongest matches
    assert top.target.str.startswith("GATA").any(), top[["filter", "target", "p_value"]]
    gata = best[best.target.str.startswith("GATA")]
    assert (gata.q_value < 0.01).any()
    assert (out / "filters.meme").read_text().count("MOTIF") == 16
    # the shipped JASPAR 2024 CORE vertebrates (the default database): GATA family, TOMTOM q < 0.05
    jas = tmp_path / "jaspar"
    assert main(["motifs", "--model", str(model), "--table", str(train), "--out", str(jas), "--no-logos"]) == 0  # fmt: skip
    m = pd.read_csv(jas / "matches.tsv", sep="\t")
    tf = m.target.str.split().str[-1].str.upper()
    assert (tf.str.startswith("GATA") & (m.q_value < 0.05)).any(), m.sort_values("p_value").head()
