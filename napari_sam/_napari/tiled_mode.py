"""The widget's tiled mode: prompts on a large 2D layer answered tile by tile.

No full-size array is made for the answer: the preview layer holds only the answer's
bounding box, shifted into place with its `translate`; commits write only that box
(`commits.Committer.commit_tiled`). Prompts run in a `workers.TiledPrompter` (the tiles
under them are embedded there), never on the GUI thread.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from . import layers as L
from .hints import NEGATIVE_ONLY, SEPARATE, negative_only, split_pieces
from .embedding import TiledSetup
from .tiled_jobs import TiledAnswer, TilingRule, prompt_args
from .workers import TiledPrompter


def tiled_setup(image, rule: TilingRule) -> TiledSetup:
    """What decides whether the Image layer `image` is tiled; its source file, if any, is
    where the embedding cache goes."""
    path = getattr(getattr(image, "source", None), "path", None)
    return TiledSetup(rule, L.plane_shape(image), L.is_lazy(image), image.ndim,
                      None if path is None else str(path))


def place_preview(preview, image, mask: Optional[np.ndarray] = None, origin=(0, 0)) -> None:
    """Show `mask` (bool, any size) with its pixel (0, 0) on image pixel `origin`."""
    t = L.transform(image, 2)
    translate = np.asarray(t["translate"], float) + np.asarray(t["scale"], float) * origin
    data = np.zeros((1, 1), np.uint8) if mask is None else mask.astype(np.uint8)
    preview.translate = tuple(translate)
    preview.data = data


class TiledMode:
    """Holds the OnDemandPredictor of the shown layer (`tp`; None: not tiled) and the
    newest answer; writes to the widget's `candidate` and `status` labels."""

    def __init__(self, progress: Callable, failed: Callable, busy: Callable,
                 candidate, status) -> None:
        self.prompter = TiledPrompter(progress, self._on_answer, failed, busy)
        self._candidate, self._status_label = candidate, status
        self.tp = None
        self.image = self.prompts = None
        self.answer: Optional[TiledAnswer] = None
        self._args = None  # (points, labels, box) of the newest request
        self.hint: Optional[Callable] = None  # TiledMask -> what a commit would do ("": ok)

    @property
    def active(self) -> bool:
        return self.tp is not None

    @property
    def busy(self) -> bool:
        return self.prompter.busy

    def start(self, tp, image, prompts) -> str:
        """Answer the prompts on `image` with `tp`; returns the status line to show."""
        self.prompter.drop()
        self.tp, self.image, self.prompts, self.answer = tp, image, prompts, None
        if prompts is not None:
            place_preview(prompts.preview, image)
        emb = tp.embeddings
        ny, nx = tp.grid.grid_shape
        where = f", cache {emb.cache_dir}" if emb.cache_dir is not None else ""
        return (f"ready (large image: {ny} x {nx} tiles of {tp.grid.tile} px, embedded when "
                f"clicked{where}): click on an object")

    def stop(self, prompts=None, image=None) -> None:
        """Leave tiled mode; give the preview layer back its full size if it was cropped."""
        self.prompter.drop()
        self.tp = self.answer = None
        if prompts is not None and prompts.preview.data.shape != L.plane_shape(image):
            prompts.preview.translate = L.transform(image, 2)["translate"]
            prompts.preview.data = np.zeros(L.plane_shape(image), np.uint8)

    def cancel(self) -> bool:
        busy = self.prompter.busy
        self.prompter.cancel()
        return busy

    def update(self, index) -> None:
        """Read the prompts of the shown layer and ask for their object."""
        if not self.active or self.prompts is None or not self.prompts.alive():
            return
        prompt, ignored = L.read_prompt(self.prompts.points, self.prompts.shapes, self.image,
                                        index, regions=False)
        self._args = None if negative_only(prompt) else prompt_args(prompt)
        if ignored:
            self._status(f"{ignored} prompt(s) outside the image or unsupported: ignored")
        elif negative_only(prompt):
            self._status(NEGATIVE_ONLY)
        if self._args is None:
            self.prompter.drop()
            self._on_answer(None)
        else:
            self.prompter.request(self.tp, *self._args)

    def next_mask(self) -> None:
        """Ask again with the anchor tile's next candidate (a lone click is ambiguous)."""
        a = self.answer
        if self.active and a is not None and self._args is not None and len(a.scores) > 1:
            self.prompter.request(self.tp, *self._args, choice=(a.index + 1) % len(a.scores))

    def clear_preview(self) -> None:
        self.prompter.drop()
        self._on_answer(None)

    def _show_candidate(self, text: str) -> None:
        self._candidate.value = text

    def _status(self, text: str) -> None:
        self._status_label.value = text

    def _on_answer(self, answer: Optional[TiledAnswer]) -> None:
        self.answer = answer
        if self.prompts is None or not self.prompts.alive():
            return
        if answer is None or answer.mask.area == 0:
            place_preview(self.prompts.preview, self.image)
            self._show_candidate("-")
            return
        m = answer.mask
        place_preview(self.prompts.preview, self.image, m.mask, m.bbox[:2])
        k, i = len(answer.scores), answer.index
        self._show_candidate(f"{i + 1}/{k}  score {answer.scores[i]:.2f}" if k > 1
                             else f"score {m.score:.2f}")
        new = f", {len(answer.embedded)} embedded now" if answer.embedded else ""
        points, labels = (self._args[0], self._args[1]) if self._args else (None, None)
        if points is not None and split_pieces(m.mask, points, labels, m.bbox[:2]):
            return self._status(SEPARATE)
        said = self.hint(m) if self.hint is not None else ""
        if said:
            return self._status(said)
        self._status(f"object over {len(m.tiles)} tile(s){new}; Shift-C commits it")
