"""Per-tile automask results: a tile's label image and its records, kept until stitched.

On disk (a work folder beside the output) they make a long run resumable and let Dask
workers hand results over without sending label images through the scheduler:

    signature.json     tiling, model and automask settings the tiles were made with
    labels/            zarr (ny, nx, T, T) uint32, one chunk per tile
    done/<iy>_<ix>.json  the tile's records, written atomically after its chunk (= done marker)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from .cache import _write_replace

KIND = "napari-sam tiled automask work folder"


class MemoryResults:
    """Tile results kept in memory (no work folder): the same methods as `ZarrResults`.

    Parameters
    ----------
    tile_shape : (int, int)
        (rows, cols) of a full tile.
    """

    path = None

    def __init__(self, tile_shape) -> None:
        self.tile_shape = tuple(tile_shape)
        self._data: Dict[Tuple[int, int], tuple] = {}

    def done(self) -> Set[Tuple[int, int]]:
        """The tiles stored.

        Returns
        -------
        set of (int, int)
            Their grid indices (row, col).
        """
        return set(self._data)

    def put(self, index, labels: np.ndarray, records: List[dict]) -> None:
        """Store one tile's results.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        labels : ndarray, (h, w) int
            The tile's labels (stored as uint32), in its window's pixels.
        records : list of dict
            One record per object of the tile.
        """
        self._data[tuple(index)] = (np.asarray(labels, np.uint32), list(records))

    def labels(self, index, shape) -> np.ndarray:
        """A tile's labels.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        shape : (int, int)
            The tile window's (rows, cols), for the zeros of a tile not stored.

        Returns
        -------
        ndarray, (h, w) uint32
            As stored; zeros of `shape` when the tile is not stored.
        """
        got = self._data.get(tuple(index))
        return np.zeros(shape, np.uint32) if got is None else got[0]

    def records(self, index) -> List[dict]:
        """A tile's records.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).

        Returns
        -------
        list of dict
            Empty when the tile is not stored.
        """
        got = self._data.get(tuple(index))
        return [] if got is None else got[1]


class ZarrResults:
    """Tile results in a work folder; a folder made with other settings is cleared (it holds
    only intermediate results of this program, recognised by its signature).

    Parameters
    ----------
    path : str or Path
        The work folder (created when missing; ValueError for a folder that is not one).
    signature : dict
        The tiling, model and automask settings, compared with the folder's.
    grid_shape : (int, int)
        The tile grid's (rows, cols).
    tile_shape : (int, int)
        (rows, cols) of a full tile.
    """

    def __init__(self, path, signature: dict, grid_shape, tile_shape) -> None:
        from numcodecs import Blosc

        from ..io.zarr_arrays import open_array

        self.path = Path(path)
        self.tile_shape = tuple(tile_shape)
        sig = json.loads(json.dumps(dict(signature, kind=KIND)))
        sig_file = self.path / "signature.json"
        if sig_file.is_file():
            try:
                old = json.loads(sig_file.read_text())
            except (OSError, ValueError):
                old = {}
            if old != sig:
                if old.get("kind") != KIND:
                    raise ValueError(f"{self.path} is not a napari-sam work folder; "
                                     "remove it or choose another output")
                shutil.rmtree(self.path)
        elif self.path.exists() and any(self.path.iterdir()):
            raise ValueError(f"{self.path} exists and is not a napari-sam work folder; "
                             "remove it or choose another output")
        if not sig_file.is_file():
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "done").mkdir(exist_ok=True)
            open_array(self.path / "labels", mode="a",
                       shape=tuple(grid_shape) + self.tile_shape,
                       chunks=(1, 1) + self.tile_shape, dtype="uint32", fill_value=0,
                       compressor=Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE))
            _write_replace(sig_file, json.dumps(sig, indent=1).encode())
        self.array = open_array(self.path / "labels", mode="r+")

    def done(self) -> Set[Tuple[int, int]]:
        """The tiles whose records are written.

        Returns
        -------
        set of (int, int)
            Their grid indices (row, col).
        """
        out = set()
        for name in os.listdir(self.path / "done"):
            parts = name[:-5].split("_") if name.endswith(".json") else []
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                out.add((int(parts[0]), int(parts[1])))
        return out

    def put(self, index, labels: np.ndarray, records: List[dict]) -> None:
        """Write one tile's labels, then its records (the done marker).

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        labels : ndarray, (h, w) int
            The tile's labels, h, w at most `tile_shape` (stored zero-padded, uint32).
        records : list of dict
            One JSON-serialisable record per object of the tile.
        """
        full = np.zeros(self.tile_shape, np.uint32)
        full[:labels.shape[0], :labels.shape[1]] = labels
        self.array[index[0], index[1]] = full
        _write_replace(self.path / "done" / f"{index[0]}_{index[1]}.json",
                       json.dumps(records).encode())

    def labels(self, index, shape) -> np.ndarray:
        """A tile's labels, cut to its window.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        shape : (int, int)
            The tile window's (rows, cols).

        Returns
        -------
        ndarray, shape uint32
            Zeros when the tile is not written.
        """
        return np.asarray(self.array[index[0], index[1], :shape[0], :shape[1]])

    def records(self, index) -> List[dict]:
        """A tile's records.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).

        Returns
        -------
        list of dict
            Empty when the tile is not done.
        """
        p = self.path / "done" / f"{index[0]}_{index[1]}.json"
        return json.loads(p.read_text()) if p.is_file() else []

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def open_results(path: Optional[Path], signature: dict, grid_shape, tile_shape):
    """The tile results of a run: in memory, or in the work folder `path`.

    Parameters
    ----------
    path : Path, optional
        The work folder (None: in memory).
    signature : dict
        The run's settings (a work folder with other ones is cleared).
    grid_shape, tile_shape : (int, int)
        The tile grid's (rows, cols) and a full tile's (rows, cols).

    Returns
    -------
    MemoryResults or ZarrResults
    """
    if path is None:
        return MemoryResults(tile_shape)
    return ZarrResults(path, signature, grid_shape, tile_shape)
