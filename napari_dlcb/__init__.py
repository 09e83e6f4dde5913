"""napari-dlcb: deep learning for computational biology, point-and-click in napari.

Importing this package is cheap: it imports neither torch nor Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
