"""Read a bioimage.io model description (``bioimageio.yaml``, format 0.4 and 0.5).

Maps the tensors, pre- and postprocessing and weights entries of a parsed
description onto what :mod:`napari_dlcb.models.bioimageio` needs to build a
:class:`~napari_dlcb.models.meta.ModelMeta` (see the table there). Pure
Python: no torch, no file access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = [
    "check_bcyx",
    "format_version",
    "input_spec",
    "map_postprocessing",
    "map_preprocessing",
    "output_spec",
    "provenance",
    "tensor_axes",
    "torchscript_weights",
]

_AXIS_TYPES = {"batch": "b", "channel": "c", "index": "i", "time": "t"}
_IGNORED_POST = ("ensure_dtype", "binarize", "clip")


def format_version(rdf: Mapping[str, Any]) -> tuple[int, int]:
    """(major, minor) of the description's ``format_version`` (0.4 if absent)."""
    try:
        major, minor = str(rdf.get("format_version", "0.4.0")).split(".")[:2]
        return int(major), int(minor)
    except ValueError as err:
        raise DlcbError(f"bad format_version {rdf.get('format_version')!r}") from err


def tensor_axes(tensor: Mapping[str, Any], v05: bool) -> tuple[str, list[dict]]:
    """Return axis letters (e.g. 'bcyx') and per-axis dicts (0.5 style)."""
    axes = tensor.get("axes")
    if not v05:
        if not isinstance(axes, str):
            raise DlcbError("tensor 'axes' must be a string such as 'bcyx' (format 0.4)")
        return axes, [{} for _ in axes]
    if not isinstance(axes, list):
        raise DlcbError("tensor 'axes' must be a list (format 0.5)")
    letters = []
    for ax in axes:
        kind = ax.get("type")
        if kind in _AXIS_TYPES:
            letters.append(_AXIS_TYPES[kind])
        elif kind == "space":
            letters.append(str(ax.get("id", "x")))
        else:
            raise DlcbError(f"unknown axis type {kind!r}")
    return "".join(letters), list(axes)


def check_bcyx(letters: str, what: str) -> None:
    """Refuse tensors other than 2-D ``bcyx``."""
    if letters != "bcyx":
        raise DlcbError(
            f"{what} axes are {letters!r}; napari-dlcb imports 2-D models with 'bcyx' tensors only"
        )


def input_spec(tensor: Mapping[str, Any], v05: bool) -> tuple[int, dict]:
    """Return (in_channels, {"min": [y, x], "step": [y, x]})."""
    letters, axes = tensor_axes(tensor, v05)
    check_bcyx(letters, "input")
    if v05:
        names = axes[1].get("channel_names") or []
        n_in = len(names) if names else int(axes[1].get("size", 1))
        mins, steps = [], []
        for ax in axes[2:]:
            size = ax.get("size")
            if isinstance(size, int):
                mins.append(size)
                steps.append(0)
            elif isinstance(size, Mapping) and "min" in size:
                mins.append(int(size["min"]))
                steps.append(int(size.get("step", 0)))
            else:
                mins.append(0)
                steps.append(0)
        return n_in, {"min": mins, "step": steps}
    shape = tensor.get("shape")
    if isinstance(shape, list):
        return int(shape[1]), {"min": [int(s) for s in shape[2:]], "step": [0, 0]}
    if isinstance(shape, Mapping) and "min" in shape:
        mins, steps = list(shape["min"]), list(shape.get("step", [0] * 4))
        return int(mins[1]), {
            "min": [int(s) for s in mins[2:]],
            "step": [int(s) for s in steps[2:]],
        }
    raise DlcbError("input 'shape' is missing or not understood")


def output_spec(tensor: Mapping[str, Any], v05: bool) -> tuple[list[str], int]:
    """Return (channel names, halo) and check that the output is on the input grid."""
    letters, axes = tensor_axes(tensor, v05)
    check_bcyx(letters, "output")
    if v05:
        names = [str(n) for n in axes[1].get("channel_names") or []]
        halo = max(int(ax.get("halo", 0) or 0) for ax in axes[2:])
        for ax in axes[2:]:
            if float(ax.get("scale", 1.0)) != 1.0:
                raise DlcbError("the model output is not on the input's grid (axis scale != 1)")
        return names, halo
    halo_list = tensor.get("halo") or [0] * len(letters)
    halo = max(int(h) for h in halo_list[2:]) if len(halo_list) >= 4 else 0
    shape = tensor.get("shape")
    if isinstance(shape, Mapping):
        scale = shape.get("scale", [1, 1, 1, 1])
        offset = shape.get("offset", [0, 0, 0, 0])
        if any(float(s) != 1.0 for s in scale[2:]) or any(float(o) != 0 for o in offset[2:]):
            raise DlcbError("the model output is not on the input's grid (shape scale/offset)")
    return [], halo


def _op(step: Mapping[str, Any]) -> tuple[str, dict]:
    name = step.get("id", step.get("name"))
    if not isinstance(name, str):
        raise DlcbError("a pre/postprocessing step has no 'id'/'name'")
    return name, dict(step.get("kwargs") or {})


def _axes_list(axes: Any) -> list[str]:
    if isinstance(axes, str):
        return list(axes)
    return [str(a) for a in (axes or [])]


def map_preprocessing(steps: Sequence[Mapping[str, Any]] | None, input_id: str) -> dict:
    """The input preprocessing as a ``Normalizer`` dict (see the module table)."""
    norm: dict[str, Any] = {"mode": "none"}
    used: list[str] = []
    for step in steps or []:
        op, kw = _op(step)
        if op == "ensure_dtype":
            if not str(kw.get("dtype", "float32")).startswith("float"):
                raise DlcbError(f"unsupported input dtype {kw.get('dtype')!r} (float only)")
            continue
        used.append(op)
        eps = float(kw.get("eps", 1e-6))
        per_channel = "c" not in _axes_list(kw.get("axes")) and "channel" not in _axes_list(
            kw.get("axes")
        )
        if op == "zero_mean_unit_variance":
            mode = kw.get("mode", "per_sample")
            if mode == "fixed":
                norm = {"mode": "zscore", "mean": kw.get("mean"), "std": kw.get("std"), "eps": eps}
            elif mode == "per_dataset":
                norm = {"mode": "zscore", "eps": eps}
            else:
                norm = {"mode": "per_image_zscore", "eps": eps, "per_channel": per_channel}
        elif op == "fixed_zero_mean_unit_variance":
            norm = {"mode": "zscore", "mean": kw.get("mean"), "std": kw.get("std"), "eps": eps}
        elif op == "scale_range":
            ref = kw.get("reference_tensor")
            if ref not in (None, input_id):
                raise DlcbError("scale_range with another reference tensor is not supported")
            p_low = float(kw.get("min_percentile", 0.0))
            p_high = float(kw.get("max_percentile", 100.0))
            if kw.get("mode") == "per_dataset":
                norm = {"mode": "percentile", "p_low": p_low, "p_high": p_high}
            else:
                norm = {
                    "mode": "per_image_percentile",
                    "p_low": p_low,
                    "p_high": p_high,
                    "eps": eps,
                    "per_channel": per_channel,
                }
        else:
            raise DlcbError(
                f"unsupported preprocessing {op!r} (supported: zero_mean_unit_variance, "
                "fixed_zero_mean_unit_variance, scale_range)"
            )
    if len(used) > 1:
        raise DlcbError(
            f"the model chains several preprocessing steps {used}; only one is supported"
        )
    return norm


def map_postprocessing(steps: Sequence[Mapping[str, Any]] | None) -> str:
    """The output activation: ``"sigmoid"``, ``"softmax"`` or ``"none"``."""
    activation = "none"
    for step in steps or []:
        op, _ = _op(step)
        if op in ("sigmoid", "softmax"):
            activation = op
        elif op not in _IGNORED_POST:
            raise DlcbError(
                f"unsupported postprocessing {op!r}: napari-dlcb imports segmentation models "
                "whose outputs are logits or probabilities"
            )
    return activation


def torchscript_weights(rdf: Mapping[str, Any]) -> Mapping[str, Any]:
    """The description's TorchScript weights entry (``source``, ``sha256``)."""
    weights = rdf.get("weights") or {}
    entry = weights.get("torchscript") or weights.get("pytorch_script")
    if not isinstance(entry, Mapping) or "source" not in entry:
        have = ", ".join(sorted(weights)) or "none"
        raise DlcbError(
            f"the package has no TorchScript weights (has: {have}); napari-dlcb needs "
            "'torchscript' weights"
        )
    return entry


def provenance(
    rdf: Mapping[str, Any],
    weights: Mapping[str, Any],
    digest: str,
    channel_names: list[str],
    size: Mapping[str, list[int]],
) -> dict[str, Any]:
    """Where the model comes from, kept as ``meta.extra["bioimageio"]``."""
    authors = [
        a.get("name", "") if isinstance(a, Mapping) else str(a) for a in rdf.get("authors") or []
    ]
    cite = [
        {k: c[k] for k in ("text", "doi", "url") if k in c}
        for c in rdf.get("cite") or []
        if isinstance(c, Mapping)
    ]
    return {
        "name": rdf.get("name"),
        "id": rdf.get("id"),
        "version": rdf.get("version"),
        "format_version": str(rdf.get("format_version")),
        "description": rdf.get("description"),
        "license": rdf.get("license"),
        "authors": authors,
        "cite": cite,
        "weights": str(weights["source"]),
        "weights_sha256": digest,
        "output_channel_names": channel_names,
        "input_size": size,
    }
