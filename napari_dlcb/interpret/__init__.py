"""napari-dlcb core: interpret (no Qt here).

Sequence interpretation (issue 3) is imported lazily so that importing this
package does not import torch: ``from napari_dlcb.interpret import mutation_map``.
"""

from __future__ import annotations

import importlib

# name -> submodule (lazy: torch is imported only when the name is used)
_LAZY = {
    "mutation_map": "ism",
    "iter_mutation_map": "ism",
    "naive_mutation_map": "ism",
    # image interpretation: one method per module (gradients, integrated_gradients, gradcam,
    # occlusion), dispatched by name by saliency.saliency / saliency.iter_saliency
    "iter_saliency": "saliency",
    "SaliencyResult": "saliency",
    "filter_grid": "network",
    "top_activating_patches": "network",
    "activation_maximisation": "network",
    "object_features": "embedding",
    "embed": "embedding",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
