"""Tile embeddings kept in memory: the store for small images and one-off sessions.

`MemoryStore` has the methods of `cache.ZarrStore` (which writes them to disk), so
`TiledEmbeddings` uses either alike; `napari_sam.tiled.cache` re-exports it.
"""

from __future__ import annotations

from typing import Dict, Set, Tuple

import numpy as np


class MemoryStore:
    """Embeddings kept in a dict (no disk): for small images and one-off sessions. The same
    methods as `ZarrStore`; tiles are addressed by their grid index (row, col).

    Parameters
    ----------
    signature : dict
        What the embeddings were computed from (kept, not checked).
    grid_shape, feature_shape : sequence of int
        The tile grid's (rows, cols) and one tile's (C, g, g); unused, as `ZarrStore`'s.
    dtype : str
        The dtype the features are stored in.
    """

    path = None

    def __init__(self, signature: dict, grid_shape, feature_shape, dtype: str = "float32"):
        self.signature = signature
        self.dtype = np.dtype(dtype)
        self._data: Dict[Tuple[int, int], np.ndarray] = {}

    def done(self) -> Set[Tuple[int, int]]:
        """The tiles stored.

        Returns
        -------
        set of (int, int)
            Their grid indices (row, col).
        """
        return set(self._data)

    def has(self, index) -> bool:
        """Whether a tile is stored.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).

        Returns
        -------
        bool
        """
        return tuple(index) in self._data

    def get(self, index) -> np.ndarray:
        """A stored tile's features; KeyError if it is not stored.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).

        Returns
        -------
        ndarray (C, g, g) float32
        """
        return self._data[tuple(index)].astype(np.float32)

    def put(self, index, features: np.ndarray) -> None:
        """Store a tile's features (in the store's dtype).

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        features : ndarray (C, g, g)
        """
        self._data[tuple(index)] = np.asarray(features).astype(self.dtype)

    def discard(self, index) -> None:
        """Forget a tile (nothing happens if it is not stored).

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        """
        self._data.pop(tuple(index), None)
