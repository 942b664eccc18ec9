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

Polygons come from rasterio's (GDAL's) polygonize when it is installed, else from the
object's pixel runs merged with shapely. Files are written atomically; GeoPackages through
pyogrio in batches, GeoJSON as streamed text (RFC 7946 for EPSG:4326; other CRSs carry a
"crs" member, which GDAL and QGIS read).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .georef import GeoRef, require, transform_coords
from .vector_read import read_vectors, vectors_to_labels  # noqa: F401 (public here too)

VECTOR_FORMATS = ("geojson", "gpkg")
SUFFIX = {"geojson": "_objects.geojson", "gpkg": "_objects.gpkg"}
BATCH = 2000


# ---------------------------------------------------------------------------------------
# labels -> polygons (pixel-edge coordinates, x = col, y = row)

def polygonize(labels: np.ndarray, offset: Tuple[int, int] = (0, 0)) -> Dict[int, object]:
    """{id: shapely Polygon | MultiPolygon} of every object of a (Y, X) integer label image,
    in pixel-edge coordinates x = col + offset[1], y = row + offset[0]."""
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
    """`geom` if valid, else its `make_valid` polygons (lines and points dropped)."""
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
    """Pixel counts and per-band sums of objects, added window by window."""

    def __init__(self) -> None:
        self.count: Dict[int, int] = {}
        self.sums: Dict[int, np.ndarray] = {}

    def add(self, labels: np.ndarray, image: Optional[np.ndarray] = None) -> None:
        """labels (h, w); image (h, w) or (h, w, C) of the same window, or None."""
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
    from an object's pixel-edge polygon (see the module docstring for the attributes)."""
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


# ---------------------------------------------------------------------------------------
# writing

def output_crs(georef: Optional[GeoRef], crs: str = "native") -> Optional[str]:
    """The CRS features are written in: the image's ("native"), or any pyproj CRS text."""
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
    reader can draw the polygons back as labels on the same grid."""
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
