"""Stitching per-tile label images into one, so that no object is split or counted twice.

Every object a tile found is a *piece*. Pieces of neighbouring tiles (sides and corners) are
compared inside the two windows' overlap, where both tiles saw the same pixels: a pair that
are each other's best match there with IoU >= `link_iou` is one object. Linked pieces form
groups (connected components), and each group is painted once, under one id:

- if some piece of the group is *complete* (it touches no inner edge of its tile, so that
  tile saw the whole object), the complete piece whose centroid has the most margin in its
  tile is painted, whole, and the other pieces are ignored;
- otherwise (an object larger than what one tile sees whole) every piece is painted on its
  own tile's core and on the parts of its window that no other piece's tile owns, so the
  pieces join at the core boundaries in the middle of the overlaps.

Pixels claimed by two groups go to the first painted (tiles in raster order). The label
image is painted tile by tile into any array with numpy slicing (a zarr array on disk for
big images) and renumbered 1..N; memory is a few tiles plus a few numbers per object.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..progress import null_progress
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
    """Every piece of every tile, as flat arrays over node numbers (one per piece)."""

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
    """Group number of every piece: pieces linked across seams share one."""
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


@dataclass
class Plan:
    chosen: np.ndarray        # per group, its best piece (node number)
    whole: np.ndarray         # bool per node: paint the piece whole
    part: np.ndarray          # bool per node: paint the piece on its own ground
    group_tiles: Dict[int, set]
    gid: np.ndarray           # provisional output id per group (0: not painted)


def plan_painting(pieces: Pieces, group: np.ndarray) -> Plan:
    """Per group: its complete piece with the most margin, whole; or, when none is
    complete, all its pieces, each on the part of its window no other piece's tile owns."""
    n = len(pieces)
    present = pieces.area > 0
    margin = np.array([pieces.tiles[pieces.tile_of[i]].margin(
        (pieces.cy[i], pieces.cx[i], pieces.cy[i], pieces.cx[i])) for i in range(n)])
    n_groups = int(group.max()) + 1 if n else 0
    order = np.lexsort((np.arange(n), -margin.reshape(n), ~pieces.complete, ~present, group))
    first = np.ones(n, bool)
    first[1:] = group[order][1:] != group[order][:-1]
    chosen = order[first]
    has_complete = np.zeros(n_groups, bool)
    has_complete[group[chosen]] = pieces.complete[chosen]
    whole = np.zeros(n, bool)
    whole[chosen[pieces.complete[chosen]]] = True
    part = present & ~has_complete[group]
    group_tiles: Dict[int, set] = {}
    for i in np.nonzero(part)[0]:
        group_tiles.setdefault(int(group[i]), set()).add(int(pieces.tile_of[i]))
    # provisional ids: groups in the order of their first piece (raster order of tiles)
    gid = np.zeros(n_groups, np.int64)
    painted = np.unique(group[whole | part])
    first_node = np.full(n_groups, n)
    np.minimum.at(first_node, group, np.arange(n))
    gid[painted[np.argsort(first_node[painted], kind="stable")]] = np.arange(1, len(painted) + 1)
    return Plan(chosen, whole, part, group_tiles, gid)


def paint(out, read, grid: TileGrid, pieces: Pieces, group: np.ndarray, plan: Plan,
          progress, total: int):
    """Paint tile by tile; a pixel already painted keeps its id (first wins). Returns, per
    provisional id, the pixels it asked for and the pixels it holds."""
    n_tiles = len(pieces.tiles)
    wanted = np.zeros(int(plan.gid.max(initial=0)) + 1, np.int64)
    got = np.zeros_like(wanted)
    number = {t.index: k for k, t in enumerate(pieces.tiles)}
    for k, t in enumerate(pieces.tiles):
        lab = read(t)
        near = [number[u.index] for u in grid.intersecting(t.window) if u.index != t.index]
        base = pieces.offset[t.index]
        n = len(pieces.boxes[k])
        lut = np.zeros(n + 1, np.uint32)
        whole = np.nonzero(plan.whole[base:base + n])[0]
        lut[whole + 1] = plan.gid[group[base + whole]]
        buf = lut[lab]
        for j in np.nonzero(plan.part[base:base + n])[0]:
            box = pieces.boxes[k][j]
            if box is None:
                continue
            g = int(group[base + j])
            mine = plan.group_tiles[g]  # only tiles whose windows meet t's can matter
            others = [pieces.tiles[o] for o in near if o in mine]
            buf[box][(lab[box] == j + 1) & _allowed(t, box, others)] = plan.gid[g]
        if buf.any():
            cur = np.asarray(out[t.slices])
            ask = buf > 0
            fill = ask & (cur == 0)
            _count(wanted, buf[ask])
            _count(got, buf[fill | (ask & (cur == buf))])
            if fill.any():
                cur[fill] = buf[fill]
                out[t.slices] = cur
        progress(2 * n_tiles + k + 1, total, "stitching: painting")
    return wanted, got


def _count(acc: np.ndarray, ids: np.ndarray) -> None:
    u, n = np.unique(ids, return_counts=True)
    acc[u] += n


def piece_scores(results, pieces: Pieces, group: np.ndarray, plan: Plan) -> dict:
    """{provisional id: (the generator's scores of the group's chosen piece, its tile)}."""
    scores, by_tile = {}, {}
    for i in plan.chosen:
        if plan.gid[group[i]]:
            by_tile.setdefault(int(pieces.tile_of[i]), []).append(int(i))
    for k, nodes in by_tile.items():
        index = pieces.tiles[k].index
        recs = results.records(index)
        for i in nodes:
            local = i - pieces.offset[index]
            r = recs[local] if local < len(recs) else {}
            scores[int(plan.gid[group[i]])] = (
                {key: r[key] for key in ("predicted_iou", "stability") if key in r}, index)
    return scores


def stitch(grid: TileGrid, results, out, link_iou: float = 0.3, min_visible: float = 0.5,
           progress=null_progress):
    """Paint the tiles' pieces into `out`, objects linked across the seams.

    An object left with less than `min_visible` of its pixels by the objects painted
    before it (a duplicate that failed to link, a sliver) is removed.

    Parameters
    ----------
    grid : TileGrid
    results : MemoryResults or ZarrResults
        The tile segmenters' results (`tiled.results`): per tile index (iy, ix), its
        (h, w) uint32 labels (`labels(index, shape)`) and records.
    out : array-like, (Y, X) uint32
        Zeros of the image's shape, with numpy slicing (numpy, or zarr on disk); painted
        in place.
    link_iou : float
        Smallest IoU, in the overlap of two tiles, for two pieces to be one object.
    min_visible : float
    progress : callable(done, total, message), optional

    Returns
    -------
    records : list of dict
        One per object of `out`: id, area, bbox (row0, col0, row1, col1), centroid
        (row, col), tile, and the segmenter's scores when it gave them.
    """
    read = _TileReader(results, grid)
    total = 3 * len(grid)
    pieces = collect_pieces(grid, read, progress, total)
    group = link_pieces(grid, read, pieces, link_iou, progress, total)
    plan = plan_painting(pieces, group)
    wanted, got = paint(out, read, grid, pieces, group, plan, progress, total)
    drop = set(np.nonzero(got < min_visible * wanted)[0].tolist())
    return finish(out, grid, piece_scores(results, pieces, group, plan), progress, drop=drop)


def _allowed(t: Tile, box, others: List[Tile]) -> np.ndarray:
    """Within `box` (local slices of t's window): pixels not in the core of any tile in
    `others` (where another piece of the same object is painted)."""
    shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
    ok = np.ones(shape, bool)
    r0, c0 = t.window[0] + box[0].start, t.window[1] + box[1].start
    for o in others:
        ov = intersect(o.core, (r0, c0, r0 + shape[0], c0 + shape[1]))
        if ov is not None:
            ok[ov[0] - r0:ov[2] - r0, ov[1] - c0:ov[3] - c0] = False
    return ok


def finish(out, grid: TileGrid, scores: dict, progress=null_progress, chunk: int = 1024,
           drop=frozenset()):
    """Measure the painted labels block by block, renumber them 1..N (erasing the ids in
    `drop`, closing the gaps of ids left without pixels) and return one record per object."""
    h, w = grid.shape
    blocks = [(r, c, min(r + chunk, h), min(c + chunk, w))
              for r in range(0, h, chunk) for c in range(0, w, chunk)]
    acc: Dict[int, list] = {}
    for r0, c0, r1, c1 in blocks:
        part = np.asarray(out[r0:r1, c0:c1])
        ids, inv = np.unique(part, return_inverse=True)
        loc = inv.reshape(part.shape) + (1 if ids[0] > 0 else 0)
        if ids[0] == 0:
            ids = ids[1:]
        if not len(ids):
            continue
        index = np.arange(1, len(ids) + 1)
        objs = ndi.find_objects(loc)
        ones = np.ones(part.shape)
        lab_areas = ndi.sum_labels(ones, loc, index)
        coms = ndi.center_of_mass(ones, loc, index)
        for j, (i, a, (my, mx)) in enumerate(zip(ids.tolist(), lab_areas, coms)):
            if i in drop:
                continue
            sl = objs[j]
            box = [sl[0].start + r0, sl[1].start + c0, sl[0].stop + r0, sl[1].stop + c0]
            e = acc.get(i)
            if e is None:
                acc[i] = [a, a * (my + r0), a * (mx + c0), box]
            else:
                e[0] += a
                e[1] += a * (my + r0)
                e[2] += a * (mx + c0)
                e[3] = [min(e[3][0], box[0]), min(e[3][1], box[1]),
                        max(e[3][2], box[2]), max(e[3][3], box[3])]
    old = sorted(acc)
    if (old and old[-1] != len(old)) or drop:  # renumber
        lut = np.zeros(max(old[-1] if old else 0, max(drop, default=0)) + 1, np.uint32)
        lut[old] = np.arange(1, len(old) + 1)
        for r0, c0, r1, c1 in blocks:
            part = np.asarray(out[r0:r1, c0:c1])
            if part.any():
                out[r0:r1, c0:c1] = lut[part]
    records = []
    for new, i in enumerate(old, 1):
        a, sy, sx, box = acc[i]
        rec = {"id": new, "area": int(a), "bbox": [int(v) for v in box],
               "centroid": [float(sy / a), float(sx / a)]}
        extra, tile = scores.get(i, ({}, None))
        rec.update(extra)
        if tile is not None:
            rec["tile"] = list(tile)
        records.append(rec)
    return records
