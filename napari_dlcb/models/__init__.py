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

from napari_dlcb.lazy import lazy_exports

_LAZY = {
    "UNet2D": "unet",
    "ModelMeta": "meta",
    "InferenceSpec": "spec",
    "save_model": "saved",
    "load_model": "saved",
    "load_meta": "meta",
    "register_architecture": "architectures",
    "build_model": "architectures",
    "list_builtin": "registry",
    "load_builtin": "registry",
    "resolve_base": "registry",
    "load_bioimageio": "bioimageio",
    "export_bioimageio": "bioimageio_export",
    "export_onnx": "onnx_export",
    "preserve_model_state": "state",
    "inference_mode_on": "state",
    "state_to_cpu": "state",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
