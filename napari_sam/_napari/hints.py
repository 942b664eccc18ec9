"""What to tell the user about a prompt that cannot give one object (Qt-free).

Two cases that SAM answers badly, or the tiled predictor refuses with "empty prompt":
- background (negative) clicks alone: nothing to select;
- positive clicks on separate pieces: SAM segments one object per prompt, so clicks on two
  objects give a merged, low-scored mask (or, tiled, no anchor tile for all of them).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

NEGATIVE_ONLY = ("a background click alone selects nothing: click on the object first "
                 "(background clicks then cut parts away)")
SEPARATE = ("the object clicks fall on separate pieces: one object at a time. Commit the "
            "first object (Shift-C), then click the next one, or Clear (Shift-X)")


def negative_only(prompt) -> bool:
    """True when `prompt` (a `prompts.Prompt`) has background clicks and nothing else."""
    return (len(prompt.points) > 0 and not (np.asarray(prompt.labels) == 1).any()
            and prompt.box is None and prompt.region is None)


def split_pieces(mask: Optional[np.ndarray], points: np.ndarray, labels: np.ndarray,
                 origin=(0, 0)) -> bool:
    """True when two or more positive `points` ((N, 2) row, col in image pixels) fall on
    different connected pieces of `mask` ((h, w) bool whose pixel (0, 0) is image pixel
    `origin`), or on none while others hit it: several objects in one prompt."""
    pos = np.asarray(points, float).reshape(-1, 2)[np.asarray(labels).reshape(-1) == 1]
    if mask is None or len(pos) < 2:
        return False
    from scipy import ndimage

    pieces, n = ndimage.label(mask)
    rc = np.rint(pos - np.asarray(origin, float)).astype(int)
    ok = ((rc >= 0) & (rc < np.asarray(mask.shape))).all(axis=1)
    ids = np.zeros(len(rc), int)
    ids[ok] = pieces[rc[ok, 0], rc[ok, 1]]
    return len(set(ids.tolist())) > 1
