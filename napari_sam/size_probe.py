"""Check a diameter estimate with the model's own instance segmentation.

The pixel-based estimate (`scale.estimate_diameter`) reads the scale of the most contrasted
blobs. On touching, textured cells that is often the texture, the nuclei or the gaps, so
it comes out 2-10x too small (docs/object_size.md). A model with an instance decoder can
say which size it actually finds: zoom a central window of the image as if the objects
were `d` pixels across, segment it with the decoder (one encoder pass at the model's input
size), and measure the median diameter `m` of the objects found. Where the model sees the
objects at its preferred size, `m` agrees with `d`; elsewhere `m` is a better guess than
`d`, so the probe repeats with `d = m` until the two agree (a fixed point, as Cellpose
refines its size model's guess from the masks it produces).

Started from the estimate itself, the iteration can settle on the texture's scale (the
model, shown the texture enlarged, segments it); started from twice the estimate it
finds the cells from above, and for nuclei it comes back down to the same fixed point.
Measured on generated nuclei and cells 8-150 px (docs/object_size.md).

Only models with an instance decoder and an input side of at most `MAX_PROBE_INPUT`
(the bundled model) are probed: on SAM-sized inputs four encoder passes would cost
seconds, and the pixel estimate is kept.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

# the first probe is at this multiple of the pixel estimate (which errs small on cells)
START_FACTOR = 2.0
# probes at most; the iteration stops when the measured and probed diameters agree within
# TOLERANCE (relative, as a log ratio)
ITERATIONS = 4
TOLERANCE = 0.1
# fewer objects than this (away from the window's edge, else anywhere in it): no verdict
MIN_OBJECTS = 3
# models whose input is larger than this are not probed (cost)
MAX_PROBE_INPUT = 512


def can_probe(model) -> bool:
    """Whether `refine_diameter` checks estimates with `model` (an instance decoder and an
    input of at most `MAX_PROBE_INPUT` px; SAM 2.1 models never).

    Parameters
    ----------
    model : Sam, Sam2 or Predictor

    Returns
    -------
    bool
    """
    model = getattr(model, "model", model)
    return (bool(getattr(model, "has_instance_head", False))
            and not getattr(model, "square_input", False)
            and int(getattr(model, "image_size", 1 << 30)) <= MAX_PROBE_INPUT)


def median_object_diameter(labels: np.ndarray) -> Tuple[Optional[float], int]:
    """Median equivalent-circle diameter of the objects of a label image, counting only
    those that do not touch its edge when there are at least `MIN_OBJECTS` of them.

    Parameters
    ----------
    labels : ndarray, (Y, X) int
        0 is background.

    Returns
    -------
    (diameter, n) : (float or None, int)
        Diameter in pixels of `labels` (None when no object is found), and how many objects
        it was measured on.
    """
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())
    ids = np.flatnonzero(areas)
    ids = ids[ids > 0]
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inner = np.setdiff1d(ids, edge)
    use = inner if len(inner) >= MIN_OBJECTS else ids
    if len(use) == 0:
        return None, 0
    return float(np.median(np.sqrt(4.0 * areas[use] / math.pi))), int(len(use))


def probe_once(image: np.ndarray, model, diameter: float,
               channels: Optional[Sequence[int]] = None) -> Tuple[Optional[float], int]:
    """Segment a central window of `image` at the zoom objects of `diameter` px need, with
    the model's instance decoder, and measure what it finds.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C), any dtype
    model : Sam or Predictor
        With an instance decoder (`can_probe`).
    diameter : float
        The diameter to try, in image pixels.
    channels : sequence of int, optional

    Returns
    -------
    (diameter, n) : (float or None, int)
        The median diameter of the objects found, in image pixels, and their number (None,
        0 when the window holds no object).
    """
    from .instance_labels import ais_defaults, watershed_from_maps
    from .predictor import Predictor
    from .zoom_plan import target_zoom

    model = getattr(model, "model", model)
    zoom = target_zoom(model, diameter)
    side = int(model.image_size / zoom)
    h, w = int(np.shape(image)[0]), int(np.shape(image)[1])
    sh, sw = min(h, side), min(w, side)
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    window = np.asarray(image[y0:y0 + sh, x0:x0 + sw])
    pred = Predictor(model)
    pred.set_image(window, channels, zoom=zoom)
    maps = pred.instance_maps(at_input=True)
    labels = watershed_from_maps(maps["foreground"], maps["center_distances"],
                                 maps["boundary_distances"], **ais_defaults(model))
    found, n = median_object_diameter(labels)
    # the maps are at model-input size: back to image pixels
    scale = sh / labels.shape[0]
    return (None if found is None else found * scale), n


def refine_diameter(image: np.ndarray, model, estimate: float,
                    channels: Optional[Sequence[int]] = None) -> float:
    """A pixel-based diameter estimate, checked and corrected by the model.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C), any dtype
    model : Sam or Predictor
        Models that `can_probe` not get `estimate` back unchanged.
    estimate : float
        The pixel estimate in image pixels (`scale.estimate_diameter`).
    channels : sequence of int, optional

    Returns
    -------
    float
        The objects' diameter in image pixels: the fixed point of the probe started at
        `START_FACTOR * estimate`, or `estimate` when the model finds no objects.
    """
    if not can_probe(model):
        return float(estimate)
    h, w = int(np.shape(image)[0]), int(np.shape(image)[1])
    lo, hi = 4.0, max(8.0, min(h, w) / 4.0)
    d = float(np.clip(START_FACTOR * estimate, lo, hi))
    for _ in range(ITERATIONS):
        found, _n = probe_once(image, model, d, channels)
        if found is None:
            return float(estimate)
        found = float(np.clip(found, lo, hi))
        converged = abs(math.log(found / d)) < TOLERANCE
        d = found
        if converged:
            break
    return d
