"""Checks on COCO input before it is used: polygons before they reach pycocotools (which
does not check them: a NaN vertex can crash it and a vertex far outside the image makes it
allocate memory in proportion), image sizes, slice indices and label shapes before an
array of that size is allocated. Each raises ValueError saying what is wrong."""

from __future__ import annotations

from typing import List, Mapping, Tuple

import numpy as np

MAX_PIXELS = 2 ** 31  # per image: 8 GB of uint32 labels; a larger size is a broken file


def image_size(im: Mapping, path) -> Tuple[int, int]:
    """(height, width) of a COCO image record, checked: positive whole numbers.

    Parameters
    ----------
    im : mapping
        A COCO "images" entry with "height" and "width".
    path : str or os.PathLike
        The COCO file, for error messages.

    Returns
    -------
    (int, int)
        (height, width) in pixels, i.e. (Y, X).
    """
    sizes = []
    for key in ("height", "width"):
        value = im.get(key)
        if value is None:
            raise ValueError(f"{path}: image {im.get('id')!r} has no '{key}'; COCO images "
                             "need 'height' and 'width' in pixels")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not float(value).is_integer() or value < 1:
            raise ValueError(f"{path}: image {im.get('id')!r} has {key} {value!r}; it must "
                             "be a positive whole number of pixels")
        sizes.append(int(value))
    if sizes[0] * sizes[1] > MAX_PIXELS:
        raise ValueError(f"{path}: image {im.get('id')!r} is {sizes[0]} x {sizes[1]} pixels, "
                         f"more than {MAX_PIXELS} ({MAX_PIXELS * 4 // 2 ** 30} GB of labels); "
                         "check its height and width")
    return sizes[0], sizes[1]


def slice_index(z, im: Mapping, path) -> int:
    """A COCO image's slice index `z`, checked: a whole number >= 0.

    Parameters
    ----------
    z : int or float
        The value read from the image record.
    im : mapping
        The COCO "images" entry, for error messages.
    path : str or os.PathLike
        The COCO file, for error messages.

    Returns
    -------
    int
        The slice index along Z.
    """
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not float(z).is_integer() \
            or z < 0:
        raise ValueError(f"{path}: image {im.get('id')!r} has slice index z={z!r}; it must "
                         "be a whole number >= 0")
    return int(z)


def checked_shape(shape, what: str) -> Tuple[int, ...]:
    """`shape` as a tuple of 2 or 3 positive ints of a size that fits in memory.

    Parameters
    ----------
    shape : sequence of int or float
        (Y, X) or (Z, Y, X); whole floats are accepted.
    what : str
        What the shape is, for error messages.

    Returns
    -------
    tuple of int
        (Y, X) or (Z, Y, X).
    """
    try:
        out = tuple(int(n) for n in shape)
        ok = all(float(a) == b for a, b in zip(shape, out)) and len(out) in (2, 3)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or min(out) < 1:
        raise ValueError(f"{what} {shape!r}: expected (Y, X) or (Z, Y, X), positive whole "
                         "numbers")
    pixels = float(np.prod(out, dtype=np.float64))
    if pixels > 4 * MAX_PIXELS:
        raise ValueError(f"{what} {out} would need {pixels * 4 / 2 ** 30:.0f} GB of labels; "
                         "check the image sizes and slice indices ('z')")
    return out


def checked_polygons(segmentation: list, height: int, width: int) -> List[List[float]]:
    """The polygons (lists of x0, y0, x1, y1, ...) of a segmentation with 3+ vertices each,
    checked before they reach pycocotools, which does not check them: a NaN vertex can
    crash it and a vertex far outside the image makes it allocate memory in proportion.

    Vertices may lie outside the image by up to one image size (they are clipped when
    painted); further out, or not finite, is an error.

    Parameters
    ----------
    segmentation : list
        COCO polygon segmentation: a list of [x0, y0, x1, y1, ...] lists (x = col, y = row).
    height, width : int
        The image size in pixels.

    Returns
    -------
    list of list of float
        The polygons with 3 or more vertices, as flat [x0, y0, ...] lists; shorter ones
        are left out.
    """
    if segmentation and all(isinstance(v, (int, float)) for v in segmentation):
        raise ValueError("polygon segmentation is a flat list of numbers; COCO polygons are a "
                         "list of polygons, [[x0, y0, x1, y1, ...], ...]: wrap it in a list")
    out = []
    reach = max(height, width)
    for i, poly in enumerate(segmentation):
        if not isinstance(poly, (list, tuple)):
            raise ValueError(f"polygon {i} is a {type(poly).__name__}, not a list of "
                             "x0, y0, x1, y1, ... coordinates")
        try:
            xy = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"polygon {i} holds values that are not numbers") from None
        if xy.ndim != 1 or xy.size % 2:
            raise ValueError(f"polygon {i} has {xy.size} values; it needs x, y pairs "
                             "(an even count)")
        if not np.isfinite(xy).all():
            raise ValueError(f"polygon {i} has a NaN or infinite coordinate")
        x, y = xy[0::2], xy[1::2]
        if x.size and (x.min() < -reach or x.max() > width + reach or y.min() < -reach
                       or y.max() > height + reach):
            raise ValueError(f"polygon {i} has vertices far outside the {height} x {width} "
                             f"image (x {x.min():g} .. {x.max():g}, y {y.min():g} .. "
                             f"{y.max():g}); coordinates are pixels (x = column, y = row)")
        if xy.size >= 6:
            out.append(xy.tolist())
    return out
