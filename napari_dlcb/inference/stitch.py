"""Join instance labels segmented block by block into one consecutive numbering.

Instances of an image larger than memory are made block by block
(:func:`napari_dlcb.inference.blockwise.predict_zarr` with
``labels="instances"``):

1. Each block is segmented on a window reaching ``margin`` pixels into its
   neighbours; its core is stored with block-local ids 1..n.
2. Neighbouring windows overlap on a strip of width 2 * margin around their
   shared face (:func:`face_strips`). Objects of the two windows whose masks
   on that strip have IoU >= 0.5 are the same object and are joined
   (:func:`strip_pairs`, :class:`Stitcher`). Objects that merely touch at the
   face stay apart: each window sees both of them whole.
3. Every block is relabelled once: (block, local id) -> consecutive global id
   (:meth:`Stitcher.lookup`).

Blocks may be added in any order (as dask workers finish them). Nothing here
imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_dlcb.inference.metrics import overlaps
from napari_dlcb.inference.store import Block, decode_probabilities

__all__ = ["Stitcher", "face_strips", "instances_block", "relabel_block", "strip_pairs"]


def face_strips(
    labels: np.ndarray, window: Block, block: Block, shape: tuple[int, int], margin: int
) -> dict[str, np.ndarray]:
    """A window's labels on the strips around the four faces of its block.

    ``labels`` cover ``window`` (the block plus up to ``margin`` pixels each
    side, clipped to the image of ``shape``). Strips are
    ``[face - margin, face + margin)`` in image coordinates, clipped to the
    image, so that two neighbours' strips of a shared face cover the same
    pixels. Keys: ``"right"``, ``"left"``, ``"down"``, ``"up"``.
    """
    (w0, _), (v0, _) = window
    (r0, r1), (c0, c1) = block
    n_rows, n_cols = shape

    def rows_at(face: int) -> slice:
        return slice(max(0, face - margin) - w0, min(n_rows, face + margin) - w0)

    def cols_at(face: int) -> slice:
        return slice(max(0, face - margin) - v0, min(n_cols, face + margin) - v0)

    return {
        "right": labels[:, cols_at(c1)],
        "left": labels[:, cols_at(c0)],
        "down": labels[rows_at(r1), :],
        "up": labels[rows_at(r0), :],
    }


def strip_pairs(a: np.ndarray, b: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """(id in a, id in b) of objects whose masks on two label strips have IoU >= min_iou."""
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    rows, cols, iou, _, _ = overlaps(a, b)
    keep = iou >= min_iou
    a_ids, b_ids = np.unique(a), np.unique(b)
    a_ids, b_ids = a_ids[a_ids != 0], b_ids[b_ids != 0]
    return np.stack([a_ids[rows[keep]], b_ids[cols[keep]]], axis=1).astype(np.int64)


class Stitcher:
    """Collects per-block instance results (in any order) and joins them across faces."""

    _FACES = {
        "right": (0, 1, "left"),
        "left": (0, -1, "right"),
        "down": (1, 0, "up"),
        "up": (-1, 0, "down"),
    }

    def __init__(self, grid: tuple[int, int]) -> None:
        self.grid = grid
        n = grid[0] * grid[1]
        self.counts = np.zeros(n, np.int64)
        self.present: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        self.waiting: dict[int, dict[str, np.ndarray]] = {}
        self.pairs: list[np.ndarray] = []  # rows of (block i, id, block j, id)

    def add(self, i: int, count: int, present: np.ndarray, strips: dict[str, np.ndarray]) -> None:
        """Record block ``i``'s result and match it with neighbours already recorded."""
        self.counts[i] = count
        self.present[i] = present
        row, col = divmod(i, self.grid[1])
        keep = {}
        for key, (dr, dc, other_key) in self._FACES.items():
            r, c = row + dr, col + dc
            if not (0 <= r < self.grid[0] and 0 <= c < self.grid[1]):
                continue
            j = r * self.grid[1] + c
            other = self.waiting.get(j, {}).pop(other_key, None)
            if other is None:
                keep[key] = strips[key]
                continue
            pairs = strip_pairs(strips[key], other)
            if len(pairs):
                block_ids = np.broadcast_to(np.array([i, j]), pairs.shape)
                self.pairs.append(
                    np.stack([block_ids[:, 0], pairs[:, 0], block_ids[:, 1], pairs[:, 1]], axis=1)
                )
        self.waiting[i] = keep

    def lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-block id offsets, and a table from offset local id to consecutive global id."""
        from scipy import sparse
        from scipy.sparse.csgraph import connected_components

        offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        n = int(self.counts.sum()) + 1
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 4), np.int64)
        a = offsets[pairs[:, 0]] + pairs[:, 1]
        b = offsets[pairs[:, 2]] + pairs[:, 3]
        graph = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        present = np.zeros(n, bool)
        for off, ids in zip(offsets, self.present):
            present[ids + off] = True
        _, rank = np.unique(component[present], return_inverse=True)
        lut = np.zeros(n, np.int64)
        lut[present] = rank.ravel() + 1
        return offsets, lut


def instances_block(
    prob_array: Any,
    label_array: Any,
    block: Block,
    shape: tuple[int, int],
    *,
    margin: int,
    options: Mapping[str, Any],
) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """Segment one block's window into instances and store its core with block-local ids.

    The window reaches ``margin`` pixels into the neighbours; ``options`` go
    to ``instances_from_probabilities``. Returns the number of local ids, the
    ids present in the core, and the window's labels on the strips around the
    block's faces (:func:`face_strips`): the arguments of :meth:`Stitcher.add`
    after the block index.
    """
    from napari_dlcb.inference.postprocess import instances_from_probabilities

    (r0, r1), (c0, c1) = block
    w0, w1 = max(0, r0 - margin), min(shape[0], r1 + margin)
    v0, v1 = max(0, c0 - margin), min(shape[1], c1 + margin)
    window = decode_probabilities(np.asarray(prob_array[:, w0:w1, v0:v1]))
    lab = instances_from_probabilities(window, **dict(options))
    core = lab[r0 - w0 : r1 - w0, c0 - v0 : c1 - v0]
    label_array[r0:r1, c0:c1] = core
    present = np.unique(core)
    strips = face_strips(lab, ((w0, w1), (v0, v1)), block, shape, margin)
    return int(lab.max(initial=0)), present[present > 0], strips


def relabel_block(label_array: Any, block: Block, offset: int, lut: np.ndarray) -> None:
    """Replace a block's local ids by global ones (``lut`` from :meth:`Stitcher.lookup`)."""
    (r0, r1), (c0, c1) = block
    local = np.asarray(label_array[r0:r1, c0:c1]).astype(np.int64)
    label_array[r0:r1, c0:c1] = np.where(local > 0, lut[local + offset], 0).astype(np.int32)
