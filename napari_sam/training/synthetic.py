"""Synthetic microscopy-like images with instance labels, for training promptable models.

Three kinds of sample:

* ``"nuclei"``: a fluorescence nuclei field, grayscale (Y, X);
* ``"cells"``: touching cytoplasm-stained cells with dim nuclei, grayscale (Y, X);
* ``"shapes"``: generic coloured shapes on textured backgrounds, RGB (Y, X, 3).

Images are float32 in [0, 1] (or uint8/uint16 through :func:`to_dtype`); labels are uint32
with consecutive ids 1..N, each object at least 10 pixels, 0 for background. Debris and
speckles in the images are deliberately left unlabelled. The grayscale kinds draw a
noiseless signal here and go through the image formation of :mod:`.synthetic_acquire`
(debris, background, blur, noise, dtype); ``to_dtype`` is re-exported from there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .synthetic_acquire import _acquire, _debris, _logu, to_dtype
from .synthetic_shapes import (
    LabelCanvas,
    blob_field,
    finalize_labels,
    polygon_mask,
    polygon_vertices,
    random_harmonics,
    smooth_noise,
)

KINDS = ("nuclei", "cells", "shapes")
KIND_WEIGHTS = (0.5, 0.25, 0.25)
MIN_PIXELS = 10
__all__ = ["KINDS", "generate_sample", "make_dataset", "nuclei_image", "to_dtype"]



# --------------------------------------------------------------------------- nuclei
def _nuclei_params(rng, size) -> dict:
    mode = rng.choice(3, p=[0.3, 0.4, 0.3])  # separated / touching / overlapping
    return dict(
        d_med=_logu(rng, 7, 55), d_spread=rng.uniform(0.1, 0.35), d_min=6.0, d_max=80.0,
        coverage=rng.uniform(0.06, 0.45), n=None, n_max=int(250 * size[0] * size[1] / 65536),
        clustered=rng.random() < 0.4, attempts=4,
        max_overlap=(0.0, 0.0, rng.uniform(0.05, 0.3))[mode],
        gap=(rng.uniform(1, 4), 0.0, 0.0)[mode], keep_frac=rng.uniform(0.5, 0.7),
        aspect_min=rng.uniform(0.45, 0.85), irregular=rng.uniform(0, 0.3),
        p_mitotic=rng.uniform(0, 0.12) * (rng.random() < 0.5),
        p_dividing=rng.uniform(0, 0.1) * (rng.random() < 0.4),
        p_dim=rng.uniform(0, 0.15), bright_sigma=rng.uniform(0.1, 0.5),
        profile_k=rng.uniform(-0.3, 0.5), tex_amp=rng.uniform(0.0, 0.45),
        tex_scale=rng.uniform(0.7, 2.5),
    )


def _nuclei(rng, size, p):
    h, w = size
    canvas = LabelCanvas(size, keep_frac=p["keep_frac"], min_px=MIN_PIXELS)
    signal = np.zeros(size, np.float32)
    tex = smooth_noise(rng, size, p["tex_scale"])
    d_med = p["d_med"]
    n = p["n"] or int(min(p["coverage"] * h * w / (np.pi * d_med**2 / 4), p["n_max"]))
    n = max(n, 1)
    if p["clustered"]:
        n_cl = max(1, int(n / rng.uniform(4, 20)))
        centres = rng.uniform(0, 1, (n_cl, 2)) * (h, w)
        spread = d_med * rng.uniform(0.8, 2.5, n_cl)

    def position():
        if p["clustered"] and rng.random() < 0.85:
            c = int(rng.integers(len(centres)))
            return centres[c] + rng.normal(0, spread[c], 2)
        return rng.uniform(0, 1, 2) * (h, w)

    def place(cy, cx, d, aspect, angle, harm, intensity, tex_amp, k):
        iy, ix = int(cy), int(cx)  # cheap rejection: centre already inside an object
        if p["max_overlap"] < 0.25 and 0 <= iy < h and 0 <= ix < w and canvas.labels[iy, ix]:
            return False
        a, b = d / 2 / np.sqrt(aspect), d / 2 * np.sqrt(aspect)
        res = blob_field(cy, cx, a, b, angle, harm, size, pad=p["gap"] + 1.5)
        if res is None:
            return False
        sl, rho = res
        r = np.sqrt(a * b)
        check = rho <= 1 + p["gap"] / r if p["gap"] > 0 else None
        if not canvas.try_add(sl, rho <= 1, p["max_overlap"], check):
            return False
        cov = np.clip((1 - rho) * r + 0.5, 0, 1)
        prof = (1 - k * np.minimum(rho, 1) ** 2) * np.maximum(1 + tex_amp * tex[sl], 0.1)
        signal[sl] += np.float32(intensity) * cov * prof
        return True

    for _ in range(n):
        u = rng.random()
        d = float(np.clip(d_med * np.exp(rng.normal(0, p["d_spread"])), p["d_min"], p["d_max"]))
        inten = float(np.exp(rng.normal(0, p["bright_sigma"])))
        angle = rng.uniform(0, np.pi)
        if u < p["p_mitotic"]:  # small, very bright, compact (sometimes a metaphase bar)
            d = max(p["d_min"], d * rng.uniform(0.4, 0.7))
            asp = rng.uniform(0.3, 0.6) if rng.random() < 0.4 else rng.uniform(0.75, 1)
            harm, tex_amp, k = random_harmonics(rng, 0.15, 6), 0.1, 0.0
            inten *= rng.uniform(2, 5)
        elif u < p["p_mitotic"] + p["p_dividing"]:  # two close elongated daughters
            d = max(p["d_min"], d * rng.uniform(0.45, 0.7))
            asp = rng.uniform(0.35, 0.65)
            harm, tex_amp, k = random_harmonics(rng, 0.1), 0.15, 0.0
            inten *= rng.uniform(1.3, 2.5)
            sep = d / 2 * np.sqrt(asp) + rng.uniform(1, 4) / 2 + p["gap"]
            oy, ox = sep * np.cos(angle), -sep * np.sin(angle)  # across the long axis
        else:
            if rng.random() < p["p_dim"]:
                inten *= rng.uniform(0.15, 0.4)
            asp = max(rng.uniform(p["aspect_min"], 1.0), (d / 90) ** 2)
            irr = p["irregular"] * (rng.uniform(1, 2.5) if rng.random() < 0.15 else 1)
            harm, k = random_harmonics(rng, irr, 5), p["profile_k"]
            tex_amp = p["tex_amp"] * rng.uniform(0.6, 1.4)
        pair = p["p_mitotic"] <= u < p["p_mitotic"] + p["p_dividing"]
        for _ in range(p["attempts"]):
            cy, cx = position()
            if not pair:
                if place(cy, cx, d, asp, angle, harm, inten, tex_amp, k):
                    break
            elif place(cy + oy, cx + ox, d, asp, angle, harm, inten, tex_amp, k):
                place(cy - oy, cx - ox, d, asp, angle + rng.normal(0, 0.15), harm,
                      inten * rng.uniform(0.8, 1.2), tex_amp, k)
                break
    return signal, canvas



# --------------------------------------------------------------------------- cells
def _cells(rng, size, d=None):
    h, w = size
    d = _logu(rng, 18, 90) if d is None else float(d)
    sp = d * rng.uniform(0.85, 1.1)
    dy = sp * np.sqrt(3) / 2
    gy, gx = np.meshgrid(np.arange(-0.5, h / dy + 1) * dy, np.arange(-0.5, w / sp + 1) * sp,
                         indexing="ij")
    gx = gx + (np.arange(gy.shape[0])[:, None] % 2) * sp / 2
    pts = np.stack([gy.ravel(), gx.ravel()], 1) + rng.normal(0, 0.22 * sp, (gy.size, 2))
    pts = pts[rng.random(len(pts)) > rng.uniform(0, 0.5)]
    pts = np.round(pts).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)]
    if len(pts) == 0:
        pts = np.array([[h // 2, w // 2]])
    seeds = np.zeros(size, np.int32)
    seeds[pts[:, 0], pts[:, 1]] = np.arange(1, len(pts) + 1)
    dist, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    vor = seeds[idx[0], idx[1]]
    rad = np.concatenate([[0], d / 2 * rng.uniform(0.7, 1.4, len(pts))]).astype(np.float32)
    edge = 1 + rng.uniform(0.1, 0.3) * smooth_noise(rng, size, d / 4)
    lab = np.where(dist <= rad[vor] * edge, vor, 0)
    amp, sc = d * rng.uniform(0.06, 0.16), d * rng.uniform(0.2, 0.4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = [yy + amp * smooth_noise(rng, size, sc), xx + amp * smooth_noise(rng, size, sc)]
    lab = ndi.map_coordinates(lab, coords, order=0, mode="nearest")
    labels = finalize_labels(lab, MIN_PIXELS)

    # rendering: distance to the cell outline drives the membrane/cytoplasm profile
    n = int(labels.max())
    signal = np.zeros(size, np.float32)
    if n == 0:
        return signal, labels
    inner = labels.copy()
    inner[:-1][labels[:-1] != labels[1:]] = 0
    inner[:, :-1][labels[:, :-1] != labels[:, 1:]] = 0
    edt = ndi.distance_transform_edt(inner > 0).astype(np.float32)
    emax = np.zeros(n + 1, np.float32)
    np.maximum.at(emax, labels.ravel(), edt.ravel())
    emax[0] = 1
    top = np.flatnonzero((edt == emax[labels]).ravel() & (labels.ravel() > 0))
    _, first = np.unique(labels.ravel()[top], return_index=True)
    centres = np.stack(np.unravel_index(top[first], size), 1)
    rel = np.clip(edt / emax[labels], 0, 1)
    mode = rng.random()
    if mode < 0.3:  # bright membranes
        prof = rng.uniform(0.2, 0.6) + rng.uniform(0.8, 2.0) * np.exp(-edt / rng.uniform(1.0, 2.5))
    else:  # cytoplasm, thinner and dimmer towards the periphery
        prof = 1 - rng.uniform(0.3, 0.8) * np.exp(-edt / rng.uniform(1, 4))
        prof *= 1 - rng.uniform(0, 0.6) * (1 - rel)
    inten = np.concatenate([[0], np.exp(rng.normal(0, rng.uniform(0.1, 0.5), n))])
    tex = smooth_noise(rng, size, rng.uniform(0.8, 2.5))
    tex_amp = rng.uniform(0, 0.35)
    signal = (inten[labels] * prof * np.maximum(1 + tex_amp * tex, 0.1)).astype(np.float32)
    nf = rng.uniform(0.2, 0.75) if rng.random() < 0.75 else rng.uniform(1.3, 2.0)
    for i, (cy, cx) in enumerate(centres, start=1):
        rn = min(emax[i] * 0.9, d * rng.uniform(0.15, 0.28))
        if rn < 2:
            continue
        asp = rng.uniform(0.6, 1)
        res = blob_field(cy, cx, rn / np.sqrt(asp), rn * np.sqrt(asp), rng.uniform(0, np.pi),
                         random_harmonics(rng, 0.1), size)
        sl, rho = res
        m = np.clip((1 - rho) * rn + 0.5, 0, 1) * (labels[sl] == i)
        signal[sl] *= 1 + (nf * rng.uniform(0.8, 1.2) - 1) * m
    return signal, labels


# --------------------------------------------------------------------------- shapes (RGB)
def _colour(rng, avoid=None):
    for _ in range(6):
        c = rng.random(3) if rng.random() < 0.8 else np.full(3, rng.random())
        if avoid is None or np.abs(c - avoid).sum() > 0.45:
            break
    return c.astype(np.float32)


def _texture(rng, size, c1, c2):
    h, w = size
    u = rng.random()
    if u < 0.3:
        t = 0.5 + 0.5 * np.tanh(smooth_noise(rng, size, _logu(rng, 1.5, 40)) * rng.uniform(0.3, 2))
    elif u < 0.55:
        yy, xx = np.ogrid[0:h, 0:w]
        th, period = rng.uniform(0, np.pi), rng.uniform(4, 40)
        t = 0.5 + 0.5 * np.sin((xx * np.cos(th) + yy * np.sin(th)) * 2 * np.pi / period)
    elif u < 0.8:
        yy, xx = np.ogrid[0:h, 0:w]
        th = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(th) + yy * np.sin(th)) / max(h, w)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    else:
        t = np.zeros(size, np.float32)
    t = np.asarray(t, np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


def _shapes(rng, size):
    h, w = size
    img = _texture(rng, size, _colour(rng), _colour(rng))
    if rng.random() < 0.5:
        img += rng.uniform(0.03, 0.15) * smooth_noise(rng, size, _logu(rng, 1, 20))[..., None]
    canvas = LabelCanvas(size, keep_frac=rng.uniform(0.4, 0.7), min_px=MIN_PIXELS)
    d_med, max_ov = _logu(rng, 12, 70), rng.uniform(0, 0.4)
    for _ in range(int(rng.integers(3, 40))):
        d = float(np.clip(d_med * np.exp(rng.normal(0, 0.4)), 8, 0.6 * min(h, w)))
        kind = rng.choice(["ellipse", "blob", "ring", "polygon", "star", "rectangle", "triangle"])
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if kind in ("ellipse", "blob", "ring"):
            asp = rng.uniform(0.3, 1)
            harm = random_harmonics(rng, rng.uniform(0.2, 0.6) if kind == "blob" else 0)
            res = blob_field(cy, cx, d / 2 / np.sqrt(asp), d / 2 * np.sqrt(asp),
                             rng.uniform(0, np.pi), harm, size)
            if res is None:
                continue
            sl, rho = res
            mask = rho <= 1
            if kind == "ring":
                mask &= rho >= 1 - max(rng.uniform(0.2, 0.5), 2.5 / (d / 2 * np.sqrt(asp)))
        else:
            res = polygon_mask(cy, cx, polygon_vertices(rng, kind, d / 2), size)
            if res is None:
                continue
            sl, mask = res
        if canvas.try_add(sl, mask, max_ov):
            under = img[sl][mask].mean(0)
            patch = mask.shape
            fill = _texture(rng, patch, _colour(rng, under), _colour(rng, under))
            img[sl][mask] = fill[mask]
    img = ndi.gaussian_filter(img, (rng.uniform(0, 1.2),) * 2 + (0,))
    img += rng.normal(0, rng.uniform(0, 0.05), img.shape).astype(np.float32)
    return np.clip(img, 0, 1), finalize_labels(canvas.labels, MIN_PIXELS, canvas.occluded)



# --------------------------------------------------------------------------- public API
def generate_sample(rng: np.random.Generator, size=(256, 256), kind=None, dtype="float32",
                    invert=None):
    """One synthetic ``(image, labels)`` pair.

    ``kind``: "nuclei" or "cells" give grayscale (Y, X) images, "shapes" gives RGB (Y, X, 3);
    None picks one with probabilities 0.5 / 0.25 / 0.25. ``invert``: None inverts the contrast
    of grayscale images with probability 0.05 (brightfield-like), True/False force it.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws everything; the same generator state gives the same sample.
    size : tuple of int
        The image's (Y, X) size.
    kind : str or None
        "nuclei", "cells" or "shapes" (else ValueError); None draws one.
    dtype : str
        "float32" (0-1), "uint8" or "uint16", mapped with a random range (`to_dtype`).
    invert : bool or None
        Invert grayscale images; None: with probability 0.05.

    Returns
    -------
    image : ndarray, (Y, X) or (Y, X, 3) of `dtype`
    labels : ndarray, (Y, X) uint32
        Consecutive ids 1..N (possibly none), 0 for background.
    """
    size = (int(size[0]), int(size[1]))
    if kind is None:
        kind = KINDS[rng.choice(3, p=KIND_WEIGHTS)]
    if kind == "nuclei":
        signal, canvas = _nuclei(rng, size, _nuclei_params(rng, size))
        labels = finalize_labels(canvas.labels, MIN_PIXELS, canvas.occluded)
    elif kind == "cells":
        signal, labels = _cells(rng, size)
    elif kind == "shapes":
        image, labels = _shapes(rng, size)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if kind != "shapes":
        _debris(rng, signal, amount=1.0 if kind == "nuclei" else 0.5)
        image = _acquire(rng, signal)
        if invert or (invert is None and rng.random() < 0.05):
            image = 1.0 - image
    return to_dtype(image, dtype, rng), labels


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of :func:`make_dataset` ``(seed, ...)``.

    Parameters
    ----------
    seed : int
        The dataset's seed.
    index : int
        The sample's index.

    Returns
    -------
    numpy.random.Generator
        Seeded by ``SeedSequence(seed, spawn_key=(index,))``.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def make_dataset(seed: int, n: int, size=(256, 256), kind=None, dtype="float32"):
    """``n`` samples; sample ``i`` depends only on ``(seed, i)``, not on ``n``.

    Parameters
    ----------
    seed : int
        The dataset's seed (see `sample_rng`).
    n : int
        The number of samples.
    size, kind, dtype
        As in `generate_sample`.

    Returns
    -------
    list of (ndarray, ndarray)
        ``n`` (image, labels) pairs as `generate_sample` returns them.
    """
    return [generate_sample(sample_rng(seed, i), size, kind, dtype) for i in range(n)]


def nuclei_image(seed: int = 0, size=(512, 512), dtype="uint16"):
    """A clean fluorescence nuclei field (20-80 nuclei, 10-40 px) for sample data and tests.

    Parameters
    ----------
    seed : int
        The image depends only on it (and on `size`).
    size : tuple of int
        The image's (Y, X) size.
    dtype : str
        "float32" (0-1), "uint8" (0-255) or "uint16" (100-4095), a fixed mapping.

    Returns
    -------
    image : ndarray, (Y, X) of `dtype`
    labels : ndarray, (Y, X) uint32
        Consecutive ids 1..N, 0 for background.
    """
    rng = np.random.default_rng(seed)
    p = _nuclei_params(rng, size)
    p.update(d_med=rng.uniform(16, 26), d_spread=0.2, d_min=10.0, d_max=40.0,
             n=int(rng.integers(20, 81)), clustered=rng.random() < 0.3, attempts=30,
             max_overlap=0.0, gap=rng.uniform(0, 3), p_dividing=0.0, p_dim=0.05,
             p_mitotic=min(p["p_mitotic"], 0.05), aspect_min=max(p["aspect_min"], 0.6),
             irregular=min(p["irregular"], 0.12))
    signal, canvas = _nuclei(rng, size, p)
    labels = finalize_labels(canvas.labels, MIN_PIXELS, canvas.occluded)
    _debris(rng, signal, amount=0.15)
    return to_dtype(_acquire(rng, signal, clean=True), dtype), labels
