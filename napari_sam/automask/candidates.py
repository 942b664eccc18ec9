"""Post-processing of candidate masks: scores, duplicate removal, clean-up, label painting.

Everything that decides *which* masks survive runs in torch on the candidates' device;
the final clean-up and painting run in numpy/scipy on the few survivors.

Conventions: boxes are (row0, col0, row1, col1) with exclusive ends (like
`skimage.measure.regionprops`), in pixels. Labels are uint32, 0 is background.

Overlap rule (`paint_labels`): where masks overlap, the **smaller** mask is on top (masks
are painted in descending order of area; at equal area the higher score is painted last,
so it wins). A mask of which less than `min_visible` of its own area remains visible
after painting (it is mostly the union of smaller masks, e.g. a clump of nuclei), or whose
visible part is smaller than `min_area` pixels, is dropped, and the masks are painted
again without it so that what it covered goes to the masks below. Ids are then numbered
1..N in descending order of score: id 1 is the most confident object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage as ndi


# --------------------------------------------------------------------------- container
@dataclass
class Candidates:
    """Compact candidate masks, one row per candidate (all tensors share the first dim).

    iou: predicted IoU; stability: stability score; box: (row0, col0, row1, col1) float in
    image pixels (estimated from the low-res mask, used for NMS); point: the (row, col)
    prompt in image pixels; crop: index of the crop (layer 0 = the whole image) it was
    decoded in; region: (row0, col0, row1, col1), ends exclusive (the order of `box`), the
    full-resolution rows and columns (in crop pixels) where the mask can be non-zero; origin: (row, col) of
    `logits[i][0, 0]` in the crop's low-res logit grid; logits: the low-res logits cut to
    what `region` needs, float16 (a list, the crops have different sizes).
    """

    iou: torch.Tensor
    stability: torch.Tensor
    box: torch.Tensor
    point: torch.Tensor
    crop: torch.Tensor
    region: torch.Tensor
    origin: torch.Tensor
    logits: List[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.iou.shape[0])

    @classmethod
    def empty(cls, device="cpu") -> "Candidates":
        z = lambda *s, dt=torch.float32: torch.zeros(s, dtype=dt, device=device)  # noqa: E731
        return cls(z(0), z(0), z(0, 4), z(0, 2), z(0, dt=torch.long), z(0, 4, dt=torch.long),
                   z(0, 2, dt=torch.long), [])

    @classmethod
    def cat(cls, parts: Sequence["Candidates"]) -> "Candidates":
        parts = [p for p in parts if len(p)] or list(parts[:1]) or [cls.empty()]
        kw = {f.name: torch.cat([getattr(p, f.name) for p in parts])
              for f in fields(cls) if f.name != "logits"}
        return cls(**kw, logits=[t for p in parts for t in p.logits])

    def select(self, index: torch.Tensor) -> "Candidates":
        """Rows `index` (a long tensor of positions or a bool mask), in that order."""
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        kw = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "logits"}
        return Candidates(**kw, logits=[self.logits[i] for i in index.tolist()])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.logits)


# --------------------------------------------------------------------------- scores
def stability_score(logits: torch.Tensor, mask_threshold: float = 0.0,
                    offset: float = 1.0) -> torch.Tensor:
    """|logits > t + offset| / |logits > t - offset| over the last two dims (1 if both empty).

    How much the mask changes when its threshold moves by +-offset: a crisp mask scores
    near 1. The automatic mask generator computes it on the model's low-resolution logits
    (the cheap path: no upsampling of candidates that are then rejected). That is exact for
    the low-res mask and an estimate for the full-resolution one, whose logits are a convex
    (bilinear) interpolation of the low-res ones; the two agree to a few hundredths for
    masks larger than a few low-res pixels.
    """
    inner = (logits > mask_threshold + offset).flatten(-2).sum(-1, dtype=torch.int32)
    outer = (logits > mask_threshold - offset).flatten(-2).sum(-1, dtype=torch.int32)
    return torch.where(outer > 0, inner.float() / outer.clamp(min=1).float(),
                       torch.ones_like(inner, dtype=torch.float32))


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) long (row0, col0, row1, col1), exclusive ends; empty -> 0."""
    rows, cols = masks.any(-1), masks.any(-2)

    def span(a):
        n = a.shape[-1]
        idx = torch.arange(n, device=a.device)
        first = torch.where(a, idx, n).amin(-1)
        last = torch.where(a, idx, -1).amax(-1) + 1
        empty = first >= n
        return first.masked_fill(empty, 0), last.masked_fill(empty, 0)

    r0, r1 = span(rows)
    c0, c1 = span(cols)
    return torch.stack([r0, c0, r1, c1], dim=-1)


# --------------------------------------------------------------------------- NMS
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) boxes (row0, col0, row1, col1), exclusive ends."""
    a, b = a.float(), b.float()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_overlaps(boxes: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """(N, N) bool: box IoU > iou_thresh, without forming the IoU (fewer N x N passes:
    inter / union > t  <=>  inter * (1 + t) > t * (area_i + area_j))."""
    r0, c0, r1, c1 = boxes.float().unbind(1)
    area = (r1 - r0).clamp(min=0) * (c1 - c0).clamp(min=0)
    ih = torch.minimum(r1[:, None], r1[None]).sub_(torch.maximum(r0[:, None], r0[None]))
    iw = torch.minimum(c1[:, None], c1[None]).sub_(torch.maximum(c0[:, None], c0[None]))
    inter = ih.clamp_(min=0).mul_(iw.clamp_(min=0))
    return inter.mul_(1 + iou_thresh) > (area[:, None] + area[None]).mul_(iou_thresh)


def mask_iou(masks: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, H, W) bool masks (one matmul; fine for a few hundred masks)."""
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def greedy_keep(overlap: torch.Tensor, max_steps: int = 32) -> torch.Tensor:
    """Greedy NMS from a (N, N) bool matrix `overlap[i, j]` (i, j in priority order).

    Candidate i is kept unless an earlier kept candidate j < i overlaps it. The greedy
    answer is the only fixed point of keep = "no earlier kept overlapping candidate", so
    it is found by iterating that rule in whole-tensor steps (no per-candidate loop, stays
    on the device); it settles after as many steps as the longest suppression chain, a
    handful on real data. Past `max_steps` (contrived chains) a plain sequential pass
    over the matrix on the CPU finishes the job.
    """
    n = overlap.shape[0]
    earlier = torch.ones(n, n, dtype=torch.bool, device=overlap.device).tril(-1)
    m = overlap & earlier
    keep = torch.ones(n, dtype=torch.bool, device=overlap.device)
    for _ in range(max_steps):
        new = ~(m & keep[None, :]).any(1)
        if torch.equal(new, keep):
            return keep
        keep = new
    over = m.cpu().numpy()
    out = np.ones(n, bool)
    for i in range(n):
        if out[i]:
            out[i + 1:] &= ~over[i + 1:, i]
    return torch.as_tensor(out, device=overlap.device)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float,
        masks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Indices of the kept boxes (greedy by descending score), highest score first.

    With `masks` ((N, H, W) bool), overlap is the mask IoU wherever the boxes overlap (one
    (N, N) matmul over H*W: keep N to a few hundred and the masks small, e.g. low-res)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    if masks is None:
        return order[greedy_keep(box_overlaps(boxes[order], iou_thresh))]
    iou = box_iou(boxes[order], boxes[order])
    iou = torch.where(iou > 0, mask_iou(masks[order]), iou)
    return order[greedy_keep(iou > iou_thresh)]


# --------------------------------------------------------------------------- clean-up
_FOUR = ndi.generate_binary_structure(2, 1)
_EIGHT = ndi.generate_binary_structure(2, 2)


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> np.ndarray:
    """Remove islands (mode "islands", 8-connected) or fill holes (mode "holes",
    4-connected background not reaching the border) smaller than `min_area` pixels.

    Islands: the largest component is always kept, so a mask never vanishes here.
    """
    if min_area <= 0 or not mask.any():
        return mask
    if mode == "islands":
        lab, n = ndi.label(mask, _EIGHT)
        if n <= 1:
            return mask
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        keep = sizes >= min_area
        keep[int(np.argmax(sizes))] = True
        keep[0] = False
        return keep[lab]
    if mode == "holes":
        bg = np.pad(~mask, 1, constant_values=True)
        lab, n = ndi.label(bg, _FOUR)
        if n <= 1:
            return mask
        sizes = np.bincount(lab.ravel())
        fill = sizes < min_area
        fill[0] = False
        fill[lab[0, 0]] = False  # the outside (the padding ring is one component)
        return mask | fill[lab][1:-1, 1:-1]
    raise ValueError(f"mode must be 'islands' or 'holes', got {mode!r}")


def clean_mask(mask: np.ndarray, min_hole_area: int = 0, min_island_area: int = 0) -> np.ndarray:
    """Fill holes and then remove islands smaller than the given areas."""
    mask = remove_small_regions(mask, min_hole_area, "holes")
    return remove_small_regions(mask, min_island_area, "islands")


def trim(mask: np.ndarray, top_left: Tuple[int, int]):
    """Crop a bool mask to its tight box -> (mask, (row0, col0, row1, col1)) or None if empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return mask[r0:r1, c0:c1], (top_left[0] + r0, top_left[1] + c0,
                                top_left[0] + r1, top_left[1] + c1)


# --------------------------------------------------------------------------- painting
def _paint(shape, masks, boxes, order) -> np.ndarray:
    out = np.zeros(shape, np.uint32)
    for i in order:
        r0, c0, r1, c1 = boxes[i]
        view = out[r0:r1, c0:c1]
        view[masks[i]] = i + 1
    return out


def paint_labels(masks: Sequence[np.ndarray], boxes: Sequence[Sequence[int]],
                 scores: Sequence[float], shape: Tuple[int, int], min_visible: float = 0.5,
                 min_area: int = 0) -> Tuple[np.ndarray, List[int]]:
    """Resolve overlapping masks into one uint32 label image (rule: see the module doc).

    masks[i]: bool crop of mask i placed at boxes[i] (row0, col0, row1, col1), exclusive
    ends, inside `shape`. Returns (labels, kept) where label k (1-based) is mask kept[k-1];
    kept is in descending score order.
    """
    n = len(masks)
    if n == 0:
        return np.zeros(shape, np.uint32), []
    boxes = [tuple(int(v) for v in b) for b in boxes]
    area = np.array([int(m.sum()) for m in masks])
    score = np.asarray(scores, dtype=np.float64)
    # paint bottom to top: largest first; at equal area the better score later (on top)
    order = np.lexsort((score, -area))
    alive = area > 0
    for _ in range(n + 1):  # dropping only uncovers pixels: one repaint settles it
        painted = _paint(shape, masks, boxes, [i for i in order if alive[i]])
        visible = np.bincount(painted.ravel(), minlength=n + 1)[1:]
        ok = alive & (visible >= max(min_area, 1)) & (visible >= min_visible * area)
        if np.array_equal(ok, alive):
            break
        alive = ok
    kept = [int(i) for i in np.argsort(-score, kind="stable") if alive[i]]
    lut = np.zeros(n + 1, np.uint32)
    lut[np.asarray(kept, dtype=np.int64) + 1] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    return lut[painted], kept


def label_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) boxes (row0, col0, row1, col1) of ids 1..n of a 2D label image."""
    out = np.zeros((n, 4), np.int64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is not None:
            out[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    return out
