"""A genome-wide bgzipped, tabix-indexed VCF: opening it and showing 10-kb regions.

Issue 11 target: a VCF of >= 1 million records (about 1 GB with genotypes)
opens in under a second, and a 10-kb region is shown in under a second.

Measures, in one run:

* **prepare** (not a target): write a sorted VCF of ``--records`` variants on
  22 chromosomes (about one per 30 bp) with ``--samples`` phased genotype
  columns, then ``bgzip`` + ``tabix`` it (:func:`napari_dlcb.io.tabix.compress_and_index`);
* **open**: :func:`napari_dlcb.io.vcf.open_variants` (header + index only), median of 10;
* **region**: for ``--queries`` random 10-kb regions, the variants there
  (:meth:`IndexedVariants.fetch`) and the layer data the Genome view draws
  from them (:func:`napari_dlcb.tasks.genome_layers.variant_layers`): median and max;
* **reference** (``--reference``): reading the whole file in Python as the
  unindexed path does (:func:`napari_dlcb.io.vcf.read_vcf`), for the ratio.

    python benchmarks/bench_indexed_vcf.py [--records 1000000] [--samples 250] [--reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import record  # noqa: E402

CHROMS = [f"chr{i}" for i in range(1, 23)]


def write_vcf(path: Path, records: int, samples: int, seed: int = 0) -> None:
    """A sorted VCF of ``records`` SNVs spread over :data:`CHROMS`, ``samples`` genotype columns."""
    rng = np.random.default_rng(seed)
    per = np.full(len(CHROMS), records // len(CHROMS))
    per[: records % len(CHROMS)] += 1
    gts = ["\t".join(rng.choice(["0|0", "0|1", "1|0", "1|1"], samples)) for _ in range(64)]
    bases = np.array(list("ACGT"))
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        for c in CHROMS:
            fh.write(f"##contig=<ID={c}>\n")
        fh.write('##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">\n')
        fh.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        names = ("\tFORMAT" if samples else "") + "".join(f"\tS{i}" for i in range(samples))
        fh.write(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO{names}\n")
        n = 0
        for c, k in zip(CHROMS, per, strict=True):
            pos = np.cumsum(rng.integers(1, 60, k)) + 10_000
            ref = rng.integers(0, 4, k)
            alt = (ref + rng.integers(1, 4, k)) % 4
            af = rng.random(k)
            g = rng.integers(0, len(gts), k)
            tail = [("\tGT\t" + gts[j]) if samples else "" for j in g]
            lines = [
                f"{c}\t{p}\trs{n + i}\t{bases[r]}\t{bases[a]}\t50\tPASS\tAF={f:.3f}{t}\n"
                for i, (p, r, a, f, t) in enumerate(zip(pos, ref, alt, af, tail, strict=True))
            ]
            fh.writelines(lines)
            n += k


def main() -> None:
    """Prepare the file, time opening and region queries, record the result."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=250, help="genotype columns (250: ~1 GB)")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--width", type=int, default=10_000)
    ap.add_argument("--reference", action="store_true", help="also read the whole file in Python")
    args = ap.parse_args()

    from napari_dlcb.io.regions import Region
    from napari_dlcb.io.tabix import compress_and_index
    from napari_dlcb.io.vcf import IndexedVariants, open_variants, read_vcf
    from napari_dlcb.tasks.genome_layers import variant_layers

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "genome_wide.vcf"
        t0 = time.perf_counter()
        write_vcf(plain, args.records, args.samples)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        gz = compress_and_index(plain, preset="vcf")
        t_index = time.perf_counter() - t0
        size_plain, size_gz = plain.stat().st_size, gz.stat().st_size
        plain.unlink()

        opens = []
        for _ in range(10):
            t0 = time.perf_counter()
            v = open_variants(gz)
            opens.append(time.perf_counter() - t0)
            assert isinstance(v, IndexedVariants)
            v.close()

        v = open_variants(gz)
        rng = np.random.default_rng(1)
        fetch_t, show_t, counts = [], [], []
        for _ in range(args.queries):
            chrom = CHROMS[rng.integers(len(CHROMS))]
            start = int(rng.integers(10_000, 10_000 + 20 * args.records // len(CHROMS)))
            r = Region(chrom, start, start + args.width)
            t0 = time.perf_counter()
            table = v.fetch(r)
            fetch_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            variant_layers(r, v)  # what the Genome view draws (reads the region again)
            show_t.append(time.perf_counter() - t0 + fetch_t[-1])
            counts.append(len(table))
        v.close()
        assert min(counts) > 0, "a query region held no variants"

        result = {
            "records": args.records,
            "samples": args.samples,
            "vcf_bytes": size_plain,
            "vcf_gz_bytes": size_gz,
            "prepare_write_s": round(t_write, 2),
            "prepare_bgzip_tabix_s": round(t_index, 2),
            "open_median_s": round(statistics.median(opens), 4),
            "open_max_s": round(max(opens), 4),
            "region_bp": args.width,
            "region_variants_median": int(statistics.median(counts)),
            "region_fetch_median_s": round(statistics.median(fetch_t), 4),
            "region_show_median_s": round(statistics.median(show_t), 4),
            "region_show_max_s": round(max(show_t), 4),
            "targets_met": max(opens) < 1.0 and max(show_t) < 1.0,
        }
        if args.reference:
            t0 = time.perf_counter()
            whole = read_vcf(gz)  # every record, through the same checks
            result["reference_read_whole_s"] = round(time.perf_counter() - t0, 2)
            result["reference_rows"] = len(whole)
        record("indexed_vcf", result)


if __name__ == "__main__":
    main()
