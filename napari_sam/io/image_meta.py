"""What an image file says besides its pixels: pixel size (OME, ImageJ, TIFF resolution
tags), Z spacing and GeoTIFF tags (see `napari_sam.io.images` for the rules)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional, Tuple

import numpy as np

# GeoTIFF tags: name -> (code, TIFF data type for writing). Raw values are kept.
GEO_TAGS: Dict[str, Tuple[int, str]] = {
    "ModelPixelScaleTag": (33550, "d"),
    "ModelTiepointTag": (33922, "d"),
    "ModelTransformationTag": (34264, "d"),
    "GeoKeyDirectoryTag": (34735, "H"),
    "GeoDoubleParamsTag": (34736, "d"),
    "GeoAsciiParamsTag": (34737, "s"),
}

# length units -> micrometres
_UNITS_UM = {
    "pm": 1e-6, "picometer": 1e-6, "å": 1e-4, "a": 1e-4, "angstrom": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4, "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0,
}
_RESUNIT_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # TIFF ResolutionUnit CENTIMETER, MILLIMETER, MICROMETER
_MIN_DPI = 1000.0


@dataclass
class ImageMeta:
    """What is known about an image besides its pixels.

    Parameters
    ----------
    path : str or None
        The file it was read from (None for an array without a file).
    axes : str
        The returned array's axes, a subset of "TZYXC" in that order.
    shape : tuple of int
        The returned array's shape, one entry per letter of `axes`.
    dtype : numpy.dtype
        The returned array's dtype.
    pixel_size : (float, float) or None
        (y, x) i.e. (row, col) in micrometres, or None when the file does not say.
    z_size : float or None
        Z spacing in micrometres, or None.
    geo : dict or None
        GeoTIFF tags by name (see GEO_TAGS), raw values, or None.
    source_axes : str
        The file's own axes as tifffile names them (e.g. "CYX", "YXS", "QYX").
    levels : int
        Number of pyramid levels in the file (1 when not pyramidal).
    level_shapes : tuple of tuple of int
        Canonical shape of each pyramid level, level 0 first.
    georef : GeoRef or None
        CRS and affine transform (`napari_sam.io.georef.GeoRef`) of a GeoTIFF, or None.
    nodata : float or None
        The value of missing pixels (GDAL_NODATA tag), or None.
    band_names : tuple of str or None
        Per-channel names (GDAL band descriptions), or None.
    """

    path: Optional[str]
    axes: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    pixel_size: Optional[Tuple[float, float]] = None
    z_size: Optional[float] = None
    geo: Optional[Dict[str, Any]] = None
    source_axes: str = ""
    levels: int = 1
    level_shapes: Tuple[Tuple[int, ...], ...] = field(default_factory=tuple)
    georef: Any = None
    nodata: Optional[float] = None
    band_names: Optional[Tuple[str, ...]] = None

    def with_array(self, array, axes: Optional[str] = None) -> "ImageMeta":
        """A copy describing `array` (e.g. after choosing channels).

        Parameters
        ----------
        array : array-like
            Anything with `.shape` and `.dtype`.
        axes : str, optional
            Its axes; None keeps `self.axes`.

        Returns
        -------
        ImageMeta
            A copy with shape, dtype and axes replaced; the rest unchanged.
        """
        return replace(self, shape=tuple(array.shape), dtype=np.dtype(array.dtype),
                       axes=self.axes if axes is None else axes)


def _unit_um(unit) -> Optional[float]:
    if unit is None:
        return None
    u = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    u = u.replace("μ", "µ").lower()  # Greek mu -> micro sign
    return _UNITS_UM.get(u)


def _ome_sizes(xml: str):
    """(pixel_size, z_size) from the first OME Pixels element, in µm."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "Pixels":
            continue

        def size(axis):
            value = el.get(f"PhysicalSize{axis}")
            factor = _unit_um(el.get(f"PhysicalSize{axis}Unit", "µm"))
            try:
                value = float(value)
            except (TypeError, ValueError):
                return None
            return value * factor if factor and value > 0 and math.isfinite(value) else None

        y, x = size("Y"), size("X")
        return ((y, x) if y and x else None), size("Z")
    return None, None


def _tiff_sizes(tif, page):
    """(pixel_size, z_size) in µm from OME, ImageJ or resolution tags, else (None, None)."""
    if tif.is_ome and tif.ome_metadata:
        px, z = _ome_sizes(tif.ome_metadata)
        if px:
            return px, z
    tags = page.tags
    has_res = 282 in tags and 283 in tags
    xres, yres = page.resolution if has_res else (0.0, 0.0)
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        factor = _unit_um(ij.get("unit"))
        if factor:
            px = (factor / yres, factor / xres) if has_res and xres > 0 and yres > 0 else None
            spacing = ij.get("spacing")
            z = float(spacing) * factor if isinstance(spacing, (int, float)) else None
            if px and not (xres == 1 and yres == 1 and factor == 1 and ij.get("unit") in
                           (None, "pixel")):
                return px, z
    if has_res and xres > 0 and yres > 0:
        unit = page.resolutionunit
        if unit in _RESUNIT_UM:
            f = _RESUNIT_UM[unit]
            return (f / yres, f / xres), None
        if unit == 2 and min(xres, yres) > _MIN_DPI:
            return (25400.0 / yres, 25400.0 / xres), None
    return None, None


def _geo_tags(page) -> Optional[Dict[str, Any]]:
    geo = {}
    for name, (code, _) in GEO_TAGS.items():
        tag = page.tags.get(code)
        if tag is None:
            continue
        value = tag.value
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        elif isinstance(value, np.ndarray):
            value = tuple(value.tolist())
        elif isinstance(value, (list, tuple)):
            value = tuple(v.item() if isinstance(v, np.generic) else v for v in value)
        geo[name] = value
    return geo or None


GDAL_METADATA, GDAL_NODATA = 42112, 42113


def _gdal_extras(page) -> Tuple[Optional[float], Optional[Tuple[str, ...]]]:
    """(nodata, band names) from GDAL's private TIFF tags, or None each."""
    nodata = None
    tag = page.tags.get(GDAL_NODATA)
    if tag is not None:
        text = tag.value.decode("latin-1") if isinstance(tag.value, bytes) else str(tag.value)
        try:
            nodata = float(text.strip().strip("\0"))
        except ValueError:
            nodata = None
    names = None
    tag = page.tags.get(GDAL_METADATA)
    if tag is not None:
        try:
            root = ET.fromstring(tag.value if isinstance(tag.value, str)
                                 else tag.value.decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError):
            root = None
        found = {}
        for item in ([] if root is None else root.iter("Item")):
            if item.get("role") == "description" and item.get("sample") is not None:
                found[int(item.get("sample"))] = (item.text or "").strip()
        if found:
            names = tuple(found.get(i, "") for i in range(max(found) + 1))
    return nodata, names


def georeferencing(path, page, geo):
    """(GeoRef or None, nodata, band names) of a TIFF page (rasterio when installed).

    Parameters
    ----------
    path : str or os.PathLike or None
        The TIFF file (None: no GeoRef is read).
    page : tifffile.TiffPage
        Its first page, whose GDAL tags give nodata and band names.
    geo : dict or None
        The page's GeoTIFF tags (`ImageMeta.geo`); empty or None gives no GeoRef.

    Returns
    -------
    georef : GeoRef or None
    nodata : float or None
        The GDAL_NODATA value.
    band_names : tuple of str or None
        GDAL band descriptions, one per band.
    """
    from .georef import georef_from_file

    nodata, names = _gdal_extras(page)
    georef = georef_from_file(path, geo) if geo and path is not None else None
    return georef, nodata, names
