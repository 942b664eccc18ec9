"""The checks of one object's prompt (points, labels, box, low-res mask) before decoding."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch


def check_prompt(points, labels, box, mask_input, shape: Tuple[int, int], mask_size: int,
                 device) -> tuple:
    """Validate one object's prompt for `Predictor.predict`, with messages a user can act on.

    Parameters
    ----------
    points : array-like, (N, 2) float, or None
        (row, col) in image pixels; each must lie inside the image (half a pixel of slack).
    labels : array-like, (N,) int, or None
        1 (object) or 0 (background) per point; None: all 1. Only with `points`.
    box : array-like, (4,), or None
        (row0, col0, row1, col1) in image pixels, corners in any order; it must have an
        area and overlap the image.
    mask_input : array-like, (m, m) float, or None
        Low-res logits of an earlier prediction; m = `mask_size`.
    shape : (int, int)
        (Y, X) of the image.
    mask_size : int
        The model's low-res mask side m.
    device : torch.device
        Where `mask_input` is moved.

    Returns
    -------
    points : same as given
    labels : ndarray, (N,) int, or None
    box : ndarray, (4,) float64, or None
    mask_input : Tensor, (1, 1, m, m) float32 on `device`, or None

    Raises
    ------
    ValueError
        For an empty prompt, or any argument of the wrong shape, value or place.
    """
    h, w = shape
    if points is None and box is None and mask_input is None:
        raise ValueError("empty prompt: give at least one point, a box or a mask_input")
    if points is not None:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
            raise ValueError(f"points must be a list of [row, col] pairs, got shape {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("points contain NaN or infinite coordinates")
        bad = (p[:, 0] < -0.5) | (p[:, 0] > h - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > w - 0.5)
        if bad.any():
            raise ValueError(f"point {p[bad][0].tolist()} lies outside the image of shape {(h, w)}")
        lab = np.ones(len(p), int) if labels is None else np.asarray(labels).reshape(-1)
        if len(lab) != len(p):
            raise ValueError(f"{len(p)} points but {len(lab)} point_labels")
        if not np.isin(lab, (0, 1)).all():
            raise ValueError("point_labels must be 1 (object) or 0 (background)")
        labels = lab
    elif labels is not None:
        raise ValueError("point_labels given without points")
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise ValueError("box must be [row0, col0, row1, col1] with finite numbers")
        if b[0] == b[2] or b[1] == b[3]:
            raise ValueError(f"box {b.tolist()} has zero area")
        r0, r1 = sorted((b[0], b[2]))
        c0, c1 = sorted((b[1], b[3]))
        if r1 <= -0.5 or r0 >= h - 0.5 or c1 <= -0.5 or c0 >= w - 0.5:
            raise ValueError(f"box {b.tolist()} (row0, col0, row1, col1) lies wholly "
                             f"outside the image of shape {(h, w)}; draw it over the object")
        box = b
    if mask_input is not None:
        m = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32)
        s = mask_size
        if m.shape[-2:] != (s, s) or m.numel() != s * s:
            raise ValueError(f"mask_input must be low-res logits of shape ({s}, {s}) "
                             f"(the logits of an earlier predict), got {tuple(m.shape)}")
        if not torch.isfinite(m).all():
            raise ValueError("mask_input contains NaN or infinite values; pass the logits "
                             "of an earlier predict unchanged (or no mask_input)")
        mask_input = m.reshape(1, 1, s, s).to(device)
    return points, labels, box, mask_input
