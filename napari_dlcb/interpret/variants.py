"""Variant effects: predictions for the reference and the alternative allele of each variant.

Every variant's REF is checked against the FASTA first. A mismatch, an unknown
chromosome, a symbolic allele or a position outside the chromosome is reported
in the ``status`` column of that variant and never scored silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from napari_dlcb.data.onehot import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import predict_sequences

__all__ = ["score_variants", "variant_effect", "variant_windows"]


def variant_windows(
    genome, variants: pd.DataFrame, *, length: int
) -> tuple[list[str], list[str], list[str]]:
    """Reference and alternative windows of ``length`` bp centred on each variant.

    Parameters
    ----------
    genome : napari_dlcb.io.genome.Genome
        Open genome.
    variants : pandas.DataFrame
        From :func:`napari_dlcb.io.genome.read_vcf` (``chrom, start, ref, alt, kind``).
    length : int
        Window length; the variant's first base sits at ``length // 2``.
        Windows past a chromosome end are padded with ``N``; for indels the
        alternative window is filled or trimmed on the right to keep the length.

    Returns
    -------
    ref_windows, alt_windows : list of str
        Empty strings where the variant cannot be scored.
    status : list of str
        ``"ok"`` or why the variant was not scored.
    """
    refs, alts, status = [], [], []
    half = length // 2
    for v in variants.itertuples(index=False):
        chrom, start, ref, alt = str(v.chrom), int(v.start), str(v.ref).upper(), str(v.alt).upper()
        st = "ok"
        name = genome.canonical(chrom) if hasattr(genome, "canonical") else chrom
        if name is None or name not in genome.chromosomes:
            st = f"unknown chromosome {chrom!r}"
        elif getattr(v, "kind", "snv") == "symbolic":
            st = f"symbolic allele {alt} cannot be scored"
        elif start + len(ref) > genome.chromosomes[name]:
            st = f"position beyond the end of {chrom} ({genome.chromosomes[name]} bp)"
        elif hasattr(genome, "covers") and not genome.covers(name, start, start + len(ref)):
            st = f"position outside the sequence the FASTA holds for {chrom}"
        else:
            chrom = name
            found = genome.fetch(chrom, start, start + len(ref)).upper()
            if found != ref:
                st = f"REF mismatch: VCF says {ref}, FASTA has {found}"
        if st != "ok":
            refs.append("")
            alts.append("")
            status.append(st)
            continue
        w0 = start - half
        ref_w = genome.fetch(chrom, w0, w0 + length, pad=True)
        extra = max(0, len(ref) - len(alt))
        right = (
            genome.fetch(chrom, start + len(ref), w0 + length + extra, pad=True)
            if w0 + length + extra > start + len(ref)
            else ""
        )
        alt_w = (ref_w[:half] + alt + right)[:length]
        refs.append(ref_w)
        alts.append(alt_w)
        status.append(st)
    return refs, alts, status


@torch.no_grad()
def variant_effect(
    model: nn.Module,
    x_ref,
    x_alt,
    *,
    target: int | Sequence[int] | None = None,
    batch_size: int = 256,
    device: Any = "auto",
    rc_average: bool = True,
    meta=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions for reference and alternative one-hot windows (sigmoid, or a regression's values).

    Parameters
    ----------
    model : torch.nn.Module
        ``(N, 4, L) -> (N, T)`` logits.
    x_ref, x_alt : array-like
        ``(N, 4, L)`` one-hot.
    target : int or sequence of int, optional
        Outputs to keep.
    batch_size, device, rc_average, meta
        As for :func:`napari_dlcb.inference.sequence.predict_sequences` (a
        regression model's ``meta`` gives predictions on the label scale).

    Returns
    -------
    p_ref, p_alt : numpy.ndarray
        ``(N, T)`` probabilities (or values); the effect is ``p_alt - p_ref``.
    """
    x_ref, x_alt = np.asarray(x_ref, np.float32), np.asarray(x_alt, np.float32)
    if x_ref.shape != x_alt.shape:
        raise DlcbError(
            f"reference and alternative windows differ in shape: {x_ref.shape} vs {x_alt.shape}"
        )
    kw = {"batch_size": batch_size, "device": device, "rc_average": rc_average, "meta": meta}
    p_ref = predict_sequences(model, x_ref, **kw)
    p_alt = predict_sequences(model, x_alt, **kw)
    if target is not None:
        t = [target] if np.ndim(target) == 0 else list(target)
        p_ref, p_alt = p_ref[:, t], p_alt[:, t]
    return p_ref, p_alt


def score_variants(
    model: nn.Module,
    genome,
    variants: pd.DataFrame,
    *,
    meta=None,
    length: int | None = None,
    task_names: Sequence[str] | None = None,
    batch_size: int = 256,
    device: Any = "auto",
) -> pd.DataFrame:
    """Score every variant for every task: ``ref_<task>``, ``alt_<task>``, ``diff_<task>`` (alt - ref).

    Parameters
    ----------
    model : torch.nn.Module
        DNA model.
    genome : napari_dlcb.io.genome.Genome
        The FASTA the VCF refers to.
    variants : pandas.DataFrame
        From :func:`napari_dlcb.io.genome.read_vcf`.
    meta : ModelMeta, optional
        Supplies the window length (``extra["length"]``) and task names.
    length : int, optional
        Window length (overrides ``meta``).
    task_names : sequence of str, optional
        Output names (overrides ``meta``).
    batch_size, device
        As usual.

    Returns
    -------
    pandas.DataFrame
        The variant columns, ``status`` (``"ok"`` or why it was not scored,
        e.g. a REF mismatch) and the score columns (NaN when not scored).
    """
    if length is None:
        length = int(meta.extra.get("length", 0)) if meta is not None else 0
    if not length:
        raise DlcbError(
            "the window length is unknown: pass length= or a model saved with its length"
        )
    names = list(task_names or (meta.classes if meta is not None else []))
    refs, alts, status = variant_windows(genome, variants, length=length)
    ok = np.array([s == "ok" for s in status])
    cols = ["chrom", "pos", "id", "ref", "alt"]
    out = variants[[c for c in cols if c in variants]].copy().reset_index(drop=True)
    out["status"] = status
    if ok.any():
        p_ref, p_alt = variant_effect(
            model,
            one_hot([r for r, k in zip(refs, ok) if k], length=length),
            one_hot([a for a, k in zip(alts, ok) if k], length=length),
            batch_size=batch_size,
            device=device,
            meta=meta,
        )
        T = p_ref.shape[1]
    else:
        T = len(names) or 1
        p_ref = p_alt = np.zeros((0, T), np.float32)
    if len(names) != T:
        names = [f"task{i}" for i in range(T)]
    for j, nm in enumerate(names):
        for kind, arr in (("ref", p_ref), ("alt", p_alt), ("diff", p_alt - p_ref)):
            col = np.full(len(out), np.nan, np.float32)
            col[ok] = arr[:, j]
            out[f"{kind}_{nm}"] = col
    return out
