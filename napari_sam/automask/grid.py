"""The geometry of automatic mask generation: the point grid, the crop boxes, and the
batched full-resolution regions of low-res masks (on the model's `MaskUpscaler`)."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch


class GridUpscaler:
    """Low-res logits (m, m) -> logits of a crop (h, w) as `rows @ L @ cols.T` (1D each),
    for whole batches of masks at once: the matrices and supports of `up` (a
    `model.upscale.MaskUpscaler`, which does one prompt's masks), with the supports as
    tensors for batched lookups.

    Parameters
    ----------
    up : MaskUpscaler
        The model's upscaler for the crop.
    input_hw : (int, int)
        The crop's (rows, cols) in the model's input frame.
    """

    def __init__(self, up, input_hw) -> None:
        self.tables = [(mat, torch.as_tensor(lo, device=mat.device),
                        torch.as_tensor(hi, device=mat.device))
                       for mat, lo, hi in zip(up.mats, up.lo, up.hi)]
        m, size = up.mask_size, up.image_size
        self.valid = tuple(min(m, math.ceil(n * m / size)) for n in input_hw)

    def regions(self, first: torch.Tensor, last: torch.Tensor, axis: int):
        """Low-res positives in [first, last] (inclusive) -> full-res [start, stop) and the
        low-res [l0, l1) that those full-res pixels read from.

        Parameters
        ----------
        first, last : Tensor, (N,) int64
            First and last low-res row (axis 0) or column (axis 1) of each mask's positives.
        axis : int
            0 for rows, 1 for columns.

        Returns
        -------
        start, stop, l0, l1 : Tensor, (N,) int64
            Full-res [start, stop) in crop pixels and low-res [l0, l1) per mask.
        """
        _, lo, hi = self.tables[axis]
        start = torch.searchsorted(hi, first.contiguous())
        stop = torch.searchsorted(lo, last.contiguous(), right=True)
        n = lo.shape[0]
        l0 = lo[start.clamp(max=n - 1)]
        l1 = hi[(stop - 1).clamp(min=0)] + 1
        return start, stop, l0, l1

    def crop(self, logits: torch.Tensor, region, origin) -> torch.Tensor:
        """(h, w) low-res logits whose [0, 0] is low-res (row, col) `origin` -> float32
        logits of the full-resolution `region` (row0, col0, row1, col1), ends exclusive.

        Parameters
        ----------
        logits : Tensor, (h, w)
        region : (int, int, int, int)
            (row0, col0, row1, col1) in crop pixels.
        origin : (int, int)
            Low-res (row, col) of `logits[0, 0]`.

        Returns
        -------
        Tensor, (row1 - row0, col1 - col0) float32
        """
        rs, cs, re, ce = region
        a_r = self.tables[0][0][rs:re, origin[0]:origin[0] + logits.shape[0]]
        a_c = self.tables[1][0][cs:ce, origin[1]:origin[1] + logits.shape[1]]
        return a_r @ logits.float() @ a_c.T


def crop_boxes(shape: Tuple[int, int], n_layers: int, overlap_ratio: float):
    """The crops of automatic mask generation: the whole image, then per layer i 2**i x 2**i
    evenly spaced crops, each `1 + overlap_ratio` times the side of a plain tiling's cell.

    Parameters
    ----------
    shape : (int, int)
        (Y, X) of the image.
    n_layers : int
        Crop layers after the whole image (0: the whole image only).
    overlap_ratio : float
        How much larger than a plain tiling's cell each crop is, as a fraction.

    Returns
    -------
    crops : list of (int, (int, int, int, int))
        (layer, (row0, col0, row1, col1)) with exclusive ends; layer 0 is the whole image.
    """
    h, w = shape
    out = [(0, (0, 0, h, w))]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        spans = []
        for length in (h, w):
            size = min(length, math.ceil(length / n * (1 + overlap_ratio)))
            starts = np.round(np.linspace(0, length - size, n)).astype(int)
            spans.append([(int(s), int(s) + size) for s in starts])
        out += [(layer, (r0, c0, r1, c1)) for r0, r1 in spans[0] for c0, c1 in spans[1]]
    return out


def point_grid(h: int, w: int, n: int) -> np.ndarray:
    """The points of an n x n prompt grid: the centres of n x n equal cells over the image.

    Parameters
    ----------
    h, w : int
        (Y, X) of the image (or crop).
    n : int
        Points per side.

    Returns
    -------
    points : ndarray, (n * n, 2) float64
        (row, col) in pixels, row-major.
    """
    rows = (np.arange(n) + 0.5) * h / n
    cols = (np.arange(n) + 0.5) * w / n
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
