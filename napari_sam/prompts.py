"""Interactive prompts -> masks -> committed labels, without a GUI.

The napari widget is a thin adapter over this module:

- conversion: prompt-layer coordinates -> image pixels (through a `to_image` callable, in
  napari `image.world_to_data(prompt_layer.data_to_world(p))`), the points of one slice,
  rectangles -> boxes, polygons and ellipses -> a raster mask -> low-res `mask_input` logits;
- `Segmenter`: one object at a time; multimask candidates for a lone click, refinement from
  the previous low-res logits when prompts are added;
- commit rules: `commit_mask` writes a mask with a new id (max + 1) and, unless told to
  overwrite, only into background pixels; `undo_commit` restores the exact previous pixels.

Coordinates are napari's (row, col); the model's (x, y) order is handled by the Predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

MASK_LOGIT = 8.0  # |logit| given to inside/outside pixels of a drawn region

ToImage = Callable[[np.ndarray], np.ndarray]


def scale_translate(scale: Sequence[float], translate: Sequence[float]) -> ToImage:
    """World -> data for an axis-aligned layer transform: (world - translate) / scale."""
    s, t = np.asarray(scale, float), np.asarray(translate, float)
    return lambda p: (np.asarray(p, float) - t) / s


def to_image_coords(coords, to_image: ToImage) -> np.ndarray:
    """(N, D) prompt-layer coordinates -> (N, D) image data coordinates."""
    c = np.asarray(coords, dtype=float)
    if c.size == 0:
        return c.reshape(0, c.shape[-1] if c.ndim == 2 else 0)
    return np.array([np.asarray(to_image(p), float) for p in c])


def on_slice(coords_img: np.ndarray, index: Tuple[int, ...]) -> np.ndarray:
    """Boolean (N,): which (N, D) image coordinates lie on the 2D slice `index` (D - 2 ints)."""
    lead = np.rint(coords_img[:, : len(index)]).astype(int)
    return np.all(lead == np.asarray(index, int), axis=1) if len(index) else np.ones(len(lead), bool)


def inside(points_rc: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Boolean (N,): which (row, col) points fall on a pixel of an image of `shape`."""
    p = np.asarray(points_rc, float).reshape(-1, 2)
    return ((p >= -0.5) & (p < np.asarray(shape) - 0.5)).all(axis=1)


def rectangle_to_box(vertices_rc) -> np.ndarray:
    """Rectangle corners (any order, 2D) -> box (row0, col0, row1, col1), row0 <= row1."""
    v = np.asarray(vertices_rc, float).reshape(-1, 2)
    return np.concatenate([v.min(axis=0), v.max(axis=0)])


def ellipse_polygon(corners_rc, n: int = 64) -> np.ndarray:
    """The ellipse inscribed in a (possibly rotated) rectangle given by its 4 corners in order."""
    c = np.asarray(corners_rc, float).reshape(4, 2)
    centre, a, b = c.mean(axis=0), (c[1] - c[0]) / 2, (c[3] - c[0]) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def region_mask(shape_type: str, vertices_rc, shape: Tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon or ellipse given in (row, col) pixel coordinates."""
    from skimage.draw import polygon

    v = np.asarray(vertices_rc, float).reshape(-1, 2)
    if shape_type == "ellipse":
        v = ellipse_polygon(v)
    elif shape_type != "polygon":
        raise ValueError(f"only polygons and ellipses become mask prompts, not {shape_type!r}")
    mask = np.zeros(shape, bool)
    rr, cc = polygon(v[:, 0], v[:, 1], shape)
    mask[rr, cc] = True
    return mask


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(row, col) of the pixel farthest from the border of `mask`."""
    from scipy import ndimage as ndi

    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return np.array(np.unravel_index(np.argmax(dist), mask.shape), dtype=float)


def mask_to_logits(mask: np.ndarray, input_size: Tuple[int, int], image_size: int,
                   mask_size: int) -> np.ndarray:
    """(Y, X) bool mask -> (m, m) logits in the model's padded input frame (`mask_input`)."""
    t = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    t = F.interpolate(t, input_size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, image_size - input_size[1], 0, image_size - input_size[0]))
    t = F.interpolate(t, (mask_size, mask_size), mode="area")
    return ((t[0, 0] * 2 - 1) * MASK_LOGIT).numpy()


@dataclass
class Prompt:
    """Everything the user gave for one object on one 2D image, in (row, col) pixels."""

    points: np.ndarray            # (N, 2) float
    labels: np.ndarray            # (N,) int, 1 object / 0 background
    box: Optional[np.ndarray] = None       # (4,) row0, col0, row1, col1
    region: Optional[np.ndarray] = None    # (Y, X) bool from polygons/ellipses

    @classmethod
    def empty(cls) -> "Prompt":
        return cls(np.zeros((0, 2)), np.zeros(0, int))

    def is_empty(self) -> bool:
        return len(self.points) == 0 and self.box is None and self.region is None

    def extends(self, other: "Prompt") -> bool:
        """True if this prompt is `other` plus more points (same box and region)."""
        n = len(other.points)
        return (len(self.points) > n and np.array_equal(self.points[:n], other.points)
                and np.array_equal(self.labels[:n], other.labels)
                and _same(self.box, other.box) and _same(self.region, other.region))


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


@dataclass
class Candidates:
    """The decoder's answer for one prompt: K candidates, one of them chosen."""

    logits: torch.Tensor   # (1, K, m, m) low-res logits
    scores: np.ndarray     # (K,) predicted IoU
    index: int             # the chosen candidate


class Segmenter:
    """Decodes the current object from a `Prompt` with a Predictor whose image is set."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.reset()

    def reset(self) -> None:
        self.prompt = Prompt.empty()
        self.result: Optional[Candidates] = None

    def model_inputs(self, prompt: Prompt):
        """The points, box and mask_input sent to the decoder for `prompt`."""
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
        """Decode `prompt`; later points reuse the previous low-res logits (refinement)."""
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
        """Choose the next multimask candidate (no decoding)."""
        if self.result is not None:
            self.result.index = (self.result.index + 1) % len(self.result.scores)
        return self.result

    def mask(self) -> Optional[np.ndarray]:
        """(Y, X) bool mask of the chosen candidate at the image's size."""
        r = self.result
        if r is None:
            return None
        up = self.predictor.upscale(r.logits[:, r.index: r.index + 1])
        return (up[0, 0] > 0).cpu().numpy()


@dataclass
class CommitRecord:
    """What `undo_commit` needs: where the object was written and what was there before."""

    label_id: int
    index: Tuple[np.ndarray, ...]
    previous: np.ndarray


def commit_mask(labels: np.ndarray, mask: np.ndarray, where: Tuple[int, ...] = (),
                overwrite: bool = False) -> Optional[CommitRecord]:
    """Write `mask` into `labels[where]` with a new id (max + 1 over all of `labels`).

    Without `overwrite` only background (0) pixels change. Returns None if no pixel would
    change. Raises ValueError if the new id does not fit the array's dtype.
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
    """Put back the pixels that `commit_mask` changed."""
    labels[record.index] = record.previous
