"""The Segmentation dock (annotate, train live, predict, save), split by concern.

- :mod:`.panel`: the form and the layer choices;
- :mod:`.settings`: the form -> the task's ``SegmentationConfig``; the model in use;
- :mod:`.jobs`: what the jobs run in their worker threads;
- :mod:`.training`: Train / Stop / Resume and the training events;
- :mod:`.live`: the live prediction and saliency layers;
- :mod:`.predict`, :mod:`.outputs`: Predict, Save and their layers;
- :mod:`.widget`: :class:`SegmentationWidget`, which puts them together.
"""

from napari_dlcb._widgets.segmentation.widget import SegmentationWidget

__all__ = ["SegmentationWidget"]
