"""Take the README screenshot of the genome view (``docs/screenshots/genome.png``).

Opens napari with the Genome view on the sample genome, computes the built-in
model's integrated-gradients logo for GATA3, the mutation map, the filter-motif
table and a motif scan, then zooms to a planted GATA3 cluster.

Run under a display: ``xvfb-run -a python scripts/take_genome_screenshot.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from take_screenshots import _pump, _save, _wait  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--size", default="1600x1000", help="window size, WxH")
    args = parser.parse_args(argv)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dlcb._widgets._common import viewer_camera
    from napari_dlcb._widgets.genome import GenomeWidget

    viewer = napari.Viewer(title="napari-dlcb")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    app = QApplication.instance()
    w = GenomeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Genome view", area="right")
    w.use_sample()
    w._load_model("builtin")
    w.target.setCurrentText("GATA3")
    for start, done in (
        (w.start_attribution, lambda: "attribution" not in w.workers),
        (w.start_mutation_map, lambda: "mutation_map" not in w.workers),
        (w.start_filter_motifs, lambda: "motifs" not in w.workers),
        (w.start_scan, lambda: "scan" not in w.workers),
    ):
        start()
        _wait(app, done, 300, start.__name__)
        _pump(app, 0.3)
    camera = viewer_camera(viewer)
    camera.center = (75, 2730)  # a planted GATA3 cluster in chrS1:1000-3200
    camera.zoom = viewer.canvas.size[1] / 90
    w._update_letters()
    _pump(app, 1.0)
    _save(viewer, args.out / "genome.png")
    viewer.close()


if __name__ == "__main__":
    main()
