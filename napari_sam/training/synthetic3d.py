"""Synthetic 3D nuclei volumes and 2D time-lapses with ground truth, for tests and benchmarks.

* `nuclei_volume`: a (Z, Y, X) fluorescence stack of ellipsoidal nuclei (some touching),
  sampled with an anisotropic voxel (`z_step` voxels of xy size per slice), blurred more
  along z than in the plane (a microscope's elongated PSF), with background, shot and read
  noise. Labels (Z, Y, X) uint32 give one id per nucleus through all its slices.
* `timelapse`: a (T, Y, X) movie of elliptical cells that drift, grow and divide. Labels
  (T, Y, X) uint32 keep one id per cell track; a division ends the mother's track and starts
  two daughter tracks. `lineage` maps each track id to (first frame, last frame, parent id;
  0 = no parent), the Cell Tracking Challenge's `man_track.txt` rows.

Every value is a pure function of the seed. Images are float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage as ndi


@dataclass
class Volume:
    """A synthetic nuclei volume and its ground truth (see `nuclei_volume`).

    Parameters
    ----------
    image : ndarray, (Z, Y, X) float32
        The stack, in [0, 1].
    labels : ndarray, (Z, Y, X) uint32
        One id per nucleus through all its slices, 0 for background.
    spacing : tuple of float
        (dz, dy, dx) in units of the xy pixel (dz = z_step).
    centres : ndarray, (N, 3) float
        (z, row, col) in voxel indices of the centre of nucleus i + 1 (row i).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: Tuple[float, float, float]
    centres: np.ndarray


@dataclass
class TimeLapse:
    """A synthetic time-lapse and its tracks (see `timelapse`).

    Parameters
    ----------
    image : ndarray, (T, Y, X) float32
        The movie, in [0, 1].
    labels : ndarray, (T, Y, X) uint32
        One id per cell track, 0 for background.
    lineage : dict of int to (int, int, int)
        {track id: (t_first, t_last, parent id)}, parent 0 for none.
    divisions : list of (int, int, int, int)
        (t, parent, child_a, child_b): the children start at frame t, the parent's last
        frame is t - 1.
    """

    image: np.ndarray
    labels: np.ndarray
    lineage: Dict[int, Tuple[int, int, int]]
    divisions: list


def _acquire(rng, signal: np.ndarray, blur, noise: float, background: float) -> np.ndarray:
    """Signal (~1 inside nuclei) -> [0, 1] image: background, anisotropic blur, noise."""
    img = ndi.gaussian_filter(signal.astype(np.float32) + np.float32(background), blur)
    photons = 1.0 / noise ** 2 if noise > 0 else None  # relative noise `noise` at signal 1
    if photons:
        img = rng.poisson(np.maximum(img, 0) * photons).astype(np.float32) / np.float32(photons)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise / 3)
    top = float(np.percentile(img, 99.9)) or 1.0
    return np.clip(img / top, 0, 1).astype(np.float32)


def nuclei_volume(seed: int = 0, shape=(24, 128, 128), n: int = 12, radius=(7.0, 12.0),
                  z_step: float = 2.0, touching: float = 0.3, noise: float = 0.05,
                  z_blur: float = 1.0, background: float = 0.05) -> Volume:
    """A (Z, Y, X) volume of `n` ellipsoidal nuclei (fewer when they do not fit).

    radius: (min, max) semi-axes in xy pixels (z semi-axis likewise, in the same physical
    units, so a nucleus spans about 2 r / z_step slices). touching: the fraction of nuclei
    placed right against an earlier one (they meet along a flat face: the label of each
    voxel is its nearest nucleus, scaled by its radii). z_blur: Gaussian sigma along z in
    slices (the xy sigma is 1 pixel). noise: relative noise (Poisson + Gaussian).

    Parameters
    ----------
    seed : int
        Everything is a pure function of it (and the other arguments).
    shape : tuple of int
        (Z, Y, X) size in voxels.
    n : int
        The number of nuclei to place (at most).
    radius : tuple of float
        (min, max) semi-axes in xy pixels.
    z_step : float
        The slice spacing in xy pixels.
    touching : float
        Fraction of nuclei placed against an earlier one.
    noise : float
        Relative noise at signal 1 (0: none).
    z_blur : float
        Gaussian sigma along z in slices.
    background : float
        Constant added to the signal before blur and noise.

    Returns
    -------
    Volume
        image (Z, Y, X) float32 in [0, 1], labels (Z, Y, X) uint32, spacing
        (z_step, 1, 1), centres (N, 3) (z, row, col).
    """
    rng = np.random.default_rng(seed)
    Z, H, W = (int(s) for s in shape)
    zz = (np.arange(Z, dtype=np.float32) + 0.5) * np.float32(z_step)
    centres, radii, rots = [], [], []
    for _ in range(n * 30):
        if len(centres) == n:
            break
        r = rng.uniform(*radius, 3) * np.array([rng.uniform(0.7, 1.0), 1.0, rng.uniform(0.75, 1)])
        if centres and rng.random() < touching:  # against an earlier nucleus
            j = int(rng.integers(len(centres)))
            d = rng.normal(0, 1, 3)
            d[0] *= 0.3
            d /= np.linalg.norm(d)
            c = centres[j] + d * (radii[j].mean() + r.mean()) * 0.92
        else:  # inside the volume where it fits, else centred on that axis
            ext = np.array([Z * z_step, H, W], float)
            lo = np.minimum(r + [0, 2, 2], ext / 2)
            c = rng.uniform(lo, np.maximum(ext - lo, lo))
        zr = min(r[0] * 0.6, Z * z_step / 2)
        if not (zr <= c[0] <= Z * z_step - zr and r[1] < c[1] < H - r[1]
                and r[2] < c[2] < W - r[2]):
            continue
        # no deep overlap: centres farther apart than 0.85 x the sum of mean radii
        if any(np.linalg.norm(c - c2) < 0.85 * (r.mean() + r2.mean())
               for c2, r2 in zip(centres, radii)):
            continue
        centres.append(c)
        radii.append(r)
        rots.append(rng.uniform(0, np.pi))
    best = np.full((Z, H, W), np.inf, np.float32)
    labels = np.zeros((Z, H, W), np.uint32)
    signal = np.zeros((Z, H, W), np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + np.float32(0.5)
    for i, (c, r, a) in enumerate(zip(centres, radii, rots), start=1):
        dy, dx = yy - c[1], xx - c[2]
        u = (dy * np.cos(a) + dx * np.sin(a)) / r[1]
        v = (-dy * np.sin(a) + dx * np.cos(a)) / r[2]
        plane = u * u + v * v
        w = (zz[:, None, None] - np.float32(c[0])) / np.float32(r[0])
        rho = np.sqrt(plane[None] + w * w)
        win = (rho <= 1) & (rho < best)
        labels[win] = i
        best = np.minimum(best, rho)
        bright = np.float32(np.exp(rng.normal(0, 0.2)))
        edge = np.clip((1 - rho) * r.mean() + 0.5, 0, 1)  # antialiased border
        signal += bright * edge * (1 - 0.3 * np.minimum(rho, 1) ** 2)
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(labels)[0].astype(np.uint32)
    image = _acquire(rng, signal, (z_blur, 1.0, 1.0), noise, background)
    cz = np.array([c[0] / z_step - 0.5 for c in centres]).reshape(-1, 1)
    cyx = np.array([c[1:] for c in centres]).reshape(-1, 2) - 0.5
    return Volume(image, labels, (float(z_step), 1.0, 1.0), np.hstack([cz, cyx]))


def timelapse(seed: int = 0, shape=(16, 128, 128), n: int = 6, radius=(7.0, 10.0),
              speed: float = 1.5, growth: float = 0.03, divide_at: float = 1.35,
              noise: float = 0.05, max_cells: int = 40) -> TimeLapse:
    """A (T, Y, X) time-lapse of `n` cells that drift (about `speed` px per frame), grow (by
    `growth` in radius per frame) and divide once their radius passes `divide_at` times
    their birth radius: the mother's track ends and two daughters of birth size start side
    by side across the mother's long axis. Cells repel each other so they rarely overlap.

    Parameters
    ----------
    seed : int
        Everything is a pure function of it (and the other arguments).
    shape : tuple of int
        (T, Y, X) size.
    n : int
        The number of cells at the start (at most).
    radius : tuple of float
        (min, max) birth radius in pixels.
    speed : float
        Standard deviation of the random velocity, pixels per frame.
    growth : float
        Relative radius growth per frame.
    divide_at : float
        A cell divides when its radius exceeds this times its birth radius.
    noise : float
        Relative noise at signal 1 (0: none).
    max_cells : int
        No division once this many cells are present.

    Returns
    -------
    TimeLapse
        image (T, Y, X) float32 in [0, 1], labels (T, Y, X) uint32, lineage and divisions.
    """
    rng = np.random.default_rng(seed)
    T, H, W = (int(s) for s in shape)
    cells = []  # dict(id, c (2,), r, r0, angle, v (2,), born)
    next_id = 1
    for _ in range(n * 20):
        if len(cells) == n:
            break
        r = rng.uniform(*radius)
        c = rng.uniform([r * 2, r * 2], [H - r * 2, W - r * 2])
        if all(np.linalg.norm(c - d["c"]) > 2.4 * (r + d["r"]) / 2 + 6 for d in cells):
            # stagger the cell cycles: some start nearly grown
            start = r * rng.uniform(1.0, divide_at * 0.97)
            cells.append(dict(id=next_id, c=c, r=start, r0=r, angle=rng.uniform(0, np.pi),
                              v=rng.normal(0, speed, 2)))
            next_id += 1
    lineage = {d["id"]: [0, 0, 0] for d in cells}
    divisions = []
    labels = np.zeros((T, H, W), np.uint32)
    signal = np.zeros((T, H, W), np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + np.float32(0.5)
    for t in range(T):
        if t > 0:  # move, grow, divide
            new = []
            for d in cells:
                push = np.zeros(2)
                for e in cells:
                    off = d["c"] - e["c"]
                    dist = np.linalg.norm(off)
                    if e is not d and dist < d["r"] + e["r"] + 4:
                        push += off / max(dist, 1e-3) * (d["r"] + e["r"] + 4 - dist) * 0.5
                d["v"] = 0.7 * d["v"] + 0.3 * rng.normal(0, speed, 2)
                d["c"] = np.clip(d["c"] + d["v"] + push, d["r"] + 1,
                                 np.array([H, W]) - d["r"] - 1)
                d["r"] *= 1 + growth
                if d["r"] > divide_at * d["r0"] and len(cells) + len(new) < max_cells:
                    lineage[d["id"]][1] = t - 1
                    axis = np.array([-np.sin(d["angle"]), np.cos(d["angle"])])
                    kids = []
                    for s in (-1, 1):
                        r = d["r"] / np.sqrt(2) * 1.02
                        c = np.clip(d["c"] + s * axis * (r + 1.0), r + 1, np.array([H, W]) - r - 1)
                        kids.append(dict(id=next_id, c=c, r=r, r0=r,
                                         angle=rng.uniform(0, np.pi), v=s * axis * speed))
                        lineage[next_id] = [t, 0, d["id"]]
                        next_id += 1
                    divisions.append((t, d["id"], kids[0]["id"], kids[1]["id"]))
                    new += kids
                else:
                    new.append(d)
            cells = new
        order = sorted(cells, key=lambda d: d["id"])
        best = np.full((H, W), np.inf, np.float32)
        for d in order:
            dy, dx = yy - d["c"][0], xx - d["c"][1]
            a = d["angle"]
            u = (dy * np.cos(a) + dx * np.sin(a)) / (d["r"] * 1.1)
            v = (-dy * np.sin(a) + dx * np.cos(a)) / (d["r"] / 1.1)
            rho = np.sqrt(u * u + v * v)
            win = (rho <= 1) & (rho < best)
            labels[t][win] = d["id"]
            best = np.minimum(best, rho)
            edge = np.clip((1 - rho) * d["r"] + 0.5, 0, 1)
            signal[t] += edge * (1 - 0.3 * np.minimum(rho, 1) ** 2)
        for d in cells:
            lineage[d["id"]][1] = t
    present = {int(i) for i in np.unique(labels) if i}
    lineage = {k: tuple(v) for k, v in lineage.items() if k in present}
    image = np.stack([_acquire(rng, signal[t], 1.0, noise, 0.05) for t in range(T)])
    return TimeLapse(image, labels, lineage, divisions)
