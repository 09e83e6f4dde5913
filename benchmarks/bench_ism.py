"""Mutation-map speed: napari-dlcb fast ISM vs naive batched ISM vs tangermeme, in one run.

Issue 3 target (2 CPU threads, one sequence, Basset-size model: conv 300x19,
200x11, 200x7; pools 3/4/4; FC 1000, 1000, 164; L = 600):
fast >= 10x naive, >= 5x tangermeme ``saturation_mutagenesis(fast=True)``,
a 200-bp viewport within 0.3 s. Also a DeepBind-size model at L = 1000.

Run: ``python benchmarks/bench_ism.py [--repeats 3] [--threads 2] [--trained]``
(``--trained`` adds the shipped, trained ``builtin:dna-encode``: random and
trained weights side by side). Prints a
markdown table; timings are the best of ``--repeats`` runs (wall clock) plus
the CPU time of that run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from napari_dlcb.interpret import mutation_map
from napari_dlcb.models.dna import Basset, DeepBind


def best_of(fn, repeats):
    best, cpu, out = np.inf, 0.0, None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        if dt < best:
            best, cpu = dt, time.process_time() - c0
    return best, cpu, out


def tangermeme_ism(model, x, fast=True):
    from tangermeme.saturation_mutagenesis import saturation_mutagenesis

    r = saturation_mutagenesis(model, x, raw_outputs=True, fast=fast, batch_size=256, device="cpu")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument(
        "--trained",
        action="store_true",
        help="add the shipped, trained builtin:dna-encode (128 x 24, DeepBind-style) at L=1000",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {
        "Basset (300x19/200x11/200x7, FC 1000-1000-164), L=600": (Basset(164, length=600), 600),
        "DeepBind (16x24, global max+avg, FC 32), L=1000": (
            DeepBind(1, filters=16, kernel_size=24),
            1000,
        ),
    }
    if args.trained:  # trained weights (float16 on disk, run in float32 as shipped)
        from napari_dlcb.inference.sequence import load_sequence_model

        trained, _ = load_sequence_model("builtin:dna-encode", device="cpu")
        cases["builtin:dna-encode (trained, 128x24, 5 tasks), L=1000"] = (trained, 1000)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}"
    )
    print(
        "| model | method | best wall s | CPU s | x vs naive | x vs tangermeme fast | max rel. error vs naive |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (model, L) in cases.items():
        model.eval()
        for m in model.modules():  # realistic BN statistics
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_var.fill_(0.05)
        x = torch.nn.functional.one_hot(torch.randint(0, 4, (1, L)), 4).permute(0, 2, 1).float()
        fast_t, fast_c, fast = best_of(
            lambda model=model, x=x: mutation_map(model, x, batch_size=1024), args.repeats
        )
        vp_t, vp_c, _ = best_of(
            lambda model=model, x=x, L=L: mutation_map(
                model, x, start=L // 2 - 100, end=L // 2 + 100, batch_size=1024
            ),
            args.repeats,
        )
        naive_t = np.nan
        err = np.nan
        if not args.skip_naive:
            naive_t, naive_c, naive = best_of(
                lambda model=model, x=x: mutation_map(model, x, method="naive", batch_size=128), 1
            )
            err = float(np.abs(fast - naive).max() / np.abs(naive).max())
        try:
            tm_t, tm_c, tm = best_of(
                lambda model=model, x=x: tangermeme_ism(model, x, fast=True), args.repeats
            )
        except Exception as e:  # noqa: BLE001 - report, do not crash the benchmark
            print(f"tangermeme failed: {type(e).__name__}: {e}")
            tm_t = tm_c = np.nan
        rows = [("napari-dlcb mutation_map (fast)", fast_t, fast_c)]
        rows.append(("napari-dlcb, 200-bp viewport", vp_t, vp_c))
        if not args.skip_naive:
            rows.append(("naive batched ISM", naive_t, naive_c))
        rows.append(("tangermeme saturation_mutagenesis(fast=True)", tm_t, tm_c))
        for label, t, c in rows:
            e = f"{err:.1e}" if label.endswith("(fast)") else ""
            print(
                f"| {name} | {label} | {t:.3f} | {c:.2f} | {naive_t / t:.1f} | {tm_t / t:.1f} | {e} |"
            )


if __name__ == "__main__":
    main()
