"""napari-dlcb core: data (no Qt here)."""
