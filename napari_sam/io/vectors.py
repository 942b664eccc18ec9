"""Objects as vector features: polygons with attributes, GeoJSON and GeoPackage files.

    feats = label_features(labels, image, georef=meta.georef, records=records)
    write_vectors({"gpkg": "scene_objects.gpkg", "geojson": "scene_objects.geojson"}, feats,
                  georef=meta.georef, crs="native")          # or crs="EPSG:4326"
    geoms, table, crs = read_vectors("scene_objects.gpkg")
    labels2 = vectors_to_labels("scene_objects.gpkg", labels.shape, meta.georef)  # == labels

Polygons follow the pixel edges of each object exactly (holes kept; an object in several
pieces is a MultiPolygon), so drawing them back on the same grid gives the label image
again. `simplify` (in pixels, or in map units with `simplify_units="map"`) smooths them
with topology preserved; every written geometry is valid (`shapely.is_valid`), repaired
with `make_valid` otherwise. Coordinates: the image's map CRS through `georef` (pixel-edge
(row, col) -> (x, y), see `napari_sam.io.georef`), or, without a georef, pixel-edge
coordinates x = col, y = row with no CRS.

Attributes per feature: id, area_px, area_map, perimeter_px, perimeter_map (map units
of the output CRS before any reprojection; equal to the px values without georef),
predicted_iou and stability (the generator's scores, NaN when unknown), and mean_<band>
(the object's mean value per image band; bands named by `band_names` or b0, b1, ...).

The polygons and features are made in `napari_sam.io.vector_features`; this module writes
them. Polygons come from rasterio's (GDAL's) polygonize when it is installed, else from the
object's pixel runs merged with shapely. Files are written atomically; GeoPackages through
pyogrio in batches, GeoJSON as streamed text (RFC 7946 for EPSG:4326; other CRSs carry a
"crs" member, which GDAL and QGIS read).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .georef import GeoRef, require, transform_coords
# labels -> features live in vector_features; imported here, where they always were
from .vector_features import (ObjectStats, label_features, make_feature,  # noqa: F401
                              polygonize, rings_valid)
from .vector_read import read_vectors, vectors_to_labels  # noqa: F401 (public here too)

VECTOR_FORMATS = ("geojson", "gpkg")
SUFFIX = {"geojson": "_objects.geojson", "gpkg": "_objects.gpkg"}
BATCH = 2000


# ---------------------------------------------------------------------------------------
# writing

def output_crs(georef: Optional[GeoRef], crs: str = "native") -> Optional[str]:
    """The CRS features are written in: the image's ("native"), or any pyproj CRS text.

    Parameters
    ----------
    georef : GeoRef or None
        The image's georeferencing.
    crs : str
        "native" (or None) for the image's CRS, else any CRS pyproj reads ("EPSG:4326");
        the latter needs an image with a CRS (ValueError otherwise).

    Returns
    -------
    str or None
        The output CRS; None for pixel coordinates (no georef, or one without a CRS).
    """
    if crs in (None, "native"):
        return georef.crs if georef is not None else None
    if georef is None or georef.crs is None:
        raise ValueError(f"crs={crs!r}: the image has no CRS to reproject from; write it with "
                         "crs='native' (pixel coordinates) or georeference the image")
    return str(crs)


def _reproject(geom, src, dst):
    import shapely

    if dst is None or src is None or str(src) == str(dst):
        return geom

    def fn(xy):
        x, y = transform_coords(xy[:, 0], xy[:, 1], src, dst)
        return np.stack([x, y], 1)

    return rings_valid(shapely.transform(geom, fn))


def _is_4326(crs) -> bool:
    return str(crs).upper() in ("EPSG:4326", "OGC:CRS84")


GRID_KEY = "napari_sam_grid"  # the label grid the polygons came from (see vector_read)


class _GeoJSONSink:
    def __init__(self, tmp, crs, grid=None) -> None:
        self.f = open(tmp, "w", encoding="utf-8")
        self.f.write('{"type": "FeatureCollection",')
        if grid is not None:
            self.f.write(f' "{GRID_KEY}": {json.dumps(grid)},')
        if crs and not _is_4326(crs):
            name = (f"urn:ogc:def:crs:EPSG::{crs.split(':', 1)[1]}"
                    if crs.upper().startswith("EPSG:") else crs)
            self.f.write(' "crs": ' + json.dumps({"type": "name",
                                                  "properties": {"name": name}}) + ",")
        self.f.write('\n"features": [')
        self.first = True

    def add(self, feats: List[dict]) -> None:
        import shapely

        for ft in feats:
            props = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in ft["properties"].items()}
            text = json.dumps({"type": "Feature", "properties": props,
                               "geometry": json.loads(shapely.to_geojson(ft["geometry"]))})
            self.f.write(("\n" if self.first else ",\n") + text)
            self.first = False

    def close(self) -> None:
        self.f.write("\n]}\n")
        self.f.close()


class _GPKGSink:
    def __init__(self, tmp, crs, grid=None) -> None:
        require("pyogrio")
        import pyogrio.raw

        self.raw = pyogrio.raw
        self.tmp, self.crs, self.started = str(tmp), crs, False
        self.meta = None if grid is None else {GRID_KEY: json.dumps(grid)}
        Path(tmp).unlink(missing_ok=True)  # GDAL creates the file itself

    def add(self, feats: List[dict]) -> None:
        import shapely

        if not feats and self.started:
            return
        names = list(feats[0]["properties"]) if feats else ["id"]
        geoms = shapely.to_wkb([f["geometry"] for f in feats]) if feats else \
            np.zeros(0, object)
        data = [np.array([f["properties"].get(n) for f in feats],
                         np.int64 if n in ("id", "area_px") else np.float64) for n in names]
        self.raw.write(self.tmp, geoms, data, names, driver="GPKG", layer="objects",
                           geometry_type="MultiPolygon", promote_to_multi=True,
                           crs=self.crs, append=self.started,
                           layer_metadata=None if self.started else self.meta)
        self.started = True

    def close(self) -> None:
        if not self.started:
            self.add([])


def write_vectors(paths: Dict[str, Path], features: Iterable[dict],
                  georef: Optional[GeoRef] = None, crs: str = "native",
                  overwrite: bool = False, shape: Optional[Tuple[int, int]] = None
                  ) -> List[Path]:
    """Write features (from `label_features` or any iterable of them, consumed in batches)
    to {"geojson": path, "gpkg": path}; returns the paths. Nothing is left half-written.

    shape: (rows, cols) of the label image the features came from; stored with `georef`
    in the file (GeoJSON member / GeoPackage layer metadata "napari_sam_grid") so that a
    reader can draw the polygons back as labels on the same grid.

    Parameters
    ----------
    paths : dict of str to pathlib.Path
        Output file per format, keys from VECTOR_FORMATS ("geojson", "gpkg").
    features : iterable of dict
        {"geometry": shapely geometry in the image's map (or pixel-edge x = col, y = row)
        coordinates, "properties": dict}.
    georef : GeoRef, optional
        The image's georeferencing (source CRS of the geometries).
    crs : str
        Output CRS, see `output_crs`.
    overwrite : bool
        Replace existing files.
    shape : (int, int), optional
        (Y, X) of the label grid, stored in the files.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of `paths`.
    """
    from contextlib import ExitStack

    from .atomic import atomic_path

    bad = [k for k in paths if k not in VECTOR_FORMATS]
    if bad:
        raise ValueError(f"unknown vector format(s) {bad}; choose from {VECTOR_FORMATS}")
    src = georef.crs if georef is not None else None
    dst = output_crs(georef, crs)
    if "gpkg" in paths:
        require("pyogrio")
    require("shapely")
    grid = None if shape is None else {"shape": [int(v) for v in shape[:2]],
                                       **(georef.to_dict() if georef is not None else {})}
    with ExitStack() as stack:
        sinks = []
        for kind, path in paths.items():
            tmp = stack.enter_context(atomic_path(Path(path), overwrite))
            sinks.append((_GeoJSONSink if kind == "geojson" else _GPKGSink)(tmp, dst, grid))
        batch: List[dict] = []

        def flush():
            for s in sinks:
                s.add(batch)
            batch.clear()

        for ft in features:
            batch.append(dict(ft, geometry=_reproject(ft["geometry"], src, dst)))
            if len(batch) >= BATCH:
                flush()
        flush()
        for s in sinks:
            s.close()
    return [Path(p) for p in paths.values()]


def write_label_vectors(paths: Dict[str, Path], labels, meta=None, records=None, image=None,
                        crs: str = "native", simplify: float = 0.0, simplify_units: str = "px",
                        overwrite: bool = False) -> List[Path]:
    """Polygons of an in-memory (Y, X) label image -> {"geojson": path, "gpkg": path}.

    meta: the image's ImageMeta (its `georef` places the polygons, `band_names` name the
    band means); image: (Y, X[, C]) pixels for the means, or None.

    Parameters
    ----------
    paths : dict of str to pathlib.Path
        Output file per format ("geojson", "gpkg").
    labels : array_like
        (Y, X) integer labels, 0 background.
    meta : ImageMeta, optional
        The image's metadata (None: pixel coordinates, bands b0, b1, ...).
    records : list of dict, optional
        Per-object {"id", "predicted_iou", "stability"}.
    image : array_like, optional
        (Y, X) or (Y, X, C) pixels; ignored when its Y, X differ from `labels`.
    crs : str
        Output CRS, see `output_crs`.
    simplify : float
        Simplification tolerance (0: exact pixel edges).
    simplify_units : str
        "px" or "map": the units of `simplify`.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"GeoJSON/GeoPackage output needs a 2D image; these labels have "
                         f"shape {labels.shape} (write tif/coco/csv for stacks)")
    if image is not None and np.asarray(image).shape[:2] != labels.shape:
        image = None
    georef = getattr(meta, "georef", None)
    output_crs(georef, crs)  # fails early, before any work, for a CRS it cannot write
    feats = label_features(labels, image, georef, records, simplify, simplify_units,
                           getattr(meta, "band_names", None))
    return write_vectors(paths, feats, georef, crs, overwrite, shape=labels.shape)
