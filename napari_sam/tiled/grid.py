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
    """Start of each window along one axis (see the module docstring)."""
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
    index: Tuple[int, int]          # (iy, ix) in the grid
    window: Box                     # the pixels the model sees
    core: Box                       # the pixels this tile owns
    inner: Tuple[bool, bool, bool, bool]  # (top, left, bottom, right) edge is not on the image border

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
        """Smallest distance from `box` (row0, col0, row1, col1, inclusive coordinates of the
        prompt's extent) to an inner edge of the window; edges on the image border count as
        infinitely far. Negative where the box sticks out of the window."""
        r0, c0, r1, c1 = (float(v) for v in box)
        y0, x0, y1, x1 = self.window
        d = [r0 - y0, c0 - x0, (y1 - 1) - r1, (x1 - 1) - c1]
        out = [v if inner else (math.inf if v >= 0 else v) for v, inner in zip(d, self.inner)]
        return min(out)

    def core_mask(self) -> np.ndarray:
        """Bool (h, w) over the window: True on the core."""
        m = np.zeros(self.shape, bool)
        y0, x0 = self.window[:2]
        m[self.core[0] - y0:self.core[2] - y0, self.core[1] - x0:self.core[3] - x0] = True
        return m

    def edge_mask(self, width: int = 1) -> np.ndarray:
        """Bool (h, w) over the window: True within `width` pixels of an inner edge."""
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
    """Overlapping tiles over an image of `shape` (Y, X).

    tile: window side in pixels; overlap: minimum overlap of neighbouring windows (< tile).
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
        return {"shape": list(self.shape), "tile": self.tile, "overlap": self.overlap,
                "grid": list(self.grid_shape)}

    # ---- look-ups ---------------------------------------------------------------------
    def owner(self, row: float, col: float) -> Tile:
        """The tile whose core contains pixel (row, col)."""
        iy = int(np.searchsorted(self.bounds[0], row, side="right")) - 1
        ix = int(np.searchsorted(self.bounds[1], col, side="right")) - 1
        ny, nx = self.grid_shape
        return self[min(max(iy, 0), ny - 1), min(max(ix, 0), nx - 1)]

    def intersecting(self, box: Box) -> List[Tile]:
        """Tiles whose window meets `box` (row0, col0, row1, col1), exclusive ends."""
        r0, c0, r1, c1 = box
        ys = [i for i, s in enumerate(self.starts[0]) if s < r1 and s + self.tile > r0]
        xs = [i for i, s in enumerate(self.starts[1]) if s < c1 and s + self.tile > c0]
        return [self[iy, ix] for iy in ys for ix in xs]

    def best_tile(self, box, exclude: Optional[set] = None) -> Optional[Tile]:
        """The tile that holds `box` (inclusive row0, col0, row1, col1) with the most margin
        to its inner edges; ties go to the tile whose centre is nearest the box centre.
        Tiles in `exclude` are skipped (None when no other tile meets the box)."""
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
        iy, ix = tile.index
        ny, nx = self.grid_shape
        return [self[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if (dy or dx) and 0 <= iy + dy < ny and 0 <= ix + dx < nx]


def intersect(a: Box, b: Box) -> Optional[Box]:
    """Intersection of two boxes with exclusive ends, or None."""
    r0, c0 = max(a[0], b[0]), max(a[1], b[1])
    r1, c1 = min(a[2], b[2]), min(a[3], b[3])
    return (r0, c0, r1, c1) if r0 < r1 and c0 < c1 else None
