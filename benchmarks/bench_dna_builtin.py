"""The real-data built-in DNA model ``builtin:dna-encode``: held-out AUROC per task, and fine-tuning.

Scores the shipped weights on the held-out sets its model card reports
(DeepBind ``test/*_B`` for ARID3A, FOXM1 and GATA3: 500 peaks + 500 shuffled;
janggu's 100 Oct4 + 100 MafK test peaks, central 101 bp and full 200 bp), beside
the synthetic built-in ``dna-multitask`` on the tasks it shares (GATA3, MAFK,
POU5F1) and the reference numbers (1-6-mer logistic regression 0.849 / 0.871 /
0.904; janggu 0.995).

``--finetune`` also reruns the model card's experiment (slow, ~30-60 min on 2
shared cores): a leave-one-out model pretrained without GATA3, fine-tuned on 300
GATA3 peaks + 300 shuffled copies with ``SequenceTask(base=...)`` vs the same
architecture from scratch, 3 seeds, test AUROC on ``GATA3_B``.

Run: ``nice python benchmarks/bench_dna_builtin.py [--finetune]``; writes
``bench_out/dna_builtin.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from _common import record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from pretrain_dna_encode import BASELINES, evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--finetune", action="store_true", help="rerun the fine-tuning experiment")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from napari_dlcb.models.registry import load_builtin

    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    model, meta = load_builtin("dna-encode")
    result: dict = {
        "command": " ".join([sys.executable, *sys.argv]),
        "dna-encode": evaluate(model, list(meta.classes)),
        "card": meta.extra["evaluation"],
        "baselines": BASELINES,
    }
    synth, smeta = load_builtin("dna-multitask")
    shared = [t for t in smeta.classes if t in ("GATA3", "MAFK", "POU5F1")]
    result["dna-multitask (synthetic)"] = _evaluate_subset(synth, list(smeta.classes), shared)
    result["eval_seconds"] = round(time.perf_counter() - t0, 1)
    if args.finetune:
        from pretrain_dna_encode import finetune_experiment

        ns = argparse.Namespace(seed=0, minutes=30.0, n_positives=300)
        result["finetune"] = finetune_experiment(ns)
    load.append(os.getloadavg()[0])
    result.update(
        {
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "load_1min": [round(v, 2) for v in load],
            "threads": args.threads,
        }
    )
    record("dna_builtin", result)


def _evaluate_subset(model, classes: list[str], tasks: list[str]) -> dict:
    """Test AUROC of ``tasks`` for a model whose outputs are ``classes``."""
    from pretrain_dna_encode import test_sets

    from napari_dlcb.tasks.sequence import auroc, predict_sequences

    out = {}
    for label, length in (("test_auroc", 101), ("test_auroc_200bp", None)):
        sets = test_sets(length)
        out[label] = {}
        for tf in tasks:
            if length is None and tf == "GATA3":
                continue
            s, y = sets[tf]
            p = predict_sequences(model, s, device="cpu")[:, classes.index(tf)]
            out[label][tf] = round(auroc(p, y), 4)
    return out


if __name__ == "__main__":
    main()
