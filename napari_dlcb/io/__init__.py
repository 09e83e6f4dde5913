"""napari-dlcb core: io (no Qt here)."""
