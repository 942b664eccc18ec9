"""The intensity floor: trims a propagated object to the part bright enough to be it.

A microscope blurs along z more than in the plane, so the slices near an object's ends show
a dim, wide halo of the object's middle. A promptable model outlines the halo, and the end
slices come out too large (on the generated nuclei the two end slices of each nucleus had
50 % more pixels than the truth and an IoU of 0.43 with it). The floor measures the object
once, on its prompted (anchor) slice: `inside`, the mean intensity inside the answer, and
`ring`, the mean over a ring `ring` pixels wide around it, on the slice smoothed by a
Gaussian of `sigma` pixels. On every slice it then keeps only the pixels of the answer at
least `floor` of the way from `ring` to `inside`:

    keep = answer & (smoothed > ring + floor * (inside - ring))       (bright objects)

and the mirror image for dark objects (inside < ring). The floor is an edge criterion in
3D: where the object's own light falls below a fraction of its plateau, the pixel is halo.
It is skipped when the anchor's contrast is weak (|inside - ring| below `min_snr` x the
standard deviation of the ring's raw pixels: textured or faint objects, whose intensity does
not say where they end). With several anchors, each slice uses its nearest anchor's
measure. floor=0.3 was chosen on generated volumes whose seeds the benchmark does not use
(docs/volumes.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
from scipy import ndimage as ndi

SIGMA = 1.0
MIN_SNR = 1.0


@dataclass(frozen=True)
class Floor:
    """inside, ring: mean smoothed intensities inside the anchor's answer and around it.

    Parameters
    ----------
    inside : float
        Mean smoothed intensity inside the anchor's mask.
    ring : float
        Mean smoothed intensity over the ring around it.
    """

    inside: float
    ring: float

    def keep(self, smoothed: np.ndarray, mask: np.ndarray, floor: float) -> np.ndarray:
        """`mask` (Y, X) bool without its pixels below the floor (`smoothed`: (Y, X)).

        Parameters
        ----------
        smoothed : ndarray
            (Y, X) float, the slice after `smooth`.
        mask : ndarray
            (Y, X) bool, the answer on that slice.
        floor : float
            Fraction of the way from `ring` to `inside` a pixel must reach (0..1).

        Returns
        -------
        ndarray
            (Y, X) bool, a new array.
        """
        thr = self.ring + floor * (self.inside - self.ring)
        return mask & (smoothed > thr if self.inside > self.ring else smoothed < thr)


def smooth(pixels: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """(Y, X) float32 pixels smoothed in the plane (the noise of single pixels averaged).

    Parameters
    ----------
    pixels : array_like
        (Y, X) intensities, any numeric dtype.
    sigma : float
        Gaussian sigma in pixels.

    Returns
    -------
    ndarray
        (Y, X) float32.
    """
    return ndi.gaussian_filter(np.asarray(pixels, np.float32), sigma)


def measure(pixels: np.ndarray, mask: np.ndarray, ring: int = 4,
            min_snr: float = MIN_SNR) -> Optional[Floor]:
    """The `Floor` of an anchor's answer `mask` on its slice `pixels` (Y, X), or None when
    the mask is empty or its contrast is too weak to trust (module doc).

    Parameters
    ----------
    pixels : ndarray
        (Y, X) intensities of the anchor slice.
    mask : ndarray
        (Y, X) bool, the anchor's answer.
    ring : int
        Width in pixels of the ring around the mask.
    min_snr : float
        Least |inside - ring| in units of the ring's standard deviation.

    Returns
    -------
    Floor or None
    """
    if not mask.any():
        return None
    around = ndi.binary_dilation(mask, iterations=ring) & ~mask
    if not around.any():
        return None
    sm = smooth(pixels)
    inside, out = float(sm[mask].mean()), float(sm[around].mean())
    noise = float(np.asarray(pixels, np.float32)[around].std())
    if abs(inside - out) < min_snr * max(noise, 1e-6):
        return None
    return Floor(inside, out)


def apply_floor(out: np.ndarray, floors: Dict[int, Optional[Floor]], pixels, floor: float
                ) -> np.ndarray:
    """Trim every slice of `out` (Z, Y, X) bool in place with its nearest anchor's floor.

    floors: {anchor slice: Floor or None}; pixels(k) -> (Y, X) intensities of slice k.

    Parameters
    ----------
    out : ndarray
        (Z, Y, X) bool, changed in place.
    floors : dict of int to Floor or None
        Per anchor slice; None skips the slices nearest to that anchor.
    pixels : callable
        pixels(k) -> (Y, X) intensities of slice k.
    floor : float
        Fraction as in `Floor.keep`; 0 leaves `out` alone.

    Returns
    -------
    ndarray
        `out`.
    """
    if not floor or not floors:
        return out
    anchors = np.array(sorted(floors))
    for k in np.flatnonzero(out.any((1, 2))):
        f = floors[int(anchors[np.argmin(np.abs(anchors - k))])]
        if f is not None:
            out[k] = f.keep(smooth(pixels(int(k))), out[k], floor)
    return out
