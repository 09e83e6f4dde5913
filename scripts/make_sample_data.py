"""Regenerate the shipped image sample data in ``sample_data/`` (deterministic).

Usage::

    python scripts/make_sample_data.py            # writes sample_data/nuclei*.tif
    python scripts/make_sample_data.py --out DIR  # somewhere else
    python scripts/make_sample_data.py --mosaic   # also build the 8k mosaic in the cache

The files come from :func:`napari_dlcb.data.synthetic.synthetic_nuclei` with a
fixed seed, so running this twice gives identical pixels; ``tests/core/
test_sample_data.py`` checks the committed files against it. ``README.md`` in
``sample_data/`` is written by hand and left alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_dlcb._sample_data import SAMPLE_SEED, make_nuclei_samples, mosaic_path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    parser.add_argument("--mosaic", action="store_true", help="also build the 8k mosaic")
    args = parser.parse_args(argv)

    for key, path in make_nuclei_samples(args.out, seed=args.seed).items():
        print(f"{key:10s} {path}  {path.stat().st_size / 1024:.0f} KiB")
    if args.mosaic:
        t0 = time.perf_counter()
        path = mosaic_path()
        print(f"mosaic     {path}  ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
