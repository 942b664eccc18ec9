"""Prompt conversion, without a GUI: layer coordinates, boxes, regions and mask logits.

Prompt-layer coordinates -> image pixels, the points of one slice, rectangles -> boxes,
polygons and ellipses -> a raster mask -> low-res `mask_input` logits. All coordinates are
napari's (row, col). `napari_sam.prompts` imports and re-exports every name.
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

MASK_LOGIT = 8.0  # |logit| given to inside/outside pixels of a drawn region

ToImage = Callable[[np.ndarray], np.ndarray]


def scale_translate(scale: Sequence[float], translate: Sequence[float]) -> ToImage:
    """World -> data for an axis-aligned layer transform: (world - translate) / scale.

    Parameters
    ----------
    scale, translate : sequence of float, (D,)
        The layer's scale and translation, one per axis.

    Returns
    -------
    callable
        Maps a (D,) or (N, D) world coordinate to data coordinates (float).
    """
    s, t = np.asarray(scale, float), np.asarray(translate, float)
    return lambda p: (np.asarray(p, float) - t) / s


def to_image_coords(coords, to_image: ToImage) -> np.ndarray:
    """(N, D) prompt-layer coordinates -> (N, D) image data coordinates.

    Parameters
    ----------
    coords : array_like, (N, D) float
        Coordinates in the prompt layer's data frame, axis order as napari's (..., row, col).
    to_image : callable
        Maps one (D,) coordinate to the image's data frame.

    Returns
    -------
    ndarray, (N, D) float
        Image data coordinates ((0, D) when `coords` is empty).
    """
    c = np.asarray(coords, dtype=float)
    if c.size == 0:
        return c.reshape(0, c.shape[-1] if c.ndim == 2 else 0)
    return np.array([np.asarray(to_image(p), float) for p in c])


def on_slice(coords_img: np.ndarray, index: Tuple[int, ...]) -> np.ndarray:
    """Boolean (N,): which (N, D) image coordinates lie on the 2D slice `index` (D - 2 ints).

    Parameters
    ----------
    coords_img : ndarray, (N, D) float
        Image data coordinates; the last two are (row, col).
    index : tuple of int, (D - 2,)
        The slice's leading indices (empty for a 2D image).

    Returns
    -------
    ndarray, (N,) bool
        True where the rounded leading coordinates equal `index`.
    """
    lead = np.rint(coords_img[:, : len(index)]).astype(int)
    return np.all(lead == np.asarray(index, int), axis=1) if len(index) else np.ones(len(lead), bool)


def inside(points_rc: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Boolean (N,): which (row, col) points fall on a pixel of an image of `shape`.

    Parameters
    ----------
    points_rc : array_like, (N, 2) float
        (row, col) pixel coordinates.
    shape : (int, int)
        The image's (rows, cols).

    Returns
    -------
    ndarray, (N,) bool
    """
    p = np.asarray(points_rc, float).reshape(-1, 2)
    return ((p >= -0.5) & (p < np.asarray(shape) - 0.5)).all(axis=1)


def rectangle_to_box(vertices_rc) -> np.ndarray:
    """Rectangle corners (any order, 2D) -> box (row0, col0, row1, col1), row0 <= row1.

    Parameters
    ----------
    vertices_rc : array_like, (K, 2) float
        The corners, (row, col).

    Returns
    -------
    ndarray, (4,) float
        (row0, col0, row1, col1), the corners' bounding box.
    """
    v = np.asarray(vertices_rc, float).reshape(-1, 2)
    return np.concatenate([v.min(axis=0), v.max(axis=0)])


def ellipse_polygon(corners_rc, n: int = 64) -> np.ndarray:
    """The ellipse inscribed in a (possibly rotated) rectangle given by its 4 corners in order.

    Parameters
    ----------
    corners_rc : array_like, (4, 2) float
        The rectangle's corners in order around it, (row, col).
    n : int
        Number of polygon vertices.

    Returns
    -------
    ndarray, (n, 2) float
        The ellipse's vertices, (row, col).
    """
    c = np.asarray(corners_rc, float).reshape(4, 2)
    centre, a, b = c.mean(axis=0), (c[1] - c[0]) / 2, (c[3] - c[0]) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def region_mask(shape_type: str, vertices_rc, shape: Tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon or ellipse given in (row, col) pixel coordinates.

    Parameters
    ----------
    shape_type : str
        "polygon" or "ellipse" (napari Shapes types; others raise ValueError).
    vertices_rc : array_like, (K, 2) float
        The vertices ((4, 2) corners for an ellipse), (row, col).
    shape : (int, int)
        The mask's (rows, cols).

    Returns
    -------
    ndarray, (Y, X) bool
        True inside the shape.
    """
    from skimage.draw import polygon

    v = np.asarray(vertices_rc, float).reshape(-1, 2)
    if shape_type == "ellipse":
        v = ellipse_polygon(v)
    elif shape_type != "polygon":
        raise ValueError(f"only polygons and ellipses become mask prompts, not {shape_type!r}")
    mask = np.zeros(shape, bool)
    rr, cc = polygon(v[:, 0], v[:, 1], shape)
    mask[rr, cc] = True
    return mask


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(row, col) of the pixel farthest from the border of `mask`.

    Parameters
    ----------
    mask : ndarray, (Y, X) bool

    Returns
    -------
    ndarray, (2,) float
        (row, col) of that pixel.
    """
    from scipy import ndimage as ndi

    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return np.array(np.unravel_index(np.argmax(dist), mask.shape), dtype=float)


def mask_to_logits(mask: np.ndarray, input_size: Tuple[int, int], image_size: int,
                   mask_size: int) -> np.ndarray:
    """(Y, X) bool mask -> (m, m) logits in the model's padded input frame (`mask_input`).

    Parameters
    ----------
    mask : ndarray, (Y, X) bool
        The region in image pixels.
    input_size : (int, int)
        The image's (rows, cols) once resized for the model.
    image_size : int
        The model's square input side.
    mask_size : int
        m, the side of the model's low-res masks.

    Returns
    -------
    ndarray, (m, m) float32
        +-`MASK_LOGIT` inside / outside (mixed at edges).
    """
    t = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    t = F.interpolate(t, input_size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, image_size - input_size[1], 0, image_size - input_size[0]))
    t = F.interpolate(t, (mask_size, mask_size), mode="area")
    return ((t[0, 0] * 2 - 1) * MASK_LOGIT).numpy()
