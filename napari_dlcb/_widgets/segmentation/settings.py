"""The dock's fields -> the task config, and which model Predict and Save use.

The dock builds the same :class:`~napari_dlcb.tasks.segmentation.SegmentationConfig`
as ``napari-dlcb train segmentation``; :func:`config_from_panel` is the only
place that reads the form. :class:`ModelInUse` makes the model state
explicit: the trained model (with where it came from and which weights it
holds) or the "Start from" choice, shown by name in the dock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_dlcb.tasks.segmentation.config import SegmentationConfig

__all__ = ["ModelInUse", "base_name", "config_from_panel"]


def config_from_panel(panel: Any, overrides: dict[str, Any] | None = None) -> SegmentationConfig:
    """The validated config of the dock's current fields (plus scripted ``overrides``).

    Raises
    ------
    DlcbError
        A field is out of range (one line naming it).
    """
    image = panel.image_layer
    live = panel.preview_check.isChecked()
    saliency = panel.saliency_combo.currentText()
    values: dict[str, Any] = {
        "label_kind": panel.kind_combo.currentText(),
        "base": panel.base_choice or "builtin",
        "mode": panel.mode_combo.currentData(),
        "epochs": panel.epochs_spin.value(),
        "lr": float(panel.lr_spin.value()),
        "device": panel.device_combo.currentText(),
        "channel_axis": -1 if image is not None and image.rgb else None,
        "live_saliency": None if saliency == "off" or not live else saliency,
    }
    values.update(overrides or {})
    return SegmentationConfig(**values).validate()


def base_name(base: str) -> str:
    """A short human name of a "Start from" value.

    Examples
    --------
    >>> base_name("builtin"), base_name("/data/models/nuclei-v2"), base_name("/z/unet/rdf.yaml")
    ('built-in nuclei U-Net', 'nuclei-v2', 'unet/rdf.yaml')
    """
    if base == "builtin" or base.startswith("builtin:"):
        return "built-in nuclei U-Net"
    if base in ("", "scratch", "in-memory"):
        return base or "no model chosen"
    path = Path(base)
    if path.name in ("bioimageio.yaml", "rdf.yaml"):  # a package: name its folder too
        return f"{path.parent.name}/{path.name}"
    return path.name or str(path)


@dataclass
class ModelInUse:
    """The model Predict and Save use: the trained one, or the "Start from" choice.

    Attributes
    ----------
    base : str
        The "Start from" value.
    trainer : SegmentationTask or None
        The model trained in this dock from ``trained_from``.
    trained_from : str
        The "Start from" value it was trained from.
    kept : str
        Which weights it holds (``Finished.kept``).
    """

    base: str = "builtin"
    trainer: Any = None
    trained_from: str = ""
    kept: str = ""

    @property
    def trained(self) -> bool:
        """Whether a model trained here is in use."""
        return self.trainer is not None

    def source(self) -> Any:
        """What ``segment`` accepts: ``(model, meta)`` of the trained model, or the base."""
        if self.trainer is not None:
            return (self.trainer.model, self.trainer.meta)
        return self.base

    def describe(self) -> str:
        """One or two lines for the dock: name and provenance."""
        if self.trainer is None:
            if not self.base:
                return "Model: none chosen (Start from a saved model or package)."
            problem = _not_a_model(self.base)
            if problem:
                return f"Model: {base_name(self.base)} {problem}; Predict and Train need a model."
            return f"Model: {base_name(self.base)}, as it is (not trained here)."
        mode = getattr(self.trainer, "mode", "")
        epochs = len(getattr(self.trainer, "history", []) or [])
        held = f"; it holds {self.kept}" if self.kept else ""
        return (
            f"Model: trained here from {base_name(self.trained_from)} "
            f"({mode} mode, {epochs} epoch(s)){held}."
        )


def _not_a_model(base: str) -> str:
    """Why a "Start from" path is not a model ("" if it may be one), from file names only."""
    if base == "builtin" or base.startswith("builtin:"):
        return ""
    from napari_dlcb.models.registry import is_model_dir

    if not Path(base).expanduser().exists():
        return "does not exist"
    if is_model_dir(base):
        return ""
    return "is not a model folder (no metadata.json) nor a bioimage.io package"
