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
    """Bilinear upsampling of ``small`` by an integer ``factor``, cropped to ``shape``."""
    if factor == 1:
        return small[: shape[0], : shape[1]]
    ry = _interp_matrix(shape[0], small.shape[0], factor)
    rx = _interp_matrix(shape[1], small.shape[1], factor)
    return ry @ small.astype(np.float32, copy=False) @ rx.T


def lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass, computed on a block-averaged copy when ``sigma`` is large."""
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
    """Gaussian-correlated noise with correlation length ``scale`` px, zero mean, unit std."""
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
    """Rows (k, amplitude, phase) of a Fourier radius perturbation, amplitudes ~ amp / k."""
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
    """Mask of a polygon with vertices ``verts`` (N, 2) (row, col) relative to the centre."""
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
    """Vertices (row, col) of a random 'polygon', 'star', 'rectangle' or 'triangle'."""
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
    """

    def __init__(self, shape, keep_frac: float = 0.5, min_px: int = 10):
        self.labels = np.zeros(shape, np.int32)
        self.keep_frac, self.min_px = keep_frac, min_px
        self.full: list[int] = [0]
        self.visible: list[int] = [0]
        self.occluded: set[int] = set()

    def try_add(self, sl: Slices, mask: np.ndarray, max_overlap: float = 1.0, check=None) -> int:
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
    drop objects under ``min_px`` pixels and renumber to 1..N as uint32."""
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
