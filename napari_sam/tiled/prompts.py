"""Prompts on a tiled image: the answer is one object, whole, whatever tiles it spans.

    tp = TiledPredictor(load_model("bundled"), "slide.tif", cache="beside")
    m = tp.predict(points=[[12_000, 8_500]])     # full-image (row, col)
    m.bbox, m.mask                               # (row0, col0, row1, col1) + cropped bool mask

1. The prompt goes to the tile that holds it with the most margin to an inner edge.
2. Where the mask reaches an inner edge of a tile's window, the object goes on beyond what
   that tile saw: the tile that holds those edge pixels with the most margin is prompted
   with points picked inside the known part of the mask (in the two tiles' overlap), the
   original box clipped to its window, and the original points inside it. Of its outputs
   the one that agrees best with the known part is kept; a piece that disagrees (IoU in the
   overlap below `min_agreement`) is dropped. This repeats from every new piece, up to
   `max_tiles` tiles.
3. The pieces are merged pixel by pixel: each pixel takes the answer of the tile that sees
   it with the most margin, and only the connected parts that touch the first tile's mask
   are kept.

Only the tiles used are embedded, so a click on a 20k x 20k image costs a few tile
embeddings, once (they stay in the cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

from .embed import TiledEmbeddings
from .grid import Box, Tile, intersect


@dataclass
class TiledMask:
    """One object on a large image, stored as its bounding box and the mask inside it.

    Parameters
    ----------
    bbox : (int, int, int, int)
        (row0, col0, row1, col1) in image pixels, exclusive ends.
    mask : ndarray (row1 - row0, col1 - col0) bool
        The object inside the box.
    score : float
        Predicted IoU of the first tile's mask.
    tiles : list of (int, int)
        Grid indices (row, col) of the tiles used; the first is the anchor.
    """

    bbox: Box
    mask: np.ndarray
    score: float
    tiles: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def slices(self) -> Tuple[slice, slice]:
        return slice(self.bbox[0], self.bbox[2]), slice(self.bbox[1], self.bbox[3])

    def to_full(self, shape) -> np.ndarray:
        """The mask as a full-size array (only for images that fit in memory).

        Parameters
        ----------
        shape : sequence of int
            The image's shape; its first two entries (Y, X) are used.

        Returns
        -------
        ndarray (Y, X) bool
        """
        out = np.zeros(tuple(shape)[:2], bool)
        out[self.slices] = self.mask
        return out

    def paint(self, labels, value: int) -> None:
        """Write a label value under the mask, reading and writing only the box.

        Parameters
        ----------
        labels : array-like (Y, X)
            Any array with numpy slicing (numpy, zarr); changed in place.
        value : int
            The label to write.
        """
        part = np.asarray(labels[self.slices])
        part[self.mask] = value
        labels[self.slices] = part


def _spread_points(mask: np.ndarray, k: int) -> np.ndarray:
    """Up to k (row, col) points well inside `mask`, far from each other."""
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    pts = []
    for _ in range(k):
        if dist.max() <= 0:
            break
        r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
        pts.append((r, c))
        rad = max(3.0, float(dist[r, c]))
        rr, cc = np.ogrid[:mask.shape[0], :mask.shape[1]]
        dist = np.where((rr - r) ** 2 + (cc - c) ** 2 <= rad * rad, 0, dist)
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _margin_map(tile: Tile, box: Box) -> np.ndarray:
    """Per pixel of `box`: distance to `tile`'s nearest inner edge (inf on border sides)."""
    y0, x0, y1, x1 = tile.window
    rows = np.arange(box[0], box[2], dtype=np.float64)
    cols = np.arange(box[1], box[3], dtype=np.float64)
    inf = np.inf
    top, left, bottom, right = tile.inner
    dr = np.minimum(rows - y0 if top else inf, (y1 - 1 - rows) if bottom else inf)
    dc = np.minimum(cols - x0 if left else inf, (x1 - 1 - cols) if right else inf)
    dr, dc = np.broadcast_to(dr, rows.shape), np.broadcast_to(dc, cols.shape)
    return np.minimum(dr[:, None], dc[None, :])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class TiledPredictor:
    """`predict` on an image of any size, in full-image (row, col) coordinates.

    Parameters
    ----------
    model : Sam, str or Path, optional
        With `image`: the model, a registry name or a checkpoint (None: bundled).
    image : array-like or str or Path, optional
        (Y, X) or (Y, X, C), any dtype; numpy, memmap, zarr, dask, or an image file path.
    embeddings : TiledEmbeddings, optional
        Tiles already set up (instead of `model` and `image`).
    max_tiles : int
        How many tiles one object may span (how far it is followed).
    edge_width : int
        How close (pixels) to a tile's inner edge a mask must come to continue beyond it.
    seed_points : int
        Points picked inside the known part of the mask to prompt the next tile.
    min_agreement : float
        Smallest IoU, in the two tiles' overlap, of a continuation with the known part.
    **kwargs
        To `TiledEmbeddings` (tile_size, overlap, channels, cache, device, precision, ...).
    """

    def __init__(self, model=None, image=None, *, embeddings: Optional[TiledEmbeddings] = None,
                 max_tiles: int = 16, edge_width: int = 2, seed_points: int = 3,
                 min_agreement: float = 0.5, **kwargs) -> None:
        if embeddings is None:
            if image is None:
                raise ValueError("give an image (array or path) or embeddings=TiledEmbeddings(...)")
            embeddings = TiledEmbeddings(model, image, **kwargs)
        self.embeddings = embeddings
        self.grid = embeddings.grid
        self.max_tiles, self.edge_width = int(max_tiles), int(edge_width)
        self.seed_points, self.min_agreement = int(seed_points), float(min_agreement)

    # ---- one tile -------------------------------------------------------------------
    def segment_tile(self, tile: Tile, points: Optional[np.ndarray], labels: Optional[np.ndarray],
                     box: Optional[np.ndarray], multimask: bool):
        """SAM's answer to prompts on one tile.

        Parameters
        ----------
        tile : Tile
        points : ndarray, (N, 2) float, or None
            (row, col) in pixels of the tile's window.
        labels : ndarray, (N,) int, or None
            1 (object) or 0 (background).
        box : ndarray, (4,), or None
            (row0, col0, row1, col1) in pixels of the tile's window.
        multimask : bool
            Three candidates (True) or one.

        Returns
        -------
        masks : ndarray, (K, h, w) bool
            (h, w): the tile window's shape.
        scores : ndarray, (K,) float32
        """
        pred = self.embeddings.predictor(tile)
        masks, scores, _ = pred.predict(points=points, point_labels=labels, box=box,
                                        multimask=multimask)
        return masks, scores

    # ---- the whole object -----------------------------------------------------------
    def _check(self, points, labels, box):
        h, w = self.grid.shape
        if points is None and box is None:
            raise ValueError("empty prompt: give at least one point or a box")
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            labels = (np.ones(len(points), int) if labels is None
                      else np.asarray(labels, int).reshape(-1))
            if len(labels) != len(points):
                raise ValueError(f"{len(points)} points but {len(labels)} point_labels")
            out = ((points < -0.5) | (points > np.array([h, w]) - 0.5)).any(axis=1)
            if out.any():
                raise ValueError(f"point {points[out][0].tolist()} lies outside the image "
                                 f"of shape {(h, w)}")
        if box is not None:
            b = np.asarray(box, dtype=np.float64).reshape(4)
            if not np.isfinite(b).all():
                raise ValueError("box must be [row0, col0, row1, col1] with finite numbers")
            box = np.array([max(min(b[0], b[2]), 0), max(min(b[1], b[3]), 0),
                            min(max(b[0], b[2]), h - 1), min(max(b[1], b[3]), w - 1)])
            if box[0] >= box[2] or box[1] >= box[3]:
                raise ValueError(f"box {b.tolist()} has no area inside the image of shape "
                                 f"{(h, w)}")
        return points, labels, box

    def _prompt_extent(self, points, labels, box) -> np.ndarray:
        parts = []
        if points is not None and (labels == 1).any():
            p = points[labels == 1]
            parts.append(np.r_[p.min(0), p.max(0)])
        if box is not None:
            parts.append(box)
        if not parts:  # only negative points
            parts.append(np.r_[points.min(0), points.max(0)])
        e = np.stack(parts)
        return np.r_[e[:, :2].min(0), e[:, 2:].max(0)]

    def _local_prompts(self, tile: Tile, points, labels, box, extra=None):
        """Prompts in `tile`'s pixels: given points inside its window, the box clipped to it,
        and `extra` positive points (already image pixels)."""
        y0, x0, y1, x1 = tile.window
        off = np.array([y0, x0], np.float64)
        pts, labs = [], []
        if points is not None:
            inside = ((points[:, 0] >= y0 - 0.5) & (points[:, 0] <= y1 - 0.5)
                      & (points[:, 1] >= x0 - 0.5) & (points[:, 1] <= x1 - 0.5))
            pts.append(points[inside] - off)
            labs.append(labels[inside])
        if extra is not None and len(extra):
            pts.append(extra - off)
            labs.append(np.ones(len(extra), int))
        lp = np.concatenate(pts) if pts else np.zeros((0, 2))
        ll = np.concatenate(labs) if labs else np.zeros(0, int)
        lb = None
        if box is not None:
            cb = np.array([max(box[0], y0), max(box[1], x0), min(box[2], y1 - 1), min(box[3], x1 - 1)])
            if cb[0] < cb[2] and cb[1] < cb[3]:
                lb = cb - np.r_[off, off]
        if not len(lp) or not (ll == 1).any() and lb is None:
            return None, None, lb
        return lp, ll, lb

    def predict(self, points=None, point_labels=None, box=None,
                multimask: Optional[bool] = None) -> TiledMask:
        """One object, followed across tiles, for point and/or box prompts.

        Parameters
        ----------
        points : array-like, (N, 2) float, optional
            (row, col) in full-image pixels.
        point_labels : array-like, (N,) int, optional
            1 (object) or 0 (background); default all 1.
        box : array-like, (4,), optional
            (row0, col0, row1, col1) in full-image pixels.
        multimask : bool, optional
            None: SAM's rule (three candidates for a single point, the best score kept).

        Returns
        -------
        TiledMask
            bbox (row0, col0, row1, col1), exclusive ends; mask (row1 - row0, col1 - col0)
            bool; score; the tiles used.
        """
        points, labels, box = self._check(points, point_labels, box)
        if multimask is None:
            multimask = box is None and points is not None and len(points) == 1
        anchor = self.grid.best_tile(self._prompt_extent(points, labels, box))
        lp, ll, lb = self._local_prompts(anchor, points, labels, box)
        masks, scores = self.segment_tile(anchor, lp, ll, lb, multimask)
        best = int(np.argmax(scores))
        pieces: Dict[Tuple[int, int], np.ndarray] = {anchor.index: masks[best]}
        order = [anchor]
        queue = [anchor]
        tried = {anchor.index}  # a tile is asked once; a rejected piece is not asked again
        while queue and len(pieces) < self.max_tiles:
            tile = queue.pop(0)
            for nxt, seeds in self._continuations(tile, pieces[tile.index], tried):
                if len(pieces) >= self.max_tiles or len(tried) >= 2 * self.max_tiles:
                    break
                tried.add(nxt.index)
                piece = self._continue(nxt, tile, pieces[tile.index], seeds, points, labels, box)
                if piece is not None:
                    pieces[nxt.index] = piece
                    order.append(nxt)
                    queue.append(nxt)
        return self._merge(order, pieces, float(scores[best]))

    def _continuations(self, tile: Tile, mask: np.ndarray, taken: set):
        """(neighbour, seed points) for each tile the object continues into from `tile`."""
        edge = mask & tile.edge_mask(self.edge_width)
        if not edge.any():
            return []
        y0, x0 = tile.window[:2]
        targets: Dict[Tuple[int, int], Tile] = {}
        rr, cc = np.nonzero(edge)
        # one representative edge pixel per stretch of a few pixels is enough
        step = max(1, len(rr) // 64)
        for r, c in zip(rr[::step] + y0, cc[::step] + x0):
            t = self.grid.best_tile((r, c, r, c), exclude=taken | {tile.index})
            if t is not None:
                targets[t.index] = t
        out = []
        for t in sorted(targets.values(), key=lambda t: t.index):
            ov = intersect(tile.window, t.window)
            known = mask[ov[0] - y0:ov[2] - y0, ov[1] - x0:ov[3] - x0]
            seeds = _spread_points(known, self.seed_points) + np.array(ov[:2])
            if len(seeds):
                out.append((t, seeds))
        return out

    def _continue(self, tile: Tile, src: Tile, src_mask: np.ndarray, seeds, points, labels, box):
        lp, ll, lb = self._local_prompts(tile, points, labels, box, extra=seeds)
        if lp is None and lb is None:
            return None
        masks, scores = self.segment_tile(tile, lp, ll, lb, True)
        ov = intersect(tile.window, src.window)
        known = src_mask[ov[0] - src.window[0]:ov[2] - src.window[0],
                         ov[1] - src.window[1]:ov[3] - src.window[1]]
        sl = (slice(ov[0] - tile.window[0], ov[2] - tile.window[0]),
              slice(ov[1] - tile.window[1], ov[3] - tile.window[1]))
        agree = [_iou(m[sl], known) for m in masks]
        k = int(np.argmax(np.asarray(agree) + 1e-3 * np.asarray(scores)))
        return masks[k] if agree[k] >= self.min_agreement else None

    def _merge(self, order: List[Tile], pieces, score: float) -> TiledMask:
        boxes = []
        for t in order:
            rows, cols = np.nonzero(pieces[t.index].any(1))[0], np.nonzero(pieces[t.index].any(0))[0]
            if len(rows):
                y0, x0 = t.window[:2]
                boxes.append((rows[0] + y0, cols[0] + x0, rows[-1] + y0 + 1, cols[-1] + x0 + 1))
        if not boxes:
            return TiledMask((0, 0, 0, 0), np.zeros((0, 0), bool), score, [t.index for t in order])
        bb = (min(b[0] for b in boxes), min(b[1] for b in boxes),
              max(b[2] for b in boxes), max(b[3] for b in boxes))
        shape = (bb[2] - bb[0], bb[3] - bb[1])
        out = np.zeros(shape, bool)
        best = np.full(shape, -math.inf)
        for t in order:
            ov = intersect(t.window, bb)
            if ov is None:
                continue
            dst = (slice(ov[0] - bb[0], ov[2] - bb[0]), slice(ov[1] - bb[1], ov[3] - bb[1]))
            src = (slice(ov[0] - t.window[0], ov[2] - t.window[0]),
                   slice(ov[1] - t.window[1], ov[3] - t.window[1]))
            margin = _margin_map(t, ov)
            win = margin > best[dst]
            out[dst] = np.where(win, pieces[t.index][src], out[dst])
            best[dst] = np.where(win, margin, best[dst])
        # keep the connected parts that touch the anchor's own mask
        lab, n = ndi.label(out)
        if n > 1:
            a = order[0]
            ov = intersect(a.window, bb)
            anchor_in_bb = np.zeros(shape, bool)
            anchor_in_bb[ov[0] - bb[0]:ov[2] - bb[0], ov[1] - bb[1]:ov[3] - bb[1]] = \
                pieces[a.index][ov[0] - a.window[0]:ov[2] - a.window[0],
                                ov[1] - a.window[1]:ov[3] - a.window[1]]
            keep = np.unique(lab[anchor_in_bb & out])
            out = np.isin(lab, keep[keep > 0])
        rows, cols = np.nonzero(out.any(1))[0], np.nonzero(out.any(0))[0]
        if not len(rows):
            return TiledMask((0, 0, 0, 0), np.zeros((0, 0), bool), score, [t.index for t in order])
        crop = out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        box = (bb[0] + rows[0], bb[1] + cols[0], bb[0] + rows[-1] + 1, bb[1] + cols[-1] + 1)
        return TiledMask(tuple(int(v) for v in box), crop, score, [t.index for t in order])
