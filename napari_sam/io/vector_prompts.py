"""Prompts from vector files: points and boxes from a GeoJSON or GeoPackage in any CRS.

    vp = read_vector_prompts("buildings.gpkg", meta.georef, shape=(rows, cols))
    vp.boxes          # float64 (M, 4) (row0, col0, row1, col1), image pixels
    vp.points         # float64 (N, 2) (row, col); vp.point_labels int (N,): 1 object, 0 not

Geometries are reprojected to the image's CRS and mapped to pixel coordinates (see
`napari_sam.io.vector_read.geometries_to_pixels`). Every polygon (or line) becomes the box
around it, clipped to the image; every point is a positive prompt unless a field named
`label`, `positive` or `prompt_label` says 0 / false / "background". Prompts wholly outside
the image are dropped and counted in `outside`. Files without a CRS are taken to be in the
image's CRS (or in pixel coordinates x = col, y = row when the image has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .georef import GeoRef
from .vector_read import geometries_to_pixels, read_vectors

_LABEL_FIELDS = ("label", "positive", "prompt_label")
_NEGATIVE = {"0", "false", "no", "background", "negative", "bg"}


@dataclass
class VectorPrompts:
    """Prompts read from a vector file, in image pixel coordinates.

    Parameters
    ----------
    boxes : ndarray
        float64 (M, 4) (row0, col0, row1, col1), clipped to the image.
    points : ndarray
        float64 (N, 2) (row, col).
    point_labels : ndarray
        int64 (N,): 1 object, 0 background.
    outside : int
        Prompts dropped because they lie wholly outside the image.
    """

    boxes: np.ndarray          # float64 (M, 4) (row0, col0, row1, col1)
    points: np.ndarray         # float64 (N, 2) (row, col)
    point_labels: np.ndarray   # int64 (N,) 1 object / 0 background
    outside: int = 0           # prompts dropped: wholly outside the image

    def __len__(self) -> int:
        return len(self.boxes) + int((self.point_labels == 1).sum())


def _point_label(table, i) -> int:
    for name in _LABEL_FIELDS:
        col = table.get(name)
        if col is not None:
            v = col[i]
            return 0 if str(v).strip().lower() in _NEGATIVE or v is False else 1
    return 1


def read_vector_prompts(path, georef: Optional[GeoRef] = None,
                        shape: Optional[Tuple[int, int]] = None) -> VectorPrompts:
    """Points and boxes of a vector file on an image's pixel grid (module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        A GeoJSON, GeoPackage or other file `read_vectors` reads.
    georef : GeoRef, optional
        The image's georeferencing; None takes the file's coordinates as pixels
        (x = col, y = row).
    shape : (int, int), optional
        The image's (Y, X) size, to clip boxes and drop prompts outside; None: no limit.

    Returns
    -------
    VectorPrompts
    """
    geoms, table, crs = read_vectors(path)
    if crs is None and georef is not None:
        crs = georef.crs
    if crs is not None and georef is not None and georef.crs is None:
        raise ValueError(f"{path} is in {crs}, but the image has no CRS to place it on; "
                         "use a georeferenced image (GeoTIFF)")
    pix = geometries_to_pixels(geoms, crs, georef) if georef is not None else geoms
    h, w = shape if shape is not None else (np.inf, np.inf)
    boxes, points, labels, outside = [], [], [], 0
    for i, g in enumerate(pix):
        if g is None or g.is_empty:
            continue
        if g.geom_type in ("Point", "MultiPoint"):
            for p in getattr(g, "geoms", [g]):
                r, c = p.y, p.x
                if 0 <= r < h and 0 <= c < w:
                    points.append((r, c))
                    labels.append(_point_label(table, i))
                else:
                    outside += 1
            continue
        x0, y0, x1, y1 = g.bounds
        r0, c0, r1, c1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        if r1 <= r0 or c1 <= c0:
            outside += 1
            continue
        boxes.append((r0, c0, r1, c1))
    return VectorPrompts(np.asarray(boxes, np.float64).reshape(-1, 4),
                         np.asarray(points, np.float64).reshape(-1, 2),
                         np.asarray(labels, np.int64), outside)
