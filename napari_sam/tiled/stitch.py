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
The pieces and their links are found by `pieces`; this module plans and paints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np
from scipy import ndimage as ndi

from ..progress import null_progress
from .grid import Tile, TileGrid, intersect
# the pieces and their links live in `pieces`; their names stay importable from here
from .pieces import Pieces, _TileReader, collect_pieces, link_pieces  # noqa: F401


@dataclass
class Plan:
    """What `paint` paints, from `plan_painting` (N pieces, G groups).

    Parameters
    ----------
    chosen : ndarray, (G,) int
        Per group, its best piece (node number).
    whole : ndarray, (N,) bool
        Paint the piece whole.
    part : ndarray, (N,) bool
        Paint the piece on its own ground (the parts of its window no other piece's tile owns).
    group_tiles : dict of int to set of int
        Per group painted in parts, the tiles (indices into `Pieces.tiles`) of its pieces.
    gid : ndarray, (G,) int64
        Provisional output id per group (0: not painted).
    """

    chosen: np.ndarray        # per group, its best piece (node number)
    whole: np.ndarray         # bool per node: paint the piece whole
    part: np.ndarray          # bool per node: paint the piece on its own ground
    group_tiles: Dict[int, set]
    gid: np.ndarray           # provisional output id per group (0: not painted)


def plan_painting(pieces: Pieces, group: np.ndarray) -> Plan:
    """Per group: its complete piece with the most margin, whole; or, when none is
    complete, all its pieces, each on the part of its window no other piece's tile owns.

    Parameters
    ----------
    pieces : Pieces
    group : ndarray, (N,) int
        Each piece's group (`link_pieces`).

    Returns
    -------
    Plan
        Provisional ids 1..M follow the groups' first pieces (tiles in raster order).
    """
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
    provisional id, the pixels it asked for and the pixels it holds.

    Parameters
    ----------
    out : array_like, (Y, X) uint32
        Zeros of the image's shape with numpy slicing (numpy, zarr); painted in place.
    read : callable
        `read(tile)` -> the tile's (h, w) uint32 labels.
    grid : TileGrid
    pieces : Pieces
    group : ndarray, (N,) int
    plan : Plan
    progress : callable
        `progress(done, total, message)`, once per tile (after the linking's).
    total : int
        The total passed to `progress`.

    Returns
    -------
    wanted, got : ndarray, (M + 1,) int64
        Pixel counts indexed by provisional id.
    """
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
    """{provisional id: (the generator's scores of the group's chosen piece, its tile)}.

    Parameters
    ----------
    results : MemoryResults or ZarrResults
        The tiles' records.
    pieces : Pieces
    group : ndarray, (N,) int
    plan : Plan

    Returns
    -------
    dict of int to (dict, (int, int))
        The chosen piece's "predicted_iou" and "stability" (those it has), and its tile's
        grid index (row, col).
    """
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
    `drop`, closing the gaps of ids left without pixels) and return one record per object.

    Parameters
    ----------
    out : array_like, (Y, X) uint32
        The painted labels; renumbered in place.
    grid : TileGrid
        Its `shape` is the image's (rows, cols).
    scores : dict
        From `piece_scores`, by the ids in `out` before renumbering.
    progress : callable
        Not called (kept for callers).
    chunk : int
        Block side in pixels.
    drop : set of int
        Ids to erase.

    Returns
    -------
    list of dict
        One per object: "id", "area", "bbox" (row0, col0, row1, col1; exclusive ends),
        "centroid" (row, col), and the scores and "tile" when `scores` has them.
    """
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
