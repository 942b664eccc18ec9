"""Writing the results of a tiled run without loading the label image.

`write_labels_tif_chunked` streams a chunked (zarr) label image into a tiled BigTIFF, 512 x
512 tiles, with the same metadata `napari_sam.io.labels.write_labels_tif` writes (OME axes,
pixel size, GeoTIFF tags): that function takes an in-memory array, which a 20k x 20k
uint32 label image (1.6 GB) should not be. `records_table` turns the stitched records into
the object table columns of `napari_sam.io.tables` that need no pixels.
`write_tiled_vectors` writes GeoJSON / GeoPackage polygons block by block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

TILE = 512


def write_labels_tif_chunked(path, labels, meta=None, overwrite: bool = False) -> Path:
    """Write a 2D uint32 label array (anything with numpy slicing) tile by tile.

    Parameters
    ----------
    path : str or Path
        The TIFF to write (atomically).
    labels : array_like, (Y, X) uint32
        numpy, zarr, dask, ...; read 512 x 512 at a time.
    meta : ImageMeta, optional
        The image's metadata: pixel size (row, col) in µm and GeoTIFF tags are written.
    overwrite : bool
        Replace an existing file (else an error).

    Returns
    -------
    Path
        `path`.
    """
    import tifffile

    from ..io.atomic import atomic_path
    from ..io.labels import _geo_extratags

    h, w = labels.shape
    if np.dtype(labels.dtype) != np.uint32:
        raise ValueError(f"labels must be uint32, got {labels.dtype}")
    ome = {"axes": "YX"}
    kwargs = {}
    if meta is not None and meta.pixel_size:
        py, px = (float(v) for v in meta.pixel_size)
        if py > 0 and px > 0:
            ome.update(PhysicalSizeY=py, PhysicalSizeYUnit="µm",
                       PhysicalSizeX=px, PhysicalSizeXUnit="µm")
            kwargs.update(resolution=(1e4 / px, 1e4 / py), resolutionunit="CENTIMETER")

    def tiles():
        for r in range(0, h, TILE):
            for c in range(0, w, TILE):
                part = np.asarray(labels[r:r + TILE, c:c + TILE])
                if part.shape != (TILE, TILE):
                    part = np.pad(part, ((0, TILE - part.shape[0]), (0, TILE - part.shape[1])))
                yield part

    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=(h, w), dtype=np.uint32, tile=(TILE, TILE),
                         bigtiff=h * w * 4 > 2 ** 31, compression="zlib",
                         photometric="minisblack", ome=True, metadata=ome,
                         extratags=_geo_extratags(meta.geo if meta is not None else None),
                         software="napari-sam", **kwargs)
    return path


def records_table(records: List[dict], pixel_size=None) -> Dict[str, np.ndarray]:
    """Columns label, area, [area_um2], centroid_row/col, bbox_row0/col0/row1/col1, and the
    generator's predicted_iou/stability, from stitched records (no pixels needed).

    Parameters
    ----------
    records : list of dict
        "id", "area", "centroid" (row, col), "bbox" (row0, col0, row1, col1), and optionally
        "predicted_iou" and "stability".
    pixel_size : (float, float), optional
        (row, col) pixel size in µm; adds area_um2.

    Returns
    -------
    dict of str to ndarray, (N,)
        int64 label, area and bbox columns, float64 centroids and scores (NaN when missing).
    """
    n = len(records)
    get = lambda k, i: np.array([r[k][i] for r in records], np.float64 if k == "centroid"  # noqa: E731
                                else np.int64).reshape(n)
    table = {"label": np.array([r["id"] for r in records], np.int64),
             "area": np.array([r["area"] for r in records], np.int64)}
    if pixel_size:
        table["area_um2"] = table["area"] * float(pixel_size[0]) * float(pixel_size[1])
    table.update(centroid_row=get("centroid", 0), centroid_col=get("centroid", 1),
                 bbox_row0=get("bbox", 0), bbox_col0=get("bbox", 1),
                 bbox_row1=get("bbox", 2), bbox_col1=get("bbox", 3))
    for k in ("predicted_iou", "stability"):
        table[k] = np.array([r.get(k, np.nan) for r in records], np.float64)
    return table


def write_tiled_vectors(paths, labels, image, meta, records, crs: str = "native",
                        simplify: float = 0.0, simplify_units: str = "px",
                        overwrite: bool = False, block: int = 1024):
    """Polygons of a large (Y, X) label image (zarr, lazy) -> {"geojson"|"gpkg": path},
    streamed block by block (`napari_sam.tiled.vectors.tiled_features`); `image` (every
    band, lazy) gives the band means.

    Parameters
    ----------
    paths : dict of str to Path
        {"geojson": path, "gpkg": path}, either or both.
    labels : array_like, (Y, X) uint32
    image : array_like, (Y, X) or (Y, X, C), or None
        On the labels' grid; None: no band means.
    meta : ImageMeta or None
        Its georeferencing and band names.
    records : list of dict or None
        Per-object id, bbox (row0, col0, row1, col1) and scores.
    crs : str
        "native" (the image's CRS) or any pyproj CRS text.
    simplify : float
        Simplification tolerance (0: none).
    simplify_units : str
        "px" or "map".
    overwrite : bool
        Replace existing files.
    block : int
        Block side in pixels.

    Returns
    -------
    list of Path
        The files written.
    """
    from ..io.vectors import output_crs, write_vectors
    from .vectors import tiled_features

    georef = getattr(meta, "georef", None)
    output_crs(georef, crs)
    feats = tiled_features(labels, image, georef, records, block=block, simplify=simplify,
                           simplify_units=simplify_units,
                           band_names=getattr(meta, "band_names", None))
    return write_vectors(paths, feats, georef, crs, overwrite, shape=tuple(labels.shape[:2]))
