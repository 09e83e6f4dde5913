"""napari-dlcb core: training (no Qt here)."""
