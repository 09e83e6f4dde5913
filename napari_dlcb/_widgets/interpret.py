"""Interpretation dock widget: saliency layers, filters and maximally activating patches.

A thin adapter over :mod:`napari_dlcb.interpret` (STYLE.md rule 2). Every
action is a job of one :class:`~napari_dlcb._widgets._jobs.JobRunner`
(progress in napari's activity dock, Stop, one error path: a one-line
notification and the same line in the status), so no click waits for a model:

- the model (``builtin``, a saved model folder or a BioImage.IO package,
  typed or chosen with Browse) is loaded in the background as soon as it is
  chosen (warm-up), and by the first job that needs it otherwise;
- a saliency map of a segmentation model or classifier, for a chosen class,
  over the visible viewport (the default: fast), the whole image or the
  selected object, shown with a diverging colormap centred on 0 over the
  source image; integrated gradients report progress and Stop cancels them;
- the network views (:mod:`~napari_dlcb._widgets.interpret_views`): the
  first-layer filters, the top-k maximally activating patches of a channel,
  and an input generated to maximise it, each placed beside the image.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    refill_combo,
    visible_region,
)
from napari_dlcb._widgets._jobs import JobRunner
from napari_dlcb._widgets.interpret_views import VIEW_KEY, NetworkViewsMixin
from napari_dlcb._widgets.model_field import (
    ModelCache,
    ModelField,
    check_model_source,
    describe_model,
)
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = ["InterpretSettings", "InterpretWidget", "compute_saliency_layer"]

METHODS = ["integrated-gradients", "gradients", "smoothgrad", "gradcam", "occlusion"]
REGIONS = ["viewport", "whole image", "selected object"]
NO_LAYER = "(none)"
REGION_TOOLTIP = (
    "viewport (default): what is on screen plus a margin; seconds.\n"
    "whole image: every pixel; integrated gradients of a U-Net on a large image can take\n"
    "minutes on a CPU (progress in the activity dock; Stop cancels).\n"
    "selected object: the selected label of the objects layer."
)


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


@dataclass
class _SaliencyOut:
    map: np.ndarray
    offset: tuple[int, int]
    result: Any  # napari_dlcb.interpret.attribution.Attribution
    meta: Any


def compute_saliency_layer(
    model: Any,
    meta: Any,
    image: np.ndarray,
    *,
    crop: tuple[slice, slice],
    region_mask: np.ndarray | None,
    channel_axis: int | None,
    stop: Any = None,
    **kwargs: Any,
) -> Iterator[Any]:
    """Normalise ``image[crop]`` as the model expects and compute one map on it (a job).

    Yields progress; returns ``(map, (row, col) offset of the crop, Attribution)``,
    or None if stopped.
    """
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.interpret.saliency import iter_saliency

    sub = image[crop] if channel_axis is None else np.asarray(image)[crop + (slice(None),)]
    x = Normalizer.from_dict(meta.normalization)(sub, channel_axis=channel_axis)
    if meta.task == "classification":
        region_mask = None  # a classifier explains its class score, not a region
    res = yield from iter_saliency(
        model, x, channel_axis=0, classes=list(meta.classes), region=region_mask, stop=stop,
        **kwargs,
    )  # fmt: skip
    if res is None:
        return None
    return res.map, (crop[0].start or 0, crop[1].start or 0), res


def _saliency_job(
    models: ModelCache, source: str, *args: Any, stop: Any = None, **kwargs: Any
) -> Iterator[Any]:
    model, meta = models.get(source)
    out = yield from compute_saliency_layer(model, meta, *args, stop=stop, **kwargs)
    return None if out is None else _SaliencyOut(*out, meta)


class InterpretWidget(NetworkViewsMixin, QWidget):
    """Dock widget: saliency, filters and top-activating patches of an image model."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.models = ModelCache()
        self._warmed = False
        self._build_fields()
        self._build_layout()
        self.jobs = JobRunner(self.status.setText, on_busy=self.stop_button.setEnabled, parent=self)
        self.saliency_button.clicked.connect(self.compute_saliency)
        self.filters_button.clicked.connect(self.show_filters)
        self.patches_button.clicked.connect(self.show_top_patches)
        self.actmax_button.clicked.connect(self.show_activation_maximisation)
        self.stop_button.clicked.connect(self.stop)
        self.model_field.committed.connect(self.warm_up)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def _build_fields(self) -> None:
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.model_field = ModelField("builtin", parent=self)
        self.model_edit, self.browse_button = self.model_field.edit, self.model_field.browse
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.target_edit = QLineEdit()
        self.target_edit.setPlaceholderText("class name or index (default: foreground/predicted)")
        self.region_combo = QComboBox()
        self.region_combo.addItems(REGIONS)
        self.region_combo.setToolTip(REGION_TOOLTIP)
        self.window_spin = _spin(1, 256, 16)
        self.samples_spin = _spin(1, 256, 8)
        self.saliency_button = QPushButton("Compute saliency")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.filters_button = QPushButton("First-layer filters")
        self.layer_edit = QLineEdit()
        self.layer_edit.setPlaceholderText("layer name (default: last 3x3 convolution)")
        self.channel_spin = _spin(0, 4095, 0)
        self.k_spin = _spin(1, 256, 16)
        self.patches_button = QPushButton("Top activating patches")
        self.actmax_button = QPushButton("Activation maximisation")
        self.actmax_button.setToolTip(
            "Generate an input that maximises the mean activation of the channel\n"
            "(gradient ascent with L2, total-variation and jitter regularisation)"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("objects", self.labels_combo)
        form.addRow("model", self.model_field)
        form.addRow("method", self.method_combo)
        form.addRow("target class", self.target_edit)
        form.addRow("region", self.region_combo)
        form.addRow("occlusion window", self.window_spin)
        form.addRow("SmoothGrad samples", self.samples_spin)
        run_row = QHBoxLayout()
        run_row.addWidget(self.saliency_button)
        run_row.addWidget(self.stop_button)
        form2 = QFormLayout()
        form2.addRow("layer", self.layer_edit)
        form2.addRow("channel", self.channel_spin)
        form2.addRow("k", self.k_spin)
        channel_views = QHBoxLayout()
        channel_views.addWidget(self.patches_button)
        channel_views.addWidget(self.actmax_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(run_row)
        layout.addWidget(self.filters_button)
        layout.addLayout(form2)
        layout.addLayout(channel_views)
        layout.addWidget(self.status)
        layout.addStretch(1)

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
                and not ly.metadata.get(VIEW_KEY)
                and not ly.name.startswith(("saliency", "filters", "top ", "act-max"))
            ]
            refill_combo(combo, names)

    @property
    def worker(self) -> Any:
        """The worker of the running computation, or None."""
        return self.jobs.worker("compute")

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

    def source(self) -> str:
        """The model source in the field, checked (DlcbError if it cannot be a model)."""
        return check_model_source(self.model_edit.text())

    def model(self) -> tuple[Any, Any]:
        """The chosen model and its metadata (loaded once per source; blocks: Python API)."""
        return self.models.get(self.source())

    def _start(self, name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``func(models, source, *args)`` as the one computation job (refused if busy)."""
        try:
            source = self.source()
        except DlcbError as err:
            self.jobs.report(err)
            return None
        job = self.jobs.run(name, func, self.models, source, *args, kind="compute", **kwargs)
        if job is None:
            self.jobs.report(
                f"{self.jobs.job('compute').name} is running: wait for it or press Stop"
            )
        return job

    def stop(self) -> None:
        """Cancel the running computation."""
        self.jobs.cancel("compute")

    # ------------------------------------------------------------------ model choice
    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if not self._warmed:
            self._warmed = True
            self.warm_up()

    def warm_up(self) -> Any:
        """Check the model field and load that model in the background (returns the job)."""
        try:
            source = self.source()
        except DlcbError as err:
            self.jobs.report(err)
            return None
        if self.models.cached(source) or self.jobs.busy("load"):
            return None
        return self.jobs.run(
            "Loading model",
            self.models.get,
            source,
            kind="load",
            on_return=lambda out: self._loaded(source, out[1]),
            status=f"loading {source}…",
        )

    def _loaded(self, source: str, meta: Any) -> None:
        if not self.jobs.busy("compute"):  # the computation's status line comes first
            self.status.setText(describe_model(source, meta))

    # ------------------------------------------------------------------ saliency
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

    def _crop_and_region(
        self, settings: InterpretSettings, layer: Any, shape: tuple[int, int]
    ) -> tuple[tuple[slice, slice], np.ndarray | None]:
        H, W = shape
        m = settings.margin
        if settings.region == "whole image":
            return (slice(0, H), slice(0, W)), None
        if settings.region == "viewport":
            view = visible_region(self.viewer, layer) or (slice(0, H), slice(0, W))
            r0, r1 = max(view[0].start - m, 0), min(view[0].stop + m, H)
            c0, c1 = max(view[1].start - m, 0), min(view[1].stop + m, W)
            mask = np.zeros((r1 - r0, c1 - c0), bool)
            mask[view[0].start - r0 : view[0].stop - r0, view[1].start - c0 : view[1].stop - c0] = 1
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
        r0, r1 = max(rows.min() - m, 0), min(rows.max() + 1 + m, H)
        c0, c1 = max(cols.min() - m, 0), min(cols.max() + 1 + m, W)
        return (slice(r0, r1), slice(c0, c1)), lab[r0:r1, c0:c1] == oid

    def compute_saliency(self) -> Any:
        """Compute the chosen map in a job and add it as a diverging layer (returns the job)."""
        try:
            settings = self.settings()
            layer, data, channel_axis = self._image()
            shape = data.shape[:2] if channel_axis is not None else data.shape
            crop, mask = self._crop_and_region(settings, layer, shape)
        except DlcbError as err:
            self.jobs.report(err)
            return None
        return self._start(
            "Saliency",
            _saliency_job,
            data,
            crop=crop,
            region_mask=mask,
            channel_axis=channel_axis,
            on_return=lambda out: self._add_saliency(layer, out),
            status=f"{settings.method} on {crop[0].stop - crop[0].start}x"
            f"{crop[1].stop - crop[1].start} px…",
            **settings.as_core_arguments(),
        )

    def _add_saliency(self, source: Any, out: _SaliencyOut | None) -> Any:
        if out is None:  # stopped
            return None
        smap, offset, res, meta = out.map, out.offset, out.result, out.meta
        grid = layer_grid(source)
        translate = tuple(t + o * s for t, o, s in zip(grid["translate"], offset, grid["scale"]))
        lim = float(np.abs(smap).max()) or 1.0
        cls = meta.classes[res.target] if res.target < len(meta.classes) else str(res.target)
        name = f"saliency {res.method} ({cls})"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_image(
            smap, name=name, colormap=attribution_colormap(), contrast_limits=(-lim, lim),
            opacity=0.9, blending="translucent", scale=grid["scale"], translate=translate,
        )  # fmt: skip
        layer.metadata["saliency"] = {"offset": offset, "target": res.target, **res.extra}
        text = f"{res.method} for class '{cls}' on {smap.shape[0]}x{smap.shape[1]} px"
        if "relative_completeness_error" in res.extra:
            text += f"; completeness error {100 * res.extra['relative_completeness_error']:.2f} %"
        self.status.setText(text)
        self.last_layer = layer
        return layer

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.jobs.cancel_all_and_wait()
        super().closeEvent(event)


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
