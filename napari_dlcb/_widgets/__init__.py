"""Qt widgets: the only package that imports qtpy / magicgui / napari.qt."""
