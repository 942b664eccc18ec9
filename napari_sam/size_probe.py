"""Check a diameter estimate with the model's own instance segmentation.

The pixel-based estimate (`scale.estimate_diameter`) reads the scale of the most contrasted
blobs. On touching, textured cells that is often the texture, the nuclei or the gaps, so
it comes out 2-10x too small (docs/object_size.md). A model with an instance decoder can
say which size it actually finds: zoom windows of the image (up to four, spread over it, on
the whole image's intensity range) as if the objects were `d` pixels across, segment them
with the decoder (one encoder pass at the model's input size each), and measure the median
diameter `m` of the objects found. Several windows, because one can fall on an empty or odd
region (the sample `nuclei.tif` has a patch of noise specks across its centre; a single
central window, normalised on its own, read the specks: 5.6 px for 24 px nuclei). Where the model sees the
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
# the checked diameter stays at or above this fraction of the pixel estimate
FLOOR_FACTOR = 0.5
# windows per probe (spread over the image, so one empty or odd region cannot decide)
WINDOWS = 4


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


def object_areas(labels: np.ndarray) -> np.ndarray:
    """Areas (pixels) of the objects of a label image, leaving out those that touch its edge
    when at least `MIN_OBJECTS` others remain.

    Parameters
    ----------
    labels : ndarray, (Y, X) int
        0 is background.

    Returns
    -------
    ndarray, (n,) int64
    """
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())
    ids = np.flatnonzero(areas)
    ids = ids[ids > 0]
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inner = np.setdiff1d(ids, edge)
    return areas[inner if len(inner) >= MIN_OBJECTS else ids].astype(np.int64)


def median_object_diameter(areas) -> Optional[float]:
    """The median equivalent-circle diameter of objects.

    Parameters
    ----------
    areas : sequence of float
        Object areas in pixels.

    Returns
    -------
    float or None
        Diameter in pixels; None without objects.
    """
    a = np.asarray(areas, np.float64)
    if a.size == 0:
        return None
    return float(np.median(np.sqrt(4.0 * a / math.pi)))


def windows(shape, side: int, most: int = WINDOWS):
    """Up to `most` square windows of `side` px spread over an image: the whole image (or its
    centre) when one window covers it, else the centres of a 2 x 2 grid.

    Parameters
    ----------
    shape : tuple of int
        (Y, X, ...) of the image.
    side : int
        The window's side in image pixels.
    most : int
        1 or 4.

    Returns
    -------
    list of (row0, col0, height, width)
    """
    h, w = int(shape[0]), int(shape[1])
    sh, sw = min(h, side), min(w, side)
    ys = [(h - sh) // 2] if sh >= h or most < 4 else [h // 4 - sh // 2, 3 * h // 4 - sh // 2]
    xs = [(w - sw) // 2] if sw >= w or most < 4 else [w // 4 - sw // 2, 3 * w // 4 - sw // 2]
    return [(min(max(0, y), h - sh), min(max(0, x), w - sw), sh, sw) for y in ys for x in xs]


def probe_once(image: np.ndarray, model, diameter: float,
               channels: Optional[Sequence[int]] = None,
               value_range=None, predictor=None) -> Tuple[Optional[float], int]:
    """Segment windows of `image` at the zoom objects of `diameter` px need, with the model's
    instance decoder, and measure what it finds.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C), any dtype
    model : Sam or Predictor
        With an instance decoder (`can_probe`).
    diameter : float
        The diameter to try, in image pixels.
    channels : sequence of int, optional
    value_range : (low, high), optional
        The whole image's intensity range (default: computed here), so that a window of
        background is not stretched until its noise looks like objects.
    predictor : Predictor, optional
        A Predictor on `model` to reuse (its session keeps the fast weights between
        probes); default: a new one.

    Returns
    -------
    (diameter, n) : (float or None, int)
        The median diameter of the objects found in all windows, in image pixels, and
        their number (None, 0 when no window holds an object).
    """
    from .instance_labels import ais_defaults, watershed_from_maps
    from .predictor import Predictor
    from .transforms import intensity_range, select_channels
    from .zoom_plan import target_zoom

    model = getattr(model, "model", model)
    if value_range is None:
        value_range = intensity_range(select_channels(np.asarray(image), channels))
    zoom = target_zoom(model, diameter)
    pred = predictor if predictor is not None else Predictor(model)
    areas = []
    for y0, x0, sh, sw in windows(np.shape(image), int(model.image_size / zoom)):
        window = np.asarray(image[y0:y0 + sh, x0:x0 + sw])
        pred.set_image(window, channels, value_range=value_range, zoom=zoom)
        maps = pred.instance_maps(at_input=True)
        labels = watershed_from_maps(maps["foreground"], maps["center_distances"],
                                     maps["boundary_distances"], **ais_defaults(model))
        # the maps are at model-input size: areas back in image pixels
        areas.append(object_areas(labels) * (sh / labels.shape[0]) * (sw / labels.shape[1]))
    areas = np.concatenate(areas)
    return median_object_diameter(areas), int(areas.size)


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
        `START_FACTOR * estimate`, kept at or above `FLOOR_FACTOR * estimate`, or `estimate`
        when the model finds no objects.
    """
    if not can_probe(model):
        return float(estimate)
    from .predictor import Predictor
    from .transforms import intensity_range, select_channels

    pred = Predictor(getattr(model, "model", model))
    h, w = int(np.shape(image)[0]), int(np.shape(image)[1])
    # never below half the pixel estimate: that errs small on cells, hardly ever 2x large,
    # while the model, shown objects zoomed past its size, can find specks in them and
    # spiral down (held-out nuclei, true 19.9 px, estimate 38.6: read 4 px unbounded)
    lo, hi = max(4.0, FLOOR_FACTOR * estimate), max(8.0, min(h, w) / 4.0)
    value_range = intensity_range(select_channels(np.asarray(image), channels))
    d = float(np.clip(START_FACTOR * estimate, lo, hi))
    for _ in range(ITERATIONS):
        found, _n = probe_once(image, model, d, channels, value_range, pred)
        if found is None:
            return float(estimate)
        found = float(np.clip(found, lo, hi))
        converged = abs(math.log(found / d)) < TOLERANCE
        d = found
        if converged:
            break
    return d
