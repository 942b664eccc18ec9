"""Committing the current object into a Labels layer, and undoing commits.

Whole-plane masks (`commit`) go through `prompts.commit_mask`; answers on large images
(`commit_tiled`, a `TiledMask`) are written inside their bounding box only, into level 0 of
a numpy or zarr labels layer.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..prompts import CommitRecord, commit_mask, undo_commit
from . import layers as L
from .tiled_jobs import CropRecord, commit_crop


class CommitError(ValueError):
    """A commit that cannot be done, with what to do about it."""


MIN_KEPT = 0.25  # without overwrite, refuse a commit that keeps less than this of the mask


def check_overlap(existing: np.ndarray, mask: np.ndarray, overwrite: bool) -> int:
    """Pixels of `mask` on existing objects (`existing` != 0, same shape); raises CommitError
    when, without `overwrite`, less than MIN_KEPT of the mask would be written (a sliver of
    an object that lies mostly on another one is almost always a mistake)."""
    covered = int(np.count_nonzero(existing[mask]))
    area = int(np.count_nonzero(mask))
    if overwrite or not covered:
        return covered
    if area - covered < MIN_KEPT * area:
        where = "only on existing objects" if covered == area else (
            f"mostly on existing objects ({covered} of {area} px)")
        raise CommitError(f"not committed: the object lies {where}; tick 'overwrite existing "
                          "objects' to replace them, or click on a free object")
    return covered


class Committer:
    """Writes masks with new ids into Labels layers; undoes the newest commits first."""

    def __init__(self, viewer, max_undo: int = 20) -> None:
        self.viewer = viewer
        self.max_undo = max_undo
        self.history: List[Tuple[object, object]] = []   # (layer, CommitRecord | CropRecord)
        self._top_ids: Dict[object, int] = {}  # highest id of lazy (zarr) labels, per layer
        self.clipped = 0  # pixels of the last committed mask left to existing objects

    def commit(self, labels, image, index: Tuple[int, ...], mask: np.ndarray,
               overwrite: bool = False) -> CommitRecord:
        """Commit `mask` (slice `index` of `image`) into `labels`; raises CommitError."""
        error = L.check_labels(labels, image)
        if error:
            raise CommitError(error)
        covered = check_overlap(labels.data[tuple(index)], mask, overwrite)
        try:
            record = commit_mask(labels.data, mask, index, overwrite)
        except ValueError as err:
            raise CommitError(str(err)) from None
        if record is None:
            raise CommitError("the object lies on existing objects only; tick 'overwrite "
                              "existing objects' to replace them")
        labels.refresh()
        self.history = (self.history + [(labels, record)])[-self.max_undo:]
        self.clipped = 0 if overwrite else covered
        return record

    def new_layer(self, image, tiled: bool, then_select=None):
        """A new uint32 labels layer for `image` (multiscale for a large one), named after
        it; `then_select` (the prompt points) stays the active layer. ValueError when a large
        image's labels would not fit in memory."""
        make = L.new_large_labels_layer if tiled else L.new_labels_layer
        labels = make(self.viewer, image, f"{image.name} labels")
        self._below_prompts(labels, then_select)
        if then_select is not None:
            self.viewer.layers.selection.active = then_select
        return labels

    def _below_prompts(self, labels, points) -> None:
        """Move a new labels layer under the widget's preview, boxes and points layers."""
        layers = self.viewer.layers
        if points is None or points not in layers:
            return
        own = [i for i, ly in enumerate(layers) if ly.name.startswith("SAM ")
               and ly is not labels] or [layers.index(points)]
        layers.move(layers.index(labels), min(own))

    def commit_tiled(self, labels, image, answer, overwrite: bool = False) -> CropRecord:
        """Commit a TiledMask (a large 2D image's answer) into level 0 of `labels`, touching
        only its bounding box; raises CommitError."""
        target, error = L.writable_level0(labels, image)
        if error:
            raise CommitError(error)
        new_id = self._next_id(labels, target)
        covered = check_overlap(np.asarray(target[answer.slices]), answer.mask, overwrite)
        try:
            record = commit_crop(target, answer, new_id, overwrite)
        except ValueError as err:
            raise CommitError(str(err)) from None
        if record is None:
            raise CommitError("the object lies on existing objects only; tick 'overwrite "
                              "existing objects' to replace them")
        if not isinstance(target, np.ndarray):
            self._top_ids[labels.unique_id] = new_id
        labels.refresh()
        self.history = (self.history + [(labels, record)])[-self.max_undo:]
        self.clipped = 0 if overwrite else covered
        return record

    def _next_id(self, labels, target) -> int:
        """max + 1; a zarr level 0 is scanned (chunk by chunk) at its first commit only."""
        if isinstance(target, np.ndarray):
            return int(target.max()) + 1
        top = self._top_ids.get(labels.unique_id)
        if top is None:
            import dask.array as da

            top = int(da.from_array(target, chunks=getattr(target, "chunks", "auto"))
                      .max().compute())
        return top + 1

    def undo(self) -> str:
        """Undo the newest commit; returns what happened, for the status line."""
        if not self.history:
            return "nothing to undo"
        labels, record = self.history.pop()
        if labels not in self.viewer.layers:
            return f"{labels.name!r} was removed; nothing to undo"
        if isinstance(record, CropRecord):
            record.undo(labels.data[0] if labels.multiscale else labels.data)
        else:
            undo_commit(labels.data, record)
        labels.refresh()
        return f"removed object {record.label_id} from {labels.name!r}"
