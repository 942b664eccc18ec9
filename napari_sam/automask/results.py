"""What automatic mask generation returns, and the thresholds it starts from.

`AutoMaskResult` (a label image and one record per object) is the result of every automask
mode; `MaskSet` holds the grid mode's masks before painting; `default_thresholds` gives a
model's predicted-IoU and stability thresholds (SAM's, or those calibrated for its weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

SAM_THRESHOLDS = {"pred_iou_thresh": 0.88, "stability_thresh": 0.95}


def default_thresholds(model) -> Dict[str, float]:
    """The automask thresholds for a model: those stored with its weights, else SAM's.

    Parameters
    ----------
    model : Sam or Predictor
        The model (a Predictor's model is used); its `automask_defaults`, if any, override.

    Returns
    -------
    thresholds : dict
        {"pred_iou_thresh": float, "stability_thresh": float}.
    """
    model = getattr(model, "model", model)
    return {**SAM_THRESHOLDS, **(getattr(model, "automask_defaults", None) or {})}


@dataclass
class AutoMaskResult:
    """The label image of an automatic segmentation and one record per object.

    Parameters
    ----------
    labels : ndarray, (Y, X) uint32
        0 is background, objects are 1..N in the image's pixel grid.
    records : list of dict
        records[k] describes id k + 1: "id", "area" (pixels), "bbox" (row0, col0, row1,
        col1; exclusive ends), "predicted_iou", "stability", "point" (row, col) of the
        prompt and "crop_box" (row0, col0, row1, col1).
    """

    labels: np.ndarray
    records: List[dict] = field(default_factory=list)


@dataclass
class MaskSet:
    """Full-resolution masks before painting, best first: masks[i] is a bool crop at boxes[i].

    Parameters
    ----------
    masks : list of ndarray, (h_i, w_i) bool
        Each mask cropped to its tight box.
    boxes : list of (int, int, int, int)
        (row0, col0, row1, col1) in image pixels, exclusive ends.
    index : list of int
        Rows of the generator's candidates.
    """

    masks: List[np.ndarray]
    boxes: List[Tuple[int, int, int, int]]
    index: List[int]  # rows of the generator's candidates
