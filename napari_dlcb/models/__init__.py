"""napari-dlcb core: models (no Qt here).

Importing this package is cheap: the names below are loaded (with torch) on
first access.

- :class:`~napari_dlcb.models.unet.UNet2D`: compact 2-D U-Net, any input size.
- :mod:`~napari_dlcb.models.saved`: the saved-model format, :func:`save_model`,
  :func:`load_model`; :mod:`~napari_dlcb.models.meta`: :class:`ModelMeta`,
  :func:`load_meta`; :mod:`~napari_dlcb.models.architectures`:
  :func:`register_architecture`, :func:`build_model`;
  :mod:`~napari_dlcb.models.weights`: safetensors weights.
- :mod:`~napari_dlcb.models.spec`: :class:`InferenceSpec`, how to run a model,
  read once from its metadata.
- :mod:`~napari_dlcb.models.registry`: :func:`list_builtin`,
  :func:`load_builtin`, :func:`resolve_base`.
- :mod:`~napari_dlcb.models.bioimageio`: :func:`load_bioimageio` (BioImage Model
  Zoo import); :mod:`~napari_dlcb.models.bioimageio_export`:
  :func:`export_bioimageio`; :mod:`~napari_dlcb.models.onnx_export`:
  :func:`export_onnx` (needs the ``bioimageio`` / ``onnx`` extras).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "UNet2D": "napari_dlcb.models.unet",
    "ModelMeta": "napari_dlcb.models.meta",
    "InferenceSpec": "napari_dlcb.models.spec",
    "save_model": "napari_dlcb.models.saved",
    "load_model": "napari_dlcb.models.saved",
    "load_meta": "napari_dlcb.models.meta",
    "register_architecture": "napari_dlcb.models.architectures",
    "build_model": "napari_dlcb.models.architectures",
    "list_builtin": "napari_dlcb.models.registry",
    "load_builtin": "napari_dlcb.models.registry",
    "resolve_base": "napari_dlcb.models.registry",
    "load_bioimageio": "napari_dlcb.models.bioimageio",
    "export_bioimageio": "napari_dlcb.models.bioimageio_export",
    "export_onnx": "napari_dlcb.models.onnx_export",
    "preserve_model_state": "napari_dlcb.models.state",
    "inference_mode_on": "napari_dlcb.models.state",
    "state_to_cpu": "napari_dlcb.models.state",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
