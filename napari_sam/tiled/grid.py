"""The tile grid: overlapping windows at native resolution and the core region each owns.

Along each axis of length L, tiles of size T overlap by at least O pixels: n = ceil((L - O) /
(T - O)) windows whose starts are spread evenly from 0 to L - T, so every tile has the full
size T (an axis shorter than T gets one window of length L) and the overlaps are as equal as
the rounding allows. The *core* of a tile is the part of its window that is closer to its own
centre than to its neighbour's: the boundary between two neighbours lies in the middle of
their overlap, so the cores partition the image and every core pixel has at least O / 2
pixels of context on the tile's inner sides.

Two facts the rest of the package relies on:
- any interval of length <= O lies inside one window, so an object at most O pixels across
  (along each axis) is seen whole by at least one tile;
- an edge of a window on the image border is not a cut: nothing lies beyond it.

Windows, cores and boxes are (row0, col0, row1, col1) with exclusive ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

Box = Tuple[int, int, int, int]


def axis_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start of each window along one axis (see the module docstring).

    Parameters
    ----------
    length : int
        The image's size along the axis, in pixels.
    tile : int
        The window's size.
    overlap : int
        The least overlap of neighbouring windows.

    Returns
    -------
    list of int
        Window starts, evenly spaced from 0 to `length - tile` ([0] when one window fits).
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    if n == 1:
        return [0]
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def _core_bounds(starts: Sequence[int], tile: int, length: int) -> List[int]:
    """n + 1 boundaries: core i is [b[i], b[i + 1])."""
    ends = [min(s + tile, length) for s in starts]
    mids = [(starts[i + 1] + ends[i]) // 2 for i in range(len(starts) - 1)]
    return [0] + mids + [length]


@dataclass(frozen=True)
class Tile:
    """One tile of a `TileGrid` (made by the grid, not by hand).

    Parameters
    ----------
    index : (int, int)
        (row, col) of the tile in the grid.
    window : (int, int, int, int)
        The pixels the model sees: (row0, col0, row1, col1) in the image, exclusive ends.
    core : (int, int, int, int)
        The pixels this tile owns, inside the window; the cores partition the image.
    inner : (bool, bool, bool, bool)
        For the (top, left, bottom, right) edges: whether the edge lies inside the image
        (a cut) rather than on its border.
    """

    index: Tuple[int, int]
    window: Box
    core: Box
    inner: Tuple[bool, bool, bool, bool]

    @property
    def shape(self) -> Tuple[int, int]:
        return self.window[2] - self.window[0], self.window[3] - self.window[1]

    @property
    def slices(self) -> Tuple[slice, slice]:
        return slice(self.window[0], self.window[2]), slice(self.window[1], self.window[3])

    @property
    def key(self) -> str:
        return f"{self.index[0]}_{self.index[1]}"

    def margin(self, box) -> float:
        """How far a box stays from the window's cuts.

        Parameters
        ----------
        box : sequence of 4 float
            (row0, col0, row1, col1), inclusive coordinates of a prompt's extent in the
            image.

        Returns
        -------
        float
            The smallest distance in pixels from the box to an inner edge of the window
            (edges on the image border count as infinitely far); negative where the box
            sticks out of the window.
        """
        r0, c0, r1, c1 = (float(v) for v in box)
        y0, x0, y1, x1 = self.window
        d = [r0 - y0, c0 - x0, (y1 - 1) - r1, (x1 - 1) - c1]
        out = [v if inner else (math.inf if v >= 0 else v) for v, inner in zip(d, self.inner)]
        return min(out)

    def core_mask(self) -> np.ndarray:
        """Where the core lies in the window.

        Returns
        -------
        ndarray (h, w) bool
            Over the window (h, w = `shape`): True on the core.
        """
        m = np.zeros(self.shape, bool)
        y0, x0 = self.window[:2]
        m[self.core[0] - y0:self.core[2] - y0, self.core[1] - x0:self.core[3] - x0] = True
        return m

    def edge_mask(self, width: int = 1) -> np.ndarray:
        """Where the window's cuts are.

        Parameters
        ----------
        width : int
            Band width in pixels.

        Returns
        -------
        ndarray (h, w) bool
            Over the window: True within `width` pixels of an inner edge (not along edges
            on the image border).
        """
        m = np.zeros(self.shape, bool)
        top, left, bottom, right = self.inner
        if top:
            m[:width] = True
        if left:
            m[:, :width] = True
        if bottom:
            m[-width:] = True
        if right:
            m[:, -width:] = True
        return m


class TileGrid:
    """Overlapping tiles over an image (see the module docstring); indexed by (row, col)
    in the grid, iterated row by row.

    Parameters
    ----------
    shape : sequence of int
        The image's (Y, X); further entries are ignored.
    tile : int
        Window side in pixels (at least 16).
    overlap : int
        Minimum overlap of neighbouring windows in pixels (0 <= overlap < tile).
    """

    def __init__(self, shape: Sequence[int], tile: int, overlap: int) -> None:
        tile, overlap = int(tile), int(overlap)
        if tile < 16:
            raise ValueError(f"tile size {tile} is too small; use at least 16 pixels "
                             "(the model's input size is a good choice)")
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be >= 0 and smaller than the tile size {tile}, "
                             f"got {overlap}")
        self.shape = (int(shape[0]), int(shape[1]))
        if min(self.shape) < 1:
            raise ValueError(f"empty image of shape {self.shape}")
        self.tile, self.overlap = tile, overlap
        self.starts = (axis_starts(self.shape[0], tile, overlap),
                       axis_starts(self.shape[1], tile, overlap))
        self.bounds = (_core_bounds(self.starts[0], tile, self.shape[0]),
                       _core_bounds(self.starts[1], tile, self.shape[1]))

    # ---- basic access -----------------------------------------------------------------
    @property
    def grid_shape(self) -> Tuple[int, int]:
        return len(self.starts[0]), len(self.starts[1])

    def __len__(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def __iter__(self) -> Iterator[Tile]:
        for iy in range(self.grid_shape[0]):
            for ix in range(self.grid_shape[1]):
                yield self[iy, ix]

    def __getitem__(self, index) -> Tile:
        iy, ix = (int(i) for i in index)
        ny, nx = self.grid_shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            raise IndexError(f"tile {(iy, ix)} outside the {ny} x {nx} grid")
        (sy, sx), (by, bx) = (self.starts[0][iy], self.starts[1][ix]), self.bounds
        h, w = self.shape
        window = (sy, sx, min(sy + self.tile, h), min(sx + self.tile, w))
        core = (by[iy], bx[ix], by[iy + 1], bx[ix + 1])
        inner = (iy > 0, ix > 0, iy < ny - 1, ix < nx - 1)
        return Tile((iy, ix), window, core, inner)

    def describe(self) -> dict:
        """The grid as plain data (for signatures and reports).

        Returns
        -------
        dict
            "shape" [Y, X], "tile", "overlap" and "grid" [rows, cols].
        """
        return {"shape": list(self.shape), "tile": self.tile, "overlap": self.overlap,
                "grid": list(self.grid_shape)}

    # ---- look-ups ---------------------------------------------------------------------
    def owner(self, row: float, col: float) -> Tile:
        """The tile that owns a pixel.

        Parameters
        ----------
        row, col : float
            The pixel, in image coordinates (outside the image: the nearest tile).

        Returns
        -------
        Tile
            The tile whose core contains it.
        """
        iy = int(np.searchsorted(self.bounds[0], row, side="right")) - 1
        ix = int(np.searchsorted(self.bounds[1], col, side="right")) - 1
        ny, nx = self.grid_shape
        return self[min(max(iy, 0), ny - 1), min(max(ix, 0), nx - 1)]

    def intersecting(self, box: Box) -> List[Tile]:
        """The tiles whose window meets a box.

        Parameters
        ----------
        box : (int, int, int, int)
            (row0, col0, row1, col1) in the image, exclusive ends.

        Returns
        -------
        list of Tile
            Row by row.
        """
        r0, c0, r1, c1 = box
        ys = [i for i, s in enumerate(self.starts[0]) if s < r1 and s + self.tile > r0]
        xs = [i for i, s in enumerate(self.starts[1]) if s < c1 and s + self.tile > c0]
        return [self[iy, ix] for iy in ys for ix in xs]

    def best_tile(self, box, exclude: Optional[set] = None) -> Optional[Tile]:
        """The tile that holds a box with the most margin to its inner edges (`Tile.margin`);
        ties go to the tile whose centre is nearest the box centre.

        Parameters
        ----------
        box : sequence of 4 float
            (row0, col0, row1, col1), inclusive coordinates in the image.
        exclude : set of (int, int), optional
            Grid indices of tiles to skip.

        Returns
        -------
        Tile or None
            None when no tile outside `exclude` meets the box.
        """
        r0, c0, r1, c1 = (float(v) for v in box)
        cands = self.intersecting((int(math.floor(r0)), int(math.floor(c0)),
                                   int(math.floor(r1)) + 1, int(math.floor(c1)) + 1))
        cands = [t for t in cands if not exclude or t.index not in exclude]
        if not cands:
            return None
        cy, cx = (r0 + r1) / 2, (c0 + c1) / 2

        def rank(t: Tile):
            wy, wx = (t.window[0] + t.window[2]) / 2, (t.window[1] + t.window[3]) / 2
            return (-t.margin(box), math.hypot(wy - cy, wx - cx), t.index)

        return min(cands, key=rank)

    def neighbours(self, tile: Tile) -> List[Tile]:
        """The up to eight tiles around one.

        Parameters
        ----------
        tile : Tile

        Returns
        -------
        list of Tile
            Row by row, the tile itself left out.
        """
        iy, ix = tile.index
        ny, nx = self.grid_shape
        return [self[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if (dy or dx) and 0 <= iy + dy < ny and 0 <= ix + dx < nx]


def intersect(a: Box, b: Box) -> Optional[Box]:
    """Intersection of two boxes with exclusive ends, or None.

    Parameters
    ----------
    a, b : (int, int, int, int)
        (row0, col0, row1, col1), exclusive ends.

    Returns
    -------
    (int, int, int, int) or None
        The common box, or None when they do not overlap.
    """
    r0, c0 = max(a[0], b[0]), max(a[1], b[1])
    r1, c1 = min(a[2], b[2]), min(a[3], b[3])
    return (r0, c0, r1, c1) if r0 < r1 and c0 < c1 else None
