"""One batch of grid prompts -> compact candidates: the decoding half of `amg.AutoMaskGenerator`.

`decode_batch` runs the mask decoder on a batch of point prompts (3 masks per point), drops
masks under the generator's candidate floors (predicted IoU, stability, empty, cut by an
inner crop's edge), and keeps for each survivor what the cheap step needs later: its
scores, its box in the image, the prompt point, and its low-res logits cut to the region
that upsampling its box reads (float16). `full_stability` is the exact stability score of
the full-resolution masks (the generator's stability="full").
"""

from __future__ import annotations

import torch

from .candidates import Candidates, boxes_from_masks, stability_score
from .grid import GridUpscaler


def decode_batch(gen, xy, pts, ci: int, up: GridUpscaler) -> Candidates:
    """Decode one batch of point prompts of crop `ci` into the candidates that pass the floors.

    Parameters
    ----------
    gen : AutoMaskGenerator
        Its predictor (holding the crop's embedding), candidate floors, mask threshold,
        stability settings, crops and image shape.
    xy : Tensor, (B, 2) float32
        The points in model-input coordinates (x, y), as `Predictor.points_to_input` gives.
    pts : Tensor, (B, 2) float32
        The same points in the crop's pixels, (row, col).
    ci : int
        Index of the crop in `gen.crops`.
    up : GridUpscaler
        The crop's upscaler (low-res logits -> crop pixels).

    Returns
    -------
    Candidates
        One row per kept mask; boxes, regions and points in the whole image's (row, col).
    """
    b = xy.shape[0]
    dev = gen.predictor.device
    labels = torch.ones(b, 1, dtype=torch.long, device=dev)
    logits, iou = gen.predictor.predict_lowres(xy[:, None], labels, multimask=True)
    k = logits.shape[1]
    logits, iou = logits.flatten(0, 1), iou.flatten()
    # only masks above the IoU floor are looked at (boxes, stability): one gather of
    # those, instead of passes over every mask
    first = (iou >= gen.min_candidate_iou).nonzero().flatten()
    if len(first) < len(iou):
        logits, iou = logits[first], iou[first]
    vh, vw = up.valid
    valid = logits[:, :vh, :vw]
    box = boxes_from_masks(valid > gen.mask_threshold)  # low-res, exclusive ends
    keep = box[:, 2] > box[:, 0]  # the IoU floor is applied above
    layer, (r0, c0, r1, c1) = gen.crops[ci]
    if ci:  # a mask cut by an inner crop edge is incomplete: another crop has it whole
        h, w = gen.image_shape
        keep &= ~(((box[:, 0] == 0) & (r0 > 0)) | ((box[:, 1] == 0) & (c0 > 0))
                  | ((box[:, 2] == vh) & (r1 < h)) | ((box[:, 3] == vw) & (c1 < w)))
    rs, re, l0, l1 = up.regions(box[:, 0], box[:, 2] - 1, 0)
    cs, ce, m0, m1 = up.regions(box[:, 1], box[:, 3] - 1, 1)
    keep &= (re > rs) & (ce > cs)
    if gen.stability == "full":
        stab = full_stability(gen, logits, valid, keep, up)
    else:
        stab = stability_score(valid, gen.mask_threshold, gen.stability_offset)
    keep &= stab >= gen.min_candidate_stability
    idx = keep.nonzero().flatten()
    emb = gen.predictor.get_embedding()
    m = gen.predictor.model.config.mask_size
    size = gen.predictor.model.image_size
    fr = size / m * (r1 - r0) / emb.input_size[0]
    fc = size / m * (c1 - c0) / emb.input_size[1]
    img_box = (box[idx].float() * torch.tensor([fr, fc, fr, fc], device=dev)
               + torch.tensor([r0, c0, r0, c0], dtype=torch.float32, device=dev))
    region = torch.stack([rs, cs, re, ce], 1)[idx]
    cut = torch.stack([l0, l1, m0, m1], 1)[idx]
    store = logits[idx].to(torch.float16)
    # one transfer for the whole batch, then views (no per-candidate device sync)
    cuts = cut.cpu().tolist()
    kept = [store[i, a:b_, c:d].clone() for i, (a, b_, c, d) in enumerate(cuts)]
    point = pts.repeat_interleave(k, 0)[first][idx] + torch.tensor(
        [r0, c0], dtype=torch.float32, device=dev)
    return Candidates(iou[idx], stab[idx], img_box, point,
                      torch.full((len(idx),), ci, dtype=torch.long, device=dev),
                      region, cut[:, [0, 2]], kept)

def full_stability(gen, logits, valid, keep, up: GridUpscaler) -> torch.Tensor:
    """Stability of the full-resolution masks, exactly, for the `keep` candidates.

    Upsampled logits are convex combinations of low-res ones, so outside the box of
    low-res `logits > t - offset` they are below both thresholds: only that box is
    upsampled (one small matmul pair per candidate).

    Parameters
    ----------
    gen : AutoMaskGenerator
        Its mask threshold t and stability offset.
    logits : Tensor, (B, m, m) float
        Low-res logits of the batch's masks.
    valid : Tensor, (B, vh, vw) float
        The part of `logits` that covers the crop (`GridUpscaler.valid`).
    keep : Tensor, (B,) bool
        The masks to score.
    up : GridUpscaler
        The crop's upscaler.

    Returns
    -------
    Tensor, (B,) float32
        Stability in 0..1; 1 for masks not in `keep`.
    """
    t, off = gen.mask_threshold, gen.stability_offset
    stab = torch.ones(logits.shape[0], device=gen.predictor.device)
    idx = keep.nonzero().flatten()
    if not len(idx):
        return stab
    loose = boxes_from_masks(valid[idx] > t - off)
    rs, re, l0, l1 = up.regions(loose[:, 0], loose[:, 2] - 1, 0)
    cs, ce, m0, m1 = up.regions(loose[:, 1], loose[:, 3] - 1, 1)
    meta = torch.stack([rs, re, cs, ce, l0, l1, m0, m1], 1).tolist()
    counts = []
    for i, (a, b, c, d, e, f, g, h) in zip(idx.tolist(), meta):
        u = up.crop(logits[i, e:f, g:h], (a, c, b, d), (e, g))  # (row0, col0, row1, col1)
        counts.append(torch.stack([(u > t + off).sum(), (u > t - off).sum()]))
    counts = torch.stack(counts).float()
    stab[idx] = torch.where(counts[:, 1] > 0, counts[:, 0] / counts[:, 1].clamp(min=1), 1.0)
    return stab
