"""Simulated user prompts for training and evaluation (all coordinates (row, col)).

The same rules serve training (random clicks and jittered boxes) and evaluation
(a click at the most interior point of each object, the tight bounding box).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(row, col) of the pixel farthest from the object's border.

    Parameters
    ----------
    mask : ndarray, (Y, X) bool
        The object.

    Returns
    -------
    ndarray, (2,) float64
        Its (row, col); the first such pixel on ties.
    """
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return np.array(np.unravel_index(np.argmax(dist), mask.shape), dtype=np.float64)


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """(row0, col0, row1, col1) of the mask's pixel centres.

    Parameters
    ----------
    mask : ndarray, (Y, X) bool
        A non-empty object.

    Returns
    -------
    ndarray, (4,) float64
        (row0, col0, row1, col1), inclusive: the first and last rows and columns it covers.
    """
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float64)


def random_point(rng: np.random.Generator, mask: np.ndarray, interior_bias: float = 0.5) -> np.ndarray:
    """A random pixel of `mask`; with probability `interior_bias` weighted towards its centre.

    Parameters
    ----------
    rng : numpy.random.Generator
    mask : ndarray, (Y, X) bool
        A non-empty region.
    interior_bias : float
        Probability of weighting pixels by their squared distance to the border (used only
        for regions of more than 4 pixels); otherwise uniform.

    Returns
    -------
    ndarray, (2,) float64
        The pixel's (row, col).
    """
    rr, cc = np.nonzero(mask)
    if rng.random() < interior_bias and len(rr) > 4:
        dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][rr, cc]
        w = dist ** 2
        i = rng.choice(len(rr), p=w / w.sum())
    else:
        i = rng.integers(len(rr))
    return np.array([rr[i], cc[i]], dtype=np.float64)


def jittered_box(rng: np.random.Generator, mask: np.ndarray, shape, noise: float = 0.1,
                 max_px: float = 20.0) -> np.ndarray:
    """The bounding box with each side moved by N(0, noise * side), at most `max_px`.

    Parameters
    ----------
    rng : numpy.random.Generator
    mask : ndarray, (Y, X) bool
        A non-empty object.
    shape : tuple of int
        The image's (Y, X) size; the box is clipped to it.
    noise : float
        Standard deviation of each side's shift, as a fraction of the box's height or width.
    max_px : float
        The largest shift of a side in pixels.

    Returns
    -------
    ndarray, (4,) float64
        (row0, col0, row1, col1), at least 1 pixel apart in each axis.
    """
    b = bounding_box(mask)
    h, w = b[2] - b[0] + 1, b[3] - b[1] + 1
    d = rng.normal(0, noise, 4) * np.array([h, w, h, w])
    b = b + np.clip(d, -max_px, max_px)
    b[[0, 2]] = np.clip(b[[0, 2]], 0, shape[0] - 1)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, shape[1] - 1)
    if b[2] - b[0] < 1:
        b[2] = min(b[0] + 1, shape[0] - 1)
        b[0] = b[2] - 1
    if b[3] - b[1] < 1:
        b[3] = min(b[1] + 1, shape[1] - 1)
        b[1] = b[3] - 1
    return b


def corrective_click(rng: np.random.Generator, pred: np.ndarray, truth: np.ndarray):
    """A click a user would add: in the larger error region, far from its border.

    Parameters
    ----------
    rng : numpy.random.Generator
    pred : ndarray, (Y, X) bool
        The predicted mask.
    truth : ndarray, (Y, X) bool
        The true mask.

    Returns
    -------
    tuple of (ndarray, int) or None
        ((row, col) float64 (2,), label) with label 1 for a missed part, 0 for a false part;
        None when the prediction is already exact.
    """
    fn = truth & ~pred
    fp = pred & ~truth
    if not fn.any() and not fp.any():
        return None
    region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
    return random_point(rng, region, interior_bias=0.8), label
