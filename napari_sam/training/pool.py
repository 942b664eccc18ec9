"""A pool of synthetic training samples in the model's pixel format, refreshed as it is used.

Generating a sample costs tens of milliseconds; the pool keeps a few thousand ready, hands
out randomly flipped/rotated copies, and replaces a few per batch so that training sees a
stream of new images without waiting on the generator.
"""

from __future__ import annotations

import numpy as np

from ..transforms import to_model_pixels
from .synthetic import generate_sample, to_dtype


def model_sample(rng: np.random.Generator, size: int):
    """One synthetic image as the model sees it: uint8 (Y, X, 3) pixels and uint32 labels.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the sample, its storage dtype and its intensity mapping.
    size : int
        S, the side of the square image.

    Returns
    -------
    pixels : ndarray, (S, S, 3) uint8
        RGB as `transforms.to_model_pixels` maps the image.
    labels : ndarray, (S, S) uint32
        Instance ids 1..N (at least one object), 0 for background.
    """
    while True:
        image, labels = generate_sample(rng, (size, size))
        if labels.max() > 0:
            break
    if image.ndim == 2:
        image = to_dtype(image, rng.choice(["uint8", "uint16", "float32"], p=[0.4, 0.4, 0.2]), rng)
    else:
        image = to_dtype(image, "uint8", rng)
    pixels = to_model_pixels(image)
    return np.round(pixels).astype(np.uint8), labels.astype(np.uint32)


class SamplePool:
    """Synthetic (pixels, labels) samples kept in memory, handed out augmented.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the samples, the replacements and the augmentations.
    n : int
        How many samples the pool holds.
    size : int
        S, the side of the square samples (see `model_sample`).
    progress : callable or None
        Called as ``progress(done, n)`` every 100 samples while filling.
    """

    def __init__(self, rng: np.random.Generator, n: int, size: int, progress=None) -> None:
        self.rng, self.size = rng, size
        self.items = []
        for i in range(n):
            self.items.append(model_sample(rng, size))
            if progress and (i + 1) % 100 == 0:
                progress(i + 1, n)

    def refresh(self, k: int) -> None:
        """Replace `k` randomly chosen samples with new ones.

        Parameters
        ----------
        k : int
            How many samples to replace (the same one may be picked twice).
        """
        for _ in range(k):
            self.items[self.rng.integers(len(self.items))] = model_sample(self.rng, self.size)

    def batch(self, b: int):
        """`b` samples drawn with replacement, each rotated by k * 90 degrees and maybe flipped.

        Parameters
        ----------
        b : int
            The batch size.

        Returns
        -------
        list of (ndarray, ndarray)
            `b` pairs of contiguous pixels (S, S, 3) uint8 and labels (S, S) uint32.
        """
        out = []
        for i in self.rng.integers(len(self.items), size=b):
            px, lab = self.items[i]
            k = int(self.rng.integers(4))
            px, lab = np.rot90(px, k), np.rot90(lab, k)
            if self.rng.random() < 0.5:
                px, lab = px[:, ::-1], lab[:, ::-1]
            out.append((np.ascontiguousarray(px), np.ascontiguousarray(lab)))
        return out
