"""A synthetic domain the bundled model was not trained on, for fine-tuning tests and the
fine-tuning benchmark: "ring cells", fluorescence cells whose membrane is bright and whose
inside is darker than the background around them.

The bundled model learnt bright, filled objects (nuclei, cytoplasm) and coloured shapes;
here a click in the middle of a cell lands on a dark spot, and the bright rims of touching
cells form one connected network. Built from the generator's pieces (`blob_field`,
`LabelCanvas`, `finalize_labels`, `_acquire`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .synthetic import MIN_PIXELS, _acquire, to_dtype
from .synthetic_shapes import LabelCanvas, blob_field, finalize_labels, random_harmonics


def ring_cells(seed: int = 0, size=(512, 512), dtype="uint16", diameter=(22.0, 40.0)):
    """One (image, labels) pair: (Y, X) `dtype` image, (Y, X) uint32 labels 1..N.

    Cells are ellipses with `diameter` (min, max) pixels, packed densely (many touch), each
    drawn as a bright rim 2-4 px thick around a dark interior.

    Parameters
    ----------
    seed : int
        The image depends only on it (and on `size`, `diameter`).
    size : tuple of int
        The image's (Y, X) size.
    dtype : str
        "float32" (0-1), "uint8" or "uint16" (see `synthetic.to_dtype`).
    diameter : tuple of float
        (min, max) cell diameter in pixels, drawn uniformly.

    Returns
    -------
    image : ndarray, (Y, X) of `dtype`
    labels : ndarray, (Y, X) uint32
        Instance ids 1..N, 0 for background.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(77,)))
    size = (int(size[0]), int(size[1]))
    canvas = LabelCanvas(size, keep_frac=0.8, min_px=MIN_PIXELS)
    target = 0.55 * size[0] * size[1]
    area, tries = 0, 0
    while area < target and tries < 4000:
        tries += 1
        d = rng.uniform(*diameter)
        asp = rng.uniform(0.55, 1.0)
        cy, cx = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        res = blob_field(cy, cx, d / 2 / np.sqrt(asp), d / 2 * np.sqrt(asp),
                         rng.uniform(0, np.pi), random_harmonics(rng, 0.08), size)
        if res is None:
            continue
        sl, rho = res
        lid = canvas.try_add(sl, rho <= 1, max_overlap=0.02)
        area += int((rho <= 1).sum()) if lid else 0
    labels = finalize_labels(canvas.labels, MIN_PIXELS, canvas.occluded)
    # rim: pixels within `rim` px of the object's outline
    inner = labels.copy()
    inner[:-1][labels[:-1] != labels[1:]] = 0
    inner[:, :-1][labels[:, :-1] != labels[:, 1:]] = 0
    edt = ndi.distance_transform_edt(inner > 0).astype(np.float32)
    rim = np.float32(rng.uniform(2.0, 4.0))
    n = int(labels.max())
    bright = np.concatenate([[0], np.exp(rng.normal(0, 0.25, n))]).astype(np.float32)
    signal = np.where(labels > 0, np.where(edt <= rim, 1.0, -0.6), 0.0).astype(np.float32)
    signal = signal * bright[labels] + 0.25  # the background is grey, the insides darker
    img = _acquire(rng, np.maximum(signal, 0), clean=True)
    return to_dtype(img, dtype), labels
