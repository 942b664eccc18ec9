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
import torch.nn.functional as F

# masks of one call (the outputs of one prompt) upsampled together inside their union box
UNION_MAX = 4


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
    """(n_out, m) float64: low-res m -> size (padded square), keep the first n_in, -> n_out.

    Parameters
    ----------
    m : int
        Low-res side.
    size : int
        The model's square input side.
    n_in : int
        Unpadded length of the image inside the input, along this axis.
    n_out : int
        The original image's length along this axis.

    Returns
    -------
    ndarray, (n_out, m) float64
        Rows of bilinear weights (at most 4 non-zero, consecutive).
    """
    i1, w1 = _taps(size, m)       # size <- m
    i2, w2 = _taps(n_out, n_in)   # n_out <- n_in (indices < n_in <= size)
    idx = i1[i2]                  # (n_out, 2, 2) low-res indices
    w = w2[:, :, None] * w1[i2]   # (n_out, 2, 2)
    a = np.zeros((n_out, m))
    np.add.at(a, (np.repeat(np.arange(n_out), 4), idx.reshape(-1)), w.reshape(-1))
    return a


class MaskUpscaler:
    """Upsampling of (m, m) low-res logits to an image of `original_hw`, exactly as
    `Sam.upscale_logits(logits, input_hw, original_hw)` (up to float rounding), per crop.

    Parameters
    ----------
    image_size : int
        The model's square input side.
    mask_size : int
        m, the low-res logits' side.
    input_hw : (int, int)
        (rows, cols) of the image inside the padded input.
    original_hw : (int, int)
        (Y, X), the original image's (rows, cols).
    device : torch.device or str
        Where the matrices live (the logits' device).
    """

    def __init__(self, image_size: int, mask_size: int, input_hw, original_hw, device) -> None:
        self.out_hw = tuple(int(v) for v in original_hw)
        self.mask_size, self.image_size = mask_size, image_size
        self.device = torch.device(device)
        # When the image is the model's input (no second resize), the upsampling is one
        # bilinear resize by the integer factor image_size / mask_size: then a crop of the
        # low-res logits with a margin, resized by that factor, gives exactly (bit for bit)
        # the same values as resizing the whole frame, and F.interpolate is much cheaper
        # than the dense matrices.
        self.factor = 0
        if (tuple(int(v) for v in input_hw) == self.out_hw and image_size % mask_size == 0):
            self.factor = image_size // mask_size
        self.mats, self.lo, self.hi = [], [], []
        for n_in, n_out in zip(input_hw, original_hw):
            a = axis_matrix(mask_size, image_size, int(n_in), int(n_out))
            nz = a > 0
            self.lo.append(nz.argmax(1))
            self.hi.append(mask_size - 1 - nz[:, ::-1].argmax(1))
            self.mats.append(torch.as_tensor(a, dtype=torch.float32, device=self.device))

    def region(self, axis: int, first: int, last: int) -> Tuple[int, int, int, int]:
        """Low-res positives in [first, last] along `axis` -> the output range [start, stop)
        whose support meets them, and the low-res range [l0, l1) that range reads.

        Parameters
        ----------
        axis : int
            0 for rows (y), 1 for columns (x).
        first, last : int
            Low-res indexes of the first and last positive (inclusive).

        Returns
        -------
        (int, int, int, int)
            (start, stop, l0, l1); (start, start, 0, 0) when empty.
        """
        lo, hi = self.lo[axis], self.hi[axis]
        start = int(np.searchsorted(hi, first, side="left"))
        stop = int(np.searchsorted(lo, last, side="right"))
        if stop <= start:
            return start, start, 0, 0
        return start, stop, int(lo[start]), int(hi[stop - 1]) + 1

    def crop(self, logits: torch.Tensor, rows: Tuple[int, int, int, int],
             cols: Tuple[int, int, int, int]) -> torch.Tensor:
        """Upscaled logits of the output block rows[0]:rows[1] x cols[0]:cols[1]; `logits`
        is the (m, m) low-res array (or any (.., m, m) batch).

        Parameters
        ----------
        logits : Tensor, (..., m, m)
        rows, cols : (int, int, int, int)
            (start, stop, l0, l1) from `region` for axis 0 (y) and axis 1 (x).

        Returns
        -------
        Tensor, (..., rows[1] - rows[0], cols[1] - cols[0]) float32
        """
        rs, re, l0, l1 = rows
        cs, ce, m0, m1 = cols
        if self.factor:
            return self._interpolate_crop(logits, rs, re, cs, ce)
        a_r = self.mats[0][rs:re, l0:l1]
        a_c = self.mats[1][cs:ce, m0:m1]
        x = logits[..., l0:l1, m0:m1].float()
        r, c, n_r, n_c = l1 - l0, m1 - m0, re - rs, ce - cs
        if n_r * r * c + n_r * c * n_c <= r * c * n_c + n_r * r * n_c:
            return (a_r @ x) @ a_c.T
        return a_r @ (x @ a_c.T)

    def _interpolate_crop(self, logits: torch.Tensor, rs: int, re: int, cs: int,
                          ce: int) -> torch.Tensor:
        f, m = self.factor, self.mask_size
        # low-res rows/cols with a margin of 2: inside it the resize of the crop uses the
        # same source pixels and weights as the resize of the whole frame
        a0, a1 = max(rs // f - 2, 0), min(-(-re // f) + 2, m)
        b0, b1 = max(cs // f - 2, 0), min(-(-ce // f) + 2, m)
        x = logits[..., a0:a1, b0:b1].float()
        lead = x.shape[:-2]
        x = x.reshape(-1, 1, a1 - a0, b1 - b0)
        up = F.interpolate(x, ((a1 - a0) * f, (b1 - b0) * f), mode="bilinear",
                           align_corners=False)
        up = up[:, 0, rs - a0 * f:re - a0 * f, cs - b0 * f:ce - b0 * f]
        return up.reshape(*lead, re - rs, ce - cs)

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., m, m) -> (..., Y, X) upscaled logits of the whole image.

        Parameters
        ----------
        logits : Tensor, (..., m, m)

        Returns
        -------
        Tensor, (..., Y, X) float32
        """
        full = (0, self.out_hw[0], 0, self.mask_size)
        return self.crop(logits, full, (0, self.out_hw[1], 0, self.mask_size))

    def masks(self, logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """(..., m, m) low-res logits -> (..., Y, X) bool masks `upscaled > threshold`,
        computed inside the box of low-res positives only (one small host transfer of the
        box). Up to `UNION_MAX` masks (the outputs of one prompt) share the union of their
        boxes and are upsampled together; more are done one by one.

        Parameters
        ----------
        logits : Tensor, (..., m, m)
        threshold : float
            On the logits.

        Returns
        -------
        Tensor, (..., Y, X) bool
            On the logits' device.
        """
        m = self.mask_size
        lead = logits.shape[:-2]
        flat = logits.reshape(-1, m, m)
        out = torch.zeros((flat.shape[0],) + self.out_hw, dtype=torch.bool, device=flat.device)
        for g, (r0, r1), (c0, c1), block in self.blocks(flat, threshold):
            out[g, r0:r1, c0:c1] = block > threshold
        return out.reshape(*lead, *self.out_hw)

    def blocks(self, flat: torch.Tensor, threshold: float = 0.0):
        """For (N, m, m) low-res logits: (masks, rows, cols, upscaled logits) per group of
        masks -- all N when N <= `UNION_MAX`, else one at a time -- where rows and cols are
        the full-resolution [start, stop) of the union box of the group's low-res positives
        and the logits are `crop`'s inside it. Groups without positives are left out.

        Parameters
        ----------
        flat : Tensor, (N, m, m)
        threshold : float

        Yields
        ------
        g : slice
            The group's masks, an index into the N axis.
        rows, cols : (int, int)
            [start, stop) of the box along y and x, full resolution.
        logits : Tensor, (n, rows, cols) float32
            Upscaled logits of the group's n masks inside the box.
        """
        m = self.mask_size
        if flat.shape[0] == 0:
            return
        pos = flat > threshold
        rows, cols = pos.any(2), pos.any(1)  # (N, m)
        groups = [slice(None)] if flat.shape[0] <= UNION_MAX else [
            slice(i, i + 1) for i in range(flat.shape[0])]
        ar = torch.arange(m, device=flat.device)
        boxes = torch.stack([
            torch.stack([r.any(), torch.where(r.any(0), ar, m).min(),
                         torch.where(r.any(0), ar, -1).max(), torch.where(c.any(0), ar, m).min(),
                         torch.where(c.any(0), ar, -1).max()])
            for r, c in ((rows[g], cols[g]) for g in groups)]).tolist()
        for g, (has, r0, r1, c0, c1) in zip(groups, boxes):
            if not has:
                continue
            rows_g, cols_g = self.region(0, r0, r1), self.region(1, c0, c1)
            if rows_g[1] <= rows_g[0] or cols_g[1] <= cols_g[0]:
                continue
            yield g, rows_g[:2], cols_g[:2], self.crop(flat[g], rows_g, cols_g)
