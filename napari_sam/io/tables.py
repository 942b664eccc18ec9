"""Per-object measurements (scikit-image regionprops) and CSV files without pandas.

`object_table` columns, one row per object (per object and slice for stacks):
  label                      the object's id in the label image
  z                          slice index (stacks (Z/T, Y, X) only; measured slice by slice)
  area                       pixels
  area_um2                   µm², when pixel_size is known
  centroid_row, centroid_col pixel coordinates (napari's row, col)
  bbox_row0, bbox_col0, bbox_row1, bbox_col1
                             bounding box, end exclusive
  eccentricity               of the ellipse with the same second moments (0 = circle)
  mean_intensity             over the source image, when given (one channel)
  mean_intensity_c0, ...     per channel, for (Y, X, C) images
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_write
from .labels import to_uint32

_RENAME = {"centroid-0": "centroid_row", "centroid-1": "centroid_col",
           "bbox-0": "bbox_row0", "bbox-1": "bbox_col0",
           "bbox-2": "bbox_row1", "bbox-3": "bbox_col1"}
_PROPS = ("label", "area", "centroid", "bbox", "eccentricity")


def _slice_table(labels2d, image2d, channels: Optional[int]):
    from skimage.measure import regionprops_table

    props = _PROPS + (("intensity_mean",) if image2d is not None else ())
    raw = regionprops_table(labels2d, intensity_image=image2d, properties=props)
    out = {}
    for key, col in raw.items():
        if key.startswith("intensity_mean"):
            if channels is None:
                name = "mean_intensity"
            else:
                name = f"mean_intensity_c{key.rsplit('-', 1)[-1]}"
            out[name] = np.asarray(col, dtype=np.float64)
        else:
            out[_RENAME.get(key, key)] = np.asarray(col)
    if image2d is not None and channels is not None:  # keep every channel, even if empty
        for c in range(channels):
            out.setdefault(f"mean_intensity_c{c}", np.zeros(0, np.float64))
    out["label"] = out["label"].astype(np.uint32)
    out["area"] = out["area"].astype(np.int64)
    for k in ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"):
        out[k] = out[k].astype(np.int64)
    return out


def object_table(labels, image=None, pixel_size: Optional[Tuple[float, float]] = None
                 ) -> Dict[str, np.ndarray]:
    """Measure every object of a (Y, X) or (Z, Y, X) label image -> {column: array}.

    image: the source image, (Y, X) or (Y, X, C) (with a leading Z for stacks), for mean
    intensities. pixel_size: (y, x) in µm, adds area_um2.

    Parameters
    ----------
    labels : array_like
        (Y, X) or (Z, Y, X) integer labels, 0 background.
    image : array_like, optional
        (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C), matching `labels`.
    pixel_size : (float, float), optional
        (row, col) pixel size in µm.

    Returns
    -------
    dict of str to ndarray
        One 1D array per column (see the module docstring), one entry per object (and
        slice); label uint32, z, area and bbox int64, the rest float64.
    """
    labels = to_uint32(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"expected (Y, X) labels or a (Z, Y, X) stack, got {labels.shape}")
    channels = None
    if image is not None:
        image = np.asarray(image)
        if image.shape[:labels.ndim] != labels.shape or image.ndim > labels.ndim + 1:
            raise ValueError(f"image of shape {image.shape} does not match labels of shape "
                             f"{labels.shape} (expected {labels.shape} or {labels.shape} + "
                             "(channels,); channels last)")
        if image.ndim == labels.ndim + 1:
            channels = image.shape[-1]
        if image.dtype == np.bool_:
            image = image.astype(np.uint8)
    if labels.ndim == 2:
        table = _slice_table(labels, image, channels)
    else:
        parts = []
        for z in range(labels.shape[0]):
            part = _slice_table(labels[z], None if image is None else image[z], channels)
            part = {"label": part.pop("label"),
                    "z": np.full(len(part["area"]), z, np.int64), **part}
            parts.append(part)
        table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if pixel_size is not None:
        py, px = (float(v) for v in pixel_size)
        area_um2 = table["area"] * (py * px)
        items = list(table.items())
        at = [k for k, _ in items].index("area") + 1
        table = dict(items[:at] + [("area_um2", area_um2)] + items[at:])
    return table


def _cells(column: np.ndarray) -> list:
    values = np.asarray(column)
    if values.dtype.kind == "f":
        return [repr(float(v)) if np.isfinite(v) else str(float(v)) for v in values]
    return values.tolist()


def write_csv(path, table: Dict[str, Sequence], overwrite: bool = False) -> Path:
    """Write a {column: values} table as CSV (header row, comma separated) atomically.

    Floats are written with full precision (shortest repr that reads back exactly).

    Parameters
    ----------
    path : str or os.PathLike
        The .csv file.
    table : dict of str to sequence
        Columns of equal length, in output order.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        `path`.
    """
    names = list(table)
    columns = [_cells(table[k]) for k in names]
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ValueError("table columns have different lengths: " + ", ".join(
            f"{k}={len(c)}" for k, c in zip(names, columns)))
    path = Path(path)
    with atomic_write(path, overwrite=overwrite, mode="w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(zip(*columns))
    return path


def read_csv(path) -> Dict[str, np.ndarray]:
    """Read a CSV written by `write_csv` back into {column: array} (ints, floats or text).

    Parameters
    ----------
    path : str or os.PathLike
        The .csv file (header row first).

    Returns
    -------
    dict of str to ndarray
        Each column as int64 when every cell parses, else float64, else object (str);
        {} for an empty file.
    """
    with open(path, "r", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    names, body = rows[0], rows[1:]
    out = {}
    for i, name in enumerate(names):
        col = [r[i] for r in body]
        for kind in (np.int64, np.float64):
            try:
                out[name] = np.array(col, dtype=kind) if col else np.zeros(0, kind)
                break
            except ValueError:
                continue
        else:
            out[name] = np.array(col, dtype=object)
    return out
