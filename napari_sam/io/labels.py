"""Label images as TIFF: uint32, zlib-compressed, written atomically, metadata kept.

`write_labels_tif` stores:
  - the labels as uint32 (other integer types are converted only when every value fits;
    negative values, values above 2**32 - 1 and non-integer types are refused, never wrapped);
  - OME-XML with the axes ("YX", "ZYX", "TYX", "TZYX") and, when known, the pixel size
    (PhysicalSizeX/Y/Z in µm) - read by Fiji/Bio-Formats, QuPath, napari and tifffile;
  - the pixel size again as TIFF resolution tags in pixels per centimetre (the standard
    unit every TIFF reader understands). ImageJ's own metadata is not used: ImageJ has no
    uint32 type;
  - the GeoTIFF tags of the source image (`meta.geo`) unchanged, so that the labels line up
    with the scene in QGIS/GDAL (same Y/X grid as the image);
  - tiles of 512 x 512 for images larger than 4096 pixels on a side (strips otherwise),
    so big label images can be read lazily;
  - optionally, the objects' scores (`records=`: score, predicted_iou, stability_score per
    label id) as JSON in a private tag (RECORDS_TAG), written in the same atomic write as
    the labels, so outputs made later from this file (a resumed batch's COCO JSON) keep
    them; `read_label_records` reads them back. Other programs ignore the tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import atomic_path
from .images import GEO_TAGS, ImageMeta, read_image

UINT32_MAX = 2 ** 32 - 1
RECORDS_TAG = 65420  # private TIFF tag (65000-65535): napari-sam's per-object scores, JSON
RECORD_FIELDS = ("score", "predicted_iou", "stability_score", "stability")
TILE_ABOVE = 4096
TILE = (512, 512)


def to_uint32(labels, what: str = "labels") -> np.ndarray:
    """`labels` as uint32, refusing anything that would not survive the conversion exactly.

    Parameters
    ----------
    labels : array_like
        Integer or bool labels of any shape, values in 0 .. 2**32 - 1.
    what : str
        What they are, for error messages.

    Returns
    -------
    ndarray
        uint32, same shape (`labels` itself when it already is a uint32 array).
    """
    arr = np.asarray(labels)
    if arr.dtype == np.uint32:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must have an integer type, got {arr.dtype}; label ids are "
                         "whole numbers (convert deliberately, e.g. with np.rint, if you must)")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ValueError(f"{what} contain negative values (minimum {lo}); label ids must "
                             "be 0 (background) or positive")
        if hi > UINT32_MAX:
            raise ValueError(f"{what} contain values up to {hi}, more than uint32 holds "
                             f"({UINT32_MAX}); relabel them (e.g. skimage.segmentation."
                             "relabel_sequential) first")
    return arr.astype(np.uint32)


def labels_axes(ndim: int, meta: Optional[ImageMeta] = None) -> str:
    """Axes of a label image: those of the source image without channels, when they fit.

    Parameters
    ----------
    ndim : int
        The label image's number of dimensions, 2 to 4.
    meta : ImageMeta, optional
        The source image's metadata.

    Returns
    -------
    str
        The source's axes without "C" when they have `ndim` letters, else "YX", "ZYX" or
        "TZYX".
    """
    if meta is not None and meta.axes:
        axes = meta.axes.replace("C", "")
        if len(axes) == ndim:
            return axes
    if ndim == 2:
        return "YX"
    if ndim == 3:
        return "ZYX"
    if ndim == 4:
        return "TZYX"
    raise ValueError(f"label images must have 2 to 4 dimensions (YX, ZYX/TYX, TZYX), got {ndim}")


def _geo_extratags(geo):
    tags = []
    for name, value in (geo or {}).items():
        if name not in GEO_TAGS or value is None:
            continue
        code, dtype = GEO_TAGS[name]
        if dtype == "s":
            tags.append((code, "s", 0, str(value), True))
        else:
            values = tuple(np.asarray(value).ravel().tolist())
            tags.append((code, dtype, len(values), values, True))
    return tags


def _records_json(records) -> Optional[str]:
    """Compact JSON of the score fields of per-object records that name their label id."""
    import json
    import math

    rows = []
    for r in records or ():
        lab = r.get("label", r.get("label_id", r.get("id"))) if isinstance(r, dict) else None
        if lab is None:
            return None  # records without ids cannot be matched to labels later
        row = {"id": int(lab)}
        for k in RECORD_FIELDS:
            v = r.get(k)
            if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)):
                row[k] = round(float(v), 6)
        rows.append(row)
    return json.dumps({"version": 1, "records": rows}, separators=(",", ":")) if rows else None


def read_label_records(path) -> Optional[list]:
    """The per-object score records stored by `write_labels_tif(..., records=)`, or None
    when the file has none (written without records, or by another program).

    Parameters
    ----------
    path : str or os.PathLike
        A label TIFF.

    Returns
    -------
    list of dict or None
        {"id": label id, plus any of score, predicted_iou, stability_score}; None also
        when the file cannot be read.
    """
    import json

    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(RECORDS_TAG)
            text = None if tag is None else tag.value
        data = json.loads(text) if text else None
    except (OSError, ValueError, KeyError, IndexError):
        return None
    rows = data.get("records") if isinstance(data, dict) else None
    return rows if isinstance(rows, list) else None


def write_labels_tif(path, labels, meta: Optional[ImageMeta] = None,
                     overwrite: bool = False, records=None) -> Path:
    """Write `labels` to `path` as a compressed uint32 TIFF; return the path.

    meta: the source image's ImageMeta (pixel size, axes, GeoTIFF tags are kept), or None.
    records: per-object dicts with a label id ("id", "label" or "label_id") and scores;
    their score fields are stored in the file (see the module docstring).
    Raises FileExistsError if `path` exists and `overwrite` is false; ValueError for label
    values that uint32 cannot hold.

    Parameters
    ----------
    path : str or os.PathLike
        The .tif file to write.
    labels : array_like
        (Y, X), (Z, Y, X), (T, Y, X) or (T, Z, Y, X) integer labels, 0 background.
    meta : ImageMeta, optional
        The source image's metadata.
    overwrite : bool
        Replace an existing file.
    records : list of dict, optional
        Per-object records with label ids and scores.

    Returns
    -------
    pathlib.Path
        `path`.
    """
    import tifffile

    data = to_uint32(labels)
    axes = labels_axes(data.ndim, meta)
    ome = {"axes": axes}
    resolution = None
    if meta is not None and meta.pixel_size:
        py, px = (float(v) for v in meta.pixel_size)
        if py > 0 and px > 0:
            ome.update(PhysicalSizeY=py, PhysicalSizeYUnit="µm",
                       PhysicalSizeX=px, PhysicalSizeXUnit="µm")
            resolution = (1e4 / px, 1e4 / py)  # pixels per cm, in (x, y) order
    if meta is not None and meta.z_size and "Z" in axes:
        ome.update(PhysicalSizeZ=float(meta.z_size), PhysicalSizeZUnit="µm")
    kwargs = dict(compression="zlib", photometric="minisblack", ome=True, metadata=ome,
                  extratags=_geo_extratags(meta.geo if meta is not None else None),
                  software="napari-sam")
    if resolution is not None:
        kwargs.update(resolution=resolution, resolutionunit="CENTIMETER")
    text = _records_json(records)
    if text is not None:
        kwargs["extratags"] = kwargs["extratags"] + [(RECORDS_TAG, "s", 0, text, True)]
    if max(data.shape[-2:]) > TILE_ABOVE:
        kwargs["tile"] = TILE
    bigtiff = data.nbytes > 2 ** 31  # compressed labels are small, but stay safe
    path = Path(path)
    with atomic_path(path, overwrite) as tmp:
        tifffile.imwrite(tmp, data, bigtiff=bigtiff, **kwargs)
    return path


def read_labels(path):
    """Read a label TIFF -> (uint32 labels, ImageMeta). Refuses images with channels.

    Parameters
    ----------
    path : str or os.PathLike
        A label image file (TIFF or another format `read_image` reads).

    Returns
    -------
    labels : ndarray
        uint32, (Y, X), (Z, Y, X), ... in canonical axis order.
    meta : ImageMeta
        Describes `labels`.
    """
    data, meta = read_image(path)
    if "C" in meta.axes:
        raise ValueError(f"{path}: has {data.shape[-1]} channels (axes {meta.axes}); a label "
                         "image has one value per pixel")
    data = to_uint32(data, what=f"{path}: labels")
    return data, meta.with_array(data)
