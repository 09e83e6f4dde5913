"""Take the README screenshot of the Genome view (``docs/screenshots/genome.png``).

Opens napari with the Genome view on real mouse data (``../shared/data/mm10_hoxd_region_4c``:
a FASTA of chr2:74,060,453-74,082,351, the HoxD regulatory regions BED and two
4C-seq bedGraphs), shows 3 kb of it, predicts the built-in model's tracks,
computes the CTCF mutation map and integrated-gradients logo, then zooms in on
the strongest effect until the bases are letters.

Run under a display: ``xvfb-run -a python scripts/take_genome_screenshot.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from take_screenshots import _pump, _save, _wait  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mm10_hoxd_region_4c"
FILES = (
    "mm10_chr2_74060452_74082351.fa",
    "HoxD_cluster_regulatory_regions_mm10.bed",
    "GSM3182415_E12PHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph",
    "GSM3182416_E12DHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--data", type=Path, default=DATA, help="the mm10_hoxd_region_4c folder")
    parser.add_argument("--size", default="1800x1000", help="window size, WxH")
    parser.add_argument("--region", default="chr2:74,066,001-74,069,000")
    parser.add_argument("--span", type=int, default=110, help="bp shown at the end")
    parser.add_argument("--task", default="CTCF")
    args = parser.parse_args(argv)
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_dlcb._widgets.genome import GenomeWidget

    viewer = napari.Viewer(title="napari-dlcb")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    app = QApplication.instance()
    w = GenomeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Genome view", area="right")

    def idle(what: str) -> None:
        _wait(app, lambda: not w.jobs.busy(), 600, what)
        if "failed" in w.status.text():
            raise SystemExit(w.status.text())
        _pump(app, 0.3)

    w.open_files([str(args.data / name) for name in FILES])
    idle("opening the files")
    w.region.setText(args.region)
    w.show_region()
    idle("the region")
    w.load_model()
    idle("the model")
    w.target.setCurrentText(args.task)
    for start in (w.start_predict, w.start_mutation_map, w.start_attribution):
        start()
        idle(start.__name__)
    # zoom in on the strongest effect of the mutation map, until the bases are letters
    effect = np.abs(w.mm_layer.data).sum(0)
    centre = w._region.start + int(np.argmax(effect))
    w.browser.go_to(centre - args.span // 2, centre + args.span - args.span // 2)
    w.tabs.setCurrentIndex(2)  # Predict
    _pump(app, 1.5)
    _save(viewer, args.out / "genome.png")
    viewer.close()


if __name__ == "__main__":
    main()
