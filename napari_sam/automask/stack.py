"""Automask over a stack of 2D images ((Z, Y, X), (T, Y, X), any leading axes, channels
optionally last), slice by slice.

Ids are unique across the whole stack (each slice's ids are offset past the previous ones).
With `link=True`, objects of neighbouring slices are joined into one id when they overlap:
for slices k-1 and k, every pair (a, b) with IoU(a, b) > `link_iou` is a candidate; pairs
are accepted greedily in descending IoU, each object used at most once (for `link_iou` >=
0.5 this is simply every pair above the threshold, since an object can have IoU > 0.5 with
at most one disjoint object). A matched object takes the id of its partner in slice k-1, so
a track keeps one id through the stack; ids are then renumbered 1..N in order of first
appearance. (`automask.volume` links 3D objects with a globally consistent matching.)
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..io.axes import as_slices
from ..progress import null_progress
from ..transforms import intensity_range, select_channels
from .amg import AutoMaskResult


def _sub_progress(progress, k: int, n: int, scale: int = 1000):
    def report(done, total, message=""):
        frac = done / total if total else 1.0
        progress(k * scale + int(frac * scale), n * scale,
                 f"slice {k + 1}/{n}: {message}" if n > 1 else message)
    return report


def link_slices(labels: np.ndarray, link_iou: float = 0.5) -> np.ndarray:
    """Join overlapping objects of neighbouring slices of (N, Y, X) labels (rule: module doc).

    Input ids must be unique across slices; the result is renumbered 1..M by first appearance.

    Parameters
    ----------
    labels : ndarray, (N, Y, X) int
        Per-slice objects, 0 background.
    link_iou : float
        Objects of neighbouring slices are joined when their IoU is above this.

    Returns
    -------
    ndarray, (N, Y, X) uint32
        Linked ids 1..M.
    """
    out = labels.astype(np.uint32, copy=True)
    for k in range(1, out.shape[0]):
        prev, cur = out[k - 1].ravel(), out[k].ravel()
        both = (prev > 0) & (cur > 0)
        if not both.any():
            continue
        pairs, inter = np.unique(np.stack([prev[both], cur[both]]), axis=1, return_counts=True)
        ids_p, area_p = np.unique(prev[prev > 0], return_counts=True)
        ids_c, area_c = np.unique(cur[cur > 0], return_counts=True)
        ap = area_p[np.searchsorted(ids_p, pairs[0])]
        ac = area_c[np.searchsorted(ids_c, pairs[1])]
        iou = inter / (ap + ac - inter)
        used_p, used_c, remap = set(), set(), {}
        for j in np.argsort(-iou, kind="stable"):
            if iou[j] <= link_iou:
                break
            a, b = int(pairs[0, j]), int(pairs[1, j])
            if a not in used_p and b not in used_c:
                used_p.add(a)
                used_c.add(b)
                remap[b] = a
        if remap:
            lut = np.arange(int(out[k].max()) + 1, dtype=np.uint32)
            lut[np.fromiter(remap.keys(), np.int64)] = np.fromiter(remap.values(), np.uint32)
            out[k] = lut[out[k]]
    return renumber_by_first_appearance(out)


def renumber_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Ids 1..M in the order their first pixel appears (C order), 0 kept as background.

    Parameters
    ----------
    labels : ndarray, (...) int
        Non-negative ids.

    Returns
    -------
    ndarray, same shape, uint32
    """
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    new = np.zeros(int(flat.max(initial=0)) + 1, np.uint32)
    new[ids[np.argsort(first, kind="stable")]] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    return new[labels]


def automask_stack(stack: np.ndarray, generator, axes: Optional[str] = None,
                   link: bool = False, link_iou: float = 0.5, progress=null_progress,
                   channels=None, value_range=None, **generate_kw) -> AutoMaskResult:
    """Segment every 2D slice of `stack`; labels keep the stack's leading shape.

    The intensity range is taken once over the whole stack (unless `value_range` is given),
    so all slices are normalised alike.

    Parameters
    ----------
    stack : ndarray, (..., Y, X) or (..., Y, X, C), any dtype
        Leading axes (Z, T, ...) of any number; channels last.
    generator : AutoSegmenter or AutoMaskGenerator
        An AutoSegmenter (object size, mode and tiling per slice; a diameter to be
        estimated is estimated once, on the middle slice, so every slice is zoomed alike)
        or an AutoMaskGenerator (grid prompts as configured, `generate_kw` for `generate`).
    axes : str, optional
        The stack's axes (e.g. "ZYX", "TYXC") when its shape is ambiguous.
    link : bool
        Join objects of neighbouring slices into one id (IoU above `link_iou`; module doc).
    link_iou : float
    progress : callable(done, total, message), optional
    channels : sequence of int, optional
        Up to 3 channels.
    value_range : (float, float), optional
        Intensity range mapped to 0..255 (default: robust percentiles of the whole stack).
    **generate_kw
        To `AutoMaskGenerator.generate`.

    Returns
    -------
    AutoMaskResult
        labels (..., Y, X) uint32 (ids unique across the stack) and records, which also
        carry "slice" (flat slice index) and "index" (position along the leading axes).
    """
    from .segmenter import AutoSegmenter

    slices, lead, axes = as_slices(np.asarray(stack), axes)
    n = slices.shape[0]
    if value_range is None and n > 1:
        first = select_channels(slices[0], channels)
        if first.dtype != np.uint8:  # a strided sample of every slice, channels last
            step = max(1, first.shape[0] * first.shape[1] * n // 1_000_000)
            sample = np.concatenate([select_channels(s, channels).reshape(-1, first.shape[-1])
                                     [::step] for s in slices])
            value_range = intensity_range(sample)
    labels = np.zeros(slices.shape[:3], np.uint32)
    records: List[dict] = []
    next_id = 0
    segmenter = isinstance(generator, AutoSegmenter)
    if segmenter:
        if generate_kw:
            raise TypeError(f"{', '.join(generate_kw)}: set these on the AutoSegmenter")
        diameter = generator.plan(slices[n // 2], channels).diameter
        diameter = "off" if diameter is None else diameter
    for k in range(n):
        if segmenter:
            res = generator(slices[k], channels, value_range, _sub_progress(progress, k, n),
                            diameter=diameter)
        else:
            generator.initialize(slices[k], _sub_progress(progress, k, n), channels,
                                 value_range)
            res = generator.generate(**generate_kw)
        lab = res.labels
        labels[k] = np.where(lab > 0, lab + np.uint32(next_id), 0)
        for r in res.records:
            rec = dict(r, id=r["id"] + next_id, slice=k,
                       index=[int(i) for i in np.unravel_index(k, lead)] if lead else [])
            records.append(rec)
        next_id += len(res.records)
    if link and n > 1:
        old = labels
        labels = link_slices(labels, link_iou)
        # every old id maps to exactly one new id: read it off the old id's first pixel
        ids, first = np.unique(old.ravel(), return_index=True)
        new = dict(zip(ids.tolist(), labels.ravel()[first].tolist()))
        for r in records:
            r["id"] = int(new.get(r["id"], 0))
        records = [r for r in records if r["id"]]
    return AutoMaskResult(labels.reshape(lead + labels.shape[1:]), records)
