"""Post-processing of candidate masks: scores and duplicate removal, in torch.

Everything that decides *which* masks survive runs in torch on the candidates' device;
the final clean-up and painting run in numpy/scipy on the few survivors (`painting`, its
names importable from here too, with the overlap rule of `paint_labels`).

Conventions: boxes are (row0, col0, row1, col1) with exclusive ends (like
`skimage.measure.regionprops`), in pixels. Labels are uint32, 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import List, Optional, Sequence

import numpy as np
import torch

# the clean-up and painting live in `painting`; their names stay importable from here
from .painting import (clean_mask, label_boxes, paint_labels, remove_small_regions,  # noqa: F401
                       trim)


# --------------------------------------------------------------------------- container
@dataclass
class Candidates:
    """Compact candidate masks, one row per candidate (all tensors share the first dim, N).

    Parameters
    ----------
    iou : Tensor, (N,) float32
        Predicted IoU.
    stability : Tensor, (N,) float32
        Stability score.
    box : Tensor, (N, 4) float32
        (row0, col0, row1, col1) in image pixels, estimated from the low-res mask (for NMS).
    point : Tensor, (N, 2) float32
        The (row, col) prompt in image pixels.
    crop : Tensor, (N,) int64
        Index of the crop (layer 0 = the whole image) it was decoded in.
    region : Tensor, (N, 4) int64
        (row0, col0, row1, col1), ends exclusive (the order of `box`): the full-resolution
        rows and columns (in crop pixels) where the mask can be non-zero.
    origin : Tensor, (N, 2) int64
        (row, col) of `logits[i][0, 0]` in the crop's low-res logit grid.
    logits : list of Tensor, (h_i, w_i) float16
        The low-res logits cut to what `region` needs (a list: the crops differ in size).
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
        """No candidates.

        Parameters
        ----------
        device : str or torch.device
            Where the (empty) tensors are.

        Returns
        -------
        Candidates
            N = 0.
        """
        z = lambda *s, dt=torch.float32: torch.zeros(s, dtype=dt, device=device)  # noqa: E731
        return cls(z(0), z(0), z(0, 4), z(0, 2), z(0, dt=torch.long), z(0, 4, dt=torch.long),
                   z(0, 2, dt=torch.long), [])

    @classmethod
    def cat(cls, parts: Sequence["Candidates"]) -> "Candidates":
        """All rows of `parts`, in order (the first part's device).

        Parameters
        ----------
        parts : sequence of Candidates

        Returns
        -------
        Candidates
            Empty (on CPU) when `parts` is.
        """
        parts = [p for p in parts if len(p)] or list(parts[:1]) or [cls.empty()]
        kw = {f.name: torch.cat([getattr(p, f.name) for p in parts])
              for f in fields(cls) if f.name != "logits"}
        return cls(**kw, logits=[t for p in parts for t in p.logits])

    def select(self, index: torch.Tensor) -> "Candidates":
        """Rows `index` (a long tensor of positions or a bool mask), in that order.

        Parameters
        ----------
        index : Tensor, (K,) int64 or (N,) bool

        Returns
        -------
        Candidates
            K rows.
        """
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        kw = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "logits"}
        return Candidates(**kw, logits=[self.logits[i] for i in index.tolist()])

    def nbytes(self) -> int:
        """Memory held by the stored logits.

        Returns
        -------
        int
            Bytes of `logits` (the other tensors are not counted).
        """
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

    Parameters
    ----------
    logits : Tensor, (..., H, W) float
    mask_threshold : float
        t, the mask's logit threshold.
    offset : float
        How far the threshold moves either way.

    Returns
    -------
    Tensor, (...) float32
        Scores in 0..1.
    """
    inner = (logits > mask_threshold + offset).flatten(-2).sum(-1, dtype=torch.int32)
    outer = (logits > mask_threshold - offset).flatten(-2).sum(-1, dtype=torch.int32)
    return torch.where(outer > 0, inner.float() / outer.clamp(min=1).float(),
                       torch.ones_like(inner, dtype=torch.float32))


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) long (row0, col0, row1, col1), exclusive ends; empty -> 0.

    Parameters
    ----------
    masks : Tensor, (..., H, W) bool

    Returns
    -------
    Tensor, (..., 4) int64
        Tight boxes (row0, col0, row1, col1); all 0 for an empty mask.
    """
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
    """Pairwise IoU of (N, 4) and (M, 4) boxes (row0, col0, row1, col1), exclusive ends.

    Parameters
    ----------
    a : Tensor, (N, 4)
    b : Tensor, (M, 4)

    Returns
    -------
    Tensor, (N, M) float32
        0 where both boxes are empty.
    """
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
    inter / union > t  <=>  inter * (1 + t) > t * (area_i + area_j)).

    Parameters
    ----------
    boxes : Tensor, (N, 4)
        (row0, col0, row1, col1), exclusive ends.
    iou_thresh : float

    Returns
    -------
    Tensor, (N, N) bool
    """
    r0, c0, r1, c1 = boxes.float().unbind(1)
    area = (r1 - r0).clamp(min=0) * (c1 - c0).clamp(min=0)
    ih = torch.minimum(r1[:, None], r1[None]).sub_(torch.maximum(r0[:, None], r0[None]))
    iw = torch.minimum(c1[:, None], c1[None]).sub_(torch.maximum(c0[:, None], c0[None]))
    inter = ih.clamp_(min=0).mul_(iw.clamp_(min=0))
    return inter.mul_(1 + iou_thresh) > (area[:, None] + area[None]).mul_(iou_thresh)


def mask_iou(masks: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, H, W) bool masks (one matmul; fine for a few hundred masks).

    Parameters
    ----------
    masks : Tensor, (N, H, W) bool

    Returns
    -------
    Tensor, (N, N) float32
        0 where both masks are empty.
    """
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

    Parameters
    ----------
    overlap : Tensor, (N, N) bool
        Only the part below the diagonal (j < i) is read.
    max_steps : int
        Whole-tensor steps before the sequential pass.

    Returns
    -------
    Tensor, (N,) bool
        Which candidates are kept, on `overlap`'s device.
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
    (N, N) matmul over H*W: keep N to a few hundred and the masks small, e.g. low-res).

    Parameters
    ----------
    boxes : Tensor, (N, 4)
        (row0, col0, row1, col1), exclusive ends.
    scores : Tensor, (N,) float
        Priority: higher is kept first (ties in input order).
    iou_thresh : float
        Two candidates overlap above this IoU.
    masks : Tensor, (N, H, W) bool, optional
        See above.

    Returns
    -------
    Tensor, (K,) int64
        Positions in `boxes` of the kept candidates.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    if masks is None:
        return order[greedy_keep(box_overlaps(boxes[order], iou_thresh))]
    iou = box_iou(boxes[order], boxes[order])
    iou = torch.where(iou > 0, mask_iou(masks[order]), iou)
    return order[greedy_keep(iou > iou_thresh)]
