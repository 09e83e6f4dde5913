"""napari-dlcb core: interpret (no Qt here).

Every method is imported lazily, so that importing this package does not
import torch: ``from napari_dlcb.interpret import mutation_map``.
"""

from __future__ import annotations

from napari_dlcb.lazy import lazy_exports

# name -> submodule (lazy: torch is imported only when the name is used)
_LAZY = {
    # DNA: in-silico mutagenesis, attributions, variant effects, motifs
    "mutation_map": "ism",
    "iter_mutation_map": "ism",
    "naive_mutation_map": "ism",
    "gradient_x_input": "dna_attribution",
    "dna_integrated_gradients": "dna_attribution",
    "deeplift_shap": "dna_attribution",
    "score_variants": "variants",
    "variant_effect": "variants",
    "filter_motifs": "motifs",
    "match_motifs": "motifs",
    "scan_motifs": "motifs",
    # images: one method per module (gradients, integrated_gradients, gradcam, occlusion),
    # dispatched by name by saliency.saliency / saliency.iter_saliency
    "iter_saliency": "saliency",
    "SaliencyResult": "saliency",
    "filter_grid": "network",
    "top_activating_patches": "network",
    "activation_maximisation": "network",
    "object_features": "embedding",
    "embed": "embedding",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
