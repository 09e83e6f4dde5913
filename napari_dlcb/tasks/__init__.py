"""Tasks: what the CLI, the widgets and the tuner call (see :mod:`napari_dlcb.tasks.base`).

Importing this package is cheap; each task module (and torch) loads on first use.

- :mod:`~napari_dlcb.tasks.segmentation`: fine-tune a U-Net on painted images;
- :mod:`~napari_dlcb.tasks.cells`: classify cells (crops) from a few clicked examples;
- :mod:`~napari_dlcb.tasks.sequence`: train or fine-tune a DNA CNN on sequence windows.
"""
