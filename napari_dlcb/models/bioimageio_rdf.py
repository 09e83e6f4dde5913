"""Map a BioImage.IO model description onto napari-dlcb's metadata, and back.

The description is parsed and validated by ``bioimageio.spec`` (format 0.4
descriptions are converted to 0.5 on loading); this module only translates
its objects. Import: tensors, pre- and postprocessing of a
``bioimageio.spec.model.v0_5.ModelDescr`` become a
:class:`~napari_dlcb.models.meta.ModelMeta`'s ``normalization``,
``output_activation``, input size and halo (see the table in
:mod:`napari_dlcb.models.bioimageio`). Export: :func:`preprocessing_for` and
:func:`postprocessing_for` build the spec's processing steps from a
normaliser dict and an activation, and :func:`first_error` turns a failed
validation into one line. No torch, no file access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = [
    "CONFIG_KEY",
    "axis_letters",
    "check_bcyx",
    "first_error",
    "input_spec",
    "map_postprocessing",
    "map_preprocessing",
    "output_spec",
    "postprocessing_for",
    "preprocessing_for",
    "provenance",
    "spec_v05",
]

#: ``config`` key under which napari-dlcb keeps its own metadata in packages it writes
CONFIG_KEY = "napari-dlcb"

_AXIS_LETTERS = {"batch": "b", "channel": "c", "index": "i", "time": "t"}
_IGNORED_POST = ("ensure_dtype", "binarize", "clip")


def spec_v05() -> Any:
    """``bioimageio.spec.model.v0_5``, or a one-line error naming the extra to install."""
    try:
        from bioimageio.spec.model import v0_5
    except ImportError as err:
        raise DlcbError(
            "BioImage.IO packages need the 'bioimageio.spec' package: "
            "pip install 'napari-dlcb[bioimageio]'"
        ) from err
    return v0_5


def first_error(summary: Any) -> str:
    """The most telling error of a ``ValidationSummary``, as ``location: message``."""
    errors = [e for d in getattr(summary, "details", []) for e in getattr(d, "errors", [])]
    if not errors:
        return "invalid description"
    # the first error; among alternatives at the same place, the one that explains itself
    head = tuple(getattr(errors[0], "loc", ()))[:3]
    same = [e for e in errors if tuple(getattr(e, "loc", ()))[:3] == head]
    best = next((e for e in same if getattr(e, "type", "") == "value_error"), errors[0])
    loc = []
    for part in getattr(best, "loc", ()):
        text = str(part)
        if "[" in text or (text[:1].isupper() and not text.isupper()):
            break  # pydantic's internal union/validator names
        loc.append(text)
    msg = str(getattr(best, "msg", "")).removeprefix("Value error, ").strip()
    msg = " ".join(msg.split())
    line = f"{'.'.join(loc)}: {msg}" if loc else msg
    return line if len(line) <= 200 else line[:197] + "..."


# ------------------------------------------------------------------------------ import
def axis_letters(tensor: Any) -> str:
    """Axis letters of a 0.5 tensor description, e.g. ``"bcyx"``."""
    letters = []
    for ax in tensor.axes:
        kind = str(ax.type)
        letters.append(_AXIS_LETTERS.get(kind) or str(ax.id))
    return "".join(letters)


def check_bcyx(letters: str, what: str, allowed: Sequence[str] = ("bcyx",)) -> None:
    """Refuse tensors whose axes are not one of ``allowed``."""
    if letters not in allowed:
        raise DlcbError(
            f"{what} axes are {letters!r}; napari-dlcb imports 2-D models with 'bcyx' tensors only"
        )


def _n_channels(axis: Any) -> int:
    names = getattr(axis, "channel_names", None) or []
    return len(names) if names else int(getattr(axis, "size", 1) or 1)


def input_spec(tensor: Any) -> tuple[int, dict]:
    """``(in_channels, {"min": [y, x], "step": [y, x]})`` of a ``bcyx`` input tensor."""
    check_bcyx(axis_letters(tensor), "input")
    v05 = spec_v05()
    mins, steps = [], []
    for ax in tensor.axes[2:]:
        size = ax.size
        if isinstance(size, int):
            mins.append(int(size))
            steps.append(0)
        elif isinstance(size, v05.ParameterizedSize):
            mins.append(int(size.min))
            steps.append(int(size.step))
        else:  # a reference to another tensor: no constraint of its own
            mins.append(0)
            steps.append(0)
    return _n_channels(tensor.axes[1]), {"min": mins, "step": steps}


def output_spec(tensor: Any, input_id: str) -> tuple[str, list[str], int]:
    """``(kind, channel names, halo)`` of the output; kind ``"bcyx"`` or ``"bc"``.

    A ``bcyx`` output must lie on the input's grid (scale 1, no size offset).
    """
    letters = axis_letters(tensor)
    check_bcyx(letters, "output", ("bcyx", "bc"))
    names = [str(n) for n in getattr(tensor.axes[1], "channel_names", None) or []]
    halo = 0
    for ax in tensor.axes[2:]:
        halo = max(halo, int(getattr(ax, "halo", 0) or 0))
        size = ax.size
        ref_ok = getattr(size, "tensor_id", input_id) == input_id
        if float(getattr(ax, "scale", 1.0)) != 1.0 or getattr(size, "offset", 0) or not ref_ok:
            raise DlcbError("the model output is not on the input's grid (axis scale or offset)")
    return letters, names, halo


def _channel_values(kwargs: Any, *names: str) -> list[list[float]]:
    out = []
    for name in names:
        v = getattr(kwargs, name)
        out.append([float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)])
    return out


def _step_to_norm(step: Any, input_id: str) -> dict | None:
    """One preprocessing step as a Normalizer dict; None for a dtype step."""
    op, kw = str(step.id), getattr(step, "kwargs", None)
    if op == "ensure_dtype":
        if not str(kw.dtype).startswith("float"):
            raise DlcbError(f"unsupported input dtype {kw.dtype!r} (float only)")
        return None
    axes = [str(a) for a in (getattr(kw, "axes", None) or [])]
    per_channel = bool(axes) and "channel" not in axes
    eps = float(getattr(kw, "eps", 1e-6))
    if op == "zero_mean_unit_variance":
        return {"mode": "per_image_zscore", "eps": eps, "per_channel": per_channel}
    if op == "fixed_zero_mean_unit_variance":
        mean, std = _channel_values(kw, "mean", "std")
        return {"mode": "zscore", "mean": mean, "std": std, "eps": eps}
    if op == "scale_range":
        ref = getattr(kw, "reference_tensor", None)
        if ref not in (None, input_id):
            raise DlcbError("scale_range with another reference tensor is not supported")
        return {
            "mode": "per_image_percentile",
            "p_low": float(kw.min_percentile),
            "p_high": float(kw.max_percentile),
            "eps": eps,
            "per_channel": per_channel,
        }
    if op == "scale_linear":  # x * gain + offset == (x - mean) / std
        gain, offset = _channel_values(kw, "gain", "offset")
        if len(offset) == 1 and len(gain) > 1:
            offset = offset * len(gain)
        if len(gain) == 1 and len(offset) > 1:
            gain = gain * len(offset)
        if min(gain) <= 0:
            raise DlcbError("scale_linear with a gain <= 0 is not supported")
        return {
            "mode": "zscore",
            "mean": [-o / g for g, o in zip(gain, offset)],
            "std": [1.0 / g for g in gain],
        }
    raise DlcbError(
        f"unsupported preprocessing {op!r} (supported: zero_mean_unit_variance, "
        "fixed_zero_mean_unit_variance, scale_range, scale_linear)"
    )


def map_preprocessing(steps: Sequence[Any], input_id: str) -> dict:
    """The input preprocessing as a ``Normalizer`` dict (see the table in ``bioimageio``)."""
    norms = []
    for step in steps or []:
        norm = _step_to_norm(step, input_id)
        if norm is not None:
            norms.append((str(step.id), norm))
    if len(norms) > 1:
        raise DlcbError(
            f"the model chains several preprocessing steps {[n for n, _ in norms]}; "
            "only one is supported"
        )
    return norms[0][1] if norms else {"mode": "none"}


def map_postprocessing(steps: Sequence[Any]) -> str:
    """The output activation: ``"sigmoid"``, ``"softmax"`` or ``"none"``."""
    activation = "none"
    for step in steps or []:
        op = str(step.id)
        if op == "sigmoid":
            activation = op
        elif op == "softmax":
            if str(step.kwargs.axis) != "channel":
                raise DlcbError("softmax over an axis other than 'channel' is not supported")
            activation = op
        elif op not in _IGNORED_POST:
            raise DlcbError(
                f"unsupported postprocessing {op!r}: napari-dlcb imports models "
                "whose outputs are logits or probabilities"
            )
    return activation


def provenance(
    descr: Any, weights_source: str, digest: str, channel_names: list[str], size: Mapping
) -> dict[str, Any]:
    """Where the model comes from, kept as ``meta.extra["bioimageio"]``."""
    return {
        "name": descr.name,
        "id": None if descr.id is None else str(descr.id),
        "version": None if descr.version is None else str(descr.version),
        "format_version": str(descr.format_version),
        "description": descr.description,
        "license": None if descr.license is None else str(descr.license),
        "authors": [a.name for a in descr.authors],
        "cite": [
            {
                k: str(v)
                for k, v in (("text", c.text), ("doi", c.doi), ("url", c.url))
                if v is not None
            }
            for c in descr.cite
        ],
        "weights": weights_source,
        "weights_sha256": digest,
        "output_channel_names": channel_names,
        "input_size": dict(size),
    }


# ------------------------------------------------------------------------------ export
def _per_channel(values: Sequence[float], n: int) -> list[float]:
    vals = [float(v) for v in values]
    return vals * n if len(vals) == 1 else vals


def preprocessing_for(normalization: Mapping[str, Any] | None, in_channels: int) -> list[Any]:
    """The spec 0.5 preprocessing steps that reproduce a ``Normalizer`` dict.

    ``per_image_percentile`` -> ``scale_range`` over (y, x) of each sample and
    channel; ``per_image_zscore`` -> ``zero_mean_unit_variance`` likewise;
    fitted ``zscore`` -> ``fixed_zero_mean_unit_variance``; fitted
    ``percentile`` (low, high) -> ``scale_linear`` with gain ``1 / (high -
    low)``; ``none`` -> nothing. Every list starts with ``ensure_dtype float32``.
    """
    from napari_dlcb.data.normalize import Normalizer

    v05 = spec_v05()
    norm = Normalizer.from_dict(dict(normalization or {}))
    steps: list[Any] = [v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32"))]
    yx = [v05.AxisId("y"), v05.AxisId("x")]
    channel = v05.AxisId("channel")
    if norm.mode == "per_image_percentile":
        kw = v05.ScaleRangeKwargs(
            axes=yx, min_percentile=norm.p_low, max_percentile=norm.p_high, eps=1e-6
        )
        steps.append(v05.ScaleRangeDescr(kwargs=kw))
    elif norm.mode == "per_image_zscore":
        steps.append(
            v05.ZeroMeanUnitVarianceDescr(kwargs=v05.ZeroMeanUnitVarianceKwargs(axes=yx, eps=1e-6))
        )
    elif norm.mode == "zscore":
        mean = _per_channel(norm.low, in_channels)
        std = [max(s, 1e-6) for s in _per_channel(norm.high, in_channels)]
        kw = v05.FixedZeroMeanUnitVarianceAlongAxisKwargs(axis=channel, mean=mean, std=std)
        steps.append(v05.FixedZeroMeanUnitVarianceDescr(kwargs=kw))
    elif norm.mode == "percentile":
        low = _per_channel(norm.low, in_channels)
        high = _per_channel(norm.high, in_channels)
        gain = [1.0 / max(h - lo, 1e-6) for lo, h in zip(low, high)]
        offset = [-lo * g for lo, g in zip(low, gain)]
        kw = v05.ScaleLinearAlongAxisKwargs(axis=channel, gain=gain, offset=offset)
        steps.append(v05.ScaleLinearDescr(kwargs=kw))
    elif norm.mode != "none":
        raise DlcbError(f"cannot describe normalisation {norm.mode!r} for BioImage.IO")
    return steps


def postprocessing_for(activation: str | None) -> list[Any]:
    """``sigmoid`` or ``softmax`` over the channel axis; nothing for logits (``"none"``)."""
    v05 = spec_v05()
    if activation == "sigmoid":
        return [v05.SigmoidDescr()]
    if activation == "softmax":
        return [v05.SoftmaxDescr(kwargs=v05.SoftmaxKwargs(axis=v05.AxisId("channel")))]
    return []
