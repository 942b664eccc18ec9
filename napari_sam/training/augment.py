"""Training views of the user's samples: crops at the model's input size, augmented.

A view is what the model would see of a part of an image at inference, jittered: the crop
is scaled by the zoom that brings the annotated objects to the model's preferred diameter
(`sample_zoom`, `scale.plan_zoom`; the images that inference tiles at that zoom are cropped
to the tile side), times a random scale jitter around it; then flipped,
rotated by a multiple of 90 degrees, and its intensities changed (gamma, contrast,
brightness, noise). The view is padded to the model's square input with the pixel mean (0
after normalisation, as `Sam.preprocess` pads).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def inference_scale(shape: Tuple[int, int], image_size: int) -> float:
    """Zoom the Predictor/automask apply to a (Y, X) plane: the longest side to the model's
    input, except for planes longer than twice the input, which are tiled at 1:1.

    Parameters
    ----------
    shape : tuple of int
        The plane's (Y, X) size in pixels.
    image_size : int
        The model's square input side in pixels.

    Returns
    -------
    float
        Model-input pixels per image pixel: ``image_size / max(shape)``, or 1.0 when tiled.
    """
    long_side = max(shape)
    return image_size / long_side if long_side <= 2 * image_size else 1.0


def sample_zoom(model, pixels: np.ndarray, labels: np.ndarray
                ) -> Tuple[float, float, Optional[float]]:
    """The zoom at which fine-tuning shows an annotated image to the model.

    pixels (Y, X, 3), labels (Y, X) -> (zoom in model-input px per image px, the annotated
    objects' median equivalent diameter in image px, the diameter that inference's
    estimator (`scale.resolve_diameter`) finds in the pixels, or None when it is not
    confident). The zoom is `scale.plan_zoom`'s for the annotated diameter: objects reach
    the model at its preferred diameter, the size the base model segments best. Fine-tuning
    stores the estimator's bias on these images in the output's object size
    (`estimate_ratio`, see `finetune.trained_object_size`), so that the default inference,
    which estimates the diameter, zooms new images of the kind as the training did. Models without an
    object-size zoom (SAM 2.1's square input) and images without objects get
    `inference_scale`.

    Parameters
    ----------
    model : Sam
        The model to fine-tune (its ``image_size`` and preferred diameter set the zoom).
    pixels : ndarray, (Y, X, 3)
        The image, RGB, 0-255 (uint8 or float).
    labels : ndarray, (Y, X) int
        Its instance labels, 0 for background.

    Returns
    -------
    zoom : float
        Model-input pixels per image pixel.
    diameter : float
        The annotated objects' median equivalent-circle diameter in image pixels (0.0 when
        the model has a square input or there are no objects).
    estimate : float or None
        The diameter `scale.resolve_diameter` estimates from ``pixels`` (image pixels);
        None when it is not confident, or for square-input models and empty labels.
    """
    from ..scale import plan_zoom, resolve_diameter

    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if getattr(model, "square_input", False) or not areas.size:
        return inference_scale(labels.shape, model.image_size), 0.0, None
    d = float(np.sqrt(4 * np.median(areas) / np.pi))
    return float(plan_zoom(labels.shape, model, d).zoom), d, resolve_diameter(pixels, None)


def _resize(a: np.ndarray, hw: Tuple[int, int], nearest: bool) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if nearest:  # label ids: exact in float64
        t = t.double()[None, None]
        return F.interpolate(t, hw, mode="nearest-exact")[0, 0].numpy().astype(np.uint32)
    t = t.float().permute(2, 0, 1)[None]
    down = hw[0] < t.shape[-2]
    out = F.interpolate(t, hw, mode="bilinear", align_corners=False, antialias=down)
    return out[0].permute(1, 2, 0).numpy()


def _intensity(rng: np.random.Generator, px: np.ndarray) -> np.ndarray:
    x = px / 255.0
    x = np.clip(x, 0, 1) ** np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
    x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0, 0.04), x.shape)
    return np.clip(x * 255, 0, 255).astype(np.float32)


def random_view(rng: np.random.Generator, pixels: np.ndarray, labels: np.ndarray,
                image_size: int, pad_value, scale_jitter: float = 1.35, min_area: int = 12,
                tries: int = 8, zoom: Optional[float] = None
                ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """One augmented view of a sample.

    pixels (Y, X, 3) uint8/float 0-255, labels (Y, X) uint32 -> float32 (S, S, 3) pixels and
    uint32 (S, S) labels with at least one object of `min_area` pixels (S = image_size);
    None when `tries` crops held none. Objects cut below `min_area` are set to 0.
    zoom: model-input px per image px before the jitter (`sample_zoom`; None:
    `inference_scale`, the whole image resized to the input). `scale_jitter`: the zoom
    varies log-uniformly by this factor either way.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the crop, scale, rotation, flip and intensity changes.
    pixels : ndarray, (Y, X, 3) uint8 or float
        The image, 0-255.
    labels : ndarray, (Y, X) uint32
        Its instance labels, 0 for background.
    image_size : int
        S, the side of the model's square input.
    pad_value : array_like, (3,) float
        The pixel value that fills the input past the view (the model's pixel mean, 0-255).
    scale_jitter : float
        The largest factor, up or down, applied to the zoom.
    min_area : int
        Objects with fewer pixels in the view are set to 0.
    tries : int
        Crops drawn before giving up.
    zoom : float or None
        Model-input pixels per image pixel before the jitter; None: `inference_scale`.

    Returns
    -------
    tuple of (ndarray, ndarray) or None
        pixels (S, S, 3) float32 0-255 and labels (S, S) uint32, the view at the top-left
        (row, col) corner and padding elsewhere; None when no try held an object.
    """
    h, w = labels.shape
    base = float(zoom) if zoom else inference_scale((h, w), image_size)
    pad = np.asarray(pad_value, np.float32)
    for _ in range(tries):
        f = base * float(np.exp(rng.uniform(-np.log(scale_jitter), np.log(scale_jitter))))
        side = image_size / f  # crop side in source pixels
        ch, cw = int(min(h, side)), int(min(w, side))
        r0 = int(rng.integers(0, h - ch + 1))
        c0 = int(rng.integers(0, w - cw + 1))
        lab = labels[r0:r0 + ch, c0:c0 + cw]
        if not lab.any():
            continue
        px = pixels[r0:r0 + ch, c0:c0 + cw].astype(np.float32)
        k = int(rng.integers(4))
        px, lab = np.rot90(px, k), np.rot90(lab, k)
        if rng.random() < 0.5:
            px, lab = px[:, ::-1], lab[:, ::-1]
        oh = max(1, min(image_size, int(round(px.shape[0] * f))))
        ow = max(1, min(image_size, int(round(px.shape[1] * f))))
        if (oh, ow) != px.shape[:2]:
            px, lab = _resize(px, (oh, ow), False), _resize(lab, (oh, ow), True)
        px = _intensity(rng, px)
        counts = np.bincount(lab.ravel())
        small = np.flatnonzero(counts < min_area)
        if len(small):
            lab = np.where(np.isin(lab, small), 0, lab)
        if not lab.any():
            continue
        out_px = np.empty((image_size, image_size, 3), np.float32)
        out_px[:] = pad
        out_px[:oh, :ow] = px
        out_lab = np.zeros((image_size, image_size), np.uint32)
        out_lab[:oh, :ow] = lab
        return out_px, out_lab
    return None
