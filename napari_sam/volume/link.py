"""Linking 2D objects of consecutive slices (or frames) into 3D objects (or tracks).

`link_labels(labels)` takes (N, Y, X) labels whose ids need not agree between slices (each
slice segmented on its own) and returns labels with one id per linked object, plus a
`Lineage` ({id: (first slice, last slice, parent id)}).

The rule, slice by slice (k = 1 .. N-1):

1. Every *track* (a linked object so far) remembers its newest cross-section, from slice
   k-1 or, when it was missed there, from up to `max_gap` slices before (a memory image of
   those cross-sections).
2. The tracks and the objects of slice k are matched one to one by the assignment that
   maximises the summed IoU (Hungarian method, `scipy.optimize.linear_sum_assignment`),
   among pairs with IoU > `min_iou`. This is the globally best matching of the two sets,
   not a greedy pick of the best pair first: a large object that overlaps two small ones a
   little does not steal the partner of either.
3. An object of slice k left unmatched whose area lies mostly (`absorb` or more) inside one
   track's cross-section is a *split*:
   - `divisions=False` (3D objects): it joins that track (one nucleus cut into two pieces
     on one slice stays one object);
   - `divisions=True` (time-lapse): when the track's cross-section holds two or more
     objects of frame k (its matched one and the unmatched ones), each covering at least
     `division_overlap` of its own area with it, with areas together 0.5 to 1.6 times the
     parent's, the track ends at k-1 and two daughters start at k with it as parent (the two
     largest; any more become new tracks).
4. Other unmatched objects start new tracks (*appear*); tracks not matched for more than
   `max_gap` slices end. A *merge* (two tracks meet one object on slice k) gives the object
   to the better-matched track; the other keeps waiting `max_gap` slices and links again if
   the two separate.

Finally objects spanning fewer than `min_extent` slices are removed and ids are renumbered
1..M in order of first appearance (parents renumbered alike).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

Lineage = Dict[int, Tuple[int, int, int]]


def _pairs(a: np.ndarray, b: np.ndarray):
    """Overlaps of two (Y, X) label images: ids_a, ids_b, intersections, areas of each."""
    both = (a > 0) & (b > 0)
    if both.any():
        key, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    else:
        key, inter = np.zeros((2, 0), np.int64), np.zeros(0, np.int64)
    return key[0], key[1], inter


def _areas(lab: np.ndarray) -> Dict[int, int]:
    ids, n = np.unique(lab[lab > 0], return_counts=True)
    return dict(zip(ids.tolist(), n.tolist()))


def _assign(rows, cols, iou, min_iou):
    """Hungarian matching on IoU: dict row id -> col id for pairs with IoU > min_iou."""
    from scipy.optimize import linear_sum_assignment

    ok = iou > min_iou
    if not ok.any():
        return {}
    rows, cols, iou = rows[ok], cols[ok], iou[ok]
    ru, ri = np.unique(rows, return_inverse=True)
    cu, ci = np.unique(cols, return_inverse=True)
    gain = np.zeros((len(ru), len(cu)))
    gain[ri, ci] = iou
    r, c = linear_sum_assignment(gain, maximize=True)
    keep = gain[r, c] > min_iou
    return {int(ru[i]): int(cu[j]) for i, j in zip(r[keep], c[keep])}


def link_labels(labels, min_iou: float = 0.3, max_gap: int = 1, absorb: float = 0.6,
                divisions: bool = False, division_overlap: float = 0.3,
                min_extent: int = 1) -> Tuple[np.ndarray, Lineage]:
    """Link the objects of labels across the first axis (rule: module doc).

    Parameters
    ----------
    labels : array-like, (N, Y, X) int
        Per-slice labels; ids need not agree between slices.
    min_iou, max_gap, absorb : float, int, float
        Smallest IoU of a match; slices a track may be missed on; share of an unmatched
        object's area inside a track that makes it a split.
    divisions : bool
        Splits start two daughter tracks (time-lapses) instead of joining their parent.
    division_overlap : float
    min_extent : int
        Objects spanning fewer slices are removed.

    Returns
    -------
    labels : ndarray, (N, Y, X) uint32
        One id per object or track, 1..M in order of first appearance.
    lineage : dict of int to (int, int, int)
        {id: (first slice, last slice, parent id or 0)}.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (N, Y, X), got shape {labels.shape}")
    n = labels.shape[0]
    out = np.zeros(labels.shape, np.uint32)
    lineage: Dict[int, list] = {}
    next_id = 1
    memory = np.zeros(labels.shape[1:], np.uint32)   # newest cross-section of each track
    last_seen: Dict[int, int] = {}
    for k in range(n):
        cur = labels[k]
        det_area = _areas(cur)
        mem_area = _areas(memory)
        t_ids, d_ids, inter = _pairs(memory, cur)
        ta = np.array([mem_area[t] for t in t_ids.tolist()], float)
        da = np.array([det_area[d] for d in d_ids.tolist()], float)
        iou = inter / np.maximum(ta + da - inter, 1)
        match = _assign(t_ids, d_ids, iou, min_iou)      # track -> detection
        owner = {d: t for t, d in match.items()}          # detection -> track
        frac_d = inter / np.maximum(da, 1)                # share of the detection inside
        mapping: Dict[int, int] = dict(owner)
        ended = set()
        # splits: unmatched detections mostly inside one track's cross-section
        by_track: Dict[int, list] = {}
        for t, d, f in zip(t_ids.tolist(), d_ids.tolist(), frac_d.tolist()):
            if divisions and f >= division_overlap and (d not in owner or owner[d] == t):
                by_track.setdefault(t, []).append(d)
            elif not divisions and d not in owner and f >= absorb:
                mapping.setdefault(d, t)
        if divisions:
            for t, ds in by_track.items():
                if len(ds) < 2 or last_seen.get(t) != k - 1:
                    continue
                total = sum(det_area[d] for d in ds)
                if not 0.5 <= total / mem_area[t] <= 1.6:
                    continue
                ds = sorted(ds, key=lambda d: -det_area[d])
                ended.add(t)
                for d in ds[:2]:
                    mapping[d] = next_id
                    lineage[next_id] = [k, k, t]
                    last_seen[next_id] = k
                    next_id += 1
                for d in ds[2:]:
                    mapping.pop(d, None)
        for d in det_area:  # appear
            if d not in mapping:
                mapping[d] = next_id
                lineage[next_id] = [k, k, 0]
                next_id += 1
        lut = np.zeros(int(cur.max()) + 1 if cur.size else 1, np.uint32)
        for d, t in mapping.items():
            lut[d] = t
        out[k] = lut[cur]
        for t in set(mapping.values()):
            lineage[t][1] = k
            last_seen[t] = k
        # memory: drop tracks that moved on, ended or waited too long; paint slice k on top
        stale = [t for t, s in last_seen.items() if k - s > max_gap or t in ended]
        for t in stale:
            last_seen.pop(t)
        if memory.any():
            keep = np.zeros(int(memory.max()) + 1, bool)
            keep[[t for t in last_seen if t < len(keep)]] = True
            keep[[t for t in set(mapping.values()) if t < len(keep)]] = False
            keep[0] = False
            memory = np.where(keep[memory], memory, 0).astype(np.uint32)
        memory = np.where(out[k] > 0, out[k], memory).astype(np.uint32)
    lineage = {t: tuple(v) for t, v in lineage.items()}
    if min_extent > 1:
        present = [np.unique(out[k]) for k in range(n)]
        extent: Dict[int, int] = {}
        for ids in present:
            for t in ids[ids > 0].tolist():
                extent[t] = extent.get(t, 0) + 1
        small = [t for t, e in extent.items() if e < min_extent]
        if small:
            out[np.isin(out, small)] = 0
            lineage = {t: v for t, v in lineage.items() if t not in set(small)}
    return renumber(out, lineage)


def renumber(labels: np.ndarray, lineage: Lineage) -> Tuple[np.ndarray, Lineage]:
    """Ids 1..M by first appearance (scan order); lineage and parents follow. Tracks with no
    pixel left are dropped (a daughter whose parent was dropped gets parent 0).

    Parameters
    ----------
    labels : ndarray
        (T, Y, X) or (Z, Y, X) integer track labels, 0 background.
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}; empty: first and last frames are
        taken from the labels, parents 0.

    Returns
    -------
    labels : ndarray
        uint32, same shape, ids 1..M.
    lineage : dict of int to (int, int, int)
        Keyed by the new ids, parents renumbered.
    """
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    order = ids[np.argsort(first, kind="stable")]
    new = {int(t): i for i, t in enumerate(order.tolist(), start=1)}
    lut = np.zeros(int(flat.max(initial=0)) + 1, np.uint32)
    for t, i in new.items():
        lut[t] = i
    out = lut[labels]
    lin = {}
    for t, i in new.items():
        a, b, p = lineage.get(t, (0, 0, 0))
        lin[i] = (int(a), int(b), new.get(int(p), 0))
    if not lineage:  # no lineage given: first and last slice from the labels
        present = [set(np.unique(out[k]).tolist()) for k in range(out.shape[0])]
        for i in lin:
            ks = [k for k, ids in enumerate(present) if i in ids]
            lin[i] = (ks[0], ks[-1], 0)
    return out, lin
