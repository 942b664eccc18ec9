"""Full-resolution masks from low-resolution logits, computed only where the object is.

`Sam.upscale_logits` resizes the (m, m) low-res logits bilinearly to the model's square input
(image_size), crops the unpadded (h, w) part and resizes that bilinearly to the image's
(Y, X). Both steps are linear and separable, so per axis they are one (n_out, m) matrix
`A = R2 @ R1[:n_in]` with at most a few consecutive non-zero weights per row, and

    upscaled = A_rows @ logits @ A_cols.T

(the same values as the two interpolations, up to float rounding). Each output pixel is a
convex combination of the low-res logits in its support, so a pixel whose support holds no
low-res logit above the threshold is below it too: only the rows and columns whose support
meets the low-res box of positives need computing. `MaskUpscaler.masks` thresholds there
and leaves the rest False -- for a cell in a 1024 x 1024 image a few thousand pixels
instead of three million, and no full-size float array at all.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch


def _taps(n_out: int, n_in: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (n_out, 2) and weights (n_out, 2) of 1D bilinear resizing from n_in to n_out
    as `F.interpolate(mode="bilinear", align_corners=False)` computes it."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    return np.stack([i0, i1], 1), np.stack([1.0 - w1, w1], 1)


def axis_matrix(m: int, size: int, n_in: int, n_out: int) -> np.ndarray:
    """(n_out, m) float64: low-res m -> size (padded square), keep the first n_in, -> n_out."""
    i1, w1 = _taps(size, m)       # size <- m
    i2, w2 = _taps(n_out, n_in)   # n_out <- n_in (indices < n_in <= size)
    idx = i1[i2]                  # (n_out, 2, 2) low-res indices
    w = w2[:, :, None] * w1[i2]   # (n_out, 2, 2)
    a = np.zeros((n_out, m))
    np.add.at(a, (np.repeat(np.arange(n_out), 4), idx.reshape(-1)), w.reshape(-1))
    return a


class MaskUpscaler:
    """Upsampling of (m, m) low-res logits to an image of `original_hw`, exactly as
    `Sam.upscale_logits(logits, input_hw, original_hw)` (up to float rounding), per crop."""

    def __init__(self, image_size: int, mask_size: int, input_hw, original_hw, device) -> None:
        self.out_hw = tuple(int(v) for v in original_hw)
        self.mask_size = mask_size
        self.device = torch.device(device)
        self.mats, self.lo, self.hi = [], [], []
        for n_in, n_out in zip(input_hw, original_hw):
            a = axis_matrix(mask_size, image_size, int(n_in), int(n_out))
            nz = a > 0
            self.lo.append(nz.argmax(1))
            self.hi.append(mask_size - 1 - nz[:, ::-1].argmax(1))
            self.mats.append(torch.as_tensor(a, dtype=torch.float32, device=self.device))

    def region(self, axis: int, first: int, last: int) -> Tuple[int, int, int, int]:
        """Low-res positives in [first, last] along `axis` -> the output range [start, stop)
        whose support meets them, and the low-res range [l0, l1) that range reads."""
        lo, hi = self.lo[axis], self.hi[axis]
        start = int(np.searchsorted(hi, first, side="left"))
        stop = int(np.searchsorted(lo, last, side="right"))
        if stop <= start:
            return start, start, 0, 0
        return start, stop, int(lo[start]), int(hi[stop - 1]) + 1

    def crop(self, logits: torch.Tensor, rows: Tuple[int, int, int, int],
             cols: Tuple[int, int, int, int]) -> torch.Tensor:
        """Upscaled logits of the output block rows[0]:rows[1] x cols[0]:cols[1]; `logits`
        is the (m, m) low-res array (or any (.., m, m) batch)."""
        rs, re, l0, l1 = rows
        cs, ce, m0, m1 = cols
        a_r = self.mats[0][rs:re, l0:l1]
        a_c = self.mats[1][cs:ce, m0:m1]
        x = logits[..., l0:l1, m0:m1].float()
        r, c, n_r, n_c = l1 - l0, m1 - m0, re - rs, ce - cs
        if n_r * r * c + n_r * c * n_c <= r * c * n_c + n_r * r * n_c:
            return (a_r @ x) @ a_c.T
        return a_r @ (x @ a_c.T)

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., m, m) -> (..., Y, X) upscaled logits of the whole image."""
        full = (0, self.out_hw[0], 0, self.mask_size)
        return self.crop(logits, full, (0, self.out_hw[1], 0, self.mask_size))

    def masks(self, logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """(..., m, m) low-res logits -> (..., Y, X) bool masks `upscaled > threshold`,
        computed inside each mask's box only (one small host transfer of the boxes)."""
        m = self.mask_size
        lead = logits.shape[:-2]
        flat = logits.reshape(-1, m, m)
        out = torch.zeros((flat.shape[0],) + self.out_hw, dtype=torch.bool, device=flat.device)
        if flat.shape[0] == 0:
            return out.reshape(*lead, *self.out_hw)
        pos = flat > threshold
        rows, cols = pos.any(2), pos.any(1)
        ar = torch.arange(m, device=flat.device)
        boxes = torch.stack([
            rows.any(1).long(),
            torch.where(rows, ar, m).amin(1), torch.where(rows, ar, -1).amax(1),
            torch.where(cols, ar, m).amin(1), torch.where(cols, ar, -1).amax(1)], 1).tolist()
        for i, (has, r0, r1, c0, c1) in enumerate(boxes):
            if not has:
                continue
            rows_i, cols_i = self.region(0, r0, r1), self.region(1, c0, c1)
            if rows_i[1] <= rows_i[0] or cols_i[1] <= cols_i[0]:
                continue
            block = self.crop(flat[i], rows_i, cols_i)
            out[i, rows_i[0]:rows_i[1], cols_i[0]:cols_i[1]] = block > threshold
        return out.reshape(*lead, *self.out_hw)
