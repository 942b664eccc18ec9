"""Prompts on large 2D layers, tile by tile (Qt-free: the widget runs these in a worker).

A layer is *large* when it is multiscale or lazy (dask, zarr, the project's large-image
reader: reading it whole is what must not happen), or when its longer side is more than
`tile_above` pixels, by default twice the model's input side (512 for the bundled model,
2048 for SAM). Embedded whole, such a plane reaches the encoder shrunk more than twice: a
nucleus 8 pixels across becomes 4 input pixels, one pixel of the decoder's low-resolution
mask, and is lost. Tiled, every pixel reaches the encoder at native resolution; the price
is that the first click in a new region waits for its tile (about one whole-image
embedding), while a plane at most twice the input side is embedded whole in one go.

- `TilingRule`: the auto / on / off choice and the threshold.
- `OnDemandPredictor`: a `TiledPredictor` that asks for missing tiles instead of embedding
  them inside `predict`, and lets the user pick among the anchor tile's candidates.
- `predict_job`: the worker generator: predict, embed the tile asked for (yielding progress,
  so the worker can be cancelled between tiles), predict again, until the answer is whole.
- `commit_crop` / `CropRecord`: write an answer into a labels array only inside its box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..tiled import TiledMask, TiledPredictor

TILING_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class TilingRule:
    """When the widget answers prompts tile by tile.

    mode: "auto" (large layers, see the module docstring), "on" (every 2D layer), "off"
    (never: the whole plane is embedded, shrunk to the model's input). tile_above: longer
    side in pixels above which a plane is large; 0 means twice the model's input side.
    """

    mode: str = "auto"
    tile_above: int = 0

    def threshold(self, model_input: int) -> int:
        return int(self.tile_above) if self.tile_above > 0 else 2 * int(model_input)

    def applies(self, plane_shape: Tuple[int, int], lazy: bool, ndim: int,
                model_input: int) -> bool:
        """True if a layer with this 2D plane (ndim: the layer's, 2 for 2D and RGB) is tiled."""
        if self.mode == "off" or ndim != 2:
            return False
        if self.mode == "on":
            return True
        return lazy or max(plane_shape) > self.threshold(model_input)


class TileNeeded(Exception):
    """Raised inside `OnDemandPredictor.predict` when a tile is not embedded yet."""

    def __init__(self, tile) -> None:
        super().__init__(f"tile {tile.index} is not embedded")
        self.tile = tile


class OnDemandPredictor(TiledPredictor):
    """A TiledPredictor whose `predict` never runs the encoder.

    A missing tile raises `TileNeeded`; `predict_job` embeds it and predicts again (the
    decoder runs in milliseconds, so repeating it is cheap). `choice` picks a candidate of
    the anchor tile's multimask answer (None: the best scored, as TiledPredictor does);
    `candidates` and `chosen` report the anchor's scores and the candidate used.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choice: Optional[int] = None
        self.candidates = np.zeros(0)
        self.chosen = 0
        self._anchor = True

    def is_embedded(self, tile) -> bool:
        return self.embeddings.store.has(tile.index)

    def predict(self, *args, **kwargs) -> TiledMask:
        self._anchor = True
        return super().predict(*args, **kwargs)

    def segment_tile(self, tile, points, labels, box, multimask):
        if not self.is_embedded(tile):
            raise TileNeeded(tile)
        masks, scores = super().segment_tile(tile, points, labels, box, multimask)
        if not self._anchor:
            return masks, scores
        self._anchor = False  # the first tile asked is the anchor
        self.candidates = np.asarray(scores, float)
        self.chosen = int(np.argmax(scores))
        if self.choice is not None and len(scores) > 1:
            self.chosen = int(self.choice) % len(scores)
            return masks[self.chosen:self.chosen + 1], scores[self.chosen:self.chosen + 1]
        return masks, scores


@dataclass
class TiledAnswer:
    """What a prompt job returns: the object, the anchor's candidates, the tiles embedded."""

    mask: TiledMask
    scores: np.ndarray
    index: int
    embedded: List[Tuple[int, int]] = field(default_factory=list)


def predict_job(tp: OnDemandPredictor, points, labels, box, choice: Optional[int] = None):
    """Generator for a napari worker: yields (done, total, message) while tiles are embedded,
    returns a TiledAnswer. Cancelling the worker stops it between two tiles; the tiles
    embedded so far stay in the cache."""
    embedded: List[Tuple[int, int]] = []
    for _ in range(4 * tp.max_tiles + 4):  # each round embeds one new tile
        tp.choice = choice
        try:
            mask = tp.predict(points=points, point_labels=labels, box=box)
        except TileNeeded as need:
            n = len(embedded)
            yield n, n + 1, f"embedding tile {need.tile.index} ({n + 1} for this prompt)"
            tp.embeddings.compute([need.tile])
            embedded.append(need.tile.index)
            continue
        return TiledAnswer(mask, tp.candidates, tp.chosen, embedded)
    raise RuntimeError("the tiled prompt did not settle; clear the prompts and try again")


def prompt_args(prompt):
    """(points, labels, box) for TiledPredictor.predict from a `prompts.Prompt` read without
    regions (polygons and ellipses already became its box); None when it is empty."""
    points = np.asarray(prompt.points, float).reshape(-1, 2)
    labels = np.asarray(prompt.labels, int).reshape(-1)
    box = prompt.box
    if not len(points) and box is None:
        return None
    return (points if len(points) else None), (labels if len(points) else None), box


# ---- commits inside the answer's box ---------------------------------------------------
@dataclass
class CropRecord:
    """Where a cropped commit wrote and what was there before (for undo)."""

    label_id: int
    bbox: Tuple[int, int, int, int]
    changed: np.ndarray      # bool, the box's shape: the pixels written
    previous: np.ndarray     # their values before

    @property
    def slices(self):
        return slice(self.bbox[0], self.bbox[2]), slice(self.bbox[1], self.bbox[3])

    def undo(self, target) -> None:
        part = np.array(target[self.slices])
        part[self.changed] = self.previous
        target[self.slices] = part


def commit_crop(target, answer: TiledMask, new_id: int,
                overwrite: bool = False) -> Optional[CropRecord]:
    """Write `new_id` into `target` (2D, numpy or zarr) under the answer's mask, reading and
    writing only its bounding box. Without `overwrite` only background pixels change. None
    if no pixel would change; ValueError if the id does not fit the dtype."""
    dtype = np.dtype(target.dtype)
    if np.issubdtype(dtype, np.integer) and new_id > np.iinfo(dtype).max:
        raise ValueError(f"no free label id in a {dtype} labels layer; use uint32 labels")
    sl = answer.slices
    part = np.array(target[sl])
    write = answer.mask if overwrite else answer.mask & (part == 0)
    if not write.any():
        return None
    record = CropRecord(int(new_id), tuple(int(v) for v in answer.bbox), write.copy(),
                        part[write].copy())
    part[write] = new_id
    target[sl] = part
    return record
