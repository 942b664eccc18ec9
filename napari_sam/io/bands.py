"""Multiband images: choosing bands (by number or name), composites, and nodata masks.

Bands are numbered from 1, as GDAL, rasterio and QGIS number them (`--bands 4,3,2` is
Landsat 8's true colour); names match the file's band descriptions (GDAL's DESCRIPTION,
`ImageMeta.band_names`) case-insensitively. Composites by name, for files whose bands are
named red, green, blue, nir (any order):

    true-color    red, green, blue
    false-color   nir, red, green   (vegetation red)

Sensor band numbers for files without names (see docs/geospatial.md): Sentinel-2 (13 bands,
B1..B8, B8A, B9..B12) true colour 4,3,2, false colour 8,4,3; Landsat 8/9 4,3,2 and 5,4,3;
NAIP / RGBN 4-band 1,2,3 and 4,1,2; PlanetScope 4-band (BGRN) 3,2,1 and 4,3,2.

Each chosen band is contrast-normalised on its own with robust percentiles
(`transforms.intensity_range`), over valid pixels only; nodata pixels (value `nodata` in
every chosen band, or NaN) never become objects: `mask_nodata` clears them from the labels
and updates the records.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

COMPOSITES = {"true-color": ("red", "green", "blue"), "truecolor": ("red", "green", "blue"),
              "false-color": ("nir", "red", "green"), "falsecolor": ("nir", "red", "green")}
_ALIASES = {"nir": ("nir", "near-infrared", "near infrared", "b8", "infrared"),
            "red": ("red", "r"), "green": ("green", "g"), "blue": ("blue", "b")}


def parse_bands(text, band_names: Optional[Sequence[str]] = None,
                n_bands: Optional[int] = None) -> List[int]:
    """"4,3,2" / "nir,red,green" / "false-color" -> 0-based channel indices (1 to 3).

    Raises ValueError naming the bands that do not exist and what does.

    Parameters
    ----------
    text : str
        Comma-separated 1-based band numbers or names, or a composite name (`COMPOSITES`).
    band_names : sequence of str, optional
        The file's band descriptions, in band order (None: the file names none).
    n_bands : int, optional
        The number of bands, to check numbers against (None: not checked).

    Returns
    -------
    list of int
        1 to 3 0-based channel indices, in the order asked.
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if len(items) == 1 and items[0].lower() in COMPOSITES:
        items = list(COMPOSITES[items[0].lower()])
    names = [str(n or "").strip().lower() for n in (band_names or [])]
    have = (f"bands 1 to {n_bands}" if n_bands else "numbered bands") + \
        (f" named {', '.join(names)}" if any(names) else " (the file names none)")
    out = []
    for item in items:
        if item.lstrip("-").isdigit():
            b = int(item)
            if b < 1 or (n_bands is not None and b > n_bands):
                raise ValueError(f"--bands {text}: there is no band {b}; the image has {have} "
                                 "(bands are numbered from 1)")
            out.append(b - 1)
            continue
        key = item.lower()
        hit = [i for i, n in enumerate(names) if n == key or n in _ALIASES.get(key, ())]
        if not hit:
            raise ValueError(f"--bands {text}: no band named {item!r}; the image has {have}")
        out.append(hit[0])
    if not 1 <= len(out) <= 3:
        raise ValueError(f"--bands {text}: choose 1 to 3 bands (the model takes up to 3)")
    return out


def valid_mask(pixels: np.ndarray, nodata: Optional[float]) -> Optional[np.ndarray]:
    """bool (Y, X): False where every band of (Y, X[, C]) `pixels` is `nodata` (or NaN for
    float images); None when nothing is missing (no nodata value and no NaN).

    Parameters
    ----------
    pixels : ndarray
        (Y, X) or (Y, X, C), any numeric dtype.
    nodata : float or None
        The file's nodata value (None or NaN: only NaN pixels of float images are missing).

    Returns
    -------
    ndarray or None
        bool (Y, X), True where the pixel is valid; None when every pixel is.
    """
    px = np.asarray(pixels)
    px = px[..., None] if px.ndim == 2 else px
    bad = None
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        bad = np.all(px == px.dtype.type(nodata) if px.dtype.kind != "f" else px == nodata,
                     axis=-1)
    if px.dtype.kind == "f":
        nan = np.all(np.isnan(px), axis=-1)
        bad = nan if bad is None else bad | nan
    if bad is None or not bad.any():
        return None
    return ~bad


def value_range_valid(pixels: np.ndarray, valid: Optional[np.ndarray], channels=None
                      ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Per-band robust (low, high) over valid pixels only (None: let the core decide).

    Parameters
    ----------
    pixels : ndarray
        (Y, X) or (Y, X, C), any numeric dtype.
    valid : ndarray or None
        bool (Y, X) from `valid_mask`; None gives None.
    channels : sequence of int, optional
        0-based channels to use (as `transforms.select_channels`).

    Returns
    -------
    (low, high) or None
        Two float64 (K,) arrays, one value per chosen band; None when `valid` is None or
        has no True pixel.
    """
    from ..transforms import intensity_range, select_channels

    if valid is None:
        return None
    px = select_channels(pixels, channels)
    if not valid.any():
        return None
    return intensity_range(px[valid][:, None, :])


def mask_nodata(labels: np.ndarray, records: Optional[List[dict]], valid: Optional[np.ndarray],
                offset: Tuple[int, int] = (0, 0)):
    """Clear nodata pixels from a (Y, X) label image -> (labels, records).

    Objects that lose pixels get their area, bbox and centroid recomputed (bbox/centroid in
    the records' frame: `offset` is added, as tiled records are in image coordinates);
    objects left empty are dropped from the records.

    Parameters
    ----------
    labels : ndarray
        (Y, X) integer labels, 0 background.
    records : list of dict or None
        One record per object ("id", "area", "bbox" [r0, c0, r1, c1], optional "centroid"
        [row, col]); None to update the labels only.
    valid : ndarray or None
        bool (Y, X) from `valid_mask`; None leaves everything unchanged.
    offset : (int, int)
        (row, col) of `labels`' corner in the records' frame.

    Returns
    -------
    labels : ndarray
        (Y, X) copy with nodata pixels set to 0 (the input itself when `valid` is None or
        nothing changed).
    records : list of dict or None
        Updated records, objects left empty dropped.
    """
    if valid is None:
        return labels, records
    labels = np.asarray(labels).copy()
    touched = np.unique(labels[~valid])
    touched = touched[touched > 0]
    if not len(touched):
        return labels, records
    labels[~valid] = 0
    if records is None:
        return labels, None
    keep = []
    hit = set(touched.tolist())
    for r in records:
        k = int(r["id"])
        if k not in hit:
            keep.append(r)
            continue
        rows, cols = np.nonzero(labels == k)
        if not len(rows):
            continue
        r = dict(r, area=int(len(rows)),
                 bbox=[int(rows.min() + offset[0]), int(cols.min() + offset[1]),
                       int(rows.max() + 1 + offset[0]), int(cols.max() + 1 + offset[1])])
        if "centroid" in r:
            r["centroid"] = [float(rows.mean() + offset[0]), float(cols.mean() + offset[1])]
        keep.append(r)
    return labels, keep
