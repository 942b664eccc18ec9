"""The interactive widget's prompt-to-object actions: preview, next mask, clear, commit, undo.

A mixin of `widget.SamWidget` (its state and controls are set up there); these are the
methods the buttons and keys call, and the preview update that every prompt change runs.
"""

from __future__ import annotations

import time

import numpy as np
from napari.utils.notifications import show_info

from ..prompts import Prompt
from . import hints
from . import layers as L
from .commits import CommitError, check_overlap

READY = "ready: click on an object (Shift+click: background)"


class Actions:
    """update_preview, next_mask, toggle_negative, clear, commit, undo (see SamWidget)."""

    def update_preview(self) -> None:
        """Decode the prompts of the displayed slice and show the chosen mask."""
        if not (self._ready and self._prompts is not None):
            return
        if self._tiled.active:
            return self._tiled.update(self._key[1])
        start = time.perf_counter()
        prompt, ignored = self._prompts.read(self._key[1])
        if hints.negative_only(prompt):
            prompt = Prompt.empty()  # SAM would answer with some unrelated region
        try:
            self._segmenter.update(prompt)
        except (ValueError, RuntimeError) as err:
            return self._error(f"napari-sam: {err}")
        mask = self._segmenter.mask()
        self._show_mask(mask)
        self.decode_ms.append((time.perf_counter() - start) * 1000)
        self.status.value = (
            f"{ignored} prompt(s) outside the image or unsupported: ignored" if ignored else
            hints.NEGATIVE_ONLY if prompt.is_empty() and len(self._prompts.points.data) else
            hints.SEPARATE if hints.split_pieces(mask, prompt.points, prompt.labels) else
            self._overlap_hint(mask) or READY)

    def _tiled_overlap_hint(self, answer) -> str:
        """`_overlap_hint` for a tiled answer (a TiledMask): reads only its box."""
        labels = self.labels_layer.value
        if labels is None or self.overwrite.value:
            return ""
        level0, error = L.writable_level0(labels, self._image)
        if error:
            return ""
        try:
            check_overlap(np.asarray(level0[answer.slices]), answer.mask, False)
        except CommitError as err:
            return str(err).replace("not committed: ", "Shift-C would refuse this: ")
        return ""

    def _overlap_hint(self, mask) -> str:
        """What a commit of `mask` would do to the chosen labels layer's objects ("" if
        nothing to say): said before Shift-C, not only when it is refused."""
        labels = self.labels_layer.value
        if mask is None or labels is None or self.overwrite.value or \
                L.check_labels(labels, self._image):
            return ""
        try:
            covered = check_overlap(labels.data[tuple(self._key[1])], mask, False)
        except CommitError as err:
            return str(err).replace("not committed: ", "Shift-C would refuse this: ")
        return (f"ready; {covered} px of this object lie on objects of {labels.name!r} and "
                "stay theirs" if covered else "")

    def _show_mask(self, mask) -> None:
        if self._prompts is not None:
            self._prompts.show(mask)
        result = self._segmenter.result if self._segmenter and mask is not None else None
        if result is None:
            self.candidate.value = "-"
        else:
            k, i = len(result.scores), result.index
            self.candidate.value = (f"{i + 1}/{k}  score {result.scores[i]:.2f}" if k > 1
                                    else f"score {result.scores[0]:.2f}")

    # ---- actions (buttons and keys) ------------------------------------------------------
    def next_mask(self, *_) -> None:
        """Show the next candidate mask of an ambiguous single click."""
        if self._tiled.active:
            return self._tiled.next_mask()
        if self._segmenter is not None and self._segmenter.result is not None:
            self._segmenter.cycle()
            self._show_mask(self._segmenter.mask())

    def toggle_negative(self, *_) -> None:
        """Switch clicks between object (positive) and background (negative)."""
        self.negative.value = not self.negative.value

    def clear(self, *_) -> None:
        """Discard the prompts of the displayed slice."""
        if self._prompts is not None and self._key is not None:
            self._prompts.clear(self._key[1])
            self._show_mask(None)
            if self._tiled.active:
                self._tiled.clear_preview()
            if self._ready:
                self.status.value = READY

    def commit(self, *_) -> None:
        """Write the current object into the labels layer with a new id."""
        tiled = self._tiled.active
        if tiled and self._tiled.busy:  # the answer to the newest prompts is not there yet
            self.status.value = ("the object is still being computed (its tiles are being "
                                 "embedded): press Shift-C again when the preview shows it")
            return show_info(f"napari-sam: {self.status.value}")
        if tiled:
            mask = self._tiled.answer.mask if self._ready and self._tiled.answer else None
            empty = mask is None or mask.area == 0
        else:
            mask = self._segmenter.mask() if self._ready and self._segmenter else None
            empty = mask is None or not mask.any()
        if empty:
            return show_info("napari-sam: nothing to commit; click on an object first")
        labels = self.labels_layer.value
        try:
            if labels is None:  # ValueError: too large to hold in memory
                labels = self._committer.new_layer(self._image, tiled, self.points_layer)
                self.reset_choices()
                self.labels_layer.value = labels
            if tiled:
                record = self._committer.commit_tiled(labels, self._image, mask,
                                                      self.overwrite.value)
            else:
                record = self._committer.commit(labels, self._image, self._key[1], mask,
                                                self.overwrite.value)
        except (CommitError, ValueError) as err:
            self.status.value = str(err)
            return self._error(f"napari-sam: {err}")
        self.clear()
        clipped = self._committer.clipped
        self.status.value = f"committed object {record.label_id} to {labels.name!r}" + (
            f" ({clipped} px on existing objects left to them)" if clipped else "")

    def undo(self, *_) -> None:
        """Restore the pixels changed by the last commit."""
        self.status.value = self._committer.undo()
        volume = getattr(self, "volume", None)
        if volume is not None:  # a time-lapse's Tracks layer follows the undo
            volume.after_undo()
