"""npe2 reader and writers for GeoJSON and GeoPackage polygons (no napari or Qt import).

Writers (one Labels layer each): `write_labels_geojson` (.geojson) and
`write_labels_gpkg` (.gpkg) write the layer's objects as polygons in the image's CRS; the
layer's metadata gives the georeferencing ("georef", set by the readers and carried by the
widgets from the image), band names and the generator's records. The labels are read block
by block (`napari_sam.tiled.vectors`), so a lazy multiscale layer is never loaded whole.

Reader: `get_reader(path)` claims `*.geojson` and `*.gpkg`. A file napari-sam wrote knows
its label grid and opens as a Labels layer on it, exactly the exported labels, placed on
the image by its map-unit scale and translate. Other files open as a Shapes layer of
polygons (exteriors; napari shapes have no holes) in world coordinates (row = minus the
northing, col = the easting), where georeferenced images read by napari-sam lie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

SUFFIXES = (".geojson", ".gpkg")


def _write(path: str, data: Any, meta: dict, kind: str) -> List[str]:
    from napari_sam.tiled.outputs import write_tiled_vectors

    from .io_hooks import _level0, _with_suffix, meta_from_layer

    labels = _level0(data)
    if len(labels.shape) != 2:
        raise ValueError(f"polygons are written from 2D labels; this layer has shape "
                         f"{tuple(labels.shape)}")
    info = meta_from_layer(meta, 2)
    extra = meta.get("metadata") or {}
    out = _with_suffix(path, ("." + kind,))
    write_tiled_vectors({kind: out}, labels, None, info, extra.get("records"),
                        overwrite=True)
    return [str(out)]


def write_labels_geojson(path: str, data: Any, meta: dict) -> List[str]:
    """npe2 writer: one Labels layer -> GeoJSON polygons (the image's CRS)."""
    return _write(path, data, meta, "geojson")


def write_labels_gpkg(path: str, data: Any, meta: dict) -> List[str]:
    """npe2 writer: one Labels layer -> GeoPackage polygons (the image's CRS)."""
    return _write(path, data, meta, "gpkg")


def vector_layer_data(path, kind: Optional[str] = None, shape=None, georef=None) -> tuple:
    """napari LayerData of a vector file: ("labels") on a grid (`shape` and `georef`, or
    the grid stored in the file), or ("shapes") polygons in world coordinates."""
    from napari_sam.io.images import ImageMeta
    from napari_sam.io.vector_read import read_grid, read_vectors, vectors_to_labels

    from .io_hooks import layer_kwargs

    p = Path(path)
    geoms, table, crs = read_vectors(p)
    grid = read_grid(p)
    if shape is None and grid is not None:
        shape, georef = grid
    if kind is None:
        kind = "labels" if shape is not None else "shapes"
    if kind == "labels":
        if shape is None:
            raise ValueError(f"{p} does not say which pixel grid it was made on; give the "
                             "image's shape and georef, or open it as shapes")
        labels = vectors_to_labels((geoms, table, crs), shape, georef)
        meta = ImageMeta(path=None, axes="YX", shape=tuple(shape), dtype=labels.dtype,
                         georef=georef)
        kwargs = layer_kwargs(meta, name=p.stem)
        kwargs["metadata"]["vector_source"] = str(p)
        return labels, kwargs, "labels"
    import numpy as np

    polys = []
    for g in geoms:
        for part in getattr(g, "geoms", [g]) if g is not None else []:
            if part.geom_type == "Polygon":
                xy = np.asarray(part.exterior.coords)[:-1]
                polys.append(np.stack([-xy[:, 1], xy[:, 0]], 1))
    width = 2 * (georef.pixel_size if georef is not None else 1.0)  # 2 pixels
    return polys, {"name": p.stem, "shape_type": "polygon", "edge_color": "yellow",
                   "face_color": "transparent", "edge_width": width,
                   "metadata": {"crs": crs, "vector_source": str(p)}}, "shapes"


def _read(path) -> List[tuple]:
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [vector_layer_data(p) for p in paths]


def get_reader(path) -> Optional[Callable[[Any], List[tuple]]]:
    """npe2 reader contribution: GeoJSON / GeoPackage files, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path or [])
    if not paths or not all(str(p).lower().endswith(SUFFIXES) and Path(p).is_file()
                            for p in paths):
        return None
    try:
        import pyogrio  # noqa: F401
        import shapely  # noqa: F401
    except ImportError:
        return None
    return _read
