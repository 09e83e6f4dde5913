"""Take the README screenshots of the live segmentation loop.

Opens napari with the plugin's sample session (nuclei image + scribbles), docks
the Segmentation widget, trains the built-in U-Net in quick mode for a short
while and saves:

- ``docs/screenshots/live_training.png``: training in progress, with the live
  prediction of the visible region over the image and the learning curve;
- ``docs/screenshots/segmentation.png``: the whole image segmented after
  training (Predict whole image).

Run it under a display (``xvfb-run -a python scripts/take_screenshots.py`` on a
headless machine). PNGs are quantised to 256 colours to stay small.

Usage::

    python scripts/take_screenshots.py [--out docs/screenshots] [--seconds 40]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _wait(app, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def _pump(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _save(viewer, path: Path, *, colors: int = 256) -> None:
    from PIL import Image

    rgba = viewer.screenshot(canvas_only=False, flash=False)
    img = Image.fromarray(np.asarray(rgba)[..., :3])
    img = img.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, {img.size[0]}x{img.size[1]})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--seconds", type=float, default=40.0, help="training time before Stop")
    parser.add_argument("--base", default="builtin", help="'builtin' or a saved model folder")
    parser.add_argument("--size", default="1280x800", help="window size, WxH")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dlcb._widgets._common import viewer_camera
    from napari_dlcb._widgets.segmentation import SegmentationWidget

    viewer = napari.Viewer(title="napari-dlcb")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    viewer.open_sample("napari-dlcb", "session")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation", area="right")
    app = QApplication.instance()
    widget.select_layers(image="nuclei", labels="scribbles")
    if args.base != "builtin":
        widget.base_combo.setCurrentIndex(widget.base_combo.findData("saved"))
        widget.base_path.setText(args.base)
    widget.epochs_spin.setValue(200)
    widget.fit_overrides = {"samples_per_epoch": 16}
    _wait(app, lambda: widget.warmed_up, 120, "background imports")
    _pump(app, 0.5)

    # zoom in a little so the live layer shows a viewport region, as a user would
    camera = viewer_camera(viewer)
    camera.zoom *= 1.4
    _pump(app, 0.3)
    t0 = time.monotonic()
    if not widget.start_training():
        raise SystemExit("training did not start; see the notification above")
    _wait(app, lambda: widget.n_preview_updates >= 2, 180, "the live prediction")
    _wait(app, lambda: len(widget.plot.epochs) >= 3, 300, "three epochs")
    remaining = args.seconds - (time.monotonic() - t0)
    _pump(app, max(remaining, 0.0))
    viewer.layers.selection.active = viewer.layers["scribbles"]
    _wait(app, lambda: not widget.plot.rendering, 30, "the learning curve")
    _pump(app, 0.5)
    _save(viewer, args.out / "live_training.png")

    widget.stop_training()
    _wait(app, lambda: not widget.is_training, 120, "training to stop")
    viewer.reset_view()
    if widget.preview_layer is not None:
        widget.preview_layer.visible = False
    if not widget.predict():
        raise SystemExit("prediction did not start")
    _wait(app, lambda: widget.predict_worker is None, 300, "the prediction")
    viewer.layers["scribbles"].visible = False
    _pump(app, 1.0)
    _save(viewer, args.out / "segmentation.png")
    widget.shutdown()
    viewer.close()


if __name__ == "__main__":
    main()
