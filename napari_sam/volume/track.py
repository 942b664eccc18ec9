"""Tracking objects through a time-lapse, with divisions.

    result = track(frames, model)                  # (T, Y, X[, C]) -> TrackResult
    result = track(frames, labels=my_labels)       # link the user's per-frame labels
    result.labels, result.lineage                  # (T, Y, X) uint32, {id: (t0, t1, parent)}
    result.write_ctc("01_RES"); result.tracks_data(); result.table()

Each frame is segmented on its own (`automask.volume.segment_slices`: `automask` with the frame's
cached embedding), unless `labels` are given. The objects are linked frame to frame by
`link.link_labels(divisions=True)`: Hungarian matching on IoU between each track's newest
outline and the frame's objects; an object that becomes two (both mostly inside the
mother's outline, areas together 0.5-1.6 x hers) ends the mother's track and starts two
daughters with her as parent.

With `fill_gaps=True` (default, only with a model), a track left without an object on a frame
is followed into it as `segment_volume` follows an object into the next slice (the box of
its outline and its low-res logits as prompts, the same stopping rules): a cell that the
automatic segmentation missed on one frame keeps its identity instead of ending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..progress import null_progress
from ..prompts import mask_to_logits
from . import ctc
from .embeddings import SliceEmbeddings, as_predictor, check_stack
from .link import link_labels
from .propagate import SliceAnswer, StopRules, _check_cancel, _connected_to, _follow, contrast


def segment_slices(*args, **kw):
    """`automask.volume.segment_slices`, imported on first call: that module imports this
    package, so importing it here at load time would close an import circle.

    Parameters
    ----------
    *args, **kw
        As for `automask.volume.segment_slices`: embeddings (SliceEmbeddings), progress,
        cancel, mode and automask keywords.

    Returns
    -------
    ndarray
        (N, Y, X) uint32, each slice segmented on its own (ids per slice).
    """
    from ..automask.volume import segment_slices as run

    return run(*args, **kw)


@dataclass
class TrackResult:
    """What `track` returns: the tracks as labels and their lineage.

    Parameters
    ----------
    labels : ndarray (T, Y, X) uint32
        One id per track, 0 = background.
    lineage : dict of int to (int, int, int)
        {id: (first frame, last frame, parent id or 0)}, the rows of CTC's `res_track.txt`.
    """

    labels: np.ndarray
    lineage: Dict[int, Tuple[int, int, int]]

    @property
    def divisions(self) -> list:
        """[(frame, parent, (child, ...))]: the frame is the children's first."""
        kids: Dict[int, list] = {}
        for t, (a, _, p) in self.lineage.items():
            if p:
                kids.setdefault(p, []).append(t)
        return [(self.lineage[c[0]][0], p, tuple(sorted(c))) for p, c in sorted(kids.items())]

    def write_ctc(self, folder, overwrite: bool = False):
        """Write the tracks as a Cell Tracking Challenge result folder (`ctc.write_ctc`).

        Parameters
        ----------
        folder : str or Path
            Created if missing.
        overwrite : bool
            Replace existing files (else refuse before writing anything).

        Returns
        -------
        Path
            The folder.
        """
        return ctc.write_ctc(folder, self.labels, self.lineage, overwrite)

    def tracks_data(self, spacing=None):
        """The tracks as napari's Tracks layer takes them, at each cell's centroid.

        Parameters
        ----------
        spacing : sequence of float, optional
            Pixel size; its last two entries scale row and col.

        Returns
        -------
        data : ndarray (N, 4) float64
            [track id, t, row, col], sorted by id and t.
        graph : dict of int to list of int
            {child: [parent]}.
        """
        return ctc.tracks_data(self.labels, self.lineage, spacing)

    def table(self) -> Dict[str, np.ndarray]:
        """One row per cell and frame, as columns (for `io.tables.write_csv`).

        Returns
        -------
        dict of str to ndarray (N,)
            track_id, t, centroid_row, centroid_col, area, parent, first_frame, last_frame.
        """
        return ctc.tracks_table(self.labels, self.lineage)


def _fill_gaps(emb: SliceEmbeddings, per_frame: np.ndarray, rules: StopRules, cancel=None
               ) -> np.ndarray:
    """Per-frame labels with objects added where a frame lacks an object that the frame
    before has (followed from it with the box and logits prompts; module doc)."""
    out = per_frame.copy()
    model = emb.predictor.model
    for t in range(1, len(out)):
        prev, cur = out[t - 1], out[t]
        ids = np.unique(prev)
        ids = ids[ids > 0]
        if not len(ids):
            continue
        covered = np.zeros(len(ids), bool)
        for j, i in enumerate(ids.tolist()):
            m = prev == i
            covered[j] = ((cur > 0) & m).sum() >= 0.3 * m.sum()
        todo = ids[~covered]
        if not len(todo):
            continue
        _check_cancel(cancel)
        pred = emb.load(t)
        e = pred.get_embedding()
        next_id = int(cur.max()) + 1
        for i in todo.tolist():
            m = prev == i
            logits = mask_to_logits(m, e.input_size, model.image_size, model.config.mask_size)
            start = SliceAnswer(torch.as_tensor(logits, device=pred.device)[None, None], m,
                                1.0, abs(contrast(emb.pixels(t - 1), m, rules.ring)))
            ans = _follow(pred, start, ("box", "mask"), 1)
            new = _connected_to(ans.mask, m) & (cur == 0)
            area = int(new.sum())
            inter = int((new & m).sum())
            c = contrast(emb.pixels(t), new, rules.ring)
            if (area >= rules.min_area and area >= rules.min_area_ratio * m.sum()
                    and area <= rules.max_area_ratio * m.sum()
                    and inter / (area + m.sum() - inter) >= rules.min_iou
                    and c >= rules.min_contrast * start.contrast):
                cur[new] = next_id
                next_id += 1
    return out


def track(frames=None, model=None, *, labels=None, min_iou: float = 0.3, max_gap: int = 1,
          division_overlap: float = 0.3, min_length: int = 1, fill_gaps: bool = True,
          rules: Optional[StopRules] = None, channels=None, value_range=None, cache=None,
          diameter=None,
          embeddings: Optional[SliceEmbeddings] = None, progress=null_progress, cancel=None,
          device="auto", method: str = "auto", **automask_kw) -> TrackResult:
    """Track the objects of a time-lapse (rule: module doc).

    Parameters
    ----------
    frames : array-like, (T, Y, X) or (T, Y, X, C), any dtype, optional
        The movie, channels last; may be None when `labels` are given.
    model : Predictor, Sam, str or Path, optional
        None: the bundled model.
    labels : ndarray, (T, Y, X) int, optional
        Per-frame labels to link instead of segmenting (ids need not agree between frames).
    min_iou, max_gap : float, int
        Linking: smallest IoU of a match; frames a cell may be missed on.
    division_overlap : float
        Share of a daughter's area that must lie in its parent (`volume.link`).
    min_length : int
        The fewest frames a track spans.
    fill_gaps : bool
        Follow missed cells into the frames that lack them (with `method`).
    rules : StopRules, optional
        The checks a cell followed into a frame must pass (area, IoU, contrast).
    channels, value_range, cache, diameter : optional
        As for `SliceEmbeddings`.
    embeddings : SliceEmbeddings, optional
        The frames set up already.
    progress : callable(done, total, message), optional
    cancel : callable or threading.Event, optional
    device : str
    method : {"auto", "prompt", "memory"}
        How missed cells are followed: the previous frame's box and logits ("prompt"),
        SAM 2.1's memory of the cell's last frames ("memory", SAM 2.1 models only), or
        memory for SAM 2.1 models ("auto").
    **automask_kw
        To `automask.volume.segment_slices` (mode, thresholds, points_per_side, ...).

    Returns
    -------
    TrackResult
        labels (T, Y, X) uint32, one id per track, and the lineage {id: (first frame, last
        frame, parent id or 0)}.
    """
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be (T, Y, X) integers, got {labels.dtype} "
                             f"{labels.shape}")
        if frames is not None and np.shape(frames)[:3] != labels.shape:
            raise ValueError(f"labels {labels.shape} do not match frames {np.shape(frames)}")
        per_frame = labels
    else:
        if embeddings is None:
            if frames is None:
                raise ValueError("give the frames to segment, or per-frame labels to link")
            frames = check_stack(frames, "frames")
            embeddings = SliceEmbeddings(as_predictor(model, device), frames, channels,
                                         value_range, cache, diameter=diameter)
        per_frame = segment_slices(embeddings, progress, cancel, **automask_kw)
        if fill_gaps:
            from .memory import fill_gaps_memory, resolve_method

            progress(len(embeddings), len(embeddings), "following missed cells")
            fill = (fill_gaps_memory if resolve_method(method, embeddings.predictor) == "memory"
                    else _fill_gaps)
            per_frame = fill(embeddings, per_frame, rules or StopRules(), cancel)
    out, lineage = link_labels(per_frame, min_iou, max_gap, divisions=True,
                               division_overlap=division_overlap, min_extent=min_length)
    return TrackResult(out, lineage)
