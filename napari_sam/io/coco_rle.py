"""COCO run-length encoding (RLE) of label images, both ways, for `napari_sam.io.coco`.

COCO RLE numbers the pixels of an h x w image down the columns (Fortran order) and stores
alternating run lengths of background and object, starting with background. Encoding works
on each object's bounding-box crop (no full-size mask per object); decoding turns counts
straight into (row, col) pixel indices. Compressed RLE strings are decoded here (the format
of pycocotools' rleFrString) and encoded with pycocotools; polygon segmentations are
rasterised by pycocotools after `coco_checks.checked_polygons`.
"""

from __future__ import annotations

from typing import List, Mapping, Tuple

import numpy as np

from .coco_checks import checked_polygons


def _objects(labels2d: np.ndarray):
    """[(label id, (row slice, col slice))] for the objects of a 2D label image."""
    from scipy import ndimage

    if not labels2d.any():
        return []
    top = int(labels2d.max())
    if top <= max(1_000_000, labels2d.size):
        found = ndimage.find_objects(labels2d)
        return [(i + 1, sl) for i, sl in enumerate(found) if sl is not None]
    ids, inverse = np.unique(labels2d, return_inverse=True)  # sparse huge ids
    dense = inverse.reshape(labels2d.shape).astype(np.int64) + (0 if ids[0] == 0 else 1)
    offset = 0 if ids[0] == 0 else 1
    found = ndimage.find_objects(dense)
    return [(int(ids[i + 1 - offset]), sl) for i, sl in enumerate(found) if sl is not None]


def _rle_counts(mask: np.ndarray, r0: int, c0: int, height: int, width: int) -> List[int]:
    """Uncompressed COCO RLE counts of a mask crop placed at (r0, c0) in an h x w image.

    COCO runs go down the columns (Fortran order) and start with a run of zeros.
    """
    cols = np.zeros((mask.shape[1], mask.shape[0] + 2), np.int8)
    cols[:, 1:-1] = mask.T
    step = np.diff(cols, axis=1)
    sc, sr = np.nonzero(step == 1)
    ec, er = np.nonzero(step == -1)
    starts = (c0 + sc) * height + r0 + sr
    ends = (c0 + ec) * height + r0 + er
    if starts.size > 1:  # a run leaving the bottom of one column into the top of the next
        joined = starts[1:] == ends[:-1]
        if joined.any():
            starts = starts[np.concatenate([[True], ~joined])]
            ends = ends[np.concatenate([~joined, [True]])]
    counts = np.empty(2 * starts.size + 1, np.int64)
    counts[0] = starts[0] if starts.size else height * width
    if starts.size:
        counts[1::2] = ends - starts
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = height * width - ends[-1]
        if counts[-1] == 0:
            counts = counts[:-1]
    return counts.tolist()


def _compress(counts: List[int], height: int, width: int) -> dict:
    from pycocotools import mask as mask_utils

    return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)


def _rle_to_json(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(v) for v in rle["size"]], "counts": counts}


def _counts_from_string(text) -> List[int]:
    """Uncompressed counts of a COCO compressed RLE string (pycocotools' rleFrString)."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: List[int] = []
    p, n = 0, len(data)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _rle_counts_of(segmentation, height: int, width: int) -> List[int]:
    """Uncompressed RLE counts of a COCO segmentation (RLE of either kind, or polygons)."""
    if isinstance(segmentation, Mapping):
        counts = segmentation.get("counts")
        size = [int(v) for v in segmentation.get("size", (height, width))]
        if size != [height, width]:
            raise ValueError(f"segmentation size {size} differs from the image's "
                             f"{[height, width]}")
        if isinstance(counts, list):
            try:
                return [int(c) for c in counts]
            except (TypeError, ValueError, OverflowError):
                raise ValueError("RLE counts must be whole numbers") from None
        if isinstance(counts, (str, bytes)):
            return _counts_from_string(counts)
        raise ValueError("RLE segmentation without counts")
    if isinstance(segmentation, list):
        from pycocotools import mask as mask_utils

        polygons = checked_polygons(segmentation, height, width)
        if not polygons:
            return [height * width]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        return _counts_from_string(rle["counts"])
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


def _pixels(segmentation, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels of a segmentation, without a full-size mask."""
    counts = np.asarray(_rle_counts_of(segmentation, height, width), np.int64)
    if counts.size and (counts.min() < 0 or counts.sum() != height * width):
        raise ValueError(f"RLE counts do not cover a {height} x {width} image")
    ends = np.cumsum(counts)
    starts = ends - counts
    starts, lengths = starts[1::2], counts[1::2]  # odd runs are the object
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    linear = offsets + np.arange(total)  # column-major (Fortran) pixel numbers
    return linear % height, linear // height
