"""One object through a volume from prompts on one slice (and, optionally, a few more).

    mask3d = segment_volume(volume, model, z=12, points=[[40, 51]], point_labels=[1])

How it goes:

1. Every anchor slice (`z` with its prompts, plus each entry of `anchors`) is segmented
   from the user's prompts, as a 2D click would be (one point alone: the best of three
   candidates by predicted IoU). A `mask` given without points or box is taken as it is.
2. From the outermost anchors the object is followed slice by slice away from them, up and
   down. Each slice is prompted with the neighbour's answer: its bounding box, `n_points`
   points inside it (the farthest from its border first) and its low-res logits as the
   mask prompt (`prompt=` chooses which of "box", "points", "mask" are sent).
3. Between two anchors a < b the object is followed from both: forward from a and backward
   from b. On slice k the two answers' low-res logits are averaged with weights
   (b - k) / (b - a) and (k - a) / (b - a) (where only one of them reached k, it is used
   alone), so a correction on slice b pulls the slices near it most.

Stopping rules (`StopRules`; the answer on the slice that breaks one is dropped and the
object ends there in that direction):

- vanished: fewer than `min_area` pixels;
- shrank: area below `min_area_ratio` x the neighbour's;
- grew: area above `max_area_ratio` x the neighbour's (it spilled into a neighbour);
- jumped: IoU with the neighbour's mask below `min_iou` (it went to another object);
- faded: the contrast of the answer (mean intensity inside it minus the mean over a ring
  `ring` pixels wide around it, in the model's normalised intensities) below `min_contrast`
  x the anchor's contrast. This is the rule that ends most objects: past an object's end a
  promptable model still finds *something* under a box (out-of-focus light, noise), while
  the contrast falls to nothing (on the generated nuclei: 0.45 on the middle slice, 0.17-0.26
  on the last slice, 0.1 and then ~0 past it);
- unsure: predicted IoU below `min_score` (0 = off: model scores are calibrated differently);
- `max_slices` slices from the anchor (None = no limit).

The parts of the answer not connected to the neighbour's mask are removed first.
Anisotropic spacing (dz, dy, dx): a cross-section changes r = dz / min(dy, dx) times faster
per slice than on an isotropic grid, so for r > 1 the per-slice rules are relaxed to
`min_iou / r`, `min_area_ratio / r`, `max_area_ratio * r`.

Embeddings are computed once per slice (`SliceEmbeddings`, in memory or in an on-disk cache
folder with `cache=`); pass `embeddings=` to reuse them across calls (the napari widget does).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage as ndi

from ..progress import null_progress
from ..prompts import mask_to_logits
from .embeddings import SliceEmbeddings, as_predictor, check_stack
# the stopping rules and the answers' records live in stops; importable from here as before
from .stops import Cancelled, PropagationInfo, SliceAnswer, StopRules, _check_cancel  # noqa: F401


def _box(mask: np.ndarray) -> Tuple[np.ndarray, Tuple[slice, slice]]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    box = np.array([rows[0], cols[0], rows[-1], cols[-1]], float)
    return box, (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def interior_points(mask: np.ndarray, n: int = 1) -> np.ndarray:
    """(n, 2) (row, col) points inside `mask` (Y, X) bool: the pixel farthest from the
    border first, then each next one farthest from the border and the points before it.

    Parameters
    ----------
    mask : ndarray
        (Y, X) bool, not empty.
    n : int
        How many points (fewer when the mask has too few pixels).

    Returns
    -------
    ndarray
        float (n, 2) (row, col) pixel indices.
    """
    _, sl = _box(mask)
    crop = np.pad(mask[sl], 1)
    dist = ndi.distance_transform_edt(crop)[1:-1, 1:-1]
    pts = []
    score = dist.copy()
    for _ in range(max(1, n)):
        i = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i] <= 0:
            break
        pts.append(i)
        rr, cc = np.indices(score.shape)
        score = np.minimum(score, np.hypot(rr - i[0], cc - i[1]) / 2)
    return np.array(pts, float) + [sl[0].start, sl[1].start]


def _decode(pred, points, labels, box, mask_input, multimask) -> SliceAnswer:
    xy = lab = bx = None
    if points is not None and len(points):
        xy = pred.points_to_input(points)[None]
        lab = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=pred.device)[None]
    if box is not None:
        bx = pred.box_to_input(box)
    logits, scores = pred.predict_lowres(xy, lab, bx, mask_input, multimask)
    k = int(torch.argmax(scores[0]))
    chosen = logits[:, k:k + 1]
    return SliceAnswer(chosen, pred._masks_numpy(chosen[0])[0], float(scores[0, k]))


def _anchor_answer(pred, prompt: dict) -> SliceAnswer:
    """Segment an anchor slice from the user's prompts (the predictor holds its image)."""
    points, labels = prompt.get("points"), prompt.get("point_labels")
    box, mask = prompt.get("box"), prompt.get("mask")
    if mask is not None:
        mask = np.asarray(mask, bool)
        shape = pred.get_embedding().original_size
        if mask.shape != tuple(shape):
            raise ValueError(f"mask of shape {mask.shape} does not match the slices {shape}")
    if points is None and box is None:
        if mask is None or not mask.any():
            raise ValueError("empty prompt: give points, a box or a non-empty mask for the slice")
        emb = pred.get_embedding()
        logits = mask_to_logits(mask, emb.input_size, pred.model.image_size,
                                pred.model.config.mask_size)
        return SliceAnswer(torch.as_tensor(logits, device=pred.device)[None, None], mask, 1.0)
    mask_input = None
    if mask is not None and mask.any():
        emb = pred.get_embedding()
        mask_input = mask_to_logits(mask, emb.input_size, pred.model.image_size,
                                    pred.model.config.mask_size)
    points, labels, box, mask_input = pred._check(points, labels, box, mask_input)
    multimask = points is not None and len(points) == 1 and box is None and mask_input is None
    return _decode(pred, points, labels, box, mask_input, multimask)


def _follow(pred, prev: SliceAnswer, prompt: Sequence[str], n_points: int) -> SliceAnswer:
    """Segment the slice held by `pred` prompted by the neighbour's answer `prev`."""
    box, _ = _box(prev.mask)
    points = labels = None
    if "points" in prompt:
        points = interior_points(prev.mask, n_points)
        labels = np.ones(len(points), int)
    mask_input = prev.logits if "mask" in prompt else None
    return _decode(pred, points, labels, box if "box" in prompt else None, mask_input, False)


def _connected_to(mask: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The parts of `mask` that touch `prev` (all of it when none does)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    keep = np.unique(lab[prev & mask])
    keep = keep[keep > 0]
    return np.isin(lab, keep) if len(keep) else mask


def contrast(pixels: np.ndarray, mask: np.ndarray, ring: int = 4) -> float:
    """Mean of the (Y, X) `pixels` inside `mask` minus their mean over a ring `ring` pixels
    wide around it (computed inside the mask's box grown by the ring).

    Parameters
    ----------
    pixels : ndarray
        (Y, X) float intensities (e.g. `SliceEmbeddings.pixels`).
    mask : ndarray
        (Y, X) bool.
    ring : int
        Width of the ring in pixels.

    Returns
    -------
    float
        Inside minus around; 0.0 for an empty mask or no ring.
    """
    if not mask.any():
        return 0.0
    _, (rs, cs) = _box(mask)
    r0, c0 = max(rs.start - ring, 0), max(cs.start - ring, 0)
    sl = (slice(r0, rs.stop + ring), slice(c0, cs.stop + ring))
    m = mask[sl]
    around = ndi.binary_dilation(m, iterations=ring) & ~m
    px = pixels[sl]
    return float(px[m].mean() - px[around].mean()) if around.any() else 0.0


def _stop_reason(ans: SliceAnswer, prev: SliceAnswer, rules: StopRules) -> Optional[str]:
    area, prev_area = int(ans.mask.sum()), int(prev.mask.sum())
    if area < rules.min_area:
        return "vanished"
    if area < rules.min_area_ratio * prev_area:
        return "shrank"
    if area > rules.max_area_ratio * prev_area:
        return "grew"
    inter = int((ans.mask & prev.mask).sum())
    if inter / (area + prev_area - inter) < rules.min_iou:
        return "jumped"
    if rules.min_contrast > 0 and prev.contrast > 0 and np.isfinite(ans.contrast):
        if ans.contrast < rules.min_contrast * prev.contrast:
            return "faded"
    if ans.score < rules.min_score:
        return "unsure"
    return None


def _chain(emb: SliceEmbeddings, start: SliceAnswer, z0: int, step: int, end: int, rules,
           prompt, n_points, tick, cancel) -> Tuple[Dict[int, SliceAnswer], str]:
    """Follow the object from slice z0 (answer `start`) towards `end` (exclusive)."""
    out, prev, z = {}, start, z0 + step
    if start.mask.sum() < max(rules.min_area, 1):  # nothing to follow
        return out, "vanished"
    while z != end:
        if rules.max_slices is not None and abs(z - z0) > rules.max_slices:
            return out, "max_slices"
        _check_cancel(cancel)
        pred = emb.load(z)
        ans = _follow(pred, prev, prompt, n_points)
        ans.mask = _connected_to(ans.mask, prev.mask)
        if rules.min_contrast > 0:
            ans.contrast = contrast(emb.pixels(z), ans.mask, rules.ring)
        reason = _stop_reason(ans, replace(prev, contrast=start.contrast), rules)
        tick(z)
        if reason:
            return out, reason
        out[z] = prev = ans
        z += step
    return out, "edge"


def segment_volume(volume, model=None, *, z: int, points=None, point_labels=None, box=None,
                   mask=None, anchors: Optional[Dict[int, dict]] = None,
                   spacing: Optional[Sequence[float]] = None, rules: Optional[StopRules] = None,
                   prompt: Sequence[str] = ("box", "mask"), n_points: int = 1,
                   channels=None, value_range=None, cache=None, diameter=None,
                   embeddings: Optional[SliceEmbeddings] = None, progress=null_progress,
                   cancel: Optional[Callable[[], bool]] = None, return_info: bool = False,
                   device="auto", method: str = "auto", floor: Optional[float] = 0.3):
    """Segment one object through a volume, slice to slice from the prompted slice(s).

    Parameters
    ----------
    volume : array-like, (Z, Y, X) or (Z, Y, X, C), any dtype
        The stack, channels last.
    model : Predictor, Sam, str or Path, optional
        None: the bundled model.
    z : int
        The slice the prompts are on.
    points : array-like, (N, 2) float, optional
        (row, col) in pixels of slice `z`.
    point_labels : array-like, (N,) int, optional
        1 (object) or 0 (background).
    box : array-like, (4,), optional
        (row0, col0, row1, col1).
    mask : ndarray, (Y, X) bool, optional
    anchors : dict of int to dict, optional
        {slice: {"points", "point_labels", "box", "mask"}}: prompts on further slices.
    spacing : (float, float, float), optional
        (dz, dy, dx) voxel size; relaxes the stop rules for coarse z.
    rules : StopRules, optional
        When the object ends (module doc).
    prompt : sequence of {"box", "points", "mask"}
        What a slice's answer passes to its neighbour; `n_points` points with "points".
    channels, value_range : optional
        As for `Predictor.set_image`.
    cache : str or Path, optional
        A folder for the slice embeddings.
    diameter : None, "off" or float
        None: estimated once, on slice `z`; see `SliceEmbeddings`.
    embeddings : SliceEmbeddings, optional
        The stack's slices set up already (then `volume` only checks the shape).
    progress : callable(done, total, message), optional
    cancel : callable or threading.Event, optional
        Polled before each slice; when it says so, `Cancelled` is raised.
    return_info : bool
        Also return a `PropagationInfo`.
    device : str
    method : {"auto", "prompt", "memory"}
        "prompt": slice-to-slice prompting (module doc); "memory": SAM 2.1's memory
        propagation (`volume.memory`, SAM 2.1 models only); "auto": memory for SAM 2.1.
    floor : float, optional
        The intensity floor (`volume.floor`): each slice keeps the pixels at least this
        fraction of the way from the anchor's surroundings to its inside; None or 0: off.

    Returns
    -------
    mask : ndarray, (Z, Y, X) bool
    info : PropagationInfo
        Only with `return_info`: scores per slice, why the object ended, the anchors.
    """
    from .memory import resolve_method, segment_memory

    bad = set(prompt) - {"box", "points", "mask"}
    if bad or not prompt:
        raise ValueError(f"prompt must name some of 'box', 'points', 'mask', got {tuple(prompt)}")
    if embeddings is None:
        volume = check_stack(volume)
        embeddings = SliceEmbeddings(as_predictor(model, device), volume, channels,
                                     value_range, cache, diameter=diameter, reference=z)
    elif tuple(embeddings.stack.shape) != tuple(np.shape(volume)):
        raise ValueError(f"embeddings are of a stack of shape {embeddings.stack.shape}, not "
                         f"{np.shape(volume)}")
    n = len(embeddings)
    given = {int(z): dict(points=points, point_labels=point_labels, box=box, mask=mask)}
    for k, p in (anchors or {}).items():
        if not isinstance(p, dict):
            raise ValueError(f"anchors[{k}] must be a dict with points/point_labels/box/mask")
        given[int(k)] = p
    for k in given:
        if not 0 <= k < n:
            raise ValueError(f"slice {k} is outside the volume's {n} slices (0..{n - 1})")
    rules = (rules or StopRules()).for_spacing(spacing)
    order = sorted(given)
    total, seen = n, set()
    method = resolve_method(method, embeddings.predictor)

    def tick(k):
        seen.add(k)
        progress(min(len(seen), total), total, f"slice {k}")

    if method == "memory":
        progress(0, total, "following the object with SAM 2.1's memory")
        out, info = segment_memory(embeddings, given, rules, tick, cancel)
        return _finish(out, info, embeddings, rules, floor, progress, return_info)
    progress(0, total, "segmenting the anchor slices")
    answers: Dict[int, SliceAnswer] = {}
    for k in order:
        _check_cancel(cancel)
        answers[k] = _anchor_answer(embeddings.load(k), given[k])
        if rules.min_contrast > 0:
            answers[k].contrast = abs(contrast(embeddings.pixels(k), answers[k].mask, rules.ring))
        tick(k)
    stops = {}
    args = (rules, prompt, n_points, tick, cancel)
    down, stops["below"] = _chain(embeddings, answers[order[0]], order[0], -1, -1, *args)
    up, stops["above"] = _chain(embeddings, answers[order[-1]], order[-1], 1, n, *args)
    answers.update(down)
    answers.update(up)
    for a, b in zip(order[:-1], order[1:]):  # between two anchors: from both ends
        fwd, _ = _chain(embeddings, answers[a], a, 1, b, *args)
        bwd, _ = _chain(embeddings, answers[b], b, -1, a, *args)
        for k in range(a + 1, b):
            f, g = fwd.get(k), bwd.get(k)
            if f is None or g is None:
                if f or g:
                    answers[k] = f or g
                continue
            wa = (b - k) / (b - a)
            logits = wa * f.logits + (1 - wa) * g.logits
            pred = embeddings.load(k)
            m = pred._masks_numpy(logits[0])[0]
            answers[k] = SliceAnswer(logits, m, wa * f.score + (1 - wa) * g.score)
    out = np.zeros((n,) + embeddings.shape, bool)
    scores = np.full(n, np.nan)
    for k, ans in answers.items():
        out[k] = ans.mask
        scores[k] = ans.score
    info = PropagationInfo(scores, stops, tuple(order))
    return _finish(out, info, embeddings, rules, floor, progress, return_info)


def _finish(out, info, embeddings, rules, floor, progress, return_info):
    """The intensity floor (`volume.floor`), the last progress report, the return value."""
    from .floor import apply_floor, measure

    if floor:
        floors = {k: measure(embeddings.pixels(k), out[k], rules.ring) for k in info.anchors}
        apply_floor(out, floors, embeddings.pixels, floor)
        info.scores[~out.any((1, 2))] = np.nan
    n = len(out)
    progress(n, n, f"object on {int(out.any((1, 2)).sum())} slices")
    return (out, info) if return_info else out
