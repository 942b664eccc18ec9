"""Automatic instance segmentation (AIS) from an instance decoder's three maps.

`instance_maps(image, model)` runs the encoder once and the model's instance head (the
bundled model's, see `model.instance_head`) and returns the maps at the image's size;
`watershed_from_maps` turns them into labels: seeds where both distances are small inside
the foreground, grown over the boundary distances by a watershed within the foreground.
The parameters, defaults and steps are micro-sam 1.8's `InstanceSegmentationWithDecoder`
(centre / boundary distance thresholds 0.5, foreground threshold 0.5, foreground smoothing
1.0 px, distance smoothing 1.6 px, no minimum size); the labels are micro-sam's, up to
their numbering (tests/test_ais_parity.py).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch


# the head's logits -> maps at the image's size (also used by the Predictor)
from ..model.instance_head import maps_from_logits  # noqa: E402,F401 (public here too)
# maps -> labels (the inference layer's, public here too)
from ..instance_labels import (AIS_DEFAULTS, _size_filter, ais_defaults,  # noqa: E402,F401
                               watershed_from_maps)


def instance_maps(image: np.ndarray, model=None, precision: str = "auto", channels=None,
                  predictor=None) -> Dict[str, np.ndarray]:
    """The instance decoder's three maps of an image (the arrays micro-sam's
    `InstanceSegmentationWithDecoder.initialize` computes).

    The image reaches the model at the predictor's object-size zoom, tile by tile when the
    zoomed image exceeds the model's input.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C), any dtype
    model : Sam, str or Path, optional
        A model with an instance decoder (the bundled model, or a micro-sam checkpoint with
        `decoder_state`), a registry name or a checkpoint path; None: the bundled model.
    precision : str
        As for `Predictor`.
    channels : sequence of int, optional
        Up to 3 channels of a (Y, X, C) image.
    predictor : Predictor, optional
        The Predictor to use (default: a new one on `model`, the diameter estimated).

    Returns
    -------
    maps : dict of str to ndarray
        "foreground", "center_distances", "boundary_distances": each (Y, X) float32 in
        0..1, at the image's size.

    Raises
    ------
    ValueError
        When the model has no instance decoder.
    """
    from ..predictor import Predictor

    pred = predictor or Predictor(model, precision=precision)
    if not pred.model.has_instance_head:
        raise ValueError(
            f"the model {pred.model.config.name!r} has no instance decoder: use the bundled "
            "model or a micro-sam checkpoint with one, or automask(mode='amg')")
    pred.set_image(image, channels)
    if pred.plan.tiled:
        return tiled_maps(pred._tiled.embeddings)
    return pred.instance_maps()


def tile_maps(emb, tile):
    """The embedding and the instance decoder's maps of one tile.

    Parameters
    ----------
    emb : TiledEmbeddings
    tile : Tile

    Returns
    -------
    embedding : ImageEmbedding
        The tile's (computed, or read from the cache).
    maps : dict of str to ndarray
        "foreground", "center_distances", "boundary_distances": (h, w) float32 in 0..1,
        (h, w) the tile window's shape.
    """
    from ..device import autocast

    e = emb.embedding(tile, keep=emb.cache_dir is not None)
    with torch.no_grad(), autocast(emb.device, emb.dtype):
        logits = emb.model.instance_logits(e.features, emb.model_input(tile), **emb.size_kw)
    return e, maps_from_logits(logits, e.input_size, e.original_size)


def tiled_maps(emb) -> Dict[str, np.ndarray]:
    """The three maps of a whole image from its tiles: each pixel from the tile that owns
    it (its core).

    Parameters
    ----------
    emb : TiledEmbeddings

    Returns
    -------
    maps : dict of str to ndarray
        (Y, X) float32 each, the whole image in memory.
    """
    from ..model.instance_head import MAP_NAMES

    h, w = emb.grid.shape
    out = {name: np.ones((h, w), np.float32) for name in MAP_NAMES}
    out["foreground"][:] = 0
    for tile in emb.grid:
        _, maps = tile_maps(emb, tile)
        (y0, x0), (c0, c1, c2, c3) = tile.window[:2], tile.core
        for name in MAP_NAMES:
            out[name][c0:c2, c1:c3] = maps[name][c0 - y0:c2 - y0, c1 - x0:c3 - x0]
    return out


def ais(predictor, maps: Optional[Dict[str, np.ndarray]] = None, **params) -> np.ndarray:
    """Automatic instance segmentation of the image a `Predictor` holds (the encoder does
    not run again).

    Parameters
    ----------
    predictor : Predictor
        Its model has an instance decoder; after `set_image` (micro-sam's decoder also
        after `set_embedding`).
    maps : dict of str to ndarray, optional
        The decoder's (Y, X) maps if computed already (`predictor.instance_maps()`), e.g.
        to re-threshold without running the decoder.
    **params
        `watershed_from_maps` keywords; those left out are `ais_defaults(predictor)`.

    Returns
    -------
    labels : ndarray, (Y, X) uint32
        0 is background.
    """
    if maps is None:
        maps = predictor.instance_maps()
    kw = {**ais_defaults(predictor), **params}
    return watershed_from_maps(maps["foreground"], maps["center_distances"],
                               maps["boundary_distances"], **kw)


def labels_and_records(predictor, min_area: int = 0, offset=(0, 0), maps=None,
                       zoom: Optional[float] = None, **params):
    """AIS on the image a `Predictor` holds (or on given `maps` and `zoom`, for which the
    model alone will do), with one record per object.

    The smoothing sigmas are in model-input pixels, as the maps were predicted; they are
    converted to image pixels with the embedding's zoom (or `zoom`).

    Parameters
    ----------
    predictor : Predictor
    min_area : int
        Smallest object in pixels (the larger of this and `min_size`).
    offset : (int, int)
        (row, col) added to the records' bbox and point (tiles).
    maps : dict of str to ndarray, optional
        (Y, X) maps computed already (e.g. by `tiled_maps`).
    zoom : float, optional
        Model-input px per image px of `maps` (default: the embedding's).
    **params
        `watershed_from_maps` keywords (default `ais_defaults`).

    Returns
    -------
    AutoMaskResult
        labels (Y, X) uint32 and records: id, area, bbox (row0, col0, row1, col1;
        exclusive ends), predicted_iou (mean foreground probability), stability, point.
    """
    from .amg import AutoMaskResult

    maps = maps if maps is not None else predictor.instance_maps()
    if zoom is None:
        emb = predictor.get_embedding()
        zoom = emb.input_size[0] / emb.original_size[0]
    kw = {**ais_defaults(predictor), **params}
    kw["distance_smoothing"] = kw["distance_smoothing"] / zoom
    kw["foreground_smoothing"] = kw.get("foreground_smoothing", 0.0) / zoom
    kw["min_size"] = max(int(kw.get("min_size", 0)), int(min_area))
    labels = watershed_from_maps(maps["foreground"], maps["center_distances"],
                                 maps["boundary_distances"], **kw)
    return AutoMaskResult(labels, label_records(labels, maps, offset))


def label_records(labels: np.ndarray, maps: Dict[str, np.ndarray], offset=(0, 0)) -> list:
    """One record per object of `labels`.

    Parameters
    ----------
    labels : ndarray, (Y, X) uint32
        Objects 1..n.
    maps : dict of str to ndarray
        The (Y, X) decoder maps the labels came from.
    offset : (int, int)
        (row, col) added to bbox and point.

    Returns
    -------
    records : list of dict
        id, area (px), bbox (row0, col0, row1, col1; exclusive ends), predicted_iou (mean
        foreground probability), stability (1.0), point ((row, col) of the object's
        smallest boundary distance).
    """
    from scipy import ndimage as ndi

    from .candidates import label_boxes

    n = int(labels.max())
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    score = ndi.mean(maps["foreground"], labels, index)
    centre = ndi.minimum_position(maps["boundary_distances"], labels, index)
    boxes = label_boxes(labels, n) + np.tile(np.asarray(offset, np.int64), 2)
    return [{"id": k + 1, "area": int(areas[k]), "bbox": [int(v) for v in boxes[k]],
             "predicted_iou": float(score[k]), "stability": 1.0,
             "point": [float(centre[k][0] + offset[0]), float(centre[k][1] + offset[1])]}
            for k in range(n)]
