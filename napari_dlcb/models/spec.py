"""How to run a model, read once from its metadata: :class:`InferenceSpec`.

Every caller that predicts with a saved, built-in or imported model (headless
:func:`~napari_dlcb.inference.segment.segment`, block-wise and distributed
prediction, the live preview of the segmentation task) builds its options
here, so that the normalisation, the output activation, the label convention
and the context (halo) are the same everywhere::

    spec = InferenceSpec.from_meta(meta)
    prob = predict_tiled(model, image, halo=spec.halo, activation=spec.activation,
                         normalizer=spec.normalizer(), size_multiple=spec.size_multiple)
    labels = labels_from_probabilities(prob, meta)

Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = ["DEFAULT_HALO", "InferenceSpec"]

#: Context pixels around every tile when a model declares none (the built-in U-Net's).
DEFAULT_HALO = 32


@dataclass(frozen=True)
class InferenceSpec:
    """Inference options of one model, from its :class:`~napari_dlcb.models.meta.ModelMeta`.

    Parameters
    ----------
    activation : {"softmax", "sigmoid", None}
        Applied to the logits over the class axis (None: the outputs are used as they are).
    halo : int
        Context pixels read around every tile and never written: the model's
        declared halo (``extra["halo"]``, e.g. a BioImage.IO output halo) if it
        declares a positive one, else :data:`DEFAULT_HALO` (as before halos
        were read, so models without one predict exactly as they did).
    size_multiple : int or None
        Every input side must be a multiple of this (``extra["size_multiple"]``).
    normalization : dict
        ``Normalizer.to_dict()`` form of the input normalisation.
    in_channels : int
        Input channels the model expects.
    classes : tuple of str
        Output class names.
    label_kind : str or None
        ``"instances"``, ``"classes"``, ``"scribbles"`` or None.
    class_values : tuple of int or None
        Label value written for each class; scribble models without explicit
        values write class k as k + 1 (0 means "not annotated").
    postprocess : dict
        Instance post-processing options stored with the model.

    Examples
    --------
    >>> from napari_dlcb.models.meta import ModelMeta
    >>> meta = ModelMeta("segmentation", {"name": "unet2d"}, ["bg", "fg"],
    ...                  label_kind="scribbles", extra={"halo": 48})
    >>> spec = InferenceSpec.from_meta(meta)
    >>> spec.halo, spec.activation, spec.class_values, spec.label_mode
    (48, 'softmax', (1, 2), 'classes')
    """

    activation: str | None = "softmax"
    halo: int = DEFAULT_HALO
    size_multiple: int | None = None
    normalization: dict = field(default_factory=dict)
    in_channels: int = 1
    classes: tuple[str, ...] = ()
    label_kind: str | None = None
    class_values: tuple[int, ...] | None = None
    postprocess: dict = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: Any) -> InferenceSpec:
        """Build the spec from a ``ModelMeta`` (or its dict form).

        Parameters
        ----------
        meta : ModelMeta or mapping

        Returns
        -------
        InferenceSpec

        Raises
        ------
        DlcbError
            A declared halo or size multiple that is not a non-negative integer.
        """
        get = meta.get if isinstance(meta, Mapping) else lambda k, d=None: getattr(meta, k, d)
        extra = get("extra") or {}
        activation = get("output_activation", "softmax")
        classes = tuple(str(c) for c in get("classes") or ())
        kind = get("label_kind")
        values = get("class_values")
        if values is None and kind == "scribbles":
            values = list(range(1, len(classes) + 1))
        return cls(
            activation=None if activation in (None, "none") else str(activation),
            halo=_declared(extra, "halo", DEFAULT_HALO, minimum=1),
            size_multiple=_declared(extra, "size_multiple", None, minimum=1),
            normalization=dict(get("normalization") or {}),
            in_channels=int(get("in_channels", 1) or 1),
            classes=classes,
            label_kind=kind,
            class_values=None if values is None else tuple(int(v) for v in values),
            postprocess=dict(extra.get("postprocess") or {}),
        )

    @property
    def label_mode(self) -> str:
        """``"instances"`` for instance models, else ``"classes"`` (how labels are made)."""
        return "instances" if self.label_kind == "instances" else "classes"

    def normalizer(self) -> Any:
        """The input :class:`~napari_dlcb.data.normalize.Normalizer`."""
        from napari_dlcb.data.normalize import Normalizer

        return Normalizer.from_dict(self.normalization)

    def postprocess_options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The stored instance post-processing options, updated with ``overrides``."""
        return {**self.postprocess, **dict(overrides or {})}


def _declared(extra: Mapping[str, Any], key: str, default: Any, *, minimum: int) -> Any:
    """An integer the model declares in ``extra[key]``; ``default`` if absent, None or 0."""
    value = extra.get(key)
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DlcbError(f"model metadata: extra[{key!r}] must be an integer, not {value!r}")
    if int(value) < minimum:
        raise DlcbError(f"model metadata: extra[{key!r}] must be >= {minimum}, not {value}")
    return int(value)
