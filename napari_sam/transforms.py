"""Image and coordinate transforms between the user's arrays and the model's input frame.

- Coordinates: the public API uses napari's (row, col); SAM uses (x, y). `rc_to_xy` and
  `box_rc_to_xyxy` are the only places that swap axes.
- Intensities: uint8 RGB goes to the model unchanged; other dtypes are contrast-normalised
  to 0-255 with robust percentiles; grayscale is repeated to three channels; two channels
  become red and green (blue zero); more than three channels need `channels=`.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

PERCENTILES = (0.5, 99.8)


def rc_to_xy(points_rc) -> np.ndarray:
    """(N, 2) napari (row, col) -> (N, 2) SAM (x, y).

    Parameters
    ----------
    points_rc : array_like, (N, 2) or (2,)
        Points, (row, col).

    Returns
    -------
    ndarray, (N, 2) float64
        The same points, (x, y).
    """
    p = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    return p[:, ::-1].copy()


def box_rc_to_xyxy(box_rc) -> np.ndarray:
    """(row0, col0, row1, col1) in any corner order -> (x0, y0, x1, y1) with x0 <= x1, y0 <= y1.

    Parameters
    ----------
    box_rc : array_like, (4,) or (M, 4)
        Boxes, (row0, col0, row1, col1), corners in any order.

    Returns
    -------
    ndarray, (M, 4) float64
        (x0, y0, x1, y1) per box (M = 1 for one box).
    """
    b = np.asarray(box_rc, dtype=np.float64).reshape(-1, 4)
    r0, r1 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    c0, c1 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    return np.stack([c0, r0, c1, r1], axis=1)


def target_shape(h: int, w: int, long_side: int) -> Tuple[int, int]:
    """Shape after scaling so the longest side is `long_side` (SAM's rounding).

    Parameters
    ----------
    h, w : int
        The image's rows and columns (at least 1 each; else ValueError).
    long_side : int
        The longest side after scaling.

    Returns
    -------
    (int, int)
        (rows, cols) after scaling, each at least 1.
    """
    if min(h, w) < 1:
        raise ValueError(f"the image is empty ({h} x {w} pixels); give an image with at least "
                         "one row and one column")
    scale = long_side / max(h, w)
    # a thin image (1 x 600) keeps at least one row rather than shrinking to nothing
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def select_channels(image: np.ndarray, channels: Optional[Sequence[int]] = None) -> np.ndarray:
    """(Y, X) or (Y, X, C) -> (Y, X, K) with K in 1..3, never dropping data silently.

    Parameters
    ----------
    image : array_like, (Y, X) or (Y, X, C)
        Bool, integer or float pixels.
    channels : sequence of int, optional
        1 to 3 channel indices to keep (None: all, if there are at most 3, or RGB of uint8
        RGBA; ValueError otherwise).

    Returns
    -------
    ndarray, (Y, X, K)
        The chosen channels, dtype unchanged (a view where possible).
    """
    if image is None:
        raise ValueError("no image was given (None); pass a (Y, X) or (Y, X, C) array")
    img = np.asarray(image)
    if img.dtype.kind not in "biuf":
        hint = " (for complex data pass np.abs(image) or image.real)" if img.dtype.kind == "c" \
            else ""
        raise ValueError(f"the image has dtype {img.dtype}; expected numbers (bool, integer or "
                         f"float pixels){hint}")
    if img.ndim in (2, 3) and (img.shape[0] < 1 or img.shape[1] < 1):
        raise ValueError(f"the image is empty (shape {img.shape}); give an image with at least "
                         "one row and one column")
    if img.ndim == 2:
        img = img[..., None]
    elif img.ndim != 3:
        raise ValueError(
            f"expected a 2D image (Y, X) or (Y, X, C), got shape {img.shape}; for stacks pass "
            "one slice at a time (or use the batch functions)")
    c = img.shape[-1]
    if channels is not None:
        channels = list(channels)
        if not 1 <= len(channels) <= 3 or any(not -c <= i < c for i in channels):
            raise ValueError(f"channels={channels} must pick 1 to 3 of the image's {c} channels")
        return img[..., channels]
    if c == 4 and img.dtype == np.uint8:
        if img[..., 3].min() < 255:
            warnings.warn("RGBA image: the alpha channel is ignored", stacklevel=3)
        return img[..., :3]
    if c > 3:
        raise ValueError(
            f"the image has {c} channels; the model takes up to 3. Choose them with "
            "channels=[i, j, k] (e.g. channels=[0] for the nuclear stain; on the command "
            "line --channels 0 or --channels 0,1,2)")
    return img


def intensity_range(image: np.ndarray, percentiles=PERCENTILES, max_samples: int = 1_000_000
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) robust range of a (Y, X, C) array from a subsample.

    Parameters
    ----------
    image : ndarray, (Y, X, C)
        Numeric pixels; NaN and inf are ignored.
    percentiles : (float, float)
        The low and high percentiles.
    max_samples : int
        Pixels sampled, at most (a regular stride).

    Returns
    -------
    low, high : ndarray, (C,) float64
        The percentiles per channel (0 where a channel has no finite value).
    """
    flat = image.reshape(-1, image.shape[-1])
    step = max(1, flat.shape[0] // max_samples)
    sample = np.asarray(flat[::step], dtype=np.float64)
    sample = np.where(np.isfinite(sample), sample, np.nan)
    lo, hi = np.nanpercentile(sample, percentiles, axis=0)
    return np.nan_to_num(lo), np.nan_to_num(hi)


def to_model_pixels(image: np.ndarray, channels: Optional[Sequence[int]] = None,
                    value_range: Optional[Tuple] = None) -> np.ndarray:
    """Any supported image -> float32 (Y, X, 3) in 0-255, as the model expects.

    `value_range` (low, high), scalars or per channel, overrides the percentile
    normalisation (used by tiling, so every tile of an image is scaled alike).

    Parameters
    ----------
    image : array_like, (Y, X) or (Y, X, C)
        Bool, integer or float pixels.
    channels : sequence of int, optional
        1 to 3 channels to use (`select_channels`).
    value_range : (low, high), optional
        Scalars or (K,) arrays mapped to 0 and 255 (None: uint8 as is, others by
        `intensity_range`).

    Returns
    -------
    ndarray, (Y, X, 3) float32
        Values 0-255; one channel is repeated, two get a zero blue channel.
    """
    img = select_channels(image, channels)
    if img.dtype == np.uint8 and value_range is None:
        out = img.astype(np.float32)
    elif img.dtype == bool:
        out = img.astype(np.float32) * 255
    else:
        lo, hi = value_range if value_range is not None else intensity_range(img)
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1e-12), 0.0)
        out = (np.asarray(img, dtype=np.float64) - lo) * scale
        out = np.clip(np.nan_to_num(out), 0, 255).astype(np.float32)
    k = out.shape[-1]
    if k == 1:
        out = np.repeat(out, 3, axis=-1)
    elif k == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=-1)
    return out


def zoomed_shape(h: int, w: int, zoom: float, long_side: int) -> Tuple[int, int]:
    """Shape (h', w') of a (h, w) image resized by `zoom`, at least 1 pixel per side; raises
    ValueError if it exceeds the model's input side `long_side` (tile the image instead).

    Parameters
    ----------
    h, w : int
        The image's rows and columns.
    zoom : float
        The resize factor.
    long_side : int
        The model's input side.

    Returns
    -------
    (int, int)
        (rows, cols) after resizing.
    """
    out = max(1, int(h * zoom + 0.5)), max(1, int(w * zoom + 0.5))
    if max(out) > long_side:
        raise ValueError(f"an image of {h} x {w} pixels zoomed by {zoom:.3g} is {out[0]} x "
                         f"{out[1]}, larger than the model input ({long_side}); tile it")
    return out


def resize_for_model(pixels: np.ndarray, long_side: int, device=None,
                     zoom: Optional[float] = None) -> torch.Tensor:
    """(Y, X, 3) float pixels -> (1, 3, h, w) tensor with the longest side = `long_side`, or,
    with `zoom`, resized by that factor (`zoomed_shape`).

    Parameters
    ----------
    pixels : ndarray, (Y, X, 3) float32
        Values 0-255 (`to_model_pixels`).
    long_side : int
        The model's input side.
    device : torch.device or str, optional
        Where the tensor goes (None: CPU).
    zoom : float, optional
        Resize by this factor instead of fitting the longest side.

    Returns
    -------
    Tensor, (1, 3, h, w) float32
        Antialiased bilinear resize, values clamped to 0-255.
    """
    t = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(2, 0, 1)[None]
    if zoom is None:
        h, w = target_shape(t.shape[-2], t.shape[-1], long_side)
    else:
        h, w = zoomed_shape(t.shape[-2], t.shape[-1], zoom, long_side)
    if (h, w) == tuple(t.shape[-2:]):
        return t
    return F.interpolate(t, (h, w), mode="bilinear", align_corners=False, antialias=True
                         ).clamp_(0, 255)
