"""The zoom at which an image reaches a model, given its objects' diameter.

A model segments best when objects reach it at its *preferred diameter* (model-input
pixels: `preferred_diameter`). `zoom_for` / `target_zoom` give the factor by which the image
is resized; `plan_zoom` decides between one embedding at that zoom and tiles at that zoom
(`ZoomPlan`), and `tiled_plan` sizes the tiles. The diameter itself comes from the user or
from `scale.resolve_diameter`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

# preferred object diameter in model-input pixels and the usable range, for models whose
# checkpoint does not say (SAM and its fine-tuned variants at 1024 px input; documented in
# docs/object_size.md)
SAM_PREFERRED = {"diameter": 48.0, "range": (16.0, 400.0)}


def preferred_diameter(model) -> Tuple[float, Tuple[float, float]]:
    """The object diameter at which `model` segments best, in model-input pixels.

    Parameters
    ----------
    model : Sam, Sam2 or Predictor

    Returns
    -------
    (diameter, (low, high)) : (float, (float, float))
        From the checkpoint's `object_size` (measured for the bundled model) or, when it
        has none, SAM's documented default `SAM_PREFERRED`.
    """
    model = getattr(model, "model", model)
    info = getattr(model, "object_size", None) or SAM_PREFERRED
    lo, hi = info.get("range", SAM_PREFERRED["range"])
    return float(info["diameter"]), (float(lo), float(hi))


def zoom_for(model, diameter: Optional[float]) -> Optional[float]:
    """The zoom that brings objects of `diameter` image px to the model's preferred size.

    Parameters
    ----------
    model : Sam or Sam2
    diameter : float or None

    Returns
    -------
    float or None
        Model-input px per image px; None when `diameter` is None (no zoom).
    """
    if diameter is None:
        return None
    pref, _ = preferred_diameter(model)
    return pref / float(diameter)


# a single embedding is used when the image fits the model input at this fraction (or
# more) of the zoom it should get: objects up to 15 % below the preferred size
FIT_TOLERANCE = 0.85
# zooms beyond these are clamped (objects of 1-2 px, or of whole-image size)
ZOOM_LIMITS = (1 / 64, 8.0)


@dataclass(frozen=True)
class ZoomPlan:
    """How an image reaches the model.

    Parameters
    ----------
    zoom : float or None
        Model-input pixels per image pixel (None: the whole image resized to the input,
        SAM's rule).
    tile : int, optional
        None: one embedding of the whole image; else the tile side in image pixels.
    overlap : int, optional
        Image pixels shared by neighbouring tiles.
    diameter : float, optional
        The objects' diameter in image pixels that the plan was made for (None: unknown or
        not used).
    tile_input : int, optional
        A tile's side in model-input pixels (None: the model's input; larger only for the
        instance maps of a model with `flexible_input`, see `tiled_plan`).
    """

    zoom: Optional[float]
    tile: Optional[int] = None
    overlap: Optional[int] = None
    diameter: Optional[float] = None
    tile_input: Optional[int] = None

    @property
    def tiled(self) -> bool:
        return self.tile is not None


def target_zoom(model, diameter: float) -> float:
    """`zoom_for`, clamped to ZOOM_LIMITS and to tiles of at least 16 image pixels.

    Parameters
    ----------
    model : Sam, Sam2 or Predictor
    diameter : float

    Returns
    -------
    float
    """
    model = getattr(model, "model", model)
    target = float(np.clip(zoom_for(model, diameter), *ZOOM_LIMITS))
    return min(target, model.image_size / 16)


# model-input side of the tiles that only need instance maps (AIS) on a model with
# `flexible_input`: 3 x 3 of its 256-px inputs; the share of pixels computed twice in the
# overlaps falls from 44 % (256-px tiles, 64-px overlaps) to 16 % at 20-px nuclei. The
# encoder and head cost per pixel is about the same at 256 and 768 input
AIS_TILE_INPUT = 768


def tiled_plan(model, diameter: float, tile_input: Optional[int] = None,
               shape=None) -> ZoomPlan:
    """Tiles at the zoom objects of `diameter` image px need: tile side = `tile_input`
    (default the model input) / zoom; overlap = the model's default overlap at that zoom, at
    least one diameter, at most half a tile.

    Parameters
    ----------
    model : Sam, Sam2 or Predictor
    diameter : float
        The objects' diameter in image pixels.
    tile_input : int, optional
        A tile's side in model-input pixels (`instance_tile_input`; None: the model's input).
    shape : tuple of int, optional
        (Y, X, ...) of the image: a larger `tile_input` is cut to a multiple of 64 whose
        tiles fit inside the image, so every tile is whole, with no padding (the instance
        head's group norms see only pixels).

    Returns
    -------
    ZoomPlan
    """
    from .tiled.embed import default_tiling

    model = getattr(model, "model", model)
    size = model.image_size
    side = size if tile_input is None else model.input_side(tile_input)
    zoom = target_zoom(model, diameter)
    if shape is not None and side > size:
        fits = int(min(int(shape[0]), int(shape[1])) * zoom) // 64 * 64
        side = max(size, min(side, fits))
    tile = max(16, int(round(side / zoom)))
    _, overlap = default_tiling(model)
    overlap = min(tile // 2, max(int(round(overlap / zoom)), int(math.ceil(diameter))))
    return ZoomPlan(side / tile, tile, overlap, diameter,
                    None if side == size else side)


def instance_tile_input(model, mode: str) -> Optional[int]:
    """The tile side in model-input pixels for automask `mode`.

    Parameters
    ----------
    model : Sam, Sam2 or Predictor
    mode : str
        "ais" reads only instance maps: with `flexible_input` it gets `AIS_TILE_INPUT`.

    Returns
    -------
    int or None
        None: the model's own input side.
    """
    model = getattr(model, "model", model)
    if mode == "ais" and getattr(model, "flexible_input", False):
        return AIS_TILE_INPUT
    return None


def plan_zoom(shape, model, diameter: Optional[float],
              tile_input: Optional[int] = None) -> ZoomPlan:
    """How an image reaches the model, given its objects' diameter.

    Parameters
    ----------
    shape : tuple of int
        (Y, X, ...) of the image.
    model : Sam, Sam2 or Predictor
    diameter : float or None
        The objects' diameter in image pixels; None: no zoom (SAM's whole-image resize).
    tile_input : int, optional
        The side of a tile in model-input pixels, if tiled (`instance_tile_input`).

    Returns
    -------
    ZoomPlan
        One embedding at `zoom` when the image fits the model input at (at least
        `FIT_TOLERANCE` of) the zoom it needs, else `tiled_plan(model, diameter, tile_input)`.
    """
    if diameter is None:
        return ZoomPlan(None)
    model = getattr(model, "model", model)
    target = target_zoom(model, diameter)
    fit = model.image_size / max(int(shape[0]), int(shape[1]))
    if fit >= target:
        return ZoomPlan(target, diameter=diameter)
    if fit >= target * FIT_TOLERANCE:
        return ZoomPlan(fit, diameter=diameter)
    return tiled_plan(model, diameter, tile_input, shape)
