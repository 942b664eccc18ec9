"""Overlay pictures: an image with its label outlines drawn in colour, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .axes import as_slices


def overlay_rgb(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 RGB of a 2D image with each object's outline in its own colour.

    Parameters
    ----------
    image : ndarray
        (Y, X) or (Y, X, C), any numeric dtype (contrast-normalised; C > 4 uses the first 3).
    labels : ndarray
        (Y, X) integer labels, 0 background.

    Returns
    -------
    ndarray
        uint8 (Y, X, 3) RGB.
    """
    from skimage.segmentation import find_boundaries

    from ..transforms import to_model_pixels

    px = to_model_pixels(image if image.ndim == 2 or image.shape[-1] <= 4 else image[..., :3])
    rgb = px.astype(np.uint8)
    edge = find_boundaries(labels, mode="inner")
    ids = labels[edge].astype(np.uint64)
    hue = (ids * 0.61803398875) % 1.0  # golden-ratio hues: neighbours get distinct colours
    k = (hue[:, None] * 6 + np.array([0, 4, 2])) % 6
    col = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)
    rgb[edge] = (col * 255).astype(np.uint8)
    return rgb


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, overwrite: bool,
                  axes: Optional[str] = None) -> None:
    """PNG overlay of the image (axes `axes`) and its labels; stacks show the middle slice.

    Parameters
    ----------
    path : pathlib.Path
        The .png file to write (atomically).
    image : ndarray
        (..., Y, X[, C]) image.
    labels : ndarray
        (..., Y, X) integer labels with the same leading slices as `image`.
    overwrite : bool
        Replace an existing file.
    axes : str, optional
        The image's axes (None: guessed, see `axes.as_slices`).
    """
    from .atomic import atomic_path

    slices, _, _ = as_slices(image, axes)
    lab = labels.reshape((-1,) + labels.shape[-2:])
    mid = lab.shape[0] // 2
    rgb = overlay_rgb(slices[mid], lab[mid])
    with atomic_path(path, overwrite) as tmp:
        try:
            from PIL import Image

            Image.fromarray(rgb).save(tmp, format="PNG")
        except ImportError:  # pragma: no cover - PIL comes with scikit-image's imageio
            from skimage.io import imsave

            imsave(tmp, rgb, check_contrast=False, extension=".png")
