"""What ends an object's propagation through a volume, and what a propagation reports.

`StopRules` holds the thresholds of the stopping rules (described in `propagate`'s module
docstring); `PropagationInfo` is what `segment_volume(..., return_info=True)` returns beside
the mask; `SliceAnswer` is one slice's answer while following an object; `Cancelled` ends a
long computation whose `cancel` callback returned True.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

import numpy as np
import torch


class Cancelled(Exception):
    """Raised when the `cancel` callback of a long computation returns True.

    Parameters
    ----------
    message : str
        Usually just "cancelled".
    """


@dataclass(frozen=True)
class StopRules:
    """When propagation stops (the rules are described in `propagate`'s module docstring).

    Parameters
    ----------
    min_area : int
        Vanished: fewer pixels than this on a slice.
    min_area_ratio, max_area_ratio : float
        Shrank / grew: area below / above these multiples of the neighbour's.
    min_iou : float
        Jumped: IoU with the neighbour's mask below this.
    min_contrast : float
        Faded: contrast below this multiple of the anchor's.
    ring : int
        Width in pixels of the ring around the mask that the contrast compares with.
    min_score : float
        Unsure: predicted IoU below this (0: off).
    max_slices : int, optional
        At most this many slices from the anchor (None: no limit).
    """

    min_area: int = 10
    min_area_ratio: float = 0.2
    max_area_ratio: float = 2.5
    min_iou: float = 0.3
    min_contrast: float = 0.45
    ring: int = 4
    min_score: float = 0.0
    max_slices: Optional[int] = None

    def for_spacing(self, spacing) -> "StopRules":
        """The rules relaxed for anisotropic voxels: with r = dz / min(dy, dx) > 1,
        `min_iou / r`, `min_area_ratio / r` and `max_area_ratio * r`.

        Parameters
        ----------
        spacing : (float, float, float) or None
            Voxel size (dz, dy, dx), all positive (ValueError otherwise); None: isotropic.

        Returns
        -------
        StopRules
            Self when nothing changes, else a relaxed copy.
        """
        if spacing is None:
            return self
        dz, dy, dx = (float(s) for s in spacing)
        if min(dz, dy, dx) <= 0:
            raise ValueError(f"spacing must be positive (dz, dy, dx), got {tuple(spacing)}")
        r = dz / min(dy, dx)
        if r <= 1:
            return self
        return replace(self, min_iou=self.min_iou / r, min_area_ratio=self.min_area_ratio / r,
                       max_area_ratio=self.max_area_ratio * r)


@dataclass
class SliceAnswer:
    """The model's answer on one slice while following an object.

    Parameters
    ----------
    logits : Tensor (1, 1, m, m)
        Low-resolution logits of the chosen mask (m: the model's mask size).
    mask : ndarray (Y, X) bool
        The mask at the slice's resolution.
    score : float
        Its predicted IoU.
    contrast : float
        Mean intensity inside minus over a ring around it (`propagate.contrast`); set on
        anchors, NaN elsewhere.
    """

    logits: torch.Tensor
    mask: np.ndarray
    score: float
    contrast: float = float("nan")


@dataclass
class PropagationInfo:
    """What a propagation reports beside the mask.

    Parameters
    ----------
    scores : ndarray (Z,) float
        Predicted IoU per slice (NaN where the object is absent).
    stops : dict of str to str
        Keys "below" and "above": why the object ended below the lowest and above the
        highest anchor ("vanished", "shrank", "grew", "jumped", "faded", "unsure",
        "max_slices", "edge").
    anchors : tuple of int
        The anchor slices.
    """

    scores: np.ndarray
    stops: Dict[str, str] = field(default_factory=dict)
    anchors: Tuple[int, ...] = ()


def _check_cancel(cancel) -> None:
    if cancel is None:
        return
    flag = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if flag:
        raise Cancelled("cancelled")
