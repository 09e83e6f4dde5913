"""Opening the 8k x 8k nuclei mosaic lazily, and building it.

Measures, in one run:

* **creation** of the mosaic (:func:`napari_dlcb._sample_data.mosaic_path`) into
  a fresh temporary cache: wall time, and peak RSS growth of this process
  (``psutil`` sampled every 20 ms) against the size of the full-resolution
  image + labels it writes;
* **lazy open**: :func:`read_multiscale` and the napari reader hook
  (:func:`napari_dlcb.io._npe2.read_layers`), median of 20 opens;
* **first tile**: opening plus reading one 512 x 512 full-resolution chunk
  (what napari needs for a first zoomed-in view) and the whole coarsest level
  (what it needs for the first zoomed-out view);
* **reference**: reading the whole full-resolution level into memory, as an
  eager reader would. The ratio reference / lazy open is the headline.

    python benchmarks/bench_lazy_open.py [--size 8192] [--tile 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import record  # noqa: E402


class PeakRSS:
    """Sample this process's RSS in a thread; ``peak - start`` is the growth."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="dlcb-bench-cache-"))
    os.environ["NAPARI_DLCB_CACHE"] = str(cache)
    try:
        import numpy as np

        from napari_dlcb._sample_data import mosaic_path
        from napari_dlcb.data.synthetic import synthetic_nuclei
        from napari_dlcb.io._npe2 import read_layers
        from napari_dlcb.io.omezarr import read_multiscale
        from napari_dlcb.io.omezarr_write import write_ome_zarr

        # warm imports and code paths so that they do not count as creation memory
        synthetic_nuclei((64, 64))
        write_ome_zarr(cache / "warm.ome.zarr", np.zeros((64, 64), np.uint16))
        shutil.rmtree(cache / "warm.ome.zarr")

        with PeakRSS() as mem:
            t0 = time.perf_counter()
            path = mosaic_path(size=args.size, tile=args.tile)
            create_s = time.perf_counter() - t0
        full_bytes = args.size**2 * (2 + 4)  # uint16 image + int32 labels
        disk_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

        def timed(fn, n):
            times = []
            for _ in range(n):
                t = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t)
            return statistics.median(times), out

        open_s, (levels, meta) = timed(lambda: read_multiscale(path), args.repeats)
        reader_s, layers = timed(lambda: read_layers(str(path)), args.repeats)

        def first_tile():
            lv, _ = read_multiscale(path)
            return np.asarray(lv[0][:512, :512]), np.asarray(lv[-1])

        tile_s, (tile, coarse) = timed(first_tile, 5)

        t0 = time.perf_counter()
        full = np.asarray(levels[0])  # the eager reference
        eager_s = time.perf_counter() - t0
        assert full.shape == (args.size, args.size) and tile.shape == (512, 512)

        result = {
            "size": args.size,
            "tile": args.tile,
            "levels": [list(lv.shape) for lv in levels],
            "chunks": list(levels[0].chunksize),
            "create_s": create_s,
            "create_peak_rss_growth_mib": (mem.peak - mem.start) / 2**20,
            "full_res_image_plus_labels_mib": full_bytes / 2**20,
            "on_disk_mib": disk_bytes / 2**20,
            "lazy_open_read_multiscale_ms": open_s * 1e3,
            "lazy_open_napari_reader_ms": reader_s * 1e3,
            "reader_layers": [kind for _, _, kind in layers],
            "open_plus_first_512_tile_and_coarsest_level_ms": tile_s * 1e3,
            "coarsest_level_shape": list(coarse.shape),
            "reference_eager_full_res_read_s": eager_s,
            "ratio_eager_over_lazy_open": eager_s / open_s,
            "cpu_count": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        }
        record(f"lazy_open_{args.size}", result)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
