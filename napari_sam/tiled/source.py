"""A 2D image read window by window: numpy, memory-mapped, zarr or dask arrays, or a path.

Whole-image quantities (the contrast range and the data fingerprint) come from one
subsample: a regular grid of small windows, so a lazy image is never read whole and a
tiled TIFF only decodes the few chunks under the windows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..transforms import intensity_range, select_channels, to_model_pixels

SAMPLE_GRID = 16      # windows per axis
SAMPLE_WINDOW = 64    # window side: 16 x 16 windows of 64 x 64 = 1 M pixels, as intensity_range


def read_box(array, box) -> np.ndarray:
    """`array[r0:r1, c0:c1]` as a numpy array, whatever kind of array it is.

    Parameters
    ----------
    array : array_like, (Y, X, ...)
        numpy, memmap, zarr, dask (computed), ...
    box : (int, int, int, int)
        (row0, col0, row1, col1), exclusive ends.

    Returns
    -------
    ndarray, (row1 - row0, col1 - col0, ...)
        Same dtype as `array`.
    """
    r0, c0, r1, c1 = (int(v) for v in box)
    part = array[r0:r1, c0:c1]
    if hasattr(part, "compute"):  # dask
        part = part.compute()
    return np.asarray(part)


def open_image(path: Union[str, Path]):
    """(lazy array, ImageMeta) of an image file: level 0 of a pyramid, never read whole.

    Parameters
    ----------
    path : str or Path
        An image file (TIFF: memory-mapped or read tile by tile; other formats are small and
        read whole; see `napari_sam.io.images.open_lazy`).

    Returns
    -------
    array : array_like
        The image, axes in canonical order (`meta.axes`, e.g. "YX" or "YXC").
    meta : ImageMeta
        Axes, shape, pixel size, georeferencing and nodata.
    """
    from ..io.images import open_lazy

    return open_lazy(path)


class ImageSource:
    """Read access to a (Y, X) or (Y, X, C) image without loading it.

    Parameters
    ----------
    image : array-like or str or Path
        An array with numpy slicing (numpy, np.memmap, zarr, dask), (Y, X) or (Y, X, C), or
        an image file (opened lazily, level 0 of a pyramid; its metadata and nodata value
        are kept).
    channels : sequence of int, optional
        Up to three channel indices, as in `transforms.select_channels`.
    """

    def __init__(self, image, channels: Optional[Sequence[int]] = None) -> None:
        self.path: Optional[Path] = None
        self.meta = None  # napari_sam.io ImageMeta when read from a file (pixel size, geo)
        self.nodata = None  # value of missing pixels (the file's GDAL nodata), or None
        if isinstance(image, (str, Path)):
            self.path = Path(image)
            image, self.meta = open_image(self.path)
            self.nodata = getattr(self.meta, "nodata", None)
        if not hasattr(image, "shape") or not hasattr(image, "dtype"):
            image = np.asarray(image)
        if len(image.shape) not in (2, 3):
            raise ValueError(
                f"tiling takes a 2D image (Y, X) or (Y, X, C), got shape {tuple(image.shape)}; "
                "for stacks process one slice at a time")
        self.array = image
        self.channels = None if channels is None else [int(c) for c in channels]
        self.shape = tuple(int(s) for s in image.shape)
        self.dtype = np.dtype(image.dtype)
        # validate the channel choice now (it raises with a helpful message)
        select_channels(np.zeros((1, 1) + self.shape[2:], self.dtype), self.channels)
        self._sample: Optional[np.ndarray] = None

    @property
    def shape2d(self) -> Tuple[int, int]:
        return self.shape[0], self.shape[1]

    def read(self, box) -> np.ndarray:
        """The raw pixels of one window.

        Parameters
        ----------
        box : sequence of 4 int
            (row0, col0, row1, col1) in the image, exclusive ends.

        Returns
        -------
        ndarray (h, w) or (h, w, C)
            In the image's dtype, all channels.
        """
        return read_box(self.array, box)

    # ---- the subsample ----------------------------------------------------------------
    def sample_boxes(self):
        """The windows of the subsample: the whole image if it is small, else a regular grid
        of `SAMPLE_GRID` x `SAMPLE_GRID` windows of side `SAMPLE_WINDOW`.

        Returns
        -------
        list of (int, int, int, int)
            (row0, col0, row1, col1), exclusive ends, row by row.
        """
        h, w = self.shape2d
        n, s = SAMPLE_GRID, SAMPLE_WINDOW
        if h * w <= (n * s) ** 2:
            return [(0, 0, h, w)]
        ys = np.unique(np.round(np.linspace(0, max(h - s, 0), n)).astype(int))
        xs = np.unique(np.round(np.linspace(0, max(w - s, 0), n)).astype(int))
        return [(y, x, min(y + s, h), min(x + s, w)) for y in ys for x in xs]

    def sample(self) -> list:
        """The pixels of the subsample's windows, read once and kept.

        Returns
        -------
        list of ndarray (h, w) or (h, w, C)
            One per window of `sample_boxes`, in the image's dtype.
        """
        if self._sample is None:
            self._sample = [self.read(b) for b in self.sample_boxes()]
        return self._sample

    def fingerprint(self) -> dict:
        """What identifies the image's data, without reading it whole.

        Returns
        -------
        dict
            "shape", "dtype" and "sample_sha1", a SHA-1 of the subsample's windows and
            pixels (all channels).
        """
        h = hashlib.sha1()
        for box, part in zip(self.sample_boxes(), self.sample()):
            h.update(np.asarray(box, np.int64).tobytes())
            h.update(np.ascontiguousarray(part).tobytes())
        return {"shape": list(self.shape), "dtype": self.dtype.str, "sample_sha1": h.hexdigest()}

    def value_range(self) -> Optional[Tuple[list, list]]:
        """The contrast range every tile is scaled with, from the subsample (nodata pixels
        left out).

        Returns
        -------
        (list of float, list of float) or None
            Per selected channel (low, high) for `to_model_pixels`; None for uint8 and bool
            images (left unscaled) or when the subsample holds no valid pixel.
        """
        if self.dtype in (np.uint8, np.bool_):
            return None
        parts = [select_channels(p, self.channels) for p in self.sample()]
        if self.nodata is not None or self.dtype.kind == "f":  # nodata pixels: not counted
            from ..io.bands import valid_mask

            masks = [valid_mask(p, self.nodata) for p in parts]
            parts = [p if m is None else p[m][:, None, :] for p, m in zip(parts, masks)]
        flat = np.concatenate([p.reshape(-1, p.shape[-1]) for p in parts])
        if not len(flat):
            return None
        lo, hi = intensity_range(flat[:, None, :])
        return [float(v) for v in lo], [float(v) for v in hi]

    def pixels(self, box, value_range) -> np.ndarray:
        """One window as the model takes it.

        Parameters
        ----------
        box : sequence of 4 int
            (row0, col0, row1, col1) in the image, exclusive ends.
        value_range : (low, high) or None
            The contrast range (`value_range`); None: the window's own percentiles.

        Returns
        -------
        ndarray (h, w, 3) float32
            Selected channels scaled to 0-255.
        """
        return to_model_pixels(self.read(box), self.channels, value_range)
