"""The loss of a simulated user prompting a promptable model, for training and fine-tuning.

For each chosen object, round 1 is a first prompt (`MODES`, drawn with probabilities
`MODE_P`: one click with multimask output, a jittered box, or a few positive and negative
clicks), round 2 a corrective click with round 1's low-res logits as mask input. Each round's
loss is 20 x focal + dice of the best output against the object's mask, plus the MSE of the
IoU head against the real IoU. Prompts are drawn in (row, col) and given to the model in its
(x, y) point frame. `train` (the bundled model) and `finetune_steps` use it; `train`
re-exports these names.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..model import Sam
from ..transforms import rc_to_xy
from .prompts import corrective_click, jittered_box, random_point

MODES = ("click", "box", "points")
MODE_P = (0.45, 0.3, 0.25)
MAX_POINTS = 6


def focal_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask 20 * focal + dice; logits and target (..., H, W).

    Parameters
    ----------
    logits : torch.Tensor, (..., H, W) float
        Mask logits.
    target : torch.Tensor, (..., H, W) float
        The true masks, 0 or 1.

    Returns
    -------
    torch.Tensor, (...) float
        One loss per mask (focal with alpha 0.25, gamma 2, weighted 20, plus dice).
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    alpha = 0.25 * target + 0.75 * (1 - target)
    focal = (alpha * ce * (1 - pt) ** 2).flatten(-2).mean(-1)
    inter = (p * target).flatten(-2).sum(-1)
    dice = 1 - (2 * inter + 1) / (p.flatten(-2).sum(-1) + target.flatten(-2).sum(-1) + 1)
    return 20 * focal + dice


def make_prompts(rng, labels_list, k: int, mode: str, size: int):
    """Choose k objects per image and their first prompts -> tensors in the input frame.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the objects (with replacement when an image has fewer than k) and prompts.
    labels_list : list of ndarray
        B label images (S, S) int in the model's input frame, each with an object.
    k : int
        Objects per image.
    mode : str
        "click" (one positive point), "points" (1-3 positive, 0-2 negative ones within 6
        px of the object) or "box" (a jittered box, no points).
    size : int
        S, the input side (boxes are clipped to it).

    Returns
    -------
    truth : torch.Tensor, (B * k, S, S) float32
        The chosen objects' masks, 0 or 1, image by image.
    points : ndarray, (B * k, MAX_POINTS, 2) float64
        (x, y) in input pixels; unused slots (0, 0).
    point_labels : ndarray, (B * k, MAX_POINTS) int64
        1 positive, 0 negative, -1 unused.
    boxes : torch.Tensor, (B * k, 4) float32 or None
        (x0, y0, x1, y1) with mode "box", else None.
    """
    truths, pts, labs, boxes = [], [], [], []
    for labels in labels_list:
        ids = np.unique(labels)
        ids = ids[ids > 0]
        for i in rng.choice(ids, size=k, replace=len(ids) < k):
            truth = labels == i
            truths.append(truth)
            p, lab = np.zeros((MAX_POINTS, 2)), -np.ones(MAX_POINTS, dtype=np.int64)
            if mode == "click":
                p[0], lab[0] = random_point(rng, truth), 1
            elif mode == "points":
                npos, nneg = int(rng.integers(1, 4)), int(rng.integers(0, 3))
                for j in range(npos):
                    p[j], lab[j] = random_point(rng, truth, 0.3), 1
                ring = (labels != i) & _dilate(truth, 6)
                for j in range(npos, npos + nneg):
                    if ring.any():
                        p[j], lab[j] = random_point(rng, ring, 0.0), 0
            else:
                b = jittered_box(rng, truth, (size, size))
                boxes.append(np.concatenate([rc_to_xy(b[:2])[0], rc_to_xy(b[2:])[0]]))
            pts.append(rc_to_xy(p))
            labs.append(lab)
    truth_t = torch.from_numpy(np.stack(truths)).float()
    box_t = torch.tensor(np.stack(boxes), dtype=torch.float32) if boxes else None
    return truth_t, np.stack(pts), np.stack(labs), box_t


def _dilate(mask, r):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=r)


def decode_loss(model: Sam, emb, pts, labs, boxes, mask_in, truth, multimask: bool):
    """Decode, upsample to input size, and return (loss, best logits, best masks).

    Parameters
    ----------
    model : Sam
    emb : torch.Tensor, (N, C, g, g)
        One embedding per prompt.
    pts : ndarray, (N, P, 2) float or None
        Points (x, y) in input pixels; None: no points.
    labs : ndarray, (N, P) int
        Point labels (1, 0, or -1 unused); the columns past the last used one are dropped.
    boxes : torch.Tensor, (N, 4) float or None
        Boxes (x0, y0, x1, y1) in input pixels.
    mask_in : torch.Tensor, (N, 1, 4g, 4g) or None
        Mask logits of an earlier round.
    truth : torch.Tensor, (N, s, s) float
        The true masks; the logits are upsampled to s x s to compare.
    multimask : bool
        Three outputs per prompt (the best by loss counts) instead of one.

    Returns
    -------
    loss : torch.Tensor, () float
        Mean focal + dice of the best outputs plus the IoU head's MSE.
    logits : torch.Tensor, (N, 1, 4g, 4g) float
        The best outputs' low-res logits, detached.
    masks : ndarray, (N, s, s) bool
        The best outputs thresholded at 0.
    """
    use_pts = None
    if pts is not None and (labs >= 0).any():
        keep = int((labs >= 0).sum(1).max())
        use_pts = (torch.from_numpy(pts[:, :keep]).float(), torch.from_numpy(labs[:, :keep]))
    logits, iou_pred = model.decode(emb, use_pts, boxes, mask_in, multimask)
    logits, iou_pred = logits.float(), iou_pred.float()
    s = truth.shape[-1]
    up = F.interpolate(logits, (s, s), mode="bilinear", align_corners=False)
    per = focal_dice(up, truth[:, None].expand_as(up))  # (N, K)
    with torch.no_grad():
        pred = up > 0
        t = truth[:, None].bool()
        inter = (pred & t).flatten(-2).sum(-1).float()
        union = (pred | t).flatten(-2).sum(-1).float().clamp(min=1)
        real_iou = inter / union
    best = per.argmin(1)
    rows = torch.arange(len(best))
    loss = per[rows, best].mean() + F.mse_loss(iou_pred, real_iou)
    return loss, logits[rows, best][:, None].detach(), pred[rows, best].numpy()


def prompt_losses(model: Sam, emb, rng, labels_list, objects: int, mode: str,
                  loss_size: int = 0):
    """The two rounds of a simulated user on embedded images -> (loss1, loss2).

    emb: (B * objects, C, g, g) embeddings, each image's repeated `objects` times;
    labels_list: B label images (S, S) in the model's input frame, each with an object.
    Round 1 is the first prompt (`mode`: "click" with multimask output, "box" or "points"),
    round 2 adds one corrective click per object with round 1's logits as mask input.
    loss_size: compare masks at this side instead of the input's (e.g. 256 for SAM's 1024
    input: 16 x fewer pixels in the loss and its gradient).

    Parameters
    ----------
    model : Sam
    emb : torch.Tensor, (B * objects, C, g, g)
    rng : numpy.random.Generator
        Draws the objects, prompts and corrective clicks.
    labels_list : list of ndarray
        B label images (S, S) int.
    objects : int
        Objects prompted per image.
    mode : str
        "click", "box" or "points".
    loss_size : int
        Side of the masks compared (0 or >= S: S).

    Returns
    -------
    loss1, loss2 : torch.Tensor, () float
        The losses of round 1 and of round 2.
    """
    size = model.config.image_size
    truth, pts, labs, boxes = make_prompts(rng, labels_list, objects, mode, size)
    f = 1.0
    if loss_size and loss_size < size:
        f = size / loss_size
        truth = (F.interpolate(truth[:, None], (loss_size, loss_size), mode="area")[:, 0]
                 > 0.5).float()
    loss1, prev, pred = decode_loss(model, emb, pts if mode != "box" else None, labs, boxes,
                                    None, truth, multimask=(mode == "click"))
    # refinement: one corrective click per object, previous logits as mask input
    truth_np = truth.numpy().astype(bool)
    if mode == "box":
        pts = np.zeros((len(truth_np), MAX_POINTS, 2))
        labs = -np.ones((len(truth_np), MAX_POINTS), dtype=np.int64)
    for n in range(len(truth_np)):
        click = corrective_click(rng, pred[n], truth_np[n])
        free = np.flatnonzero(labs[n] < 0)
        if click is not None and len(free):
            pts[n, free[0]] = rc_to_xy((click[0] + 0.5) * f - 0.5)[0]
            labs[n, free[0]] = click[1]
    loss2, _, _ = decode_loss(model, emb, pts, labs, boxes, prev, truth, multimask=False)
    return loss1, loss2
