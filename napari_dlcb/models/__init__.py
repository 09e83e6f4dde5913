"""napari-dlcb core: models (no Qt here)."""
