"""Interpretation dock widget: saliency layers, filters and maximally activating patches.

A thin adapter over :mod:`napari_dlcb.interpret` (STYLE.md rule 2). Each
button builds an :class:`InterpretSettings`, runs one core call in a worker
thread and adds the result as layers on the source image's grid:

- a saliency map of a segmentation model or classifier, for a chosen class,
  over the visible viewport, the whole image or the selected object, shown
  with a diverging colormap centred on 0 over the source image;
- the first-layer filters as an image grid;
- the top-k maximally activating patches of a chosen channel of a chosen
  layer, as an image grid, with their locations as a Points layer;
- an input generated to maximise that channel (activation maximisation), as
  an image layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._common import (
    attribution_colormap,
    layer_grid,
    notify_error,
    refill_combo,
    visible_region,
)
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = ["InterpretSettings", "InterpretWidget", "compute_saliency_layer"]

METHODS = ["integrated-gradients", "gradients", "smoothgrad", "gradcam", "occlusion"]
REGIONS = ["viewport", "whole image", "selected object"]
NO_LAYER = "(none)"


@dataclass
class InterpretSettings:
    """Options of one saliency request."""

    model: str = "builtin"
    method: str = "integrated-gradients"
    target: str = ""
    region: str = "viewport"
    window: int = 16
    n_samples: int = 8
    margin: int = 32

    def as_core_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :func:`napari_dlcb.interpret.saliency.saliency`."""
        target: int | str | None = None
        if self.target.strip():
            t = self.target.strip()
            target = int(t) if t.lstrip("-").isdigit() else t
        return {
            "method": self.method,
            "target": target,
            "window": self.window,
            "stride": max(1, self.window // 2),
            "n_samples": self.n_samples,
        }


def _load(source: str) -> tuple[Any, Any]:
    from napari_dlcb.models import classifier as _classifier  # registers "cellclf"
    from napari_dlcb.models.registry import resolve_base

    del _classifier
    return resolve_base(source.strip() or "builtin")


def compute_saliency_layer(
    model: Any,
    meta: Any,
    image: np.ndarray,
    *,
    crop: tuple[slice, slice],
    region_mask: np.ndarray | None,
    channel_axis: int | None,
    **kwargs: Any,
) -> tuple[np.ndarray, tuple[int, int], Any]:
    """Normalise ``image[crop]`` as the model expects and compute one map on it.

    Returns the map, the crop's (row, col) offset in the image, and the result.
    Runs in a worker thread.
    """
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.interpret.saliency import saliency

    sub = image[crop] if channel_axis is None else np.asarray(image)[crop + (slice(None),)]
    x = Normalizer.from_dict(meta.normalization)(sub, channel_axis=channel_axis)
    res = saliency(
        model, x, channel_axis=0, classes=list(meta.classes), region=region_mask, **kwargs
    )
    return res.map, (crop[0].start or 0, crop[1].start or 0), res


class InterpretWidget(QWidget):
    """Dock widget: saliency, filters and top-activating patches of an image model."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self._model_cache: dict[str, tuple[Any, Any]] = {}
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.model_edit = QLineEdit("builtin")
        self.model_edit.setToolTip("'builtin', 'builtin:<name>' or a saved model folder")
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.target_edit = QLineEdit()
        self.target_edit.setPlaceholderText("class name or index (default: foreground/predicted)")
        self.region_combo = QComboBox()
        self.region_combo.addItems(REGIONS)
        self.window_spin = QSpinBox()
        self.window_spin.setRange(1, 256)
        self.window_spin.setValue(16)
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 256)
        self.samples_spin.setValue(8)
        self.saliency_button = QPushButton("Compute saliency")
        self.filters_button = QPushButton("First-layer filters")
        self.layer_edit = QLineEdit()
        self.layer_edit.setPlaceholderText("layer name (default: last 3x3 convolution)")
        self.channel_spin = QSpinBox()
        self.channel_spin.setRange(0, 4095)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 256)
        self.k_spin.setValue(16)
        self.patches_button = QPushButton("Top activating patches")
        self.actmax_button = QPushButton("Activation maximisation")
        self.actmax_button.setToolTip(
            "Generate an input that maximises the mean activation of the channel\n"
            "(gradient ascent with L2, total-variation and jitter regularisation)"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("objects", self.labels_combo)
        form.addRow("model", self.model_edit)
        form.addRow("method", self.method_combo)
        form.addRow("target class", self.target_edit)
        form.addRow("region", self.region_combo)
        form.addRow("occlusion window", self.window_spin)
        form.addRow("SmoothGrad samples", self.samples_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.saliency_button)
        layout.addWidget(self.filters_button)
        form2 = QFormLayout()
        form2.addRow("layer", self.layer_edit)
        form2.addRow("channel", self.channel_spin)
        form2.addRow("k", self.k_spin)
        layout.addLayout(form2)
        channel_views = QHBoxLayout()
        channel_views.addWidget(self.patches_button)
        channel_views.addWidget(self.actmax_button)
        layout.addLayout(channel_views)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.saliency_button.clicked.connect(self.compute_saliency)
        self.filters_button.clicked.connect(self.show_filters)
        self.patches_button.clicked.connect(self.show_top_patches)
        self.actmax_button.clicked.connect(self.show_activation_maximisation)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ plumbing
    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        for combo, kind, extra in (
            (self.image_combo, Image, []),
            (self.labels_combo, Labels, [NO_LAYER]),
        ):
            names = extra + [
                ly.name
                for ly in self.viewer.layers
                if isinstance(ly, kind)
                and not ly.name.startswith(("saliency", "filters", "top ", "act-max"))
            ]
            refill_combo(combo, names)

    def settings(self) -> InterpretSettings:
        """Current options."""
        return InterpretSettings(
            model=self.model_edit.text(),
            method=self.method_combo.currentText(),
            target=self.target_edit.text(),
            region=self.region_combo.currentText(),
            window=int(self.window_spin.value()),
            n_samples=int(self.samples_spin.value()),
        )

    def model(self) -> tuple[Any, Any]:
        """The chosen model and its metadata (loaded once per source)."""
        src = self.model_edit.text().strip() or "builtin"
        if src not in self._model_cache:
            self._model_cache[src] = _load(src)
        return self._model_cache[src]

    def _image(self) -> tuple[Any, np.ndarray, int | None]:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise DlcbError("choose an image layer")
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        channel_axis = -1 if getattr(layer, "rgb", False) else None
        if data.ndim != (3 if channel_axis is not None else 2):
            raise DlcbError(f"layer '{name}' is not a 2-D image (shape {data.shape})")
        return layer, data, channel_axis

    def _run(self, fn: Any, done: Any) -> None:
        from napari.qt.threading import create_worker

        if self.worker is not None:
            notify_error("a computation is already running")
            return
        self.worker = create_worker(fn)
        self.worker.returned.connect(done)
        self.worker.errored.connect(notify_error)
        self.worker.finished.connect(self._finished)
        self.status.setText("computing...")
        self.worker.start()

    def _finished(self) -> None:
        self.worker = None

    # ------------------------------------------------------------------ saliency
    def _crop_and_region(
        self, settings: InterpretSettings, layer: Any, shape: tuple[int, int]
    ) -> tuple[tuple[slice, slice], np.ndarray | None]:
        H, W = shape
        if settings.region == "whole image":
            return (slice(0, H), slice(0, W)), None
        if settings.region == "viewport":
            view = visible_region(self.viewer, layer) or (slice(0, H), slice(0, W))
            r0, r1 = max(view[0].start - settings.margin, 0), min(view[0].stop + settings.margin, H)
            c0, c1 = max(view[1].start - settings.margin, 0), min(view[1].stop + settings.margin, W)
            mask = np.zeros((r1 - r0, c1 - c0), bool)
            mask[view[0].start - r0 : view[0].stop - r0, view[1].start - c0 : view[1].stop - c0] = (
                True
            )
            return (slice(r0, r1), slice(c0, c1)), mask
        name = self.labels_combo.currentText()
        if name == NO_LAYER or name not in self.viewer.layers:
            raise DlcbError("choose an objects (labels) layer to explain one object")
        labels = self.viewer.layers[name]
        lab = np.asarray(labels.data)
        oid = int(labels.selected_label)
        rows, cols = np.nonzero(lab == oid)
        if rows.size == 0:
            raise DlcbError(f"object {oid} is not in '{name}': select an object first")
        r0, r1 = max(rows.min() - settings.margin, 0), min(rows.max() + 1 + settings.margin, H)
        c0, c1 = max(cols.min() - settings.margin, 0), min(cols.max() + 1 + settings.margin, W)
        return (slice(r0, r1), slice(c0, c1)), lab[r0:r1, c0:c1] == oid

    def compute_saliency(self) -> None:
        """Compute the chosen map in a worker and add it as a diverging layer."""
        try:
            settings = self.settings()
            layer, data, channel_axis = self._image()
            shape = data.shape[:2] if channel_axis is not None else data.shape
            crop, mask = self._crop_and_region(settings, layer, shape)
            model, meta = self.model()
            kwargs = settings.as_core_arguments()
        except DlcbError as err:
            notify_error(err)
            return
        if meta.task == "classification":
            mask = None  # a classifier explains its class score, not a region

        def work():
            return compute_saliency_layer(
                model, meta, data, crop=crop, region_mask=mask, channel_axis=channel_axis, **kwargs
            )

        self._run(work, lambda out: self._add_saliency(layer, settings, meta, *out))

    def _add_saliency(self, source: Any, settings: InterpretSettings, meta: Any,
                      smap: np.ndarray, offset: tuple[int, int], res: Any) -> Any:  # fmt: skip
        grid = layer_grid(source)
        translate = tuple(t + o * s for t, o, s in zip(grid["translate"], offset, grid["scale"]))
        lim = float(np.abs(smap).max()) or 1.0
        cls = meta.classes[res.target] if res.target < len(meta.classes) else str(res.target)
        name = f"saliency {res.method} ({cls})"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        out = self.viewer.add_image(
            smap, name=name, colormap=attribution_colormap(), contrast_limits=(-lim, lim), opacity=0.9,
            blending="translucent", scale=grid["scale"], translate=translate,
        )  # fmt: skip
        out.metadata["saliency"] = {"offset": offset, "target": res.target, **res.extra}
        text = f"{res.method} for class '{cls}' on {smap.shape[0]}x{smap.shape[1]} px"
        if "relative_completeness_error" in res.extra:
            text += f"; completeness error {100 * res.extra['relative_completeness_error']:.2f} %"
        self.status.setText(text)
        self.last_layer = out
        return out

    # ------------------------------------------------------------------ network views
    def show_filters(self) -> Any:
        """Add the first-layer filters of the model as an image grid."""
        from napari_dlcb.interpret.network import filter_grid

        try:
            model, _ = self.model()
            grid, w = filter_grid(model)
        except DlcbError as err:
            notify_error(err)
            return None
        name = "filters (first layer)"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        style = {"colormap": "gray", "contrast_limits": (0, 1)} if grid.ndim == 2 else {}
        layer = self.viewer.add_image(grid, name=name, rgb=grid.ndim == 3, **style)
        self.status.setText(
            f"{w.shape[0]} filters of {w.shape[1]} channel(s), {w.shape[2]}x{w.shape[3]}"
        )
        return layer

    def show_top_patches(self) -> None:
        """Find the top-k patches of a channel on the chosen image (worker)."""
        from napari_dlcb.data.normalize import Normalizer
        from napari_dlcb.interpret.network import top_activating_patches

        try:
            layer, data, channel_axis = self._image()
            model, meta = self.model()
            x = Normalizer.from_dict(meta.normalization)(data, channel_axis=channel_axis)
        except DlcbError as err:
            notify_error(err)
            return
        layer_name = self.layer_edit.text().strip() or None
        channel, k = int(self.channel_spin.value()), int(self.k_spin.value())

        def work():
            return top_activating_patches(
                model, [x], layer=layer_name, channel=channel, k=k, channel_axis=0
            )

        self._run(work, lambda tp: self._add_patches(layer, tp, channel))

    def _add_patches(self, source: Any, tp: Any, channel: int) -> None:
        grid = layer_grid(source)
        for name in (f"top patches ch {channel}", f"top locations ch {channel}"):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        h, w = source.data.shape[:2]
        self.viewer.add_image(
            tp.grid, name=f"top patches ch {channel}", colormap="gray",
            translate=(0, w * grid["scale"][1] * 1.05 + grid["translate"][1]),
            scale=grid["scale"],
        )  # fmt: skip
        pts = self.viewer.add_points(
            tp.locations[:, 1:], name=f"top locations ch {channel}", size=tp.patch_size,
            symbol="square", face_color="transparent", border_color="yellow",
            features={"rank": np.arange(1, len(tp.values) + 1), "activation": tp.values},
            text={"string": "{rank}", "color": "yellow", "size": 8}, **grid,
        )  # fmt: skip
        self.status.setText(
            f"top {len(tp.values)} patches ({tp.patch_size} px) for channel {channel}"
        )
        self.last_points = pts

    def show_activation_maximisation(self) -> None:
        """Generate an input maximising the chosen channel of the chosen layer (worker)."""
        try:
            model, meta = self.model()
        except DlcbError as err:
            notify_error(err)
            return
        layer_name = self.layer_edit.text().strip() or None
        channel = int(self.channel_spin.value())
        in_channels = int(getattr(meta, "in_channels", 1) or 1)

        def work():
            from napari_dlcb.interpret.network import activation_maximisation
            from napari_dlcb.interpret.saliency import resolve_layer

            mod = resolve_layer(model, layer_name)
            name = next(n for n, m in model.named_modules() if m is mod)
            image, trace = activation_maximisation(
                model, layer=mod, channel=channel, in_channels=in_channels
            )
            return name, image, trace

        self._run(work, lambda out: self._add_actmax(channel, *out))

    def _add_actmax(self, channel: int, layer_name: str, image: np.ndarray, trace: list) -> Any:
        name = f"act-max {layer_name}[{channel}]"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        # beside the chosen image (if any), at the image's pixel size
        place: dict[str, Any] = {}
        source = self.image_combo.currentText()
        if source and source in self.viewer.layers:
            src = self.viewer.layers[source]
            grid = layer_grid(src)
            w = src.data.shape[1] if getattr(src, "rgb", False) else src.data.shape[-1]
            place = {
                "scale": grid["scale"],
                "translate": (
                    grid["translate"][0],
                    grid["translate"][1] + w * grid["scale"][1] * 1.05,
                ),
            }
        data = image[0] if image.shape[0] == 1 else image  # (Y, X), or (C, Y, X) as a stack
        if data.ndim == 3:
            place = {k: (1.0, *v) if k == "scale" else (0.0, *v) for k, v in place.items()}
        layer = self.viewer.add_image(data, name=name, colormap="gray", **place)
        layer.metadata["activation_maximisation"] = {
            "layer": layer_name,
            "channel": channel,
            "trace": list(trace),
        }
        self.status.setText(
            f"{name}: mean activation {trace[0]:.3g} -> {trace[-1]:.3g} in {len(trace)} steps"
        )
        self.last_actmax = layer
        return layer
