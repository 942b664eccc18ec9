"""Automatic instance segmentation (AIS) from an instance decoder's three maps.

`instance_maps(image, model)` runs the encoder once and the model's instance head (the
bundled model's, see `model.instance_head`) and returns the maps at the image's size;
`watershed_from_maps` turns them into labels: seeds where both distances are small inside
the foreground, grown over the boundary distances by a watershed within the foreground.
The parameters and their defaults follow micro-sam's `InstanceSegmentationWithDecoder`
(centre / boundary distance thresholds 0.5, foreground threshold 0.5, smoothing 1.6 px).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

AIS_DEFAULTS = {"center_distance_threshold": 0.5, "boundary_distance_threshold": 0.5,
                "foreground_threshold": 0.5, "distance_smoothing": 1.6, "min_size": 0}


def maps_from_logits(logits: torch.Tensor, input_hw, original_hw) -> Dict[str, np.ndarray]:
    """(1, 3, S, S) head logits in the model's padded input frame -> dict of (Y, X) float32
    maps (`foreground`, `center_distances`, `boundary_distances`) at the image's size:
    sigmoid, crop to the (h, w) image area, bilinear resize to `original_hw` (Y, X)."""
    from .model.instance_head import MAP_NAMES

    p = logits.float().sigmoid()[..., : input_hw[0], : input_hw[1]]
    if tuple(p.shape[-2:]) != tuple(original_hw):
        p = F.interpolate(p, tuple(original_hw), mode="bilinear", align_corners=False)
    p = p[0].cpu().numpy()
    return {name: np.ascontiguousarray(p[i]) for i, name in enumerate(MAP_NAMES)}


def instance_maps(image: np.ndarray, model=None, precision: str = "auto", channels=None,
                  predictor=None) -> Dict[str, np.ndarray]:
    """The instance head's three maps for a (Y, X) or (Y, X, C) image, each (Y, X) float32
    in 0..1 at the image's size. `predictor`: a `Predictor` to reuse (its image embedding is
    used when it holds this image's; otherwise `set_image` runs)."""
    from .predictor import Predictor

    pred = predictor or Predictor(model, precision=precision)
    if not pred.model.has_instance_head:
        raise ValueError(
            f"the model {pred.model.config.name!r} has no instance decoder: use the bundled "
            "model or a micro-sam checkpoint with one, or automask(mode='amg')")
    pred.set_image(image, channels)
    return pred.instance_maps()


def watershed_from_maps(foreground: np.ndarray, center_distances: np.ndarray,
                        boundary_distances: np.ndarray, center_distance_threshold=0.5,
                        boundary_distance_threshold=0.5, foreground_threshold=0.5,
                        distance_smoothing=1.6, min_size=0) -> np.ndarray:
    """Seeded watershed: three (Y, X) float maps -> (Y, X) uint32 labels, 0 = background.

    The distance maps are Gaussian-smoothed (sigma `distance_smoothing` px); seeds are the
    connected regions where centre distance < `center_distance_threshold`, boundary distance
    < `boundary_distance_threshold` and foreground > `foreground_threshold`; they grow over
    the smoothed boundary distances within the foreground. Objects under `min_size` pixels
    are removed."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    fg = np.asarray(foreground) > foreground_threshold
    if distance_smoothing > 0:
        center = ndi.gaussian_filter(np.asarray(center_distances, np.float32), distance_smoothing)
        boundary = ndi.gaussian_filter(np.asarray(boundary_distances, np.float32),
                                       distance_smoothing)
    else:
        center, boundary = center_distances, boundary_distances
    seeds = (center < center_distance_threshold) & (boundary < boundary_distance_threshold) & fg
    markers, n = ndi.label(seeds)
    if n == 0:
        return np.zeros(fg.shape, np.uint32)
    labels = watershed(boundary, markers=markers, mask=fg)
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0].astype(np.uint32)


def ais(image: np.ndarray, model=None, precision: str = "auto", channels=None,
        predictor=None, maps: Optional[Dict[str, np.ndarray]] = None, **params) -> np.ndarray:
    """Labels (Y, X) uint32 of a (Y, X[, C]) image from the instance head and the seeded
    watershed. Parameters left out are the model's calibrated ones (`ais_defaults`)."""
    if maps is None:
        maps = instance_maps(image, model, precision, channels, predictor)
        model = predictor.model if predictor is not None else model
    kw = {**ais_defaults(model), **params}
    return watershed_from_maps(maps["foreground"], maps["center_distances"],
                               maps["boundary_distances"], **kw)


def labels_and_records(predictor, min_area: int = 0, offset=(0, 0), maps=None, **params):
    """AIS on the image a `Predictor` holds -> `AutoMaskResult` (labels (Y, X) uint32,
    records with id, area, bbox (row0, col0, row1, col1, exclusive ends, plus `offset`),
    score (mean foreground probability) and point (the seed's (row, col))).

    The smoothing (`distance_smoothing`) is in model-input pixels, as the maps were
    predicted; it is converted to image pixels with the zoom of the embedding."""
    from scipy import ndimage as ndi

    from .automask import AutoMaskResult
    from .postprocess import label_boxes

    maps = maps if maps is not None else predictor.instance_maps()
    emb = predictor.get_embedding()
    zoom = emb.input_size[0] / emb.original_size[0]
    kw = {**ais_defaults(predictor), **params}
    kw["distance_smoothing"] = kw["distance_smoothing"] / zoom
    kw["min_size"] = max(int(kw.get("min_size", 0)), int(min_area))
    labels = watershed_from_maps(maps["foreground"], maps["center_distances"],
                                 maps["boundary_distances"], **kw)
    n = int(labels.max())
    if n == 0:
        return AutoMaskResult(labels, [])
    index = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    score = ndi.mean(maps["foreground"], labels, index)
    centre = ndi.minimum_position(maps["boundary_distances"], labels, index)
    boxes = label_boxes(labels, n) + np.tile(np.asarray(offset, np.int64), 2)
    records = [{"id": k + 1, "area": int(areas[k]), "bbox": [int(v) for v in boxes[k]],
                "predicted_iou": float(score[k]), "stability": 1.0,
                "point": [float(centre[k][0] + offset[0]), float(centre[k][1] + offset[1])]}
               for k in range(n)]
    return AutoMaskResult(labels, records)


def ais_defaults(model) -> Dict[str, float]:
    """AIS parameters for a model (Sam or Predictor): those stored with its weights, else
    micro-sam's defaults."""
    model = getattr(model, "model", model)
    return {**AIS_DEFAULTS, **(getattr(model, "ais_defaults", None) or {})}
