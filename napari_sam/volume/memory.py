"""SAM 2.1 memory propagation for volumes and time-lapses (`method="memory"`).

With a SAM 2.1 model (`napari_sam.model.sam2.Sam2`), `segment_volume` and `track` can follow
objects with SAM 2's own video machinery (`napari_sam.video_predictor.VideoPredictor`)
instead of prompting each slice with its neighbour's answer: every prompted slice is a
conditioning frame, and every other slice is segmented from the memory of the frames
already segmented (their features and masks, and the object pointers), not from a prompt.

`method` chooses the path: "prompt" (slice-to-slice prompting, every model), "memory" (SAM
2.1 models only) or "auto" (memory for SAM 2.1, prompting otherwise).

What stays the same on the memory path: the prompts (points, labels, box; a mask alone on a
slice is a mask prompt), the anchors, the progress and cancel callbacks, and the stopping
rules beyond the outermost prompted slices (`StopRules`, applied to each slice against the
one before it; between prompted slices the memory decides alone). What differs: each slice
keeps only the parts connected to the previous slice's mask as on the prompting path, and
`PropagationInfo.scores` holds the mean probability inside the mask (SAM 2's per-frame
outputs carry no predicted IoU).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional

import numpy as np

from .propagate import (PropagationInfo, SliceAnswer, StopRules, _check_cancel,
                        _connected_to, _stop_reason, contrast)

METHODS = ("auto", "memory", "prompt")


def is_sam2(model) -> bool:
    """True for a SAM 2.1 model (a `Sam2`, or a Predictor holding one).

    Parameters
    ----------
    model : Sam, Sam2 or Predictor
        The model, or anything with a `.model`.

    Returns
    -------
    bool
    """
    from ..model.sam2 import Sam2

    return isinstance(getattr(model, "model", model), Sam2)


def resolve_method(method: str, model) -> str:
    """"memory" or "prompt" for `method` in METHODS and a model (or Predictor).

    Parameters
    ----------
    method : str
        "auto", "memory" or "prompt"; "memory" with a model that is not SAM 2.1 raises
        ValueError.
    model : Sam, Sam2 or Predictor
        The model that will segment.

    Returns
    -------
    str
        "memory" or "prompt".
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "memory" if is_sam2(model) else "prompt"
    if method == "memory" and not is_sam2(model):
        name = type(getattr(model, "model", model)).__name__
        raise ValueError(f"method='memory' needs a SAM 2.1 model, got {name}; use "
                         "method='prompt' (slice-to-slice prompting) for other models")
    return method


def video_predictor(embeddings, cache_frames: int = 2):
    """A `VideoPredictor` over the stack of `embeddings` (a SliceEmbeddings), with its model,
    device, channels and intensity range.

    Parameters
    ----------
    embeddings : SliceEmbeddings
        The stack and its predictor (a SAM 2.1 model).
    cache_frames : int
        Frames whose image features the video predictor keeps.

    Returns
    -------
    VideoPredictor
    """
    from ..video_predictor import VideoPredictor

    pred = embeddings.predictor
    return VideoPredictor(pred.model, embeddings.stack, embeddings.channels, pred.device,
                          pred.precision, cache_frames=cache_frames,
                          value_range=embeddings.value_range)


def _prompt_kwargs(p: dict) -> dict:
    """A segment_volume prompt dict -> VideoPredictor.add_prompt keywords (points and box
    win over a mask, which then is not used; a mask alone is a mask prompt)."""
    points, box, mask = p.get("points"), p.get("box"), p.get("mask")
    has_points = points is not None and len(points) > 0
    if has_points or box is not None:
        return dict(points=points if has_points else None,
                    point_labels=p.get("point_labels") if has_points else None, box=box)
    if mask is None or not np.asarray(mask).any():
        raise ValueError("empty prompt: give points, a box or a non-empty mask for the slice")
    return dict(mask=np.asarray(mask, bool))


def segment_memory(embeddings, given: Dict[int, dict], rules: StopRules, tick, cancel=None,
                   vp=None):
    """Follow one object through the stack of `embeddings` with SAM 2.1's memory.

    given: {slice: prompt dict} (at least one); rules: the stopping rules beyond the outermost
    prompted slices; tick(k) is called per slice done. Returns ((Z, Y, X) bool,
    PropagationInfo).

    Parameters
    ----------
    embeddings : SliceEmbeddings
        The (Z, Y, X[, C]) stack with a SAM 2.1 predictor.
    given : dict of int to dict
        {slice: {"points": (N, 2) float (row, col), "point_labels": (N,) int, "box":
        (4,) (row0, col0, row1, col1), "mask": (Y, X) bool}}, any of the keys.
    rules : StopRules
        Stopping rules beyond the outermost prompted slices.
    tick : callable
        tick(k), called once per slice done.
    cancel : callable, optional
        Returns True to cancel (raises, see `propagate`).
    vp : VideoPredictor, optional
        Reused (reset first); None makes one with `video_predictor`.

    Returns
    -------
    mask : ndarray
        (Z, Y, X) bool, the object on every slice.
    info : PropagationInfo
        Per-slice scores (mean probability inside the mask), stop reasons, anchors.
    """
    import torch

    vp = vp or video_predictor(embeddings)
    vp.reset()
    order = sorted(given)
    for k in order:
        _check_cancel(cancel)
        vp.add_prompt(k, 1, **_prompt_kwargs(given[k]))
    n = len(embeddings)
    out = np.zeros((n,) + tuple(embeddings.shape), bool)
    scores = np.full(n, np.nan)
    stops = {}
    lo, hi = order[0], order[-1]
    anchor_contrast = {}
    for reverse, side, start in ((False, "above", lo), (True, "below", lo)):
        prev: Optional[SliceAnswer] = None
        stops[side] = "edge"
        for t, _, logits in vp.propagate(start_frame=start, reverse=reverse):
            _check_cancel(cancel)
            mask = logits[0] > 0
            outer = t > hi if not reverse else t < lo
            if prev is not None and prev.mask.any() and t not in given:
                mask = _connected_to(mask, prev.mask)
            ans = SliceAnswer(torch.as_tensor(logits[0]), mask, _mean_prob(logits[0], mask))
            if rules.min_contrast > 0:
                ans.contrast = contrast(embeddings.pixels(t), mask, rules.ring)
            if t in given:
                anchor_contrast[t] = abs(ans.contrast)
            if outer and prev is not None:
                ref = anchor_contrast.get(hi if not reverse else lo, float("nan"))
                reason = _stop_reason(ans, replace(prev, contrast=ref), rules)
                if reason is None and rules.max_slices is not None:
                    if abs(t - (hi if not reverse else lo)) > rules.max_slices:
                        reason = "max_slices"
                if reason:
                    tick(t)
                    stops[side] = reason
                    break
            tick(t)
            if t not in given or not out[t].any():
                out[t] = mask
                scores[t] = ans.score
            prev = ans
    return out, PropagationInfo(scores, stops, tuple(order))


def _mean_prob(logits: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    return float((1 / (1 + np.exp(-np.clip(logits[mask], -30, 30)))).mean())


def _history(per_frame: np.ndarray, t: int, mask: np.ndarray, depth: int, min_iou: float):
    """[(frame, (Y, X) bool)] of the object `mask` on frame t and, going back, the object of
    each earlier frame that overlaps the later one most (IoU >= min_iou), up to `depth`."""
    out = [(t, mask)]
    for s in range(t - 1, max(t - depth, 0) - 1, -1):
        lab = per_frame[s]
        ids, counts = np.unique(lab[mask & (lab > 0)], return_counts=True)
        if not len(ids):
            break
        j = int(ids[np.argmax(counts)])
        cand = lab == j
        inter = int((cand & mask).sum())
        if inter / (int(cand.sum()) + int(mask.sum()) - inter) < min_iou:
            break
        out.append((s, cand))
        mask = cand
    return out


def fill_gaps_memory(embeddings, per_frame: np.ndarray, rules: StopRules, cancel=None,
                     depth: int = 3) -> np.ndarray:
    """`track`'s gap filling with SAM 2.1's memory: a cell that the frame before has and this
    frame lacks is propagated into this frame from the memory of its last `depth` frames (its
    masks there as conditioning frames, followed back by overlap), then accepted by the same
    rules as on the prompting path. Returns the per-frame labels with the cells added.

    Parameters
    ----------
    embeddings : SliceEmbeddings
        The (T, Y, X[, C]) frames with a SAM 2.1 predictor.
    per_frame : ndarray
        (T, Y, X) integer labels, each frame numbered on its own.
    rules : StopRules
        Acceptance rules (min_area, area ratios, min_iou, contrast).
    cancel : callable, optional
        Returns True to cancel.
    depth : int
        Earlier frames used as the memory of a missed cell.

    Returns
    -------
    ndarray
        (T, Y, X) copy of `per_frame` with the found cells added (new ids per frame).
    """
    out = per_frame.copy()
    vp = video_predictor(embeddings, cache_frames=depth + 1)
    for t in range(1, len(out)):
        prev, cur = out[t - 1], out[t]
        ids = [i for i in np.unique(prev).tolist() if i > 0]
        todo = []
        for i in ids:
            m = prev == i
            if ((cur > 0) & m).sum() < 0.3 * m.sum():
                todo.append(m)
        if not todo:
            continue
        _check_cancel(cancel)
        vp.reset()
        for j, m in enumerate(todo):
            for s, ms in _history(out, t - 1, m, depth, rules.min_iou):
                vp.add_prompt(s, j + 1, mask=ms)
        logits = None
        for f, _, lg in vp.propagate(start_frame=t - 1, max_frames=1):
            if f == t:
                logits = lg
        next_id = int(cur.max()) + 1
        for j, m in enumerate(todo):
            new = _connected_to(logits[j] > 0, m) & (cur == 0)
            area, inter = int(new.sum()), int((new & m).sum())
            if (area >= max(rules.min_area, 1) and area >= rules.min_area_ratio * m.sum()
                    and area <= rules.max_area_ratio * m.sum()
                    and inter / (area + m.sum() - inter) >= rules.min_iou
                    and _bright_enough(embeddings, t, m, new, rules)):
                cur[new] = next_id
                next_id += 1
    return out


def _bright_enough(embeddings, t: int, before: np.ndarray, new: np.ndarray, rules) -> bool:
    """The contrast rule of `StopRules` for a cell followed from frame t - 1 into t (always
    true when the rule is off, min_contrast <= 0)."""
    if rules.min_contrast <= 0:
        return True
    start = abs(contrast(embeddings.pixels(t - 1), before, rules.ring))
    return contrast(embeddings.pixels(t), new, rules.ring) >= rules.min_contrast * start
