"""Reading images: TIFF (plain, BigTIFF, OME, ImageJ, pyramidal, GeoTIFF) and PNG/JPEG.

Arrays come back in one axis order, a subset of "TZYXC" (e.g. "YX", "YXC", "ZYX", "TZYXC"):
  - channel-like axes (TIFF samples "S", OME/ImageJ "C") become a last "C" axis, so a
    channel-first "CYX" file reads as "YXC";
  - axes of length 1 other than Y and X are dropped;
  - unnamed leading axes (tifffile's "Q"/"I", plain multi-page TIFFs, animated images) are
    taken as Z, then T. Pass `axes=` (the file's own axes, e.g. "CYX") to override a guess.
Pyramidal files use level 0 (full resolution); multi-series files use series 0.

`read_image` reads into memory. `open_lazy` returns an array-like that reads only what is
indexed: a `numpy.memmap` view where the file is uncompressed and contiguous, otherwise a
`LazyTiff` that decodes just the tiles or strips under the requested region. (tifffile's own
zarr store needs zarr 3; `LazyTiff` needs nothing but tifffile.) `as_dask` wraps either.

`ImageMeta.pixel_size` is (y, x) in micrometres from OME PhysicalSize, ImageJ metadata or
TIFF resolution tags in cm/mm/µm. Resolution in inches is taken only above 1000 dpi (a pixel
under 25.4 µm): 72/96/300 dpi are print or screen defaults with no physical meaning.
GeoTIFF tags are kept raw in `ImageMeta.geo`, to be copied into label TIFFs; the CRS and
affine transform they describe are `ImageMeta.georef` (`napari_sam.io.georef`), GDAL's
nodata value `ImageMeta.nodata` and band descriptions `ImageMeta.band_names`.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import numpy as np

from .axes import (CANONICAL, canonical_layout, guess_file_axes,  # noqa: F401
                   override_axes, to_canonical)
from .image_meta import (GEO_TAGS, ImageMeta, _geo_tags, _tiff_sizes,  # noqa: F401 (public)
                         georeferencing)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2", ".svs", ".ndpi", ".scn", ".qptiff")


class ChannelChoiceError(ValueError):
    """`channels=` names channels the image does not have.

    Parameters
    ----------
    message : str
        What was asked and which channels exist.
    """


def _fail(path, err) -> ValueError:
    return ValueError(
        f"{path}: could not read as an image ({err}); supported are TIFF (including "
        "BigTIFF, OME-TIFF, ImageJ and pyramidal TIFF, GeoTIFF), PNG, JPEG and other formats "
        "imageio reads")


# ---------------------------------------------------------------------------------------
# axes

def _select_channels(array, axes: str, channels):
    """Pick channels on the C axis: an int drops the axis, a sequence keeps it."""
    if channels is None:
        return array, axes
    single = isinstance(channels, (int, np.integer))
    chosen = [int(channels)] if single else [int(c) for c in channels]
    if "C" not in axes:
        if all(c in (0, -1) for c in chosen) and len(chosen) == 1:
            return array, axes  # a grayscale image is its own channel 0
        raise ChannelChoiceError(f"channels={channels!r}, but the image has no channel "
                                 f"axis (axes {axes!r}); leave channels out")
    n = array.shape[-1]
    if not chosen or any(not -n <= c < n for c in chosen):
        raise ChannelChoiceError(f"channels={channels!r}: the image has {n} channels (0 to "
                                 f"{n - 1}); choose among those (--channels on the command line)")
    if single:
        return array[..., chosen[0]], axes.replace("C", "")
    return array[..., chosen], axes


# ---------------------------------------------------------------------------------------
# TIFF

def is_tiff(path) -> bool:
    """True for TIFF file names, or files starting with a TIFF signature.

    Parameters
    ----------
    path : str or os.PathLike
        The file; read only when its suffix is not a TIFF one.

    Returns
    -------
    bool
        False also for a file that cannot be opened.
    """
    if str(path).lower().endswith(TIFF_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] in (b"II", b"MM") and head[2:4] in (b"*\0", b"\0*", b"+\0", b"\0+")


def _tiff_meta(tif, path, series=0) -> Tuple[Any, ImageMeta, list, list]:
    s = tif.series[series]
    letters, perm, axes = canonical_layout(s.axes, s.shape)
    pixel_size, z_size = _tiff_sizes(tif, s.keyframe)
    shape = tuple(s.shape[i] for i in perm)
    geo = _geo_tags(tif.pages.first)
    georef, nodata, names = georeferencing(path, tif.pages.first, geo)
    meta = ImageMeta(path=str(path), axes=axes, shape=shape, dtype=np.dtype(s.dtype),
                     pixel_size=pixel_size, z_size=z_size, geo=geo, georef=georef,
                     nodata=nodata, band_names=names,
                     source_axes=s.axes, levels=len(s.levels),
                     level_shapes=tuple(tuple(lv.shape[i] for i in perm) for lv in s.levels))
    return s, meta, letters, perm


def _read_tiff(path, channels, axes):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        s, meta, letters, perm = _tiff_meta(tif, path)
        if axes is not None:
            letters, perm, meta.axes = canonical_layout(override_axes(s, axes), s.shape)
            meta.source_axes = axes.upper()
        data = s.asarray(level=0)
    data = np.ascontiguousarray(to_canonical(data, letters, perm))
    data, out_axes = _select_channels(data, meta.axes, channels)
    return data, meta.with_array(data, out_axes)


def _read_other(path, channels, axes):
    import warnings

    import imageio.v3 as iio

    with warnings.catch_warnings():  # imageio's legacy plugins warn while it probes a file
        warnings.simplefilter("ignore", DeprecationWarning)
        data = np.asarray(iio.imread(path))
    file_axes = axes.upper() if axes is not None else guess_file_axes(data.shape)
    letters, perm, canon = canonical_layout(file_axes, data.shape)
    data = np.ascontiguousarray(to_canonical(data, letters, perm))
    meta = ImageMeta(path=str(path), axes=canon, shape=data.shape, dtype=data.dtype,
                     source_axes=file_axes, level_shapes=(data.shape,))
    data, out_axes = _select_channels(data, canon, channels)
    return data, meta.with_array(data, out_axes)


def _check_exists(path):
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"{path}: no such file", str(path))
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not an image file")


def read_image(path, channels=None, axes: Optional[str] = None):
    """Read a whole image into memory -> (array, ImageMeta).

    channels: None keeps all; an int picks one channel (the C axis is dropped); a sequence
    picks channels in that order (C kept). axes: the file's own axes, to override
    tifffile's names or a guess (e.g. "CYX" for a 3-page TIFF that holds channels).
    Raises FileNotFoundError for a missing file and ValueError for anything unreadable.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, PNG, JPEG or other file imageio reads.
    channels : int or sequence of int, optional
        0-based channel(s) to keep.
    axes : str, optional
        The file's own axes (tifffile letters, any case).

    Returns
    -------
    array : ndarray
        The pixels in canonical order (a subset of "TZYXC", e.g. (Y, X), (Y, X, C),
        (Z, Y, X)), the file's dtype.
    meta : ImageMeta
        Describes `array` (axes, pixel size (y, x) µm, georeferencing, ...).
    """
    _check_exists(path)
    try:
        if is_tiff(path):
            return _read_tiff(path, channels, axes)
        return _read_other(path, channels, axes)
    except (FileNotFoundError, MemoryError):
        raise
    except ChannelChoiceError as err:  # the file is fine, the choice is not
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:  # tifffile/imageio raise many types for a bad file
        raise _fail(path, err) from err


def read_meta(path) -> ImageMeta:
    """The ImageMeta of a file without reading its pixels (TIFF) or reading them (others).

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    ImageMeta
        As `read_image` would return with all channels.
    """
    _check_exists(path)
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return _tiff_meta(tif, path)[1]
        return _read_other(path, None, None)[1]
    except Exception as err:
        raise _fail(path, err) from err


def open_lazy(path, level: int = 0, channels=None, axes: Optional[str] = None):
    """Open an image without reading its pixels -> (array-like, ImageMeta).

    TIFF: a read-only `numpy.memmap` view when the file is uncompressed and contiguous,
    otherwise a `LazyTiff`; `level` picks a pyramid level (0 = full resolution). Other
    formats are read into memory (they are small). Axes and channels as in `read_image`;
    `meta.shape` is the shape of the returned array.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    level : int
        Pyramid level, 0 = full resolution (TIFF only).
    channels : int or sequence of int, optional
        0-based channel(s) to keep.
    axes : str, optional
        The file's own axes.

    Returns
    -------
    array : numpy.memmap, LazyTiff, dask array or ndarray
        Indexable array-like in canonical axis order (e.g. (Y, X) or (Y, X, C)).
    meta : ImageMeta
        Describes `array`.
    """
    _check_exists(path)
    if not is_tiff(path):
        if level:
            raise ValueError(f"{path}: only TIFF files have pyramid levels")
        return read_image(path, channels=channels, axes=axes)
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            s, meta, letters, perm = _tiff_meta(tif, path)
            if not 0 <= level < len(s.levels):
                raise ValueError(f"level {level} requested, the file has {len(s.levels)}")
            lv = s.levels[level]
            if axes is not None:
                letters, perm, meta.axes = canonical_layout(override_axes(lv, axes), lv.shape)
                meta.source_axes = axes.upper()
        try:
            mm = tifffile.memmap(path, series=0, level=level, mode="r")
            if tuple(mm.shape) != tuple(lv.shape):
                mm = None
        except Exception:  # compressed, tiled or scattered: not memory-mappable
            mm = None
        view = None if mm is None else to_canonical(mm, letters, perm)
        if view is not None and (channels is None or isinstance(channels, (int, np.integer))):
            arr, out_axes = _select_channels(view, meta.axes, channels)  # still a view
            return arr, meta.with_array(arr, out_axes)
        try:
            from .lazy_tiff import LazyTiff

            lazy = LazyTiff(path, level=level, axes=axes, channels=channels)
        except NotImplementedError:
            if view is None:
                raise
            arr, out_axes = _select_channels(as_dask(view, axes=meta.axes), meta.axes,
                                             channels)
            return arr, meta.with_array(arr, out_axes)
        return lazy, meta.with_array(lazy, lazy.axes)
    except (FileNotFoundError, MemoryError):
        raise
    except ChannelChoiceError as err:  # the file is fine, the choice is not
        raise ValueError(f"{path}: {err}") from None
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise _fail(path, err) from err
    except Exception as err:
        raise _fail(path, err) from err


def as_dask(array, chunks=None, min_chunk: int = 512, axes: Optional[str] = None):
    """A dask array over `array` (LazyTiff, memmap, ...), chunked along stored tiles.

    By default Y and X chunks are whole multiples of the stored tile/strip size of at least
    `min_chunk` pixels, other axes get chunks of 1 (C stays whole).

    Parameters
    ----------
    array : array-like
        Indexable with `.shape` and `.dtype` (a `chunksize` attribute is used when present).
    chunks : tuple of int, optional
        Explicit chunks; None chooses them as above.
    min_chunk : int
        Smallest Y/X chunk side in pixels.
    axes : str, optional
        One letter per dim; None takes `array.axes`, else Y, X last.

    Returns
    -------
    dask.array.Array
        Same shape and dtype, reading lazily from `array`.
    """
    import dask.array as da

    if chunks is None:
        base = getattr(array, "chunksize", None) or tuple(array.shape)
        axes = axes or getattr(array, "axes", None) or "YX".rjust(array.ndim, "Q")
        chunks = []
        for n, c, a in zip(array.shape, base, axes):
            if a in "YX":
                c = max(1, min(c, n))
                chunks.append(min(n, c * max(1, -(-min_chunk // c))))
            elif a == "C":
                chunks.append(n)
            else:
                chunks.append(1)
        chunks = tuple(chunks)
    return da.from_array(array, chunks=chunks, lock=False, asarray=True, fancy=False)
