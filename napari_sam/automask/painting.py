"""Clean-up of the surviving candidate masks and their painting into a uint32 label image.

The last step of automatic mask generation (`amg`), in numpy/scipy on the few masks that
`candidates` lets through. Conventions as there: boxes are (row0, col0, row1, col1) with
exclusive ends, in pixels; labels are uint32, 0 is background. `candidates` re-exports
every name.

Overlap rule (`paint_labels`): where masks overlap, the **smaller** mask is on top (masks
are painted in descending order of area; at equal area the higher score is painted last,
so it wins). A mask of which less than `min_visible` of its own area remains visible
after painting (it is mostly the union of smaller masks, e.g. a clump of nuclei), or whose
visible part is smaller than `min_area` pixels, is dropped, and the masks are painted
again without it so that what it covered goes to the masks below. Ids are then numbered
1..N in descending order of score: id 1 is the most confident object.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi


# --------------------------------------------------------------------------- clean-up
_FOUR = ndi.generate_binary_structure(2, 1)
_EIGHT = ndi.generate_binary_structure(2, 2)


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> np.ndarray:
    """Remove islands (mode "islands", 8-connected) or fill holes (mode "holes",
    4-connected background not reaching the border) smaller than `min_area` pixels.

    Islands: the largest component is always kept, so a mask never vanishes here.

    Parameters
    ----------
    mask : ndarray, (H, W) bool
    min_area : int
        Islands or holes below this many pixels go (0: nothing changes).
    mode : str
        "islands" or "holes".

    Returns
    -------
    ndarray, (H, W) bool
        A new mask, or `mask` itself when nothing changes.
    """
    if min_area <= 0 or not mask.any():
        return mask
    if mode == "islands":
        lab, n = ndi.label(mask, _EIGHT)
        if n <= 1:
            return mask
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        keep = sizes >= min_area
        keep[int(np.argmax(sizes))] = True
        keep[0] = False
        return keep[lab]
    if mode == "holes":
        bg = np.pad(~mask, 1, constant_values=True)
        lab, n = ndi.label(bg, _FOUR)
        if n <= 1:
            return mask
        sizes = np.bincount(lab.ravel())
        fill = sizes < min_area
        fill[0] = False
        fill[lab[0, 0]] = False  # the outside (the padding ring is one component)
        return mask | fill[lab][1:-1, 1:-1]
    raise ValueError(f"mode must be 'islands' or 'holes', got {mode!r}")


def clean_mask(mask: np.ndarray, min_hole_area: int = 0, min_island_area: int = 0) -> np.ndarray:
    """Fill holes and then remove islands smaller than the given areas.

    Parameters
    ----------
    mask : ndarray, (H, W) bool
    min_hole_area, min_island_area : int
        Smallest hole / island kept, in pixels (0: none removed).

    Returns
    -------
    ndarray, (H, W) bool
    """
    mask = remove_small_regions(mask, min_hole_area, "holes")
    return remove_small_regions(mask, min_island_area, "islands")


def trim(mask: np.ndarray, top_left: Tuple[int, int]):
    """Crop a bool mask to its tight box -> (mask, (row0, col0, row1, col1)) or None if empty.

    Parameters
    ----------
    mask : ndarray, (H, W) bool
    top_left : (int, int)
        (row, col) of `mask[0, 0]` in the frame the box is given in.

    Returns
    -------
    (ndarray, tuple of int) or None
        The (h, w) bool crop and its box (row0, col0, row1, col1), exclusive ends, offset by
        `top_left`; None when the mask is empty.
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return mask[r0:r1, c0:c1], (top_left[0] + r0, top_left[1] + c0,
                                top_left[0] + r1, top_left[1] + c1)


# --------------------------------------------------------------------------- painting
def _paint(shape, masks, boxes, order) -> np.ndarray:
    out = np.zeros(shape, np.uint32)
    for i in order:
        r0, c0, r1, c1 = boxes[i]
        view = out[r0:r1, c0:c1]
        view[masks[i]] = i + 1
    return out


def paint_labels(masks: Sequence[np.ndarray], boxes: Sequence[Sequence[int]],
                 scores: Sequence[float], shape: Tuple[int, int], min_visible: float = 0.5,
                 min_area: int = 0) -> Tuple[np.ndarray, List[int]]:
    """Resolve overlapping masks into one uint32 label image (rule: see the module doc).

    masks[i]: bool crop of mask i placed at boxes[i] (row0, col0, row1, col1), exclusive
    ends, inside `shape`. Returns (labels, kept) where label k (1-based) is mask kept[k-1];
    kept is in descending score order.

    Parameters
    ----------
    masks : sequence of ndarray, (h_i, w_i) bool
    boxes : sequence of (4,) int
    scores : sequence of float
        One per mask; higher is more confident.
    shape : (int, int)
        (rows, cols) of the label image.
    min_visible : float
        Least visible fraction of a mask's own area.
    min_area : int
        Least visible pixels of a mask.

    Returns
    -------
    labels : ndarray, (Y, X) uint32
        0 background, ids 1..K.
    kept : list of int
        The mask index of each id.
    """
    n = len(masks)
    if n == 0:
        return np.zeros(shape, np.uint32), []
    boxes = [tuple(int(v) for v in b) for b in boxes]
    area = np.array([int(m.sum()) for m in masks])
    score = np.asarray(scores, dtype=np.float64)
    # paint bottom to top: largest first; at equal area the better score later (on top)
    order = np.lexsort((score, -area))
    alive = area > 0
    for _ in range(n + 1):  # dropping only uncovers pixels: one repaint settles it
        painted = _paint(shape, masks, boxes, [i for i in order if alive[i]])
        visible = np.bincount(painted.ravel(), minlength=n + 1)[1:]
        ok = alive & (visible >= max(min_area, 1)) & (visible >= min_visible * area)
        if np.array_equal(ok, alive):
            break
        alive = ok
    kept = [int(i) for i in np.argsort(-score, kind="stable") if alive[i]]
    lut = np.zeros(n + 1, np.uint32)
    lut[np.asarray(kept, dtype=np.int64) + 1] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    return lut[painted], kept


def label_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) boxes (row0, col0, row1, col1) of ids 1..n of a 2D label image.

    Parameters
    ----------
    labels : ndarray, (Y, X) int
    n : int
        Number of ids.

    Returns
    -------
    ndarray, (n, 4) int64
        Row i is the box of id i + 1, exclusive ends; zeros for an absent id.
    """
    out = np.zeros((n, 4), np.int64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is not None:
            out[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    return out
