"""npe2 readers and writers: plain functions, importing neither napari nor Qt.

Writers (npe2 single-layer signature `(path, data, meta) -> [written paths]`, one Labels
layer each):
  write_labels_tif   -> compressed uint32 TIFF       (extensions .tif, .tiff)
  write_labels_coco  -> COCO JSON with RLE masks     (extension .json)
  write_labels_csv   -> per-object measurements CSV  (extension .csv)
A path without an extension gets the writer's default one. The layer's scale becomes the
pixel size in µm (its units are honoured when napari gives them; plain scale values are
taken as µm; a scale of 1 means "unknown"). The layer's metadata may carry "geo" (GeoTIFF
tags, see `napari_sam.io.images.GEO_TAGS`), "pixel_size", "z_size", "source" (the image
path; names the COCO image) and "records" (per-object scores, exported into COCO); the
reader and `layer_kwargs` fill them in. napari's save dialog asks before replacing a file,
so these writers replace existing files.

Reader: `get_reader(path)` claims only the project's outputs, `*_labels.tif(f)` and
`*_coco.json` files that look like COCO, and returns None for everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

LABELS_SUFFIXES = ("_labels.tif", "_labels.tiff")
COCO_SUFFIX = "_coco.json"

_UNIT_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4,
            "meter": 1e6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


# ---------------------------------------------------------------------------------------
# layer <-> ImageMeta

def _level0(data):
    """Multiscale layer data is a list of levels: export the full resolution one."""
    if isinstance(data, (list, tuple)):
        return data[0]
    return data


def _unit_factor(unit) -> Optional[float]:
    """µm per unit, 1.0 for napari's default "pixel" (plain numbers are taken as µm)."""
    if unit is None:
        return 1.0
    name = str(unit).strip().lower().replace("μ", "µ")
    if name in ("pixel", "px", "", "none", "dimensionless"):
        return 1.0
    return _UNIT_UM.get(name)


def meta_from_layer(meta: Dict[str, Any], ndim: int):
    """An ImageMeta for a layer's (data, meta) as napari hands them to writers."""
    from napari_sam.io.images import ImageMeta
    from napari_sam.io.labels import labels_axes

    extra = dict(meta.get("metadata") or {})
    scale = meta.get("scale")
    scale = list(scale if scale is not None else [1.0] * ndim)[-ndim:]
    units = meta.get("units")
    units = list(units)[-ndim:] if units is not None and not isinstance(units, str) else \
        [units] * ndim
    factors = [_unit_factor(u) for u in units]
    pixel_size = extra.get("pixel_size")
    if pixel_size is None and ndim >= 2 and None not in factors[-2:]:
        py, px = (float(s) * f for s, f in zip(scale[-2:], factors[-2:]))
        if (py, px) != (1.0, 1.0) or any(f != 1.0 for f in factors[-2:]):
            pixel_size = (py, px)
    georef = extra.get("georef")
    if georef is not None:  # the scale is in map units, not µm
        from napari_sam.io.georef import GeoRef

        georef = GeoRef.from_dict(georef)
        pixel_size = extra.get("pixel_size")
    z_size = extra.get("z_size")
    axes = labels_axes(ndim) if 2 <= ndim <= 4 else None
    if z_size is None and axes and "Z" in axes and factors[-3] is not None:
        zs = float(scale[-3]) * factors[-3]
        z_size = zs if zs != 1.0 or factors[-3] != 1.0 else None
    return ImageMeta(path=extra.get("source"), axes=axes or "", shape=(), dtype=None,
                     pixel_size=tuple(pixel_size) if pixel_size else None, z_size=z_size,
                     geo=extra.get("geo"), georef=georef,
                     band_names=extra.get("band_names"), nodata=extra.get("nodata"))


def layer_kwargs(meta, name: Optional[str] = None) -> Dict[str, Any]:
    """napari layer keyword arguments for an image or labels described by `meta`.

    Puts the pixel size into `scale` (µm) and the things the writers carry back into the
    file (pixel size, Z size, GeoTIFF tags, source path) into `metadata`. A north-up
    georeferenced image without a physical pixel size gets scale and translate in map units
    instead (world col = easting, world row = minus the northing:
    `GeoRef.napari_scale_translate`) and its georef, band names and nodata in `metadata`.
    """
    axes = meta.axes.replace("C", "")
    scale = [1.0] * len(axes)
    if meta.pixel_size:
        scale[-2:] = [float(v) for v in meta.pixel_size]
    if meta.z_size and "Z" in axes:
        scale[axes.index("Z")] = float(meta.z_size)
    kwargs: Dict[str, Any] = {
        "scale": tuple(scale),
        "metadata": {"pixel_size": meta.pixel_size, "z_size": meta.z_size, "geo": meta.geo,
                     "source": meta.path, "axes": meta.axes},
    }
    georef = getattr(meta, "georef", None)
    if georef is not None:
        kwargs["metadata"].update(georef=georef.to_dict(), band_names=meta.band_names,
                                  nodata=meta.nodata)
        st = georef.napari_scale_translate()
        if st is not None and len(axes) >= 2 and not meta.pixel_size:
            kwargs["scale"] = tuple(scale[:-2]) + st[0]
            kwargs["translate"] = (0.0,) * (len(axes) - 2) + st[1]
    if name is not None:
        kwargs["name"] = name
    return kwargs


def _with_suffix(path: str, suffixes: Sequence[str]) -> Path:
    p = Path(path)
    if not p.suffix:
        p = p.with_name(p.name + suffixes[0])
    return p


# ---------------------------------------------------------------------------------------
# writers

def write_labels_tif(path: str, data: Any, meta: dict) -> List[str]:
    """npe2 writer: one Labels layer -> compressed uint32 TIFF."""
    from napari_sam.io.labels import write_labels_tif as write

    labels = _level0(data)
    out = write(_with_suffix(path, (".tif", ".tiff")), labels,
                meta_from_layer(meta, len(labels.shape)), overwrite=True)
    return [str(out)]


def write_labels_coco(path: str, data: Any, meta: dict) -> List[str]:
    """npe2 writer: one Labels layer -> COCO JSON (stacks: one COCO image per slice)."""
    from napari_sam.io.coco import write_coco

    extra = meta.get("metadata") or {}
    source = extra.get("source")
    image_name = Path(source).name if source else str(meta.get("name") or "labels")
    out = write_coco(_with_suffix(path, (".json",)), _level0(data), image_name,
                     records=extra.get("records"), overwrite=True)
    return [str(out)]


def write_labels_csv(path: str, data: Any, meta: dict) -> List[str]:
    """npe2 writer: one Labels layer -> CSV of per-object measurements (no intensities:
    a single-layer writer does not see the image)."""
    from napari_sam.io.tables import object_table, write_csv

    labels = _level0(data)
    info = meta_from_layer(meta, len(labels.shape))
    out = write_csv(_with_suffix(path, (".csv",)),
                    object_table(labels, pixel_size=info.pixel_size), overwrite=True)
    return [str(out)]


# ---------------------------------------------------------------------------------------
# reader

def _claims(path) -> Optional[str]:
    if not isinstance(path, (str, Path)):
        return None
    name = Path(path).name.lower()
    if name.endswith(LABELS_SUFFIXES) and Path(path).is_file():
        return "tif"
    if name.endswith(COCO_SUFFIX) and Path(path).is_file():
        from napari_sam.io.coco import looks_like_coco

        return "coco" if looks_like_coco(path) else None
    return None


def _read_one(path) -> tuple:
    p = Path(path)
    if _claims(path) == "tif":
        from napari_sam.io.labels import read_labels

        labels, meta = read_labels(p)
        kwargs = layer_kwargs(meta, name=p.stem)
        return (labels, kwargs, "labels")
    from napari_sam.io.coco import read_coco

    return (read_coco(p), {"name": p.stem, "metadata": {"source": str(p)}}, "labels")


def read_labels_files(path) -> List[tuple]:
    """npe2 reader function: [(labels, layer kwargs, "labels")] for each path."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [_read_one(p) for p in paths]


def get_reader(path) -> Optional[Callable[[Any], List[tuple]]]:
    """npe2 reader contribution: a reader for the project's label files, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path or [])
    if not paths or not all(_claims(p) for p in paths):
        return None
    return read_labels_files
