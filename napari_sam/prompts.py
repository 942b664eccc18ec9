"""Interactive prompts -> masks -> committed labels, without a GUI.

The napari widget is a thin adapter over this module:

- conversion (`prompt_convert`, its names importable from here): prompt-layer coordinates
  -> image pixels (through a `to_image` callable, in napari
  `image.world_to_data(prompt_layer.data_to_world(p))`), the points of one slice,
  rectangles -> boxes, polygons and ellipses -> a raster mask -> low-res `mask_input` logits;
- `Segmenter`: one object at a time; multimask candidates for a lone click, refinement from
  the previous low-res logits when prompts are added;
- commit rules: `commit_mask` writes a mask with a new id (max + 1) and, unless told to
  overwrite, only into background pixels; `undo_commit` restores the exact previous pixels.

Coordinates are napari's (row, col); the model's (x, y) order is handled by the Predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

# the conversions live in `prompt_convert`; their names stay importable from here
from .prompt_convert import (MASK_LOGIT, ToImage, ellipse_polygon, inside,  # noqa: F401
                             interior_point, mask_to_logits, on_slice, rectangle_to_box,
                             region_mask, scale_translate, to_image_coords)


@dataclass
class Prompt:
    """Everything the user gave for one object on one 2D image, in (row, col) pixels.

    Parameters
    ----------
    points : ndarray, (N, 2) float
        Points, (row, col).
    labels : ndarray, (N,) int
        1 object, 0 background.
    box : ndarray, (4,) float, optional
        (row0, col0, row1, col1).
    region : ndarray, (Y, X) bool, optional
        Drawn polygons and ellipses, rasterised.
    """

    points: np.ndarray            # (N, 2) float
    labels: np.ndarray            # (N,) int, 1 object / 0 background
    box: Optional[np.ndarray] = None       # (4,) row0, col0, row1, col1
    region: Optional[np.ndarray] = None    # (Y, X) bool from polygons/ellipses

    @classmethod
    def empty(cls) -> "Prompt":
        """A prompt without points, box or region.

        Returns
        -------
        Prompt
        """
        return cls(np.zeros((0, 2)), np.zeros(0, int))

    def is_empty(self) -> bool:
        """Whether the prompt has no point, box or region.

        Returns
        -------
        bool
        """
        return len(self.points) == 0 and self.box is None and self.region is None

    def extends(self, other: "Prompt") -> bool:
        """True if this prompt is `other` plus more points (same box and region).

        Parameters
        ----------
        other : Prompt
            The earlier prompt.

        Returns
        -------
        bool
        """
        n = len(other.points)
        return (len(self.points) > n and np.array_equal(self.points[:n], other.points)
                and np.array_equal(self.labels[:n], other.labels)
                and _same(self.box, other.box) and _same(self.region, other.region))


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


@dataclass
class Candidates:
    """The decoder's answer for one prompt: K candidates, one of them chosen.

    Parameters
    ----------
    logits : Tensor, (1, K, m, m) float32
        Low-res logits.
    scores : ndarray, (K,) float32
        Predicted IoU.
    index : int
        The chosen candidate.
    """

    logits: torch.Tensor   # (1, K, m, m) low-res logits
    scores: np.ndarray     # (K,) predicted IoU
    index: int             # the chosen candidate


class Segmenter:
    """Decodes the current object from a `Prompt` with a Predictor whose image is set.

    Parameters
    ----------
    predictor : Predictor
        Holds the embedded image.
    """

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.reset()

    def reset(self) -> None:
        self.prompt = Prompt.empty()
        self.result: Optional[Candidates] = None

    def model_inputs(self, prompt: Prompt):
        """The points, box and mask_input sent to the decoder for `prompt`.

        Parameters
        ----------
        prompt : Prompt

        Returns
        -------
        points : ndarray, (N, 2) float
            (row, col); an interior point of the region is added when there is no object point.
        labels : ndarray, (N,) int
        box : ndarray, (4,) float or None
            (row0, col0, row1, col1); the region's bounding box when no box was given.
        mask_input : ndarray, (m, m) float32 or None
            The region as low-res logits (`mask_to_logits`).
        """
        points, labels, box, mask_input = prompt.points, prompt.labels, prompt.box, None
        if prompt.region is not None and prompt.region.any():
            p = self.predictor
            emb = p.get_embedding()
            mask_input = mask_to_logits(prompt.region, emb.input_size, p.model.image_size,
                                        p.model.config.mask_size)
            rows, cols = np.nonzero(prompt.region)
            if box is None:
                box = np.array([rows.min(), cols.min(), rows.max(), cols.max()], float)
            if not (labels == 1).any():
                points = np.concatenate([points, interior_point(prompt.region)[None]])
                labels = np.concatenate([labels, [1]])
        return points, labels, box, mask_input

    def update(self, prompt: Prompt) -> Optional[Candidates]:
        """Decode `prompt`; later points reuse the previous low-res logits (refinement).

        Parameters
        ----------
        prompt : Prompt

        Returns
        -------
        Candidates or None
            The answer (3 candidates for a lone click, else 1); None for an empty prompt.
        """
        refine = self.result is not None and prompt.region is None and prompt.extends(self.prompt)
        previous = self.result
        self.prompt, self.result = prompt, None
        if prompt.is_empty():
            return None
        p = self.predictor
        points, labels, box, mask_input = self.model_inputs(prompt)
        multimask = len(points) == 1 and box is None and mask_input is None and not refine
        if refine:
            mask_input = previous.logits[:, previous.index: previous.index + 1]
        elif mask_input is not None:
            mask_input = torch.as_tensor(mask_input, device=p.device)[None, None]
        xy = lab = bx = None
        if len(points):
            xy = p.points_to_input(points)[None]
            lab = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=p.device)[None]
        if box is not None:
            bx = p.box_to_input(box)
        logits, scores = p.predict_lowres(xy, lab, bx, mask_input, multimask)
        scores = scores[0].cpu().numpy()
        self.result = Candidates(logits, scores, int(np.argmax(scores)))
        return self.result

    def cycle(self) -> Optional[Candidates]:
        """Choose the next multimask candidate (no decoding).

        Returns
        -------
        Candidates or None
            The current answer with its next candidate chosen; None when there is none.
        """
        if self.result is not None:
            self.result.index = (self.result.index + 1) % len(self.result.scores)
        return self.result

    def mask(self) -> Optional[np.ndarray]:
        """(Y, X) bool mask of the chosen candidate at the image's size.

        Returns
        -------
        ndarray, (Y, X) bool, or None
            None when there is no answer.
        """
        r = self.result
        if r is None:
            return None
        up = self.predictor.upscale(r.logits[:, r.index: r.index + 1])
        return (up[0, 0] > 0).cpu().numpy()


@dataclass
class CommitRecord:
    """What `undo_commit` needs: where the object was written and what was there before.

    Parameters
    ----------
    label_id : int
        The id written.
    index : tuple of ndarray (int)
        The changed pixels, one index array per axis of the labels.
    previous : ndarray
        Their values before.
    """

    label_id: int
    index: Tuple[np.ndarray, ...]
    previous: np.ndarray


def commit_mask(labels: np.ndarray, mask: np.ndarray, where: Tuple[int, ...] = (),
                overwrite: bool = False) -> Optional[CommitRecord]:
    """Write `mask` into `labels[where]` with a new id (max + 1 over all of `labels`).

    Without `overwrite` only background (0) pixels change. Returns None if no pixel would
    change. Raises ValueError if the new id does not fit the array's dtype.

    Parameters
    ----------
    labels : ndarray, (..., Y, X) int
        The label image, changed in place.
    mask : ndarray, (Y, X) bool
        The object on one 2D slice.
    where : tuple of int
        The slice's leading indices (empty for 2D labels).
    overwrite : bool
        Also replace other objects' pixels.

    Returns
    -------
    CommitRecord or None
    """
    target = labels[tuple(where)]
    if target.shape != mask.shape:
        raise ValueError(f"mask of shape {mask.shape} does not fit the labels slice {target.shape}")
    write = mask if overwrite else mask & (target == 0)
    if not write.any():
        return None
    new_id = int(labels.max()) + 1
    if np.issubdtype(labels.dtype, np.integer) and new_id > np.iinfo(labels.dtype).max:
        raise ValueError(f"no free label id in a {labels.dtype} labels layer; use uint32 labels")
    inner = np.nonzero(write)
    index = tuple(np.full(len(inner[0]), w, dtype=np.intp) for w in where) + inner
    record = CommitRecord(new_id, index, labels[index].copy())
    labels[index] = new_id
    return record


def undo_commit(labels: np.ndarray, record: CommitRecord) -> None:
    """Put back the pixels that `commit_mask` changed.

    Parameters
    ----------
    labels : ndarray, (..., Y, X) int
        The label image, changed in place.
    record : CommitRecord
    """
    labels[record.index] = record.previous
