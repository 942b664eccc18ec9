"""Georeferencing of an image: its coordinate reference system (CRS) and affine transform.

`GeoRef.transform` is GDAL's (and rasterio's `Affine`) order (a, b, c, d, e, f):

    x = a * col + b * row + c        (easting, or longitude)
    y = d * col + e * row + f        (northing, or latitude)

with (row, col) in *pixel-edge* coordinates: (0, 0) is the upper-left corner of the
upper-left pixel and the centre of pixel (r, c) is (r + 0.5, c + 0.5). North-up images have
b = d = 0 and e < 0.

Read from a GeoTIFF by `georef_from_file`: rasterio (GDAL) when it is installed, otherwise
the GeoTIFF tags that `napari_sam.io.image_meta` already copies (ModelPixelScale +
ModelTiepoint or ModelTransformation; the CRS from the EPSG code of the GeoKey directory;
PixelIsPoint rasters are shifted by half a pixel as GDAL does). `georef_to_tags` writes the
tags back for an EPSG CRS, so test scenes need nothing but tifffile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

GEO_HINT = 'pip install "napari-sam-suite[geo]"'

# GeoKey ids (GeoTIFF 1.0 spec, section 6.3)
_MODEL_TYPE, _RASTER_TYPE, _GEOGRAPHIC, _PROJECTED = 1024, 1025, 2048, 3072
_PIXEL_IS_POINT = 2
_USER_DEFINED = 32767


def require(module: str):
    """Import an optional GIS module or raise ImportError saying how to install it.

    Parameters
    ----------
    module : str
        Importable module name, e.g. "pyproj" or "rasterio".

    Returns
    -------
    module
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is needed for georeferenced (GIS) input and output; "
                          f"install the extra: {GEO_HINT}") from err


@dataclass(frozen=True)
class GeoRef:
    """CRS and pixel -> map transform of a 2D raster (see the module docstring).

    Parameters
    ----------
    crs : str or None
        "EPSG:<code>" when the CRS has one, else its WKT; None when unknown.
    transform : tuple of 6 float
        (a, b, c, d, e, f), GDAL order: pixel-edge (row, col) -> map (x, y).
    """

    crs: Optional[str]
    transform: Tuple[float, float, float, float, float, float]

    @property
    def matrix(self) -> np.ndarray:
        """3 x 3 float64 matrix mapping homogeneous (col, row, 1) to (x, y, 1)."""
        a, b, c, d, e, f = self.transform
        return np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared map units (|det|)."""
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d)

    @property
    def pixel_size(self) -> float:
        """Side of one pixel in map units (the geometric mean of the two sides)."""
        return float(np.sqrt(self.pixel_area))

    @property
    def north_up(self) -> bool:
        a, b, _, d, e, _ = self.transform
        return b == 0 and d == 0 and a > 0 and e < 0

    def to_map(self, rows, cols) -> Tuple[np.ndarray, np.ndarray]:
        """Pixel-edge (row, col) arrays -> map (x, y) arrays, float64.

        Parameters
        ----------
        rows, cols : array_like
            Pixel-edge row (y) and column (x) coordinates, any matching shape.

        Returns
        -------
        x, y : ndarray
            float64 map easting (or longitude) and northing (or latitude), same shape.
        """
        a, b, c, d, e, f = self.transform
        rows, cols = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
        return a * cols + b * rows + c, d * cols + e * rows + f

    def to_pixel(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """Map (x, y) arrays -> pixel-edge (row, col) arrays, float64.

        Parameters
        ----------
        x, y : array_like
            Map easting (or longitude) and northing (or latitude), any matching shape.

        Returns
        -------
        row, col : ndarray
            float64 pixel-edge row (y) and column (x) coordinates, same shape.
        """
        inv = np.linalg.inv(self.matrix)
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        col = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
        row = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
        return row, col

    def shifted(self, row0: float, col0: float) -> "GeoRef":
        """The GeoRef of a window whose upper-left pixel is (row0, col0) of this raster.

        Parameters
        ----------
        row0, col0 : float
            Pixel offset (y, x) of the window's upper-left corner in this raster.

        Returns
        -------
        GeoRef
            Same CRS, with the translation moved to the window's corner.
        """
        a, b, c, d, e, f = self.transform
        return GeoRef(self.crs, (a, b, c + a * col0 + b * row0, d, e, f + d * col0 + e * row0))

    def napari_scale_translate(self):
        """(scale, translate) of a north-up raster for napari's (row, col) world, in map
        units: scale (|e|, a), translate (-f, c), so world col = easting and world row =
        minus the northing (napari's rows point down); None for rotated rasters.

        Returns
        -------
        tuple of ((float, float), (float, float)) or None
            ((row scale, col scale), (row translate, col translate)); None when the
            raster is not north-up.
        """
        if not self.north_up:
            return None
        a, _, c, _, e, f = self.transform
        return (abs(e), a), (-f, c)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form, read back by `from_dict`.

        Returns
        -------
        dict
            {"crs": str or None, "transform": list of 6 float}.
        """
        return {"crs": self.crs, "transform": [float(v) for v in self.transform]}

    @classmethod
    def from_dict(cls, d) -> Optional["GeoRef"]:
        """GeoRef from the output of `to_dict` (a GeoRef passes through).

        Parameters
        ----------
        d : dict, GeoRef or None
            {"crs": ..., "transform": [a, b, c, d, e, f]}.

        Returns
        -------
        GeoRef or None
            None when `d` is None.
        """
        if d is None:
            return None
        if isinstance(d, GeoRef):
            return d
        return cls(d.get("crs"), tuple(float(v) for v in d["transform"]))


# ---------------------------------------------------------------------------------------
# GeoTIFF tags (the light reader)

def _geokeys(geo: Dict[str, Any]) -> Dict[int, Any]:
    raw = geo.get("GeoKeyDirectoryTag")
    if not raw or len(raw) < 4:
        return {}
    raw = [int(v) for v in raw]
    doubles = geo.get("GeoDoubleParamsTag") or ()
    ascii_ = geo.get("GeoAsciiParamsTag") or ""
    keys = {}
    for k in range(raw[3]):
        entry = raw[4 + 4 * k: 8 + 4 * k]
        if len(entry) < 4:
            break
        key, where, count, value = entry
        if where == 0:
            keys[key] = value
        elif where == 34736:
            keys[key] = tuple(doubles[value:value + count])
        elif where == 34737:
            keys[key] = str(ascii_)[value:value + count].rstrip("|\0")
    return keys


def georef_from_tags(geo: Optional[Dict[str, Any]]) -> Optional[GeoRef]:
    """GeoRef from raw GeoTIFF tags (`ImageMeta.geo`), or None when they give no transform.

    The CRS is "EPSG:<code>" from ProjectedCSTypeGeoKey or GeographicTypeGeoKey; a
    user-defined CRS gives crs=None (rasterio reads those: install the geo extra).

    Parameters
    ----------
    geo : dict or None
        GeoTIFF tag name -> value, as in `ImageMeta.geo`.

    Returns
    -------
    GeoRef or None
        None when `geo` is empty or has no pixel scale + tiepoint or transformation.
    """
    if not geo:
        return None
    keys = _geokeys(geo)
    m = geo.get("ModelTransformationTag")
    scale, tie = geo.get("ModelPixelScaleTag"), geo.get("ModelTiepointTag")
    if m is not None and len(m) >= 8:
        t = [float(m[0]), float(m[1]), float(m[3]), float(m[4]), float(m[5]), float(m[7])]
    elif scale is not None and tie is not None and len(scale) >= 2 and len(tie) >= 6:
        sx, sy = float(scale[0]), float(scale[1])
        i, j, x, y = float(tie[0]), float(tie[1]), float(tie[3]), float(tie[4])
        t = [sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy]
    else:
        return None
    if keys.get(_RASTER_TYPE) == _PIXEL_IS_POINT:  # tiepoint at pixel centres, as GDAL does
        t[2] -= 0.5 * (t[0] + t[1])
        t[5] -= 0.5 * (t[3] + t[4])
    crs = None
    for key in (_PROJECTED, _GEOGRAPHIC):
        code = keys.get(key)
        if isinstance(code, int) and 0 < code < _USER_DEFINED:
            crs = f"EPSG:{code}"
            break
    return GeoRef(crs, tuple(t))


def georef_to_tags(georef: GeoRef) -> Dict[str, Any]:
    """GeoTIFF tags (names as in `image_meta.GEO_TAGS`) for a GeoRef with an EPSG CRS.

    Parameters
    ----------
    georef : GeoRef
        Its crs must be "EPSG:<code>" (ValueError otherwise).

    Returns
    -------
    dict
        Tag name -> tuple of values (GeoKeyDirectoryTag and the scale + tiepoint for a
        north-up raster, else ModelTransformationTag).
    """
    if not georef.crs or not str(georef.crs).upper().startswith("EPSG:"):
        raise ValueError(f"only EPSG CRSs can be written as GeoTIFF tags, got {georef.crs!r}")
    code = int(str(georef.crs).split(":", 1)[1])
    geographic = 4000 <= code < 5000
    a, b, c, d, e, f = (float(v) for v in georef.transform)
    keys = [1, 1, 0, 3, _MODEL_TYPE, 0, 1, 2 if geographic else 1,
            _RASTER_TYPE, 0, 1, 1, _GEOGRAPHIC if geographic else _PROJECTED, 0, 1, code]
    tags: Dict[str, Any] = {"GeoKeyDirectoryTag": tuple(keys)}
    if b == 0 and d == 0:
        tags["ModelPixelScaleTag"] = (a, -e, 0.0)
        tags["ModelTiepointTag"] = (0.0, 0.0, 0.0, c, f, 0.0)
    else:
        tags["ModelTransformationTag"] = (a, b, 0.0, c, d, e, 0.0, f,
                                          0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    return tags


# ---------------------------------------------------------------------------------------
# files

def _rasterio_georef(path) -> Tuple[Optional[GeoRef], Optional[float], Optional[Sequence]]:
    import rasterio

    with rasterio.Env(GTIFF_SRS_SOURCE="EPSG"), rasterio.open(path) as src:
        if src.transform.is_identity and src.crs is None:
            return None, src.nodata, src.descriptions
        crs = None
        if src.crs is not None:
            epsg = src.crs.to_epsg()
            crs = f"EPSG:{epsg}" if epsg else src.crs.to_wkt()
        return GeoRef(crs, tuple(float(v) for v in tuple(src.transform)[:6])), src.nodata, \
            src.descriptions


def georef_from_file(path, geo: Optional[Dict[str, Any]] = None) -> Optional[GeoRef]:
    """The GeoRef of a GeoTIFF: rasterio when installed, else its tags (`geo`, or read).

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    geo : dict, optional
        Its GeoTIFF tags (`ImageMeta.geo`); None reads them from `path`.

    Returns
    -------
    GeoRef or None
        None when the file carries no georeferencing.
    """
    if geo is None:
        from .images import read_meta

        geo = read_meta(path).geo
    if not geo:
        return None
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return georef_from_tags(geo)
    try:
        got = _rasterio_georef(path)[0]
    except Exception:  # noqa: BLE001 - GDAL could not open it: the tags still may
        got = None
    return got or georef_from_tags(geo)


def transform_coords(xs, ys, src_crs, dst_crs) -> Tuple[np.ndarray, np.ndarray]:
    """Reproject coordinate arrays from `src_crs` to `dst_crs` (x/easting/longitude first).

    Parameters
    ----------
    xs, ys : array_like
        Map x (easting/longitude) and y (northing/latitude), any matching shape.
    src_crs, dst_crs : str or None
        Any CRS pyproj accepts ("EPSG:4326", WKT); either None leaves the coordinates.

    Returns
    -------
    x, y : ndarray
        float64 coordinates in `dst_crs`, same shape.
    """
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if src_crs is None or dst_crs is None:
        return xs, ys
    tr = _transformer(str(src_crs), str(dst_crs))
    if tr is None:
        return xs, ys
    x, y = tr.transform(xs, ys)
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


@lru_cache(maxsize=32)
def _transformer(src: str, dst: str):
    """A pyproj Transformer (x first), or None for the same CRS; built once per pair."""
    if src.upper() == dst.upper():
        return None
    pyproj = require("pyproj")
    a, b = pyproj.CRS.from_user_input(src), pyproj.CRS.from_user_input(dst)
    if a == b:
        return None
    return pyproj.Transformer.from_crs(a, b, always_xy=True)
