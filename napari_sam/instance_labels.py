"""Instance labels from an instance decoder's three maps (micro-sam 1.8's post-processing).

`watershed_from_maps` turns the foreground, centre-distance and boundary-distance maps
(`Predictor.instance_maps`) into labels: seeds where both distances are small inside the
foreground, grown over the boundary distances by a seeded watershed within the foreground.
`ais_defaults` gives a model's parameters (stored with its weights, else micro-sam's). Used
by automatic segmentation (`automask.ais`) and by the object-size check (`size_probe`).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

# micro-sam 1.8's `InstanceSegmentationWithDecoder.generate` defaults
AIS_DEFAULTS = {"center_distance_threshold": 0.5, "boundary_distance_threshold": 0.5,
                "foreground_threshold": 0.5, "foreground_smoothing": 1.0,
                "distance_smoothing": 1.6, "min_size": 0}


def watershed_from_maps(foreground: np.ndarray, center_distances: np.ndarray,
                        boundary_distances: np.ndarray, center_distance_threshold=0.5,
                        boundary_distance_threshold=0.5, foreground_threshold=0.5,
                        distance_smoothing=1.6, min_size=0,
                        foreground_smoothing=1.0) -> np.ndarray:
    """Seeded watershed: three (Y, X) float maps -> (Y, X) uint32 labels, 0 = background.

    micro-sam 1.8's `InstanceSegmentationWithDecoder.generate` (torch-em's
    `watershed_from_center_and_boundary_distances`), step by step, with its defaults: the
    foreground is Gaussian-smoothed (sigma `foreground_smoothing` px, 0 = off) and
    thresholded (> `foreground_threshold`); both distance maps are smoothed (sigma
    `distance_smoothing`); seeds are the 8-connected regions where centre distance <
    `center_distance_threshold` and boundary distance < `boundary_distance_threshold`
    inside the foreground; they flood the smoothed boundary distances within the foreground
    (`watershed.seeded_watershed`); objects under `min_size` pixels are removed and the
    labels renumbered 1..n. The same labels as micro-sam's, up to their numbering.

    Parameters
    ----------
    foreground, center_distances, boundary_distances : ndarray, (Y, X) float
        The instance decoder's maps (`instance_maps`).
    center_distance_threshold, boundary_distance_threshold, foreground_threshold : float
    distance_smoothing, foreground_smoothing : float
        Gaussian sigmas in pixels (0: off).
    min_size : int
        Smallest object in pixels.

    Returns
    -------
    labels : ndarray, (Y, X) uint32
        0 is background, objects 1..n.
    """
    from scipy import ndimage as ndi

    from .watershed import gaussian_smoothing, seeded_watershed

    shape = np.shape(foreground)
    if np.shape(center_distances) != shape or np.shape(boundary_distances) != shape:
        raise ValueError("foreground, center_distances and boundary_distances must have one "
                         f"(Y, X) shape, got {shape}, {np.shape(center_distances)}, "
                         f"{np.shape(boundary_distances)}")
    fg = gaussian_smoothing(foreground, foreground_smoothing) > foreground_threshold
    center = gaussian_smoothing(center_distances, distance_smoothing)
    boundary = gaussian_smoothing(boundary_distances, distance_smoothing)
    seeds = (center < center_distance_threshold) & (boundary < boundary_distance_threshold) & fg
    markers, n = ndi.label(seeds, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(shape, np.uint32)
    labels = seeded_watershed(boundary, markers, fg)
    return _size_filter(labels, min_size)


def _size_filter(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Objects under `min_size` pixels -> 0; labels renumbered 1..n in order of first
    appearance of the old numbers (sorted old ids), as uint32."""
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (counts >= min_size) & (ids != 0)
    new = np.zeros(len(ids), np.uint32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return new[inverse.reshape(labels.shape)]


def ais_defaults(model) -> Dict[str, float]:
    """AIS parameters for a model: those stored with its weights, else micro-sam's.

    Parameters
    ----------
    model : Sam or Predictor

    Returns
    -------
    dict
        `watershed_from_maps` keywords (and "min_size").
    """
    model = getattr(model, "model", model)
    return {**AIS_DEFAULTS, **(getattr(model, "ais_defaults", None) or {})}
