"""JSON for metadata files: numpy values, paths, tensors, sets and tuples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default"]


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy values, paths, tensors, sets and tuples.

    Examples
    --------
    >>> import json
    >>> json.dumps({"a": np.float32(0.5), "b": Path("x"), "c": {3}}, default=json_default)
    '{"a": 0.5, "b": "x", "c": [3]}'
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor, without importing torch
        return obj.detach().cpu().tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
