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


def stitch(grid: TileGrid, results, out, link_iou: float = 0.3, progress=null_progress):
    """Paint the tiles' pieces into `out` (zeros, shape of the image); returns the records
    (id, area, bbox, centroid, tile, and the generator's scores when it gave them)."""
    read = _TileReader(results, grid)
    tiles = list(grid)
    total = 3 * len(tiles)
    # 1. pieces: a global node number per (tile, local id)
    offset: Dict[tuple, int] = {}
    stats = []
    n_nodes = 0
    for k, t in enumerate(tiles):
        s = _piece_stats(t, read(t))
        offset[t.index] = n_nodes
        n_nodes += len(s[0])
        stats.append(s)
        progress(k + 1, total, "stitching: pieces")
    area = np.concatenate([s[0] for s in stats]) if stats else np.zeros(0)
    cy = np.concatenate([s[1] for s in stats]) if stats else np.zeros(0)
    cx = np.concatenate([s[2] for s in stats]) if stats else np.zeros(0)
    complete = np.concatenate([s[3] for s in stats]) if stats else np.zeros(0, bool)
    tile_of = np.concatenate([np.full(len(s[0]), i) for i, s in enumerate(stats)]) \
        if stats else np.zeros(0, int)
    # 2. links between neighbours, in their overlap
    src, dst = [], []
    ny, nx = grid.grid_shape
    for k, t in enumerate(tiles):
        iy, ix = t.index
        for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
            if not (0 <= iy + dy < ny and 0 <= ix + dx < nx):
                continue
            u = grid[iy + dy, ix + dx]
            ov = intersect(t.window, u.window)
            if ov is None:
                continue
            a = read(t)[ov[0] - t.window[0]:ov[2] - t.window[0], ov[1] - t.window[1]:ov[3] - t.window[1]]
            b = read(u)[ov[0] - u.window[0]:ov[2] - u.window[0], ov[1] - u.window[1]:ov[3] - u.window[1]]
            for la, lb in _links(a, b, link_iou):
                src.append(offset[t.index] + la - 1)
                dst.append(offset[u.index] + lb - 1)
        progress(len(tiles) + k + 1, total, "stitching: matching across seams")
    present = area > 0
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n_nodes, n_nodes))
    _, group = connected_components(graph, directed=False)
    # 3. what to paint: per group, one complete piece, or every piece on its own ground
    margin = np.array([tiles[tile_of[i]].margin((cy[i], cx[i], cy[i], cx[i]))
                       for i in range(n_nodes)]) if n_nodes else np.zeros(0)
    n_groups = int(group.max()) + 1 if n_nodes else 0
    order = np.lexsort((np.arange(n_nodes), -margin, ~complete, ~present, group))
    first = np.ones(n_nodes, bool)
    first[1:] = group[order][1:] != group[order][:-1]
    chosen = order[first]                       # per group: best piece first
    has_complete = np.zeros(n_groups, bool)
    has_complete[group[chosen]] = complete[chosen]
    paint_whole = np.zeros(n_nodes, bool)
    paint_whole[chosen[complete[chosen]]] = True
    paint_part = present & ~has_complete[group]
    group_tiles: Dict[int, set] = {}
    for i in np.nonzero(paint_part)[0]:
        group_tiles.setdefault(int(group[i]), set()).add(int(tile_of[i]))
    # provisional ids: groups in order of their first piece
    gid = np.zeros(n_groups, np.int64)
    painted_groups = np.unique(group[paint_whole | paint_part])
    first_node = np.full(n_groups, n_nodes)
    np.minimum.at(first_node, group, np.arange(n_nodes))
    gid[painted_groups[np.argsort(first_node[painted_groups], kind="stable")]] = \
        np.arange(1, len(painted_groups) + 1)
    # 4. paint, tile by tile
    for k, t in enumerate(tiles):
        lab = read(t)
        base = offset[t.index]
        n = len(stats[k][0])
        buf = np.zeros(t.shape, np.uint32)
        lut = np.zeros(n + 1, np.uint32)
        whole = np.nonzero(paint_whole[base:base + n])[0]
        lut[whole + 1] = gid[group[base + whole]]
        buf = lut[lab]
        for j in np.nonzero(paint_part[base:base + n])[0]:
            box = stats[k][4][j]
            if box is None:
                continue
            mine = lab[box] == j + 1
            allowed = _allowed(t, box, [tiles[o] for o in group_tiles[int(group[base + j])]
                                        if o != k])
            sel = mine & allowed
            buf[box][sel] = gid[group[base + j]]
        if buf.any():
            cur = np.asarray(out[t.slices])
            fill = (cur == 0) & (buf > 0)
            if fill.any():
                cur[fill] = buf[fill]
                out[t.slices] = cur
        progress(2 * len(tiles) + k + 1, total, "stitching: painting")
    # 5. the generator's scores for each group's chosen piece
    scores = {}
    by_tile: Dict[int, list] = {}
    for i in chosen:
        if gid[group[i]]:
            by_tile.setdefault(int(tile_of[i]), []).append(int(i))
    for k, nodes in by_tile.items():
        recs = results.records(tiles[k].index)
        for i in nodes:
            local = i - offset[tiles[k].index]
            r = recs[local] if local < len(recs) else {}
            scores[int(gid[group[i]])] = (
                {key: r[key] for key in ("predicted_iou", "stability") if key in r},
                tiles[k].index)
    return finish(out, grid, scores, progress)


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


def finish(out, grid: TileGrid, scores: dict, progress=null_progress, chunk: int = 1024):
    """Measure the painted labels block by block, renumber them 1..N (dropping ids left
    without pixels) and return one record per object."""
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
    if old and old[-1] != len(old):  # renumber
        lut = np.zeros(old[-1] + 1, np.uint32)
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
