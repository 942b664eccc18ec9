"""zarr arrays on disk, the same files with zarr 2 or zarr 3 installed.

Every array the package writes (the tiled embedding cache, tile results, label images) is in
zarr's format 2: `.zarray` metadata, one file per chunk, a numcodecs compressor (Blosc).
zarr 2 writes nothing else; zarr 3 writes format 3 unless told, and refuses a numcodecs
`compressor=` there, so `open_array` asks it for format 2. Caches and label images made
under either version open under the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

FORMAT = 2


def zarr_major() -> int:
    """The installed zarr's major version (2 or 3).

    Returns
    -------
    int
    """
    import zarr

    return int(zarr.__version__.split(".")[0])


def open_array(path: Union[str, Path], mode: str, **create):
    """`zarr.open_array` of a format-2 array on disk, under zarr 2 or 3.

    Parameters
    ----------
    path : str or Path
        The array's directory.
    mode : {"r", "r+", "a", "w"}
        As for `zarr.open_array`: read, read/write an existing array, open or create,
        create (replacing what is there).
    **create
        Creation keywords (shape, chunks, dtype, fill_value, compressor: a numcodecs
        codec), used when the array is created.

    Returns
    -------
    zarr.Array
    """
    import zarr

    if zarr_major() >= 3:
        create["zarr_format"] = FORMAT
    return zarr.open_array(str(path), mode=mode, **create)
