"""Synthetic images whose objects have a chosen diameter, for object-size studies.

`scaled_sample(kind, diameter, size, seed)` draws a fluorescence nuclei field or a field of
touching cells from the training generator (`synthetic`) with the median object diameter
fixed (pixels), everything else random. Seeds here start at 30_000_000, apart from the
training (< 10**6), held-out (10_000_019) and calibration (20_000_003) seeds.
"""

from __future__ import annotations

import numpy as np

from .synthetic import (MIN_PIXELS, _acquire, _cells, _debris, _nuclei, _nuclei_params,
                        finalize_labels, sample_rng, to_dtype)

MULTISCALE_SEED = 30_000_000


def scaled_sample(kind: str, diameter: float, size=(256, 256), seed: int = 0,
                  dtype: str = "uint16"):
    """(image, labels) with objects of median diameter `diameter` px.

    Parameters
    ----------
    kind : str
        "nuclei" (separated or touching, clean acquisition) or "cells" (touching cells).
    diameter : float
        The objects' median diameter in pixels.
    size : tuple of int
        The image's (Y, X) size.
    seed : int
        The sample index; the image depends only on (`diameter`, `seed`).
    dtype : str
        "float32" (0-1), "uint8" or "uint16" (see `synthetic.to_dtype`).

    Returns
    -------
    image : ndarray, (Y, X) of `dtype`
    labels : ndarray, (Y, X) uint32
        Instance ids 1..N, 0 for background.
    """
    rng = sample_rng(MULTISCALE_SEED + int(round(diameter * 10)), seed)
    size = (int(size[0]), int(size[1]))
    if kind == "nuclei":
        p = _nuclei_params(rng, size)
        p.update(d_med=float(diameter), d_spread=0.12, d_min=max(4.0, 0.6 * diameter),
                 d_max=1.6 * diameter, p_mitotic=0.0, p_dividing=0.0, max_overlap=0.0,
                 n_max=int(p["n_max"] * max(1.0, 400 / diameter ** 2)),
                 aspect_min=max(p["aspect_min"], 0.6), irregular=min(p["irregular"], 0.15))
        signal, canvas = _nuclei(rng, size, p)
        labels = finalize_labels(canvas.labels, MIN_PIXELS, canvas.occluded)
        _debris(rng, signal, amount=0.3)
        image = _acquire(rng, signal, clean=True)
    elif kind == "cells":
        signal, labels = _cells(rng, size, diameter)
        _debris(rng, signal, amount=0.3)
        image = _acquire(rng, signal, clean=True)
    else:
        raise ValueError(f"kind must be 'nuclei' or 'cells', got {kind!r}")
    return to_dtype(image, dtype), labels.astype(np.uint32)


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent-circle diameter (px) of the objects of a label image.

    Parameters
    ----------
    labels : ndarray, (Y, X) non-negative int
        Instance labels, 0 for background.

    Returns
    -------
    float
        The median of 2 * sqrt(area / pi) over the objects, in pixels; NaN without objects.
    """
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi))) if len(areas) else float("nan")
