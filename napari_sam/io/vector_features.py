"""Objects of a label image as vector features: exact pixel-edge polygons with attributes.

`polygonize` turns each object into a shapely (Multi)Polygon that follows its pixel edges
(x = col, y = row; rasterio's polygonize when installed, else merged pixel runs);
`ObjectStats` sums pixel counts and band values window by window; `make_feature` and
`label_features` build the features that `napari_sam.io.vectors` writes (the attributes are
listed there).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .georef import GeoRef, require


def polygonize(labels: np.ndarray, offset: Tuple[int, int] = (0, 0)) -> Dict[int, object]:
    """{id: shapely Polygon | MultiPolygon} of every object of a (Y, X) integer label image,
    in pixel-edge coordinates x = col + offset[1], y = row + offset[0].

    Parameters
    ----------
    labels : ndarray
        (Y, X) integer labels, 0 background (ids below 2**31 with rasterio).
    offset : (int, int)
        (row, col) of `labels`' corner in the output coordinates.

    Returns
    -------
    dict of int to shapely.Geometry
        One Polygon or MultiPolygon per label id (4-connected pieces, holes kept).
    """
    shapely = require("shapely")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"polygons are made from 2D (Y, X) labels, got shape {labels.shape}")
    if not labels.any():
        return {}
    try:
        from rasterio import features
    except ImportError:
        parts = _runs_polygons(labels)
    else:
        if labels.max() >= 2 ** 31:
            raise ValueError("label ids above 2**31 - 1 cannot be polygonised; relabel first")
        parts: Dict[int, list] = {}
        for geom, value in features.shapes(labels.astype(np.int32), mask=labels > 0,
                                           connectivity=4):
            parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    out = {}
    for k, ps in parts.items():
        g = ps[0] if len(ps) == 1 else shapely.union_all(ps)
        if offset != (0, 0):
            g = shapely.affinity.translate(g, xoff=offset[1], yoff=offset[0])
        out[k] = g
    return out


def _runs_polygons(labels: np.ndarray) -> Dict[int, list]:
    """Fallback without rasterio: each object's row runs as boxes, merged with shapely."""
    import shapely

    h, w = labels.shape
    padded = np.zeros((h, w + 2), labels.dtype)
    padded[:, 1:-1] = labels
    change = np.diff(padded, axis=1) != 0
    boxes: Dict[int, list] = {}
    for r in range(h):
        edges = np.flatnonzero(change[r])
        for s, e in zip(edges[:-1], edges[1:]):
            v = int(labels[r, s])
            if v:
                boxes.setdefault(v, []).append((s, r, e, r + 1))
    return {k: [shapely.union_all(shapely.box(*np.array(b).T))] for k, b in boxes.items()}


def rings_valid(geom):
    """`geom` if valid, else its `make_valid` polygons (lines and points dropped).

    Parameters
    ----------
    geom : shapely.Geometry
        A (Multi)Polygon.

    Returns
    -------
    shapely.Geometry
        `geom` itself when valid, else the repaired (Multi)Polygon (or `make_valid`'s
        result when it holds no polygon).
    """
    import shapely

    if shapely.is_valid(geom):
        return geom
    fixed = shapely.make_valid(geom)
    polys = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in
             ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else fixed


# ---------------------------------------------------------------------------------------
# per-object sums (areas and band means) over windows

class ObjectStats:
    """Pixel counts and per-band sums of objects, added window by window.

    `count` maps label id -> pixels and `sums` label id -> float64 (C,) band sums; both
    grow with each `add`.

    Parameters
    ----------
    None
        It starts empty.
    """

    def __init__(self) -> None:
        self.count: Dict[int, int] = {}
        self.sums: Dict[int, np.ndarray] = {}

    def add(self, labels: np.ndarray, image: Optional[np.ndarray] = None) -> None:
        """labels (h, w); image (h, w) or (h, w, C) of the same window, or None.

        Parameters
        ----------
        labels : ndarray
            (h, w) integer labels of one window, 0 background.
        image : ndarray, optional
            (h, w) or (h, w, C) pixels of the same window, for band sums.
        """
        flat = np.asarray(labels).ravel()
        ids, inv, cnt = np.unique(flat, return_inverse=True, return_counts=True)
        pix = None
        if image is not None:
            img = np.asarray(image)
            pix = img.reshape(flat.shape[0], -1).astype(np.float64)
        for j, k in enumerate(ids.tolist()):
            if k == 0:
                continue
            self.count[k] = self.count.get(k, 0) + int(cnt[j])
        if pix is not None:
            sums = np.stack([np.bincount(inv, weights=pix[:, b], minlength=len(ids))
                             for b in range(pix.shape[1])], 1)
            for j, k in enumerate(ids.tolist()):
                if k:
                    self.sums[k] = self.sums.get(k, 0.0) + sums[j]

    def pop(self, k: int) -> Tuple[int, Optional[np.ndarray]]:
        """Take object `k`'s totals out (once its last window was added).

        Parameters
        ----------
        k : int
            Label id.

        Returns
        -------
        count : int
            Its pixels (0 when never seen).
        means : ndarray or None
            float64 (C,) mean per band; None without image or pixels.
        """
        n = self.count.pop(k, 0)
        s = self.sums.pop(k, None)
        return n, (None if s is None or n == 0 else s / n)


# ---------------------------------------------------------------------------------------
# features

def _band_names(n: int, names: Optional[Sequence[str]]) -> List[str]:
    names = list(names or [])
    out = []
    for b in range(n):
        raw = names[b] if b < len(names) and names[b] else f"b{b}"
        out.append("mean_" + "".join(ch if ch.isalnum() else "_" for ch in str(raw)).lower())
    return out


def make_feature(k: int, geom_px, area_px: int, means, georef: Optional[GeoRef],
                 record: Optional[dict], simplify: float = 0.0, simplify_units: str = "px",
                 band_names=None) -> dict:
    """One feature {"geometry": shapely geometry in map coordinates, "properties": {...}}
    from an object's pixel-edge polygon (see `napari_sam.io.vectors` for the attributes).

    Parameters
    ----------
    k : int
        Label id.
    geom_px : shapely.Geometry
        Its polygon in pixel-edge coordinates (x = col, y = row).
    area_px : int
        Its area in pixels.
    means : sequence of float or None
        Mean value per band, or None.
    georef : GeoRef or None
        Maps pixels to map coordinates; None keeps pixel coordinates.
    record : dict or None
        The generator's record ("predicted_iou", "stability").
    simplify : float
        Simplification tolerance (0: none).
    simplify_units : str
        "px" or "map".
    band_names : sequence of str, optional
        Names for the mean_<band> attributes (b0, b1, ... where missing).

    Returns
    -------
    dict
        {"geometry": valid shapely geometry, "properties": dict of attributes}.
    """
    import shapely

    if simplify and simplify_units == "px":
        geom_px = shapely.simplify(geom_px, simplify, preserve_topology=True)
    geom = geom_px
    scale = 1.0
    if georef is not None:
        a, b, c, d, e, f = georef.transform
        geom = shapely.affinity.affine_transform(geom_px, [a, b, d, e, c, f])
        scale = georef.pixel_size
    if simplify and simplify_units == "map":
        geom = shapely.simplify(geom, simplify, preserve_topology=True)
    geom = rings_valid(geom)
    record = record or {}
    props = {"id": int(k), "area_px": int(area_px),
             "area_map": float(area_px * (georef.pixel_area if georef else 1.0)),
             "perimeter_px": float(geom_px.length), "perimeter_map": float(geom_px.length *
                                                                            scale),
             "predicted_iou": float(record.get("predicted_iou", math.nan)),
             "stability": float(record.get("stability", math.nan))}
    if means is not None:
        props.update(zip(_band_names(len(means), band_names), (float(v) for v in means)))
    return {"geometry": geom, "properties": props}


def label_features(labels, image=None, georef: Optional[GeoRef] = None, records=None,
                   simplify: float = 0.0, simplify_units: str = "px", band_names=None
                   ) -> List[dict]:
    """Features of every object of an in-memory (Y, X) label image, in id order.

    image: (Y, X) or (Y, X, C) on the same grid, for the band means (or None).
    records: the generator's per-object dicts (id, predicted_iou, stability), or None.

    Parameters
    ----------
    labels : array_like
        (Y, X) integer labels, 0 background.
    image : array_like, optional
        (Y, X) or (Y, X, C) pixels.
    georef : GeoRef, optional
        Places the polygons in map coordinates (None: pixel-edge x = col, y = row).
    records : list of dict, optional
        Per-object records with "id".
    simplify : float
        Simplification tolerance (0: exact pixel edges).
    simplify_units : str
        "px" or "map".
    band_names : sequence of str, optional
        Names for the band means.

    Returns
    -------
    list of dict
        Features (see `make_feature`), in ascending id order.
    """
    labels = np.asarray(labels)
    stats = ObjectStats()
    stats.add(labels, None if image is None else np.asarray(image))
    by_id = {int(r["id"]): r for r in (records or [])}
    polys = polygonize(labels)
    out = []
    for k in sorted(polys):
        n, means = stats.pop(k)
        out.append(make_feature(k, polys[k], n, means, georef, by_id.get(k), simplify,
                                simplify_units, band_names))
    return out
