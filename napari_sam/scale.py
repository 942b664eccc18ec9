"""Object size: the objects' diameter, estimated from pixels or given by the user.

A model segments best when objects reach it at the size it was trained on (its *preferred
diameter*, in model-input pixels: `zoom_plan.preferred_diameter`). Given the objects'
diameter in the image (the user's, or `estimate_diameter`, checked by the model where it
can: `size_probe`), `zoom_plan` gives the factor by which the image is resized before it
reaches the model; the predictor and automask resize accordingly, tile by tile where the
zoomed image is larger than the model's input, and return results in the image's own pixel
grid. The zoom plan's names are importable from here too.

`estimate_diameter` uses the scale-normalised Laplacian of Gaussian: a bright disc of
radius r gives its strongest response -sigma^2 * LoG at its centre for sigma = r / sqrt(2).
The response is computed on a pyramid (each octave halves the image, so large objects cost
no more than small ones), its local maxima are collected at every scale, and the scale at
which the maxima are strongest gives the diameter (2 * sqrt(2) * sigma). Both polarities are
tried (bright objects on a dark background, and the reverse); the stronger wins. Smooth
background gradients give no response; noise is damped by the scale normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

# the zoom plan lives in `zoom_plan`; its names stay importable from here
from .zoom_plan import (AIS_TILE_INPUT, FIT_TOLERANCE, SAM_PREFERRED,  # noqa: F401
                        ZOOM_LIMITS, ZoomPlan, instance_tile_input, plan_zoom,
                        preferred_diameter, target_zoom, tiled_plan, zoom_for)

# scales per octave of the pyramid, in pixels of that octave
OCTAVE_SIGMAS = (1.41, 1.78, 2.24)
# side of the windows each octave is measured on
WINDOW = 192
MIN_DIAMETER = 4.0

Diameter = Union[None, float, int, str]
# below this confidence an estimate is not used: the image is processed without zoom
MIN_CONFIDENCE = 0.05


@dataclass(frozen=True)
class DiameterEstimate:
    """The objects' size as `estimate_diameter` found it.

    Parameters
    ----------
    diameter : float
        Median object diameter in image pixels.
    confidence : float
        0..1: how clearly one scale stands out, and how many objects support it.
    polarity : int
        +1 for objects brighter than the background, -1 for darker ones.
    """

    diameter: float
    confidence: float
    polarity: int


def _gray(image: np.ndarray, channels=None) -> np.ndarray:
    from .transforms import to_model_pixels

    img = np.asarray(image)
    if img.ndim == 2 and img.dtype != bool:
        x = img.astype(np.float32, copy=False)
        lo, hi = np.percentile(x[:: max(1, x.shape[0] // 512), :: max(1, x.shape[1] // 512)],
                               (0.5, 99.8))
        return np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    return to_model_pixels(img, channels).mean(-1) / 255.0


def _halve(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def _windows(x: np.ndarray, side: int):
    """Up to four (side x side) windows of a 2D array, centred on its quadrants; the whole
    array when it is small. Every pyramid octave is measured on such windows only, so the
    cost does not grow with the image (objects there are a few pixels across, so a window
    holds many of them)."""
    h, w = x.shape
    if h <= 2 * side and w <= 2 * side:
        return [x]
    rows = [h // 2] if h <= 2 * side else [h // 4, 3 * h // 4]
    cols = [w // 2] if w <= 2 * side else [w // 4, 3 * w // 4]
    out = []
    for r in rows:
        for c in cols:
            r0, c0 = max(0, min(r - side // 2, h - side)), max(0, min(c - side // 2, w - side))
            out.append(x[r0:r0 + side, c0:c0 + side])
    return out


def _scale_scores(gray: np.ndarray, max_diameter: float, window: int = WINDOW):
    """Per scale: sigma (image px) and the strength of bright and dark objects there, and
    how many maxima support it. Strength: the mean of the strongest quarter (at least 3) of
    the local maxima of -sigma^2 LoG, so a crowd of weak noise maxima does not dilute it."""
    from scipy import ndimage as ndi

    rows = []
    level, x = 1, gray
    while min(x.shape) >= 12:
        parts = _windows(x, window)
        for s in OCTAVE_SIGMAS:
            sigma = s * level
            d = 2 * math.sqrt(2) * sigma
            if d < MIN_DIAMETER * 0.8 or min(x.shape) < 6 * s:
                continue
            if d > max_diameter * 1.25:
                return np.array(rows).reshape(-1, 4)
            size = 2 * int(math.ceil(s)) + 1
            vals = ([], [])
            for part in parts:
                r = -(s * s) * ndi.gaussian_laplace(part, s, mode="reflect")
                for k, resp in enumerate((r, -r)):
                    peak = (resp == ndi.maximum_filter(resp, size)) & (resp > 0)
                    vals[k].append(resp[peak])
            strength = []
            for v in vals:
                v = np.sort(np.concatenate(v))[::-1]
                strength.append(float(v[: max(3, len(v) // 4)].mean()) if len(v) else 0.0)
            rows.append((sigma, strength[0], strength[1], sum(len(v) for v in vals[0])))
        x = _halve(x)
        level *= 2
    return np.array(rows).reshape(-1, 4)


def estimate_diameter(image: np.ndarray, channels: Optional[Sequence[int]] = None,
                      max_diameter: Optional[float] = None) -> DiameterEstimate:
    """Median diameter (pixels) of the objects in an image, from its pixels alone.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C), any dtype
        16-bit and float images are normalised with robust percentiles (0.5, 99.8).
    channels : sequence of int, optional
        Which channels of a (Y, X, C) image to use (as for `Predictor.set_image`).
    max_diameter : float, optional
        The largest diameter searched, in pixels (default: a quarter of the shorter side).

    Returns
    -------
    DiameterEstimate
        `diameter` (float, image pixels), `confidence` (0..1; below `MIN_CONFIDENCE` the
        estimate is not used) and `polarity` (+1 bright objects, -1 dark objects).

    Raises
    ------
    ValueError
        For images smaller than 8 x 8 pixels or not 2D.

    Notes
    -----
    Fails gracefully on images without objects (confidence near 0); cannot tell objects
    from texture of the same scale, and reads ring-shaped cells (bright rim, dark centre)
    by their rim's width. See docs/object_size.md.
    """
    gray = _gray(image, channels)
    if gray.ndim != 2 or min(gray.shape) < 8:
        raise ValueError(f"diameter estimation needs a 2D image of at least 8 x 8 pixels, "
                         f"got shape {np.shape(image)}")
    limit = float(max_diameter or max(MIN_DIAMETER * 2, min(gray.shape) / 4))
    sigmas, bright, dark, counts = _scale_scores(gray, limit).T
    if len(sigmas) == 0:
        return DiameterEstimate(MIN_DIAMETER, 0.0, 1)
    polarity = 1 if bright.max() >= dark.max() else -1
    score = bright if polarity > 0 else dark
    i = int(np.argmax(score))
    log_s = np.log(sigmas)
    if 0 < i < len(score) - 1:  # parabola through the peak and its neighbours (log scale)
        y0, y1, y2 = score[i - 1], score[i], score[i + 1]
        den = y0 - 2 * y1 + y2
        off = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        step = (log_s[i + 1] - log_s[i - 1]) / 2
        sigma = float(np.exp(log_s[i] + np.clip(off, -0.5, 0.5) * step))
    else:
        sigma = float(sigmas[i])
    diameter = 2 * math.sqrt(2) * sigma
    # confidence: contrast of the peak over the weakest scale, and enough objects
    contrast = 1 - float(score.min() / score.max()) if score.max() > 0 else 0.0
    support = min(1.0, counts[i] / 5.0)
    return DiameterEstimate(float(diameter), float(np.clip(contrast * support, 0, 1)), polarity)


def estimate_ratio(model) -> float:
    """The median ratio estimated / annotated diameter over the model's training images
    (1.0 when the checkpoint does not say); an estimate divided by it is a typed diameter.

    Parameters
    ----------
    model : Sam, Sam2 or Predictor

    Returns
    -------
    float
    """
    model = getattr(model, "model", model)
    info = getattr(model, "object_size", None) or {}
    ratio = info.get("estimate_ratio", 1.0)
    return float(ratio) if ratio and ratio > 0 else 1.0


def parse_diameter(text) -> Diameter:
    """A diameter as a user types it (a widget field, `--diameter`).

    Parameters
    ----------
    text : str or number
        "auto" / "estimate" / "" (estimate it), "off" (no zoom) or a positive number of px.

    Returns
    -------
    None, "off" or float

    Raises
    ------
    ValueError
        With a message that says what to type.
    """
    t = str(text).strip().lower()
    if t in ("", "auto", "estimate"):
        return None
    if t == "off":
        return "off"
    try:
        v = float(t)
    except ValueError:
        v = float("nan")
    if not v > 0:
        raise ValueError(f"diameter {text!r}: type auto, off or a positive number of pixels")
    return v


def model_diameter(image, est: DiameterEstimate, model, channels=None) -> float:
    """The diameter a model works with for a pixel estimate: divided by the model's
    `estimate_ratio`, then checked by its instance decoder where it has one
    (`size_probe.refine_diameter`; other models get the divided estimate).

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C)
        The image `est` was measured on.
    est : DiameterEstimate
    model : Sam, Sam2 or Predictor
    channels : sequence of int, optional

    Returns
    -------
    float
        The objects' diameter in image pixels.
    """
    from .size_probe import refine_diameter

    return refine_diameter(image, model, est.diameter / estimate_ratio(model), channels)


def resolve_diameter(image, diameter: Diameter, channels=None, model=None) -> Optional[float]:
    """The objects' diameter in image pixels, or None for no zoom.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C)
        Used only when the diameter is to be estimated.
    diameter : None, "auto", "off", float or str of a number
        None / "auto": estimated (`estimate_diameter`); a number: taken as given;
        "off": no zoom.
    channels : sequence of int, optional
    model : Sam or Predictor, optional
        The model the diameter is for: an estimate is divided by its `estimate_ratio`
        (fine-tuned models whose training images the estimate misjudged), then checked
        with the model's instance decoder where it has one (`size_probe.refine_diameter`).

    Returns
    -------
    float or None
        None for "off", and for an estimate on an image too small to measure or whose
        confidence is below `MIN_CONFIDENCE` (then the image is processed without zoom).

    Raises
    ------
    ValueError
        For a string that is not a number, "auto" or "off", or a number <= 0 / not finite.
    """
    if isinstance(diameter, str):
        if diameter.lower() == "off":
            return None
        if diameter.lower() in ("auto", "estimate"):
            diameter = None
        else:
            try:
                diameter = float(diameter)
            except ValueError:
                raise ValueError(f"diameter={diameter!r}: give a number of pixels, 'auto' "
                                 "(estimate it) or 'off' (no zoom)") from None
    if diameter is None:
        try:
            est = estimate_diameter(image, channels)
        except ValueError:  # too small, empty or not an image: no zoom (SAM's rule)
            return None
        if est.confidence < MIN_CONFIDENCE:
            return None
        return est.diameter if model is None else model_diameter(image, est, model, channels)
    d = float(diameter)
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"diameter={diameter!r} must be a positive number of pixels")
    return d
