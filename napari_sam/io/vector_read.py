"""Vector files back onto an image: read GeoJSON/GeoPackage, reproject, rasterise.

    geoms, table, crs = read_vectors("scene_objects.gpkg")
    labels = vectors_to_labels("scene_objects.gpkg", (rows, cols), meta.georef)

Geometries are reprojected to the image's CRS (pyproj) and mapped to pixel-edge (x = col,
y = row) coordinates through the inverse of its affine transform; a pixel belongs to a
polygon when its centre is inside, as GDAL rasterises, so the polygons written by
`napari_sam.io.vectors` give their label image back exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .georef import GeoRef, require, transform_coords



def read_vectors(path, layer=None):
    """-> (list of shapely geometries, {field: array}, crs text or None) of a GeoJSON,
    GeoPackage or any file GDAL reads.

    Parameters
    ----------
    path : str or os.PathLike
        The vector file (needs pyogrio and shapely: the geo extra).
    layer : str or int, optional
        The layer to read; None reads the first.

    Returns
    -------
    geoms : list of shapely.Geometry
        One per feature (None for a feature without geometry), in the file's CRS (x first).
    table : dict of str to ndarray
        The attribute fields, one entry per feature.
    crs : str or None
        The file's CRS as pyogrio reports it, None when it has none.
    """
    require("pyogrio")
    shapely = require("shapely")
    from pyogrio.raw import read

    if not Path(path).is_file():
        raise FileNotFoundError(2, f"{path}: no such file", str(path))
    meta, _, geoms, fields = read(str(path), layer=layer)
    table = {name: np.asarray(col) for name, col in zip(meta["fields"], fields)}
    return list(shapely.from_wkb(geoms)), table, meta.get("crs")


def geometries_to_pixels(geoms, src_crs, georef: Optional[GeoRef]):
    """Geometries in `src_crs` -> pixel-edge (x = col, y = row) geometries on `georef`'s
    grid (reprojected to its CRS first); unchanged without a georef.

    Parameters
    ----------
    geoms : sequence of shapely.Geometry or None
        Geometries in `src_crs`, x first.
    src_crs : str or None
        Their CRS; None takes them to be in `georef.crs`.
    georef : GeoRef or None
        The image's georeferencing.

    Returns
    -------
    list of shapely.Geometry or None
        The same geometries with x = col, y = row pixel-edge coordinates.
    """
    import shapely

    if georef is None:
        return list(geoms)
    inv = np.linalg.inv(georef.matrix)

    def fn(xy):
        x, y = transform_coords(xy[:, 0], xy[:, 1], src_crs, georef.crs)
        return np.stack([inv[0, 0] * x + inv[0, 1] * y + inv[0, 2],
                         inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]], 1)

    return [None if g is None else shapely.transform(g, fn) for g in geoms]


def _fill(out, geom, value, shape) -> None:
    """Set the pixels of `out` whose centre (r + .5, c + .5) lies in `geom` (holes excluded)
    to `value`, as GDAL rasterises; other pixels are left alone."""
    from skimage.draw import polygon as draw

    for part in getattr(geom, "geoms", [geom]):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        x0, y0, x1, y1 = part.bounds
        r0, c0 = max(int(math.floor(y0)), 0), max(int(math.floor(x0)), 0)
        r1, c1 = min(int(math.ceil(y1)), shape[0]), min(int(math.ceil(x1)), shape[1])
        if r1 <= r0 or c1 <= c0:
            continue
        local = np.zeros((r1 - r0, c1 - c0), bool)
        for k, ring in enumerate([part.exterior] + list(part.interiors)):
            xy = np.asarray(ring.coords)
            rr, cc = draw(xy[:, 1] - 0.5 - r0, xy[:, 0] - 0.5 - c0, local.shape)
            local[rr, cc] = k == 0
        out[r0:r1, c0:c1][local] = value


def vectors_to_labels(source, shape: Tuple[int, int], georef: Optional[GeoRef] = None,
                      id_field: Optional[str] = "id") -> np.ndarray:
    """Draw polygons onto a (Y, X) uint32 label grid: `source` is a vector file or
    (geoms, table, crs) as `read_vectors` returns. Ids from `id_field` (1.. in file order
    when absent). A pixel belongs to a polygon when its centre is inside, as in GDAL.

    Parameters
    ----------
    source : str, pathlib.Path or tuple
        A vector file, or (geoms, table, crs) from `read_vectors`.
    shape : (int, int)
        (Y, X) size of the label grid.
    georef : GeoRef, optional
        The grid's georeferencing; None takes the coordinates as pixels (x = col, y = row).
    id_field : str or None
        Field holding each polygon's label id; None numbers them 1, 2, ...

    Returns
    -------
    ndarray
        uint32 (Y, X) labels, 0 background; later polygons overwrite earlier ones.
    """
    geoms, table, crs = read_vectors(source) if isinstance(source, (str, Path)) else source
    ids = table.get(id_field) if id_field else None
    ids = np.arange(1, len(geoms) + 1) if ids is None else np.asarray(ids, np.int64)
    out = np.zeros(tuple(shape), np.uint32)
    for g, k in zip(geometries_to_pixels(geoms, crs, georef), ids):
        if g is not None:
            _fill(out, g, np.uint32(k), tuple(shape))
    return out


def read_grid(path):
    """(shape (rows, cols), GeoRef or None) of the label grid a napari-sam vector file was
    made from, or None when the file does not say (written by other software).

    Parameters
    ----------
    path : str or os.PathLike
        A GeoJSON (metadata in its first 4 kB) or GeoPackage written by `napari_sam.io.vectors`.

    Returns
    -------
    (shape, georef) or None
        shape is (rows, cols) i.e. (Y, X); georef a GeoRef or None.
    """
    import json

    path = Path(path)
    raw = None
    if path.suffix.lower() in (".geojson", ".json"):
        with open(path, "r", encoding="utf-8") as f:
            head = f.read(4096)
        key = '"napari_sam_grid": '
        at = head.find(key)
        if at >= 0:
            try:
                raw, _ = json.JSONDecoder().raw_decode(head[at + len(key):])
            except ValueError:
                raw = None
    else:
        require("pyogrio")
        import pyogrio

        try:
            text = (pyogrio.read_info(str(path)).get("layer_metadata") or {}).get(
                "napari_sam_grid")
            raw = json.loads(text) if text else None
        except Exception:  # noqa: BLE001 - not ours, or unreadable metadata
            raw = None
    if not raw or "shape" not in raw:
        return None
    georef = GeoRef.from_dict(raw) if "transform" in raw else None
    return tuple(int(v) for v in raw["shape"]), georef
