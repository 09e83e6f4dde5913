"""napari-dlcb core: inference (no Qt here)."""
