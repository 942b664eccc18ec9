"""The user's annotated images for fine-tuning: loading, checking, splitting.

A `Sample` is one 2D image in the model's pixel format (uint8 (Y, X, 3), normalised as the
Predictor normalises a whole image) with its instance labels (uint32 (Y, X), 0 background).
Sources:
- files: image files (TIFF or anything `io.images.read_image` reads) and label files (label
  TIFFs or COCO JSON), as paths, folders or glob patterns, paired by name
  (`cell_01.tif` <-> `cell_01.tif`, `cell_01_labels.tif`, `cell_01_masks.tif`,
  `cell_01.json`, ...) -- `load_files`;
- arrays (napari Image + Labels layers, or numpy) -- `from_arrays`.
A (Z or T, Y, X) stack with labels of the same shape gives one sample per slice. Nothing is
written: the user's files are only read.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..transforms import to_model_pixels

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
LABEL_SUFFIXES = IMAGE_SUFFIXES + (".json",)
# name endings that mark a label file of the image with the rest of the name
LABEL_MARKERS = ("_labels", "_label", "_masks", "_mask", "_seg", "_annotations", "_coco",
                 "-labels", "-masks", ".labels")


class DataError(ValueError):
    """Annotated data that cannot be used for fine-tuning (the message names the file).

    Parameters
    ----------
    message : str
        What is wrong and with which file (as for ValueError).
    """


@dataclass
class Sample:
    """One annotated 2D image; `n_objects` counts its objects.

    Parameters
    ----------
    pixels : ndarray, (Y, X, 3) uint8
        The image in the model's pixel format.
    labels : ndarray, (Y, X) uint32
        Instance ids, 0 for background.
    name : str
        Where it came from, e.g. "a.tif" or "stack.tif [z=3]".
    """

    pixels: np.ndarray
    labels: np.ndarray
    name: str

    @property
    def n_objects(self) -> int:
        return int(len(np.unique(self.labels)) - (self.labels == 0).any())


def _expand(items: Iterable, suffixes: Tuple[str, ...], what: str) -> List[Path]:
    """Paths, folders (their files with `suffixes`, sorted) and glob patterns -> files."""
    out: List[Path] = []
    for item in items:
        s = os.fspath(item)
        if any(ch in s for ch in "*?["):
            hits = sorted(Path(p) for p in glob.glob(s))
            if not hits:
                raise DataError(f"{what}: the pattern {s!r} matches no file")
            out += [p for p in hits if p.is_file()]
        elif Path(s).is_dir():
            hits = sorted(p for p in Path(s).iterdir()
                          if p.is_file() and p.suffix.lower() in suffixes)
            if not hits:
                raise DataError(f"{what}: the folder {s} holds no {'/'.join(suffixes)} file")
            out += hits
        elif Path(s).is_file():
            out.append(Path(s))
        else:
            raise DataError(f"{what}: {s} does not exist")
    return out


def _key(path: Path) -> str:
    name = path.name
    for suf in sorted(LABEL_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    for suf in (".ome",):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    low = name.lower()
    for m in LABEL_MARKERS:
        if low.endswith(m):
            return low[: -len(m)]
    return low


def pair_files(images: Sequence, labels: Sequence) -> List[Tuple[Path, Path]]:
    """Pair image and label files by name (see module doc); with no names in common and
    as many label files as images, in the given order. Raises DataError naming any image
    without labels (or labels without an image).

    Parameters
    ----------
    images : sequence of str or os.PathLike
        Image files, folders (their image files, sorted) or glob patterns.
    labels : sequence of str or os.PathLike
        Label files (label images or COCO JSON), folders or glob patterns.

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        (image file, label file) pairs, in the images' order.
    """
    imgs = _expand(images, IMAGE_SUFFIXES, "images")
    labs = _expand(labels, LABEL_SUFFIXES, "labels")
    if not imgs:
        raise DataError("no image files given")
    if not labs:
        raise DataError("no label files given: pass them with --labels (files, folders or "
                        "patterns)")
    by_key = {}
    for p in labs:
        by_key.setdefault(_key(p), []).append(p)
    if not any(_key(p) in by_key for p in imgs):
        if len(imgs) == len(labs):
            return list(zip(imgs, labs))
        raise DataError(f"no label file matches an image by name, and there are {len(imgs)} "
                        f"images but {len(labs)} label files: name them like the images "
                        "(a.tif <-> a_labels.tif) or give one per image in the same order")
    pairs, missing = [], []
    for p in imgs:
        hits = [q for q in by_key.get(_key(p), []) if q.resolve() != p.resolve()]
        if not hits:
            missing.append(p.name)
        elif len(hits) > 1:
            raise DataError(f"{p}: several label files match it ({', '.join(map(str, hits))});"
                            " keep one")
        else:
            pairs.append((p, hits[0]))
    if missing:
        raise DataError(f"no label file for {', '.join(missing)} (expected e.g. "
                        f"{Path(missing[0]).stem}_labels.tif beside the other label files)")
    return pairs


def _image_and_axes(path: Path, channels):
    from ..io.images import read_image

    data, meta = read_image(path)
    return np.asarray(data), meta.axes


def _labels(path: Path, spatial_shape) -> np.ndarray:
    from ..io.coco import read_coco
    from ..io.labels import read_labels

    if path.suffix.lower() == ".json":
        return read_coco(path, shape=spatial_shape)
    return read_labels(path)[0]


def _check_channels(pixels_fn, name: str):
    try:
        return pixels_fn()
    except ValueError as err:
        raise DataError(f"{name}: {err}") from None


def _samples(image: np.ndarray, labels: np.ndarray, name: str, channels=None,
             stack: Optional[bool] = None) -> List[Sample]:
    """One image (Y, X[, C]) or stack (Z, Y, X[, C]) and its labels -> samples; checks."""
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.dtype.kind not in "uib":
        raise DataError(f"{name}: labels must be integers, got {labels.dtype}")
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if stack is None:
        stack = labels.ndim == 3
    if labels.ndim not in (2, 3) or (labels.ndim == 3) != stack:
        raise DataError(f"{name}: labels of shape {labels.shape} are neither a 2D label image "
                        "nor a stack of them")
    planes = labels.shape[-2:]
    if image.shape[: labels.ndim] != labels.shape:
        raise DataError(f"{name}: the image has shape {image.shape} but its labels "
                        f"{labels.shape}; they must cover the same pixels (Y, X"
                        f"{', C' if image.ndim > labels.ndim else ''})")
    if image.ndim > labels.ndim + 1:
        raise DataError(f"{name}: image of shape {image.shape} has more axes than (Y, X, C)")
    if not labels.any():
        raise DataError(f"{name}: the labels are empty (no object); annotate some objects "
                        "or leave this image out")
    if labels.min() < 0:
        raise DataError(f"{name}: labels have negative values")
    out = []
    items = [(image, labels, name)] if not stack else [
        (image[z], labels[z], f"{name} [z={z}]") for z in range(labels.shape[0])]
    for img, lab, nm in items:
        if not lab.any():
            continue  # an unannotated slice of a stack teaches nothing
        px = _check_channels(lambda: to_model_pixels(img, channels), nm)
        out.append(Sample(np.round(px).astype(np.uint8), lab.astype(np.uint32), nm))
    assert out and all(s.labels.shape == planes for s in out)
    return out


def from_arrays(pairs: Iterable, channels=None) -> List[Sample]:
    """Samples from (image, labels[, name]) arrays, e.g. napari layers' data.

    image: (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C), any dtype; labels: (Y, X) or
    (Z, Y, X) integers with the image's (Z, Y, X). `channels`: up to 3 channel indices for
    images with more than 3 channels.

    Parameters
    ----------
    pairs : iterable of tuple
        (image, labels) or (image, labels, name); name defaults to "pair <n>".
    channels : sequence of int or None
        Channel indices to use (`transforms.to_model_pixels`); None: the default choice.

    Returns
    -------
    list of Sample
        One per image, or per annotated slice of a stack ("<name> [z=<z>]"); DataError
        when the data cannot be used or nothing is given.
    """
    out: List[Sample] = []
    for n, item in enumerate(pairs):
        image, labels = item[0], item[1]
        name = item[2] if len(item) > 2 else f"pair {n + 1}"
        out += _samples(image, labels, str(name), channels)
    if not out:
        raise DataError("no annotated image given")
    return out


def load_files(images: Sequence, labels: Sequence, channels=None) -> List[Sample]:
    """Samples from image and label files (paths, folders, globs; see `pair_files`).

    Parameters
    ----------
    images, labels : sequence of str or os.PathLike
        As in `pair_files`. A label file covers its image's (Y, X), or (Z, Y, X) for a stack.
    channels : sequence of int or None
        Channel indices to use (`transforms.to_model_pixels`); None: the default choice.

    Returns
    -------
    list of Sample
        One per image, or per annotated slice of a stack; DataError on unusable data.
    """
    out: List[Sample] = []
    for img_path, lab_path in pair_files(images, labels):
        image, axes = _image_and_axes(img_path, channels)
        spatial = tuple(n for n, a in zip(image.shape, axes) if a != "C")
        try:
            lab = _labels(lab_path, spatial)
        except DataError:
            raise
        except (ValueError, KeyError) as err:
            raise DataError(f"{lab_path}: {err}") from None
        if "C" in axes and axes.index("C") != len(axes) - 1:
            image = np.moveaxis(image, axes.index("C"), -1)
        out += _samples(image, lab, f"{img_path.name} + {lab_path.name}", channels,
                        stack=len(spatial) == 3)
    return out


def split_validation(samples: List[Sample], fraction: float = 0.25, seed: int = 0
                     ) -> Tuple[List[Sample], List[Sample]]:
    """(train, validation). Several samples: whole samples go to validation (about
    `fraction` of them, at least one). One sample: split by region -- the last `fraction`
    of its longer side (a strip) is held out.

    Parameters
    ----------
    samples : list of Sample
        At least one (else DataError).
    fraction : float
        The share held out for validation.
    seed : int
        Seeds the choice of validation samples.

    Returns
    -------
    train, validation : list of Sample
        Both non-empty. A single sample is cut into the first rows (or columns) and the
        last ones, each at least 16 pixels and holding an object (else DataError).
    """
    if not samples:
        raise DataError("no annotated image given")
    if len(samples) >= 2:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(samples))
        k = min(len(samples) - 1, max(1, int(round(fraction * len(samples)))))
        val = sorted(order[:k])
        return ([s for i, s in enumerate(samples) if i not in set(val)],
                [samples[i] for i in val])
    s = samples[0]
    axis = 0 if s.labels.shape[0] >= s.labels.shape[1] else 1
    n = s.labels.shape[axis]
    cut = int(round(n * (1 - fraction)))
    if cut < 16 or n - cut < 16:
        raise DataError(f"{s.name}: too small ({s.labels.shape}) to hold out a region for "
                        "validation; give more images")
    parts = []
    for sl, tag in ((slice(0, cut), "train"), (slice(cut, n), "validation")):
        idx = (sl, slice(None)) if axis == 0 else (slice(None), sl)
        lab, px = s.labels[idx], s.pixels[idx]
        if not lab.any():
            raise DataError(f"{s.name}: the {tag} region (the {'rows' if axis == 0 else 'columns'}"
                            f" {sl.start}-{sl.stop}) has no object; annotate both parts or "
                            "give more images")
        parts.append(Sample(np.ascontiguousarray(px), np.ascontiguousarray(lab),
                            f"{s.name} ({tag} {'rows' if axis == 0 else 'columns'} "
                            f"{sl.start}-{sl.stop})"))
    return [parts[0]], [parts[1]]


def object_size(samples: Sequence[Sample]) -> float:
    """Median equivalent diameter (pixels) of the annotated objects.

    Parameters
    ----------
    samples : sequence of Sample

    Returns
    -------
    float
        sqrt(4 * median area / pi) over all objects, in pixels; 0.0 without objects.
    """
    areas = np.concatenate([np.bincount(s.labels.ravel())[1:] for s in samples])
    areas = areas[areas > 0]
    return float(np.sqrt(4 * np.median(areas) / np.pi)) if areas.size else 0.0


def summary(train: Sequence[Sample], val: Sequence[Sample]) -> dict:
    """Plain-data description of the data for the checkpoint's metadata.

    Parameters
    ----------
    train, val : sequence of Sample

    Returns
    -------
    dict
        "train" and "validation" ({"samples", "objects", "names" (first 50)}) and
        "object_size_px" (float, `object_size` of all samples).
    """
    def part(ss):
        return {"samples": len(ss), "objects": int(sum(s.n_objects for s in ss)),
                "names": [s.name for s in ss][:50]}
    return {"train": part(train), "validation": part(val),
            "object_size_px": round(object_size(list(train) + list(val)), 2)}
