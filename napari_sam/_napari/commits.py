"""Committing the current object into a Labels layer, and undoing commits."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..prompts import CommitRecord, commit_mask, undo_commit
from . import layers as L


class CommitError(ValueError):
    """A commit that cannot be done, with what to do about it."""


class Committer:
    """Writes masks with new ids into Labels layers; undoes the newest commits first."""

    def __init__(self, viewer, max_undo: int = 20) -> None:
        self.viewer = viewer
        self.max_undo = max_undo
        self.history: List[Tuple[object, CommitRecord]] = []

    def commit(self, labels, image, index: Tuple[int, ...], mask: np.ndarray,
               overwrite: bool = False) -> CommitRecord:
        """Commit `mask` (slice `index` of `image`) into `labels`; raises CommitError."""
        error = L.check_labels(labels, image)
        if error:
            raise CommitError(error)
        try:
            record = commit_mask(labels.data, mask, index, overwrite)
        except ValueError as err:
            raise CommitError(str(err)) from None
        if record is None:
            raise CommitError("the object lies on existing objects only; tick 'overwrite "
                              "existing objects' to replace them")
        labels.refresh()
        self.history = (self.history + [(labels, record)])[-self.max_undo:]
        return record

    def undo(self) -> str:
        """Undo the newest commit; returns what happened, for the status line."""
        if not self.history:
            return "nothing to undo"
        labels, record = self.history.pop()
        if labels not in self.viewer.layers:
            return f"{labels.name!r} was removed; nothing to undo"
        undo_commit(labels.data, record)
        labels.refresh()
        return f"removed object {record.label_id} from {labels.name!r}"
