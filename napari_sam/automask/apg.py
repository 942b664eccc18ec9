"""Automatic prompt generation (APG): instance-decoder seeds become prompts for SAM.

micro-sam 1.8's `AutomaticPromptGenerator`, step by step and with its defaults:

1. `point_prompts`: seeds are where centre distance < 0.5 and boundary distance < 0.5 on
   the raw maps (no smoothing), outside the background (foreground < 0.5); one positive
   point per 4-connected seed region, at the region's pixel farthest from any region
   boundary (the maximum of the Euclidean distance to the regions' outer boundaries and to
   the image border; the first maximum in raster order within the region's box).
2. each point is decoded by the mask decoder on the embedding the Predictor holds (one
   mask per point, or the best of three by predicted IoU with `multimasking`); masks are
   the full-resolution logits > 0, scored by predicted IoU x stability score (offset 1, on
   the full-resolution logits).
3. optionally (`refine_with_box_prompts`) each mask's box, widened by 1 %, is decoded
   again and replaces the point's mask.
4. masks of at most `min_size` pixels are dropped, then a greedy mask NMS (IoU >
   `nms_threshold` suppresses; only pairs whose boxes overlap with positive area are
   compared); the kept masks are painted largest first, each only on unpainted pixels;
   the painted labels are split into 4-connected pieces, pieces under `min_size` pixels
   dropped, and the labels renumbered 1..n.

Differences from micro-sam on purpose: none in the rules. micro-sam computes the distance
transform of step 1 in 512 x 512 blocks with a 16-pixel halo; here it is one exact
transform (the same values for images up to 512 x 512). Its connected-component numbering
is blockwise too (other numbers, the same regions).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

APG_DEFAULTS = {"min_size": 25, "center_distance_threshold": 0.5,
                "boundary_distance_threshold": 0.5, "foreground_threshold": 0.5,
                "multimasking": False, "batch_size": 32, "nms_threshold": 0.9,
                "refine_with_box_prompts": False}
BOX_EXTENSION = 0.01  # micro-sam's fixed widening of the refinement boxes


def point_prompts(foreground: np.ndarray, center_distances: np.ndarray,
                  boundary_distances: np.ndarray, foreground_threshold: float = 0.5,
                  center_distance_threshold: float = 0.5,
                  boundary_distance_threshold: float = 0.5) -> np.ndarray:
    """Three (Y, X) decoder maps -> (N, 2) int64 (row, col) positive points, one per seed
    region, in the order of the regions' first pixels (raster order); (0, 2) if none.

    Parameters
    ----------
    foreground, center_distances, boundary_distances : ndarray, (Y, X) float
        The instance decoder's maps, 0..1.
    foreground_threshold, center_distance_threshold, boundary_distance_threshold : float
        Seeds: foreground not below its threshold, both distances below theirs.

    Returns
    -------
    ndarray, (N, 2) int64
        One (row, col) point per seed region.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    seeds = (center_distances < center_distance_threshold) & \
        (boundary_distances < boundary_distance_threshold) & \
        ~(foreground < foreground_threshold)
    cc, n = ndi.label(seeds)
    if n == 0:
        return np.zeros((0, 2), np.int64)
    inside = ~find_boundaries(cc, mode="outer")
    inside[0, :] = inside[-1, :] = False
    inside[:, 0] = inside[:, -1] = False
    dist = ndi.distance_transform_edt(inside)
    points = []
    for i, sl in enumerate(ndi.find_objects(cc), start=1):
        d = np.where(cc[sl] == i, dist[sl], 0)
        r, c = np.unravel_index(int(np.argmax(d)), d.shape)
        points.append((r + sl[0].start, c + sl[1].start))
    return np.asarray(points, np.int64)


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, Y, X) bool -> (N, 4) inclusive (x0, y0, x1, y1); (0, 0, 0, 0) for empty masks."""
    rows, cols = masks.any(2), masks.any(1)
    n, h, w = masks.shape

    def span(a, size):
        idx = torch.arange(size)
        hi = torch.where(a, idx, -1).amax(1)
        lo = torch.where(a, idx, size).amin(1)
        return lo, hi

    y0, y1 = span(rows, h)
    x0, x1 = span(cols, w)
    box = torch.stack([x0, y0, x1, y1], 1)
    return torch.where((x1 < x0)[:, None], torch.zeros_like(box), box)


@torch.no_grad()
def _decode(predictor, points_xy=None, boxes_xyxy=None, multimasking=False, batch_size=32):
    """Prompts in image pixels ((N, 2) x, y or (N, 4) x0, y0, x1, y1) -> masks (N, Y, X)
    bool, scores (N,) = predicted IoU x stability, boxes (N, 4) inclusive xyxy."""
    from .candidates import stability_score

    emb = predictor.get_embedding()
    (h, w), (ih, iw) = emb.original_size, emb.input_size
    scale = torch.tensor([iw / w, ih / h], dtype=torch.float32)
    prompts = points_xy if points_xy is not None else boxes_xyxy
    masks, scores = [], []
    for s in range(0, len(prompts), batch_size):
        part = torch.as_tensor(np.asarray(prompts[s:s + batch_size], np.float64),
                               dtype=torch.float32)
        if points_xy is not None:
            xy = (part * scale)[:, None].to(predictor.device)
            lab = torch.ones(len(part), 1, dtype=torch.long, device=predictor.device)
            low, iou = predictor.predict_lowres(xy, lab, None, None, multimasking)
        else:
            bx = (part.view(-1, 2, 2) * scale).view(-1, 4).to(predictor.device)
            low, iou = predictor.predict_lowres(None, None, bx, None, multimasking)
        if multimasking:  # the best of three by predicted IoU
            best = iou.argmax(1)
            pick = torch.arange(len(best))
            low, iou = low[pick, best][:, None], iou[pick, best][:, None]
        logits = predictor.upscale(low)[:, 0].float().cpu()
        scores.append(iou[:, 0].float().cpu() * stability_score(logits, 0.0, 1.0))
        masks.append(logits > 0)
    masks = torch.cat(masks)
    return masks, torch.cat(scores), _mask_boxes(masks)


def _box_prompts(boxes: torch.Tensor, shape) -> np.ndarray:
    """micro-sam's refinement boxes: each mask box (inclusive xyxy) widened by 1 % of its
    width and height, clipped at 0 and, as micro-sam does, x at the image's height and y at
    its width."""
    b = boxes.double()
    x, y, bw, bh = b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    e = BOX_EXTENSION
    out = torch.stack([(x - bw * e).clamp(min=0), (y - bh * e).clamp(min=0),
                       (x + (1 + e) * bw).clamp(max=shape[0]),
                       (y + (1 + e) * bh).clamp(max=shape[1])], 1)
    return out.numpy()


def _nms(masks: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor,
         thresh: float) -> list:
    """Greedy mask NMS in descending score order; indices kept, in that order."""
    b = boxes.float()
    x1 = torch.maximum(b[:, None, 0], b[:, 0])
    y1 = torch.maximum(b[:, None, 1], b[:, 1])
    x2 = torch.minimum(b[:, None, 2], b[:, 2])
    y2 = torch.minimum(b[:, None, 3], b[:, 3])
    overlap = ((x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)) > 0
    order = torch.argsort(scores, descending=True).tolist()
    flat = masks.flatten(1)
    area = flat.sum(1)
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = torch.tensor(order)
        cand = rest[overlap[i, rest]]
        drop = set()
        if len(cand):
            inter = (flat[cand] & flat[i]).sum(1)
            iou = inter.float() / (area[cand] + area[i] - inter).float()
            drop = set(cand[iou > thresh].tolist())
        order = [j for j in order if j not in drop]
    return keep


def _paint(masks: torch.Tensor, keep: list, min_size: int) -> np.ndarray:
    """Kept masks painted largest first on unpainted pixels, split into 4-connected pieces,
    pieces under `min_size` removed, labels 1..n (uint32)."""
    from skimage.measure import label as cc_label

    from .ais import _size_filter

    shape = tuple(masks.shape[1:])
    seg = np.zeros(shape, np.uint32)
    areas = [int(masks[i].sum()) for i in keep]
    for sid, k in enumerate(sorted(range(len(keep)), key=lambda k: -areas[k]), start=1):
        m = masks[keep[k]].numpy() & (seg == 0)
        seg[m] = sid
    pieces = cc_label(seg, background=0, connectivity=1)
    return _size_filter(pieces, min_size)


def apg(predictor, maps: Optional[Dict[str, np.ndarray]] = None, **params) -> np.ndarray:
    """Automatic prompt generation for the image a `Predictor` holds: (Y, X) uint32 labels,
    0 = background.

    predictor: a `Predictor` whose model has an instance decoder, after `set_image`; the
    embedding it holds feeds both the instance decoder and the mask decoder (no second
    encoder pass). maps: the decoder's maps if already computed. params (micro-sam's
    `AutomaticPromptGenerator.generate` names and defaults, `APG_DEFAULTS`): min_size (25),
    center_distance_threshold, boundary_distance_threshold, foreground_threshold (0.5),
    multimasking (False), batch_size (32), nms_threshold (0.9), refine_with_box_prompts
    (False).

    Parameters
    ----------
    predictor : Predictor
        See above.
    maps : dict of str to ndarray, (Y, X) float32, optional
        "foreground", "center_distances", "boundary_distances" (None: computed).
    **params
        See above (TypeError for an unknown one).

    Returns
    -------
    ndarray, (Y, X) uint32
        Objects 1..n, 0 background.
    """
    unknown = set(params) - set(APG_DEFAULTS)
    if unknown:
        raise TypeError(f"apg() got unknown parameters {sorted(unknown)}; "
                        f"known: {', '.join(APG_DEFAULTS)}")
    p = {**APG_DEFAULTS, **params}
    if maps is None:
        maps = predictor.instance_maps()
    shape = maps["foreground"].shape
    points = point_prompts(maps["foreground"], maps["center_distances"],
                           maps["boundary_distances"], p["foreground_threshold"],
                           p["center_distance_threshold"], p["boundary_distance_threshold"])
    if len(points) == 0:
        return np.zeros(shape, np.uint32)
    masks, scores, boxes = _decode(predictor, points_xy=points[:, ::-1],
                                   multimasking=p["multimasking"], batch_size=p["batch_size"])
    if p["refine_with_box_prompts"]:
        masks, scores, boxes = _decode(predictor, boxes_xyxy=_box_prompts(boxes, shape),
                                       multimasking=p["multimasking"],
                                       batch_size=p["batch_size"])
    big = (masks.flatten(1).sum(1) > p["min_size"]).nonzero()[:, 0]
    if len(big) == 0:
        return np.zeros(shape, np.uint32)
    masks, scores, boxes = masks[big], scores[big], boxes[big]
    keep = _nms(masks, scores, boxes, p["nms_threshold"])
    return _paint(masks, keep, p["min_size"])


def labels_and_records(predictor, min_area: int = 0, offset=(0, 0), maps=None, **params):
    """APG on the image a `Predictor` holds -> `AutoMaskResult` (labels (Y, X) uint32, one
    record per object as `ais.label_records` makes them, bbox and point plus `offset`
    (row, col)). min_area: objects smaller than this are dropped (APG's `min_size` is
    raised to it). params: as for `apg`.

    Parameters
    ----------
    predictor : Predictor
        As for `apg`.
    min_area : int
        See above.
    offset : (int, int)
        (row, col) added to each record's bbox and point.
    maps : dict of str to ndarray, (Y, X) float32, optional
        The decoder's maps (None: computed).
    **params
        As for `apg`.

    Returns
    -------
    AutoMaskResult
        labels (Y, X) uint32 and records (id, area, bbox, predicted_iou, stability, point).
    """
    from .ais import label_records
    from .amg import AutoMaskResult

    maps = maps if maps is not None else predictor.instance_maps()
    p = dict(params)
    p["min_size"] = max(int(p.get("min_size", APG_DEFAULTS["min_size"])), int(min_area))
    labels = apg(predictor, maps=maps, **p)
    return AutoMaskResult(labels, label_records(labels, maps, offset))
