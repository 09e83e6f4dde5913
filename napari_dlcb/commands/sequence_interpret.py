"""Command-line verbs that interpret DNA sequence models.

``napari-dlcb mutation-map`` (in-silico mutagenesis), ``score-variants`` (VCF
variant effects) and ``motifs`` (first-layer filters as PWMs, matched to
JASPAR). Models are loaded as for ``predict sequence``
(:func:`napari_dlcb.commands.sequence.load_model`). Importing this module is
cheap: torch and the models are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_dlcb.commands._args import add_device
from napari_dlcb.commands._outputs import (
    RESULT_MARK,
    check_out,
    check_out_file,
    write_out_file,
    write_tsv,
)
from napari_dlcb.commands.sequence import external_options, load_model, note
from napari_dlcb.errors import DlcbError

__all__ = ["register"]


def register(train_sub, predict_sub, top_sub) -> None:
    """Add ``mutation-map``, ``score-variants`` and ``motifs`` to the top-level parser."""
    p = top_sub.add_parser("mutation-map", help="in-silico mutagenesis map (4 x L x tasks) as .npy")
    p.add_argument(
        "--model", required=True, help="as for predict sequence (.pt/.onnx + sidecar too)"
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sequence", help="the sequence itself")
    g.add_argument("--fasta", help="FASTA file (first record, or --region)")
    p.add_argument("--region", help="chr:start-end (0-based half-open) within --fasta")
    p.add_argument("--target", help="comma-separated task names or indices (default all)")
    p.add_argument(
        "--out", required=True, help=".npy file: (4, L, T) float32, alt minus ref logits"
    )
    p.add_argument("--batch-size", type=int, default=512)
    add_device(p)
    external_options(p)
    p.set_defaults(func=_mutation_map)

    p = top_sub.add_parser(
        "score-variants", help="effect of each VCF variant on every task (REF checked)"
    )
    p.add_argument(
        "--model", required=True, help="as for predict sequence (.pt/.onnx + sidecar too)"
    )
    p.add_argument("--fasta", required=True)
    p.add_argument("--vcf", required=True)
    p.add_argument(
        "--out",
        required=True,
        help="TSV: one row per variant allele with ref/alt/diff per task and a status",
    )
    p.add_argument(
        "--region",
        action="append",
        help="score only the variants in chr:start-end (0-based; repeatable); a bgzipped VCF "
        "with a .tbi/.csi index, or a BCF, is read only there",
    )
    add_device(p)
    external_options(p)
    p.set_defaults(func=_score_variants)

    p = top_sub.add_parser("motifs", help="first-layer filter motifs (PWMs, logos, JASPAR matches)")
    p.add_argument(
        "--model", required=True, help="as for predict sequence (.pt/.onnx + sidecar too)"
    )
    p.add_argument("--table", required=True, help="sequences to collect filter activations on")
    p.add_argument("--sequence-column", default="seq")
    p.add_argument("--out", required=True, help="folder for motifs.meme, matches.tsv and logos")
    p.add_argument(
        "--database",
        default="jaspar",
        help="'jaspar' (bundled JASPAR 2024 CORE vertebrates) or a motif file (HOCOMOCO PCM / MEME)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="fraction of a filter's max activation (default 0.5)",
    )
    add_device(p)
    p.add_argument("--no-logos", action="store_true", help="skip the PNG logos (faster)")
    external_options(p, window=False)
    p.set_defaults(func=_motifs)


def _parse_targets(text: str | None, names: list[str]) -> list[int] | None:
    if not text:
        return None
    out = []
    for t in text.split(","):
        t = t.strip()
        if t in names:
            out.append(names.index(t))
        elif t.lstrip("-").isdigit():
            out.append(int(t))
        else:
            raise DlcbError(f"unknown target {t!r}; tasks are: {', '.join(names)}")
    return out


def _mutation_map(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_dlcb.data.dna import one_hot
    from napari_dlcb.inference.sequence import check_sequence_length
    from napari_dlcb.interpret.ism import mutation_map

    out = check_out_file(args.out, inputs=[args.fasta, args.model])
    model, meta = load_model(args)
    if args.sequence is not None:
        seq = args.sequence.strip()
        if not seq:
            raise DlcbError("--sequence is empty; give the DNA sequence (A, C, G, T)")
    elif not args.fasta:
        raise DlcbError("give --sequence or --fasta")
    else:
        from napari_dlcb.io.genome import parse_region, read_fasta, read_fasta_records

        if args.region:
            r = parse_region(args.region)
            seq = read_fasta(args.fasta).fetch(r.chrom, r.start, r.end)
        else:
            seq = read_fasta_records(args.fasta)[0][1]
    x = one_hot(seq)
    check_sequence_length(meta, x.shape[2])
    m = mutation_map(
        model, x, target=_parse_targets(args.target, meta.classes), batch_size=args.batch_size
    )[0]

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, m)

    write_out_file(out, save)
    note(
        f"wrote {out}: shape {m.shape} (base A,C,G,T x position x task), largest effect {float(np.abs(m).max()):.3f}"
    )
    return 0


def _score_variants(args: argparse.Namespace) -> int:
    import pandas as pd

    from napari_dlcb.interpret.variants import score_variants
    from napari_dlcb.io.genome import parse_region, read_fasta, read_vcf

    out = check_out_file(args.out, inputs=[args.fasta, args.vcf, args.model])
    model, meta = load_model(args)
    if args.region:  # through the index when there is one (io.tabix), else read and filtered
        parts = [read_vcf(args.vcf, region=parse_region(r)) for r in args.region]
        variants = pd.concat(parts, ignore_index=True).drop_duplicates(
            ["chrom", "pos", "ref", "alt"]
        )
        if variants.empty:
            raise DlcbError(f"no variants in {', '.join(args.region)} of {Path(args.vcf).name}")
    else:
        variants = read_vcf(args.vcf)
    table = score_variants(model, read_fasta(args.fasta), variants, meta=meta)
    write_tsv(out, table)
    bad = table[table["status"] != "ok"]
    for row in bad.itertuples():
        note(f"not scored: {row.chrom}:{row.pos} {row.ref}>{row.alt}: {row.status}")
    note(f"wrote {out}: {len(table) - len(bad)} scored, {len(bad)} not scored")
    return 0


def _motifs(args: argparse.Namespace) -> int:
    from napari_dlcb.data.dna import one_hot, read_sequence_table
    from napari_dlcb.interpret.motifs import (
        filter_motifs,
        load_motif_database,
        match_motifs,
        write_meme,
    )

    out = check_out(args.out, inputs=[args.table, args.model, args.database], overwrite=True)
    model, meta = load_model(args)
    df = read_sequence_table(args.table, sequence_column=args.sequence_column)
    x = one_hot(df[args.sequence_column].astype(str).tolist())
    motifs = filter_motifs(model, x, threshold=args.threshold)
    db = load_motif_database(args.database)
    matches = match_motifs(motifs, db)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_MARK).write_text('{"command": "motifs"}\n')
    write_meme(motifs, out / "filters.meme")
    matches.to_csv(out / "matches.tsv", sep="\t", index=False, float_format="%.4g")
    if not args.no_logos:
        from napari_dlcb.interpret.motifs import save_logos

        save_logos(motifs, out / "logos")
    best = matches.sort_values("p_value").drop_duplicates("filter").head(5)
    for row in best.itertuples():
        note(
            f"{row.filter}: {row.target} (p = {row.p_value:.2g}, q = {row.q_value:.2g}, {row.n_sites} sites)"
        )
    note(f"wrote {len(motifs)} filter motifs and matches to {out}")
    return 0
