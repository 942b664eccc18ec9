"""Image formation for the synthetic fluorescence samples of :mod:`.synthetic`.

A generator draws a noiseless ``signal`` (Y, X) float32 (about 1 inside objects) and its
labels; this module turns the signal into a microscope-like image: unlabelled debris
(:func:`_debris`), background, illumination, blur and photon/read noise (:func:`_acquire`),
and the storage dtype (:func:`to_dtype`). Each function draws from the generator it is
given in a fixed order, so a generator state always gives the same image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line_aa

from .synthetic_shapes import blob_field, lowpass, random_harmonics, smooth_noise

__all__ = ["to_dtype"]


def _logu(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _debris(rng, signal, amount=1.0):
    """Unlabelled speckles, tiny fragments and the odd fibre, added to ``signal``."""
    h, w = signal.shape
    scale = amount * h * w / 65536
    n = rng.poisson(rng.uniform(0, 25) * scale)
    if n:
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        np.add.at(signal, (ys, xs), (np.exp(rng.uniform(np.log(0.5), np.log(8), n)) * 2)
                  .astype(np.float32))
    for _ in range(rng.poisson(rng.uniform(0, 4) * scale)):
        d = rng.uniform(1.5, 4.5)
        res = blob_field(rng.uniform(0, h), rng.uniform(0, w), d / 2, d / 2 * rng.uniform(0.4, 1),
                         rng.uniform(0, np.pi), random_harmonics(rng, 0.3), signal.shape)
        if res is not None:
            signal[res[0]] += np.float32(rng.uniform(0.5, 3)) * np.clip(1.5 - res[1], 0, 1)
    if rng.random() < 0.15 * amount:
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        t, ln = rng.uniform(0, np.pi), rng.uniform(10, 50)
        y1 = int(np.clip(y0 + ln * np.sin(t), 0, h - 1))
        x1 = int(np.clip(x0 + ln * np.cos(t), 0, w - 1))
        rr, cc, val = line_aa(int(y0), int(x0), y1, x1)
        signal[rr, cc] += (val * rng.uniform(0.3, 1.2)).astype(np.float32)


def _acquire(rng, signal, clean=False):
    """Fluorescence image formation: background, illumination, haze, PSF blur, shot and
    read noise, then a random display mapping to [0, 1]. ``signal`` is ~1 inside nuclei."""
    h, w = signal.shape
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    b0 = _logu(rng, 0.01, 0.4 if not clean else 0.15)
    bg = b0 * (1 + rng.uniform(-0.5, 0.5) * yy + rng.uniform(-0.5, 0.5) * xx)
    if rng.random() < 0.5:
        bg = bg + b0 * rng.uniform(0.05, 0.4) * smooth_noise(rng, signal.shape, _logu(rng, 4, 40))
    if rng.random() < 0.6:  # out-of-focus haze
        signal = signal + rng.uniform(0.05, 0.5) * lowpass(signal, rng.uniform(4, 16))
    img = signal + bg
    if rng.random() < 0.5:  # vignetting
        cy, cx = rng.uniform(-0.4, 0.4, 2)
        img = img * (1 - rng.uniform(0.1, 0.6) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2)
    big_blur = rng.random() < (0.03 if clean else 0.2)
    sigma = rng.uniform(1.6, 4) if big_blur else rng.uniform(0.6, 1.6)
    img = ndi.gaussian_filter(np.maximum(img, 0).astype(np.float32), sigma)
    photons = _logu(rng, 100 if clean else 15, 3000)
    img = rng.poisson(img * photons).astype(np.float32) / np.float32(photons)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0, 0.03))
    saturate = rng.random() < (0.15 if not clean else 0.0)
    white = (1 + b0) * (rng.uniform(0.5, 0.85) if saturate else _logu(rng, 0.9, 2.5))
    black = b0 * rng.uniform(-0.2, 0.9)
    img = np.clip((img - black) / (white - black), 0, 1)
    if not clean and rng.random() < 0.2:
        img = img ** rng.uniform(0.7, 1.4)
    if not clean and rng.random() < 0.1:  # low contrast
        img = rng.uniform(0.05, 0.5) + rng.uniform(0.08, 0.3) * img
    return img.astype(np.float32)


def to_dtype(image: np.ndarray, dtype, rng: np.random.Generator | None = None) -> np.ndarray:
    """Convert a [0, 1] float image to ``"float32"``, ``"uint8"`` or ``"uint16"``.

    uint8 uses (mostly) the full 0..255 range. uint16 mimics a camera: an offset (~100 for
    most images) plus a peak of a few thousand counts, now and then a 16-bit sCMOS range.
    Without ``rng`` the mapping is fixed (uint8: 0..255, uint16: 100..4095).

    Parameters
    ----------
    image : ndarray, any shape (e.g. (Y, X) or (Y, X, 3))
        Values in [0, 1].
    dtype : str or numpy.dtype
        "float32", "uint8" or "uint16"; anything else raises ValueError.
    rng : numpy.random.Generator or None
        Draws a random camera-like range; None: the fixed mapping.

    Returns
    -------
    ndarray
        Same shape as `image`, of `dtype` (float32 returns `image` as float32 unchanged).
    """
    dtype = np.dtype(dtype)
    image = np.asarray(image, np.float32)
    if dtype == np.float32:
        return image
    if dtype == np.uint8:
        top = 255.0 if rng is None or rng.random() < 0.7 else rng.uniform(60, 255)
        return np.round(image * top).clip(0, 255).astype(np.uint8)
    if dtype == np.uint16:
        if rng is None:
            offset, span = 100.0, 3995.0
        else:
            u = rng.random()
            offset = (rng.uniform(80, 120) if u < 0.7
                      else 0.0 if u < 0.85 else rng.uniform(200, 1000))
            span = rng.uniform(300, 4000) if rng.random() < 0.9 else rng.uniform(8000, 60000)
        return np.round(offset + image * span).clip(0, 65535).astype(np.uint16)
    raise ValueError(f"unsupported dtype {dtype}; use float32, uint8 or uint16")
