"""The pieces of a tiled run and their links across the seams, for `stitch`.

A *piece* is one object of one tile's label image. `collect_pieces` measures every piece
of every tile (area, centroid, box, whether it is complete: touching no inner edge of its
tile); `link_pieces` joins the pieces of neighbouring tiles that are each other's best
match in the two windows' overlap, and numbers the groups that result.
`napari_sam.tiled.stitch` re-exports every name.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .grid import Tile, TileGrid, intersect


class _TileReader:
    """Tile label images with a small LRU (tiles are read in raster order)."""

    def __init__(self, results, grid: TileGrid, size: int = 16) -> None:
        self.results, self.grid, self.size = results, grid, size
        self._lru: "OrderedDict[tuple, np.ndarray]" = OrderedDict()

    def __call__(self, tile: Tile) -> np.ndarray:
        k = tile.index
        if k in self._lru:
            self._lru.move_to_end(k)
            return self._lru[k]
        lab = self.results.labels(k, tile.shape)
        self._lru[k] = lab
        if len(self._lru) > self.size:
            self._lru.popitem(last=False)
        return lab


def _piece_stats(tile: Tile, lab: np.ndarray):
    """Per piece id 1..n: area, centroid (image pixels), bbox (local), complete flag."""
    n = int(lab.max()) if lab.size else 0
    flat = lab.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    rr, cc = np.indices(lab.shape)
    cy = np.bincount(flat, rr.ravel(), n + 1)[1:] / np.maximum(area, 1) + tile.window[0]
    cx = np.bincount(flat, cc.ravel(), n + 1)[1:] / np.maximum(area, 1) + tile.window[1]
    touching = np.zeros(n + 1, bool)
    touching[np.unique(lab[tile.edge_mask(1)])] = True
    complete = ~touching[1:] & (area > 0)
    boxes = ndi.find_objects(lab, n)
    return area, cy, cx, complete, boxes


def _links(a: np.ndarray, b: np.ndarray, link_iou: float) -> List[Tuple[int, int]]:
    """Mutual best matches (ids in a, ids in b) with IoU >= link_iou between two label crops."""
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    key = a[both].astype(np.int64) * nb + b[both]
    pairs, inter = np.unique(key, return_counts=True)
    ia, ib = pairs // nb, pairs % nb
    area_a = np.bincount(a.ravel(), minlength=na)
    area_b = np.bincount(b.ravel(), minlength=nb)
    iou = inter / (area_a[ia] + area_b[ib] - inter)
    best_a = np.zeros(na)
    best_b = np.zeros(nb)
    np.maximum.at(best_a, ia, iou)
    np.maximum.at(best_b, ib, iou)
    ok = (iou >= link_iou) & (iou == best_a[ia]) & (iou == best_b[ib])
    return list(zip(ia[ok].tolist(), ib[ok].tolist()))


@dataclass
class Pieces:
    """Every piece of every tile, as flat arrays over node numbers (one per piece, N in all).

    Parameters
    ----------
    tiles : list of Tile
        The grid's tiles, in raster order.
    offset : dict of (int, int) to int
        First node of each tile, by tile index (row, col).
    boxes : list of list
        Per tile: `find_objects` slices of its pieces in its window (None for a missing id).
    area : ndarray, (N,)
        Pixels per piece.
    cy, cx : ndarray, (N,) float
        The piece's centroid (row, col) in image pixels.
    complete : ndarray, (N,) bool
        The piece touches no inner edge of its tile.
    tile_of : ndarray, (N,) int
        Index into `tiles`.
    """

    tiles: List[Tile]
    offset: Dict[tuple, int]          # first node of each tile
    boxes: List[list]                 # per tile: find_objects slices of its pieces
    area: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    complete: np.ndarray              # touches no inner edge of its tile
    tile_of: np.ndarray               # index into `tiles`

    def __len__(self) -> int:
        return len(self.area)


def collect_pieces(grid: TileGrid, read, progress, total: int) -> Pieces:
    """Measure the pieces of every tile of `grid` (tiles in raster order).

    Parameters
    ----------
    grid : TileGrid
    read : callable
        `read(tile)` -> the tile's (h, w) uint32 labels, pieces 1..n.
    progress : callable
        `progress(done, total, message)`, once per tile (done = 1..number of tiles).
    total : int
        The total passed to `progress`.

    Returns
    -------
    Pieces
    """
    tiles = list(grid)
    offset, stats, n = {}, [], 0
    for k, t in enumerate(tiles):
        s = _piece_stats(t, read(t))
        offset[t.index] = n
        n += len(s[0])
        stats.append(s)
        progress(k + 1, total, "stitching: pieces")
    cat = lambda i, dtype: (np.concatenate([s[i] for s in stats]) if stats  # noqa: E731
                            else np.zeros(0, dtype))
    tile_of = (np.concatenate([np.full(len(s[0]), i) for i, s in enumerate(stats)])
               if stats else np.zeros(0, int))
    return Pieces(tiles, offset, [s[4] for s in stats], cat(0, float), cat(1, float),
                  cat(2, float), cat(3, bool), tile_of)


def link_pieces(grid: TileGrid, read, pieces: Pieces, link_iou: float, progress,
                total: int) -> np.ndarray:
    """Group number of every piece: pieces linked across seams share one.

    Pieces of neighbouring tiles (sides and corners) are linked when they are each other's
    best match, with IoU >= `link_iou`, in the two windows' overlap.

    Parameters
    ----------
    grid : TileGrid
    read : callable
        `read(tile)` -> the tile's (h, w) uint32 labels.
    pieces : Pieces
        From `collect_pieces`.
    link_iou : float
        Smallest IoU of a link.
    progress : callable
        `progress(done, total, message)`, once per tile (after the tiles of `collect_pieces`).
    total : int
        The total passed to `progress`.

    Returns
    -------
    ndarray, (N,) int32
        The group (connected component) of each piece, 0..G-1.
    """
    src, dst = [], []
    ny, nx = grid.grid_shape
    n = len(pieces.tiles)
    for k, t in enumerate(pieces.tiles):
        iy, ix = t.index
        for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
            if not (0 <= iy + dy < ny and 0 <= ix + dx < nx):
                continue
            u = grid[iy + dy, ix + dx]
            ov = intersect(t.window, u.window)
            if ov is None:
                continue
            a = read(t)[ov[0] - t.window[0]:ov[2] - t.window[0],
                        ov[1] - t.window[1]:ov[3] - t.window[1]]
            b = read(u)[ov[0] - u.window[0]:ov[2] - u.window[0],
                        ov[1] - u.window[1]:ov[3] - u.window[1]]
            for la, lb in _links(a, b, link_iou):
                src.append(pieces.offset[t.index] + la - 1)
                dst.append(pieces.offset[u.index] + lb - 1)
        progress(n + k + 1, total, "stitching: matching across seams")
    m = len(pieces)
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(m, m))
    return connected_components(graph, directed=False)[1]
