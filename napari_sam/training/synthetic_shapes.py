"""Geometry and noise helpers for :mod:`napari_sam.training.synthetic`.

Every object is drawn in a small local patch (a pair of slices into the image plus a
boolean mask of the same shape), so the cost of an object scales with its own size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as _draw_polygon

Slices = tuple[slice, slice]


# --------------------------------------------------------------------------- noise fields
@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int, factor: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights, pixel centres aligned (grid mode)."""
    x = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - (x - i0))
    np.add.at(m, (np.arange(n_out), i1), x - i0)
    return m


def upsample(small: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``small`` by an integer ``factor``, cropped to ``shape``.

    Parameters
    ----------
    small : ndarray, (h, w) float
        Covers at least ``shape`` once upsampled (h * factor >= Y, w * factor >= X).
    factor : int
        The upsampling factor (1: only crop).
    shape : tuple of int
        (Y, X), the output size.

    Returns
    -------
    ndarray, (Y, X)
        float32 (``small``'s dtype when ``factor`` is 1).
    """
    if factor == 1:
        return small[: shape[0], : shape[1]]
    ry = _interp_matrix(shape[0], small.shape[0], factor)
    rx = _interp_matrix(shape[1], small.shape[1], factor)
    return ry @ small.astype(np.float32, copy=False) @ rx.T


def lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass, computed on a block-averaged copy when ``sigma`` is large.

    Parameters
    ----------
    img : ndarray, (Y, X) float
    sigma : float
        The Gaussian's sigma in pixels (edges: nearest).

    Returns
    -------
    ndarray, (Y, X) float
        float32 when computed on a block-averaged copy (``sigma`` >= 6), else ``img``'s dtype.
    """
    f = int(max(1, sigma // 3))
    if f == 1:
        return ndi.gaussian_filter(img, sigma, mode="nearest")
    h, w = img.shape
    hs, ws = -(-h // f), -(-w // f)
    padded = np.pad(img, ((0, hs * f - h), (0, ws * f - w)), mode="edge")
    small = padded.reshape(hs, f, ws, f).mean(axis=(1, 3))
    small = ndi.gaussian_filter(small, sigma / f, mode="nearest")
    return upsample(small, f, (h, w))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian-correlated noise with correlation length ``scale`` px, zero mean, unit std.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        (Y, X), the output size.
    scale : float
        The correlation length (Gaussian sigma) in pixels.

    Returns
    -------
    ndarray, (Y, X) float32
    """
    f = int(max(1, scale // 2))
    small_shape = (-(-shape[0] // f) + 1, -(-shape[1] // f) + 1)
    small = rng.standard_normal(small_shape, dtype=np.float32)
    small = ndi.gaussian_filter(small, scale / f, mode="wrap")
    out = upsample(small, f, shape)
    out = out - out.mean()
    std = out.std()
    return (out / std if std > 0 else out).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- shapes
def random_harmonics(rng: np.random.Generator, amp: float, kmax: int = 5) -> np.ndarray:
    """Rows (k, amplitude, phase) of a Fourier radius perturbation, amplitudes ~ amp / k.

    Parameters
    ----------
    rng : numpy.random.Generator
    amp : float
        Overall amplitude (<= 0: no perturbation); the amplitudes sum to at most 0.6.
    kmax : int
        The highest harmonic (harmonics 2..kmax).

    Returns
    -------
    ndarray, (K, 3) float32
        (k, amplitude, phase in radians) per harmonic; (0, 3) when ``amp`` <= 0.
    """
    if amp <= 0:
        return np.zeros((0, 3), np.float32)
    k = np.arange(2, kmax + 1, dtype=np.float32)
    a = amp * rng.uniform(0.2, 1.0, k.size) / (k - 1)
    a *= min(1.0, 0.6 / a.sum())  # keep the radius positive everywhere
    ph = rng.uniform(0, 2 * np.pi, k.size)
    return np.stack([k, a, ph], axis=1).astype(np.float32)


def _patch(cy: float, cx: float, reach: float, shape) -> Slices | None:
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, shape[0])
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return slice(y0, y1), slice(x0, x1)


def blob_field(cy, cx, a, b, angle, harmonics, shape, pad=2.0):
    """Normalised radial distance of a (perturbed) ellipse: <= 1 inside, 1 on the outline.

    ``a`` and ``b`` are semi-axes (``a`` along ``angle``). Returns ``(slices, rho)`` or None
    when the patch is outside the image.

    Parameters
    ----------
    cy, cx : float
        The centre (row, col) in image pixels.
    a, b : float
        Semi-axes in pixels.
    angle : float
        Direction of ``a`` in radians, from the column (x) axis towards increasing rows.
    harmonics : ndarray, (K, 3)
        `random_harmonics` rows perturbing the radius.
    shape : tuple of int
        (Y, X), the image size (the patch is clipped to it).
    pad : float
        Extra margin of the patch beyond the outline, in pixels.

    Returns
    -------
    tuple of ((slice, slice), ndarray) or None
        (row slice, col slice) of the patch and rho (h, w) float32 over it; None when the
        patch misses the image.
    """
    amp_sum = float(np.abs(harmonics[:, 1]).sum()) if len(harmonics) else 0.0
    sl = _patch(cy, cx, max(a, b) * (1 + amp_sum) + pad, shape)
    if sl is None:
        return None
    dy = (np.arange(sl[0].start, sl[0].stop, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(sl[1].start, sl[1].stop, dtype=np.float32) - np.float32(cx))[None, :]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (dx * c + dy * s) / np.float32(a)
    v = (dy * c - dx * s) / np.float32(b)
    rho = np.sqrt(u * u + v * v)
    if amp_sum > 0:
        th = np.arctan2(v, u)
        rf = np.ones_like(rho)
        for k, amp, ph in harmonics:
            rf += amp * np.cos(k * th + ph)
        rho /= rf
    return sl, rho


def polygon_mask(cy, cx, verts: np.ndarray, shape):
    """Mask of a polygon with vertices ``verts`` (N, 2) (row, col) relative to the centre.

    Parameters
    ----------
    cy, cx : float
        The centre (row, col) in image pixels.
    verts : ndarray, (N, 2) float
        Vertices (row, col) relative to the centre.
    shape : tuple of int
        (Y, X), the image size (the patch is clipped to it).

    Returns
    -------
    tuple of ((slice, slice), ndarray) or None
        (row slice, col slice) of the patch and its mask (h, w) bool; None when the patch
        misses the image.
    """
    reach = float(np.abs(verts).max()) + 1
    sl = _patch(cy, cx, reach, shape)
    if sl is None:
        return None
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    rr, cc = _draw_polygon(verts[:, 0] + cy - sl[0].start, verts[:, 1] + cx - sl[1].start, (h, w))
    mask = np.zeros((h, w), bool)
    mask[rr, cc] = True
    return sl, mask


def polygon_vertices(rng: np.random.Generator, kind: str, r: float) -> np.ndarray:
    """Vertices (row, col) of a random 'polygon', 'star', 'rectangle' or 'triangle'.

    Parameters
    ----------
    rng : numpy.random.Generator
    kind : str
        "star", "rectangle", "triangle"; anything else gives a random star-shaped polygon.
    r : float
        The outer radius in pixels (a rectangle's half length).

    Returns
    -------
    ndarray, (N, 2) float64
        Vertices (row, col) relative to the centre, in drawing order.
    """
    rot = rng.uniform(0, 2 * np.pi)
    if kind == "star":
        n = int(rng.integers(4, 10))
        t = rot + np.arange(2 * n) * np.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.35, 0.7))
    elif kind == "rectangle":
        h, w = r, r * rng.uniform(0.25, 1.0)
        pts = np.array([[-h, -w], [-h, w], [h, w], [h, -w]], np.float64)
        c, s = np.cos(rot), np.sin(rot)
        return pts @ np.array([[c, -s], [s, c]])
    elif kind == "triangle":
        t = rot + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.4, 0.4, 3)
        rad = np.full(3, r)
    else:  # random star-shaped polygon
        n = int(rng.integers(3, 10))
        t = rot + np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.45, 1.0, n)
    return np.stack([rad * np.sin(t), rad * np.cos(t)], axis=1)


# --------------------------------------------------------------------------- label canvas
class LabelCanvas:
    """Instance label image where later objects occlude earlier ones.

    A new object is refused when it overlaps existing objects by more than
    ``max_overlap`` of its own (check) area, or when it would leave an occluded object
    with less than ``keep_frac`` of its area or fewer than ``min_px`` pixels.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) of the label image (`labels`, int32, 0 background; ids 1, 2, ... in order).
    keep_frac : float
        The smallest visible share of an occluded object's area.
    min_px : int
        The fewest pixels of a new object, and of an occluded object's visible part.
    """

    def __init__(self, shape, keep_frac: float = 0.5, min_px: int = 10):
        self.labels = np.zeros(shape, np.int32)
        self.keep_frac, self.min_px = keep_frac, min_px
        self.full: list[int] = [0]
        self.visible: list[int] = [0]
        self.occluded: set[int] = set()

    def try_add(self, sl: Slices, mask: np.ndarray, max_overlap: float = 1.0, check=None) -> int:
        """Paint ``mask`` over the patch ``sl`` as a new object, unless refused (see above).

        Parameters
        ----------
        sl : (slice, slice)
            The patch's (row slice, col slice).
        mask : ndarray, (h, w) bool
            The object within the patch.
        max_overlap : float
            The largest share of ``check`` on existing objects (1.0: no test).
        check : ndarray, (h, w) bool or None
            The area for the overlap test (e.g. the object grown by a gap); None: ``mask``.

        Returns
        -------
        int
            The new object's id, or 0 when refused.
        """
        area = int(mask.sum())
        if area < self.min_px:
            return 0
        local = self.labels[sl]
        chk = mask if check is None else check
        if max_overlap < 1.0 and np.count_nonzero(local[chk]) > max_overlap * chk.sum():
            return 0
        hit = local[mask]
        hit = hit[hit > 0]
        if hit.size:
            ids, cnt = np.unique(hit, return_counts=True)
            vis = np.asarray(self.visible)[ids] - cnt
            if np.any(vis < np.maximum(self.keep_frac * np.asarray(self.full)[ids], self.min_px)):
                return 0
            for i, v in zip(ids.tolist(), vis.tolist()):
                self.visible[i] = v
                self.occluded.add(i)
        lid = len(self.full)
        local[mask] = lid
        self.full.append(area)
        self.visible.append(area)
        return lid


def finalize_labels(labels: np.ndarray, min_px: int = 10, check_ids=None) -> np.ndarray:
    """Keep the largest connected piece of each object (only ``check_ids`` when given),
    drop objects under ``min_px`` pixels and renumber to 1..N as uint32.

    Parameters
    ----------
    labels : ndarray, (Y, X) int
        Instance labels, 0 background; changed in place when already int32.
    min_px : int
        Objects with fewer pixels are removed.
    check_ids : iterable of int or None
        The ids that may be split (e.g. `LabelCanvas.occluded`); None: all.

    Returns
    -------
    ndarray, (Y, X) uint32
        Consecutive ids 1..N in the order of the input ids, 0 background.
    """
    labels = labels.astype(np.int32, copy=False)
    objs = ndi.find_objects(labels)
    ids = range(1, len(objs) + 1) if check_ids is None else sorted(check_ids)
    for i in ids:
        sl = objs[i - 1] if i - 1 < len(objs) else None
        if sl is None:
            continue
        m = labels[sl] == i
        comp, n = ndi.label(m)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            labels[sl][m & (comp != sizes.argmax())] = 0
    counts = np.bincount(labels.ravel())
    keep = counts >= min_px
    keep[0] = False
    lut = np.zeros(counts.size, np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[labels]
