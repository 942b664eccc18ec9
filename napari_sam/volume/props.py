"""Per-object measurements of 3D labels (one row per 3D object, not per slice).

Columns: label, volume (voxels), volume_um3 (when the voxel size is known), centroid_z,
centroid_row, centroid_col, bbox_z0, bbox_row0, bbox_col0, bbox_z1, bbox_row1, bbox_col1
(ends exclusive), z_extent (slices the object is on), equivalent_diameter_um (when the voxel
size is known: the diameter of a sphere of the same physical volume), mean_intensity (when
the image is given; mean_intensity_c0, ... for channels-last images).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from ..io.labels import to_uint32

_NAMES = {"centroid-0": "centroid_z", "centroid-1": "centroid_row",
          "centroid-2": "centroid_col", "bbox-0": "bbox_z0", "bbox-1": "bbox_row0",
          "bbox-2": "bbox_col0", "bbox-3": "bbox_z1", "bbox-4": "bbox_row1",
          "bbox-5": "bbox_col1", "area": "volume"}


def object_table_3d(labels, image=None, spacing: Optional[Sequence[float]] = None
                    ) -> Dict[str, np.ndarray]:
    """Measure each object of (Z, Y, X) labels -> {column: array} (columns: module doc).

    image: (Z, Y, X) or (Z, Y, X, C) source for mean intensities; spacing: (dz, dy, dx) in
    µm for the physical columns.

    Parameters
    ----------
    labels : array_like
        (Z, Y, X) integer labels, one id per 3D object, 0 background.
    image : array_like, optional
        (Z, Y, X) or (Z, Y, X, C) intensities on the same grid.
    spacing : (float, float, float), optional
        (dz, dy, dx) voxel size in µm.

    Returns
    -------
    dict of str to ndarray
        One 1D array per column, one entry per object in id order; label uint32, volume,
        bboxes and z_extent int64, centroids (z, row, col) and physical columns float64.
    """
    from skimage.measure import regionprops_table

    labels = to_uint32(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected (Z, Y, X) labels, got shape {labels.shape}")
    props = ["label", "area", "centroid", "bbox"]
    intensity = None
    if image is not None:
        intensity = np.asarray(image)
        if intensity.shape[:3] != labels.shape:
            raise ValueError(f"image of shape {intensity.shape} does not match labels "
                             f"{labels.shape}")
        props.append("intensity_mean")
    raw = regionprops_table(labels, intensity_image=intensity, properties=props)
    out: Dict[str, np.ndarray] = {}
    for key, col in raw.items():
        if key.startswith("intensity_mean"):
            name = ("mean_intensity" if intensity.ndim == 3
                    else f"mean_intensity_c{key.rsplit('-', 1)[-1]}")
            out[name] = np.asarray(col, np.float64)
        else:
            out[_NAMES.get(key, key)] = np.asarray(col)
    out["label"] = out["label"].astype(np.uint32)
    out["volume"] = out["volume"].astype(np.int64)
    ids = out["label"]
    on = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    for k in range(labels.shape[0]):
        on[np.unique(labels[k])] += 1
    extent = on[ids] if len(ids) else np.zeros(0, np.int64)
    table = {"label": ids, "volume": out["volume"]}
    if spacing is not None:
        dz, dy, dx = (float(s) for s in spacing)
        table["volume_um3"] = out["volume"] * dz * dy * dx
    for k in ("centroid_z", "centroid_row", "centroid_col", "bbox_z0", "bbox_row0",
              "bbox_col0", "bbox_z1", "bbox_row1", "bbox_col1"):
        table[k] = out[k]
    table["z_extent"] = extent
    if spacing is not None:
        table["equivalent_diameter_um"] = np.cbrt(6 * table["volume_um3"] / np.pi)
    for k, v in out.items():
        if k.startswith("mean_intensity"):
            table[k] = v
    return table
