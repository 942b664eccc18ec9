"""Automatic segmentation, the one entry point: object size, mode, and tiles when needed.

    labels = automask(image)                       # bundled model, diameter estimated
    seg = AutoSegmenter("vit_b_lm", diameter=30)   # reuse the model over many images
    result = seg(image)                            # AutoMaskResult(labels, records)

Modes: "amg" (a grid of point prompts, `automask.AutoMaskGenerator`), "ais" (the model's
instance decoder and a seeded watershed, `ais`), "apg" (the decoder's seeds as point
prompts for SAM's mask decoder, `apg`), "auto" (the mode the checkpoint names as
its best, measured when it was exported; else AIS when the model has an instance decoder,
else AMG). The objects' diameter (None: estimated, a number of image px, or "off")
sets the zoom at which the image reaches the model (`scale.plan_zoom`), the density of the
AMG point grid (about `POINT_SPACING` preferred diameters between points) and the default
smallest object (`min_area`). Images whose zoomed size exceeds the model input run tile by
tile (`tiled.tiled_automask`) with objects stitched across seams. Labels are always in the
image's own pixel grid, (Y, X) uint32.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from .amg import AutoMaskGenerator, AutoMaskResult, fixed_thresholds, split_kwargs
from ..predictor import Predictor
from ..progress import null_progress
from ..scale import (Diameter, ZoomPlan, instance_tile_input, plan_zoom, preferred_diameter,
                     resolve_diameter)

MODES = ("auto", "amg", "ais", "apg")
DECODER_MODES = ("ais", "apg")  # the modes that need an instance decoder
# AMG grid spacing in preferred object diameters (model-input pixels)
POINT_SPACING = 0.5
POINTS_RANGE = (8, 64)
# default smallest object: this fraction of the area of a disc of the objects' diameter
MIN_AREA_FRACTION = 0.1


def auto_points_per_side(model, plan: ZoomPlan, shape) -> int:
    """AMG points per side for an image of `shape` (Y, X) reaching the model as `plan` says:
    one point every POINT_SPACING preferred diameters of the model input the image covers
    (32, SAM's, when the objects' size is unknown).

    Parameters
    ----------
    model : Sam
        The model (its input side and preferred diameter).
    plan : ZoomPlan
        How the image reaches the model (diameter, zoom, tiled).
    shape : (int, int)
        (rows, cols) of the image.

    Returns
    -------
    int
        Points per side, within `POINTS_RANGE`.
    """
    if plan.diameter is None:
        return 32
    size = model.image_size
    covered = size if plan.tiled else max(shape[0], shape[1]) * plan.zoom
    pref, _ = preferred_diameter(model)
    n = math.ceil(covered / (pref * POINT_SPACING))
    return int(np.clip(n, *POINTS_RANGE))


def auto_min_area(diameter: Optional[float]) -> int:
    """Smallest object (pixels) for objects of `diameter` image px (0 when unknown).

    Parameters
    ----------
    diameter : float, optional
        The objects' diameter in image pixels.

    Returns
    -------
    int
        `MIN_AREA_FRACTION` of a disc of that diameter, in pixels.
    """
    if diameter is None:
        return 0
    return int(MIN_AREA_FRACTION * math.pi / 4 * diameter ** 2)


def resolve_mode(mode: str, model) -> str:
    """"amg", "ais" or "apg" for `mode` on `model` (a Sam); a ValueError naming the model
    when the mode needs an instance decoder the model lacks.

    Parameters
    ----------
    mode : str
        One of `MODES`; "auto" takes the checkpoint's mode, else "ais" when the model has an
        instance decoder, else "amg".
    model : Sam

    Returns
    -------
    str
        "amg", "ais" or "apg".
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
    has = getattr(model, "has_instance_head", False)
    if mode == "auto":  # the checkpoint's choice (measured at export), else AIS if it can
        preferred = getattr(model, "automask_mode", None)
        if preferred in ("ais", "amg", "apg") and (preferred == "amg" or has):
            return preferred
        return "ais" if has else "amg"
    if mode in DECODER_MODES and not has:
        raise ValueError(
            f"mode={mode!r} needs a model with an instance decoder; {model.config.name!r} has "
            "none: use mode='amg' (or 'auto'), or the bundled model / a micro-sam checkpoint "
            "with a decoder (e.g. vit_b_lm)")
    return mode


class AutoSegmenter:
    """Automatic segmentation with one model, for many images (see the module docstring).

    Parameters
    ----------
    model : Sam, Predictor, str or Path, optional
        A model, a Predictor to share, a registry name or a checkpoint (None: bundled).
    mode : {"auto", "amg", "ais", "apg"}
        See `resolve_mode`; a ValueError when the mode needs a decoder the model lacks.
    diameter : None, "off" or float
        The objects' diameter in image pixels (None: estimated per image; "off": no zoom).
    points_per_side : int, optional
        AMG grid density (None: from the objects' size).
    pred_iou_thresh, stability_thresh : float, optional
        AMG thresholds (None: the model's).
    min_area : int, optional
        Smallest object in pixels (None: from the objects' size, 0 when unknown).
    device, precision : str
        For the Predictor made when a model is given.
    **kw
        To `AutoMaskGenerator` and its `generate` (points_per_batch, crop_n_layers,
        nms_thresh, ...); in AIS mode to `ais.watershed_from_maps`
        (center_distance_threshold, ...); in APG mode to `apg.apg` (min_size,
        nms_threshold, refine_with_box_prompts, ...).
    """

    def __init__(self, model=None, *, mode: str = "auto", diameter: Diameter = None,
                 points_per_side: Optional[int] = None, pred_iou_thresh: Optional[float] = None,
                 stability_thresh: Optional[float] = None, min_area: Optional[int] = None,
                 device="auto", precision="auto", **kw) -> None:
        from .ais import AIS_DEFAULTS
        from .apg import APG_DEFAULTS

        self.predictor = (model if isinstance(model, Predictor)
                          else Predictor(model, device=device, precision=precision))
        self.model = self.predictor.model
        self.mode = resolve_mode(mode, self.model)
        self.diameter = diameter
        self.points_per_side = points_per_side
        self.thresholds = (pred_iou_thresh, stability_thresh)
        self.min_area = min_area
        known = APG_DEFAULTS if self.mode == "apg" else AIS_DEFAULTS
        self.ais_kw = {k: kw.pop(k) for k in list(kw) if k in known}
        self.init_kw, run, self.gen_kw = split_kwargs(kw)
        if run:
            raise TypeError(f"{', '.join(run)}: give these when calling the segmenter")
        self.init_kw.pop("device", None)
        self.init_kw.pop("precision", None)
        self._generators: Dict[int, AutoMaskGenerator] = {}
        self.last_plan: Optional[ZoomPlan] = None

    def generator(self, points_per_side: int) -> AutoMaskGenerator:
        """The (cached) AMG generator of this segmenter's predictor and settings.

        Parameters
        ----------
        points_per_side : int

        Returns
        -------
        AutoMaskGenerator
        """
        gen = self._generators.get(points_per_side)
        if gen is None:
            gen = AutoMaskGenerator(self.predictor, points_per_side=points_per_side,
                                    **self.init_kw)
            fixed_thresholds(gen, self.init_kw, *self.thresholds)
            self._generators[points_per_side] = gen
        return gen

    def plan(self, image, channels=None, diameter: Diameter = "inherit") -> ZoomPlan:
        """How `image` reaches the model (estimating the diameter if needed). SAM 2.1 models
        always get the whole image resized to their square input (no zoom).

        Parameters
        ----------
        image : ndarray, (Y, X) or (Y, X, C)
        channels : sequence of int, optional
            Used by the diameter estimate.
        diameter : None, "off", float or "inherit"
            "inherit": the segmenter's.

        Returns
        -------
        ZoomPlan
        """
        if getattr(self.model, "square_input", False):
            return ZoomPlan(None)
        d = resolve_diameter(image, self.diameter if diameter == "inherit" else diameter,
                             channels, self.model)
        return plan_zoom(np.shape(image), self.model, d,
                         instance_tile_input(self.model, self.mode))

    def __call__(self, image: np.ndarray, channels=None, value_range=None,
                 progress=null_progress, diameter: Diameter = "inherit") -> AutoMaskResult:
        """Segment one 2D image.

        Parameters
        ----------
        image : ndarray, (Y, X) or (Y, X, C), any dtype
        channels : sequence of int, optional
            Up to 3 channels (required for more than 4).
        value_range : (float, float), optional
            Intensity range mapped to 0..255 (default: robust percentiles).
        progress : callable(done, total, message), optional
        diameter : None, "off", float or "inherit"
            Overrides the segmenter's for this image ("inherit": keep it).

        Returns
        -------
        AutoMaskResult
            labels (Y, X) uint32 in the image's pixel grid, and one record per object.
        """
        image = np.asarray(image) if not hasattr(image, "shape") else image
        if len(image.shape) not in (2, 3):
            raise ValueError(f"automask takes one 2D image (Y, X) or (Y, X, C), got shape "
                             f"{tuple(image.shape)}; for stacks use napari_sam.automask."
                             "automask_stack, for volumes automask_volume")
        if len(image.shape) == 3 and image.shape[-1] > 4 and channels is None:
            raise ValueError(
                f"an image of shape {tuple(image.shape)}: for a multichannel image choose up "
                "to 3 channels with channels=[...] (--channels); for a stack of 2D images use "
                "napari_sam.automask.automask_stack (for volumes automask_volume)")
        plan = self.last_plan = self.plan(image, channels, diameter)
        min_area = self.min_area if self.min_area is not None else auto_min_area(plan.diameter)
        if plan.tiled:
            return self._tiled(image, plan, channels, min_area, progress)
        if self.mode in DECODER_MODES:
            return self._ais(image, plan, channels, value_range, min_area)
        n = self.points_per_side or auto_points_per_side(self.model, plan, image.shape)
        gen = self.generator(n)
        gen.initialize(np.asarray(image), progress, channels, value_range, zoom=plan.zoom)
        return gen.generate(*self.thresholds, min_area, **self.gen_kw)

    def _ais(self, image, plan: ZoomPlan, channels, value_range, min_area) -> AutoMaskResult:
        from . import ais, apg

        self.predictor.set_image(np.asarray(image), channels, value_range, diameter="off",
                                 zoom=plan.zoom)
        run = apg.labels_and_records if self.mode == "apg" else ais.labels_and_records
        return run(self.predictor, min_area=min_area, **self.ais_kw)

    def tile_segmenter(self, plan: ZoomPlan, shape):
        """The per-tile segmenter of `tiled.tiled_automask`, with this segmenter's mode and
        settings.

        Parameters
        ----------
        plan : ZoomPlan
            How the image reaches the model (its diameter sets the defaults).
        shape : (int, int)
            (Y, X) of the whole image.

        Returns
        -------
        AutomaskSegmenter, AISSegmenter or APGSegmenter
        """
        from .tile_segmenters import AISSegmenter, APGSegmenter, AutomaskSegmenter

        min_area = self.min_area if self.min_area is not None else auto_min_area(plan.diameter)
        if self.mode == "ais":
            return AISSegmenter(min_area=min_area, **self.ais_kw)
        if self.mode == "apg":
            return APGSegmenter(min_area=min_area, **self.ais_kw)
        n = self.points_per_side or auto_points_per_side(self.model, plan, shape)
        return AutomaskSegmenter(n, *self.thresholds, min_area, **self.init_kw, **self.gen_kw)

    def _tiled(self, image, plan: ZoomPlan, channels, min_area, progress) -> AutoMaskResult:
        from .tiled import tiled_automask

        segmenter = self.tile_segmenter(plan, image.shape)
        res = tiled_automask(image, self.model, tile_size=plan.tile, overlap=plan.overlap,
                             tile_input=plan.tile_input, channels=channels, segmenter=segmenter,
                             device=self.predictor.device, precision=self.predictor.precision,
                             progress=progress)
        return AutoMaskResult(np.asarray(res.labels), res.records)


def automask(image: np.ndarray, model=None, *, mode: str = "auto", diameter: Diameter = None,
             points_per_side: Optional[int] = None, pred_iou_thresh: Optional[float] = None,
             stability_thresh: Optional[float] = None, min_area: Optional[int] = None,
             channels=None, value_range=None, progress=null_progress, device="auto",
             **kw) -> np.ndarray:
    """Segment everything in a 2D image.

    Parameters
    ----------
    image : ndarray, (Y, X) or (Y, X, C), any dtype and size
    model : Sam, Predictor, str or path, optional
        A model, a registry name ("vit_b_lm", ...) or a checkpoint (None: the bundled model).
    mode : {"auto", "amg", "ais", "apg"}
        "amg": a grid of point prompts; "ais": the instance decoder and a seeded watershed;
        "apg": the decoder's seeds as prompts; "auto": the checkpoint's choice, else AIS when
        the model has an instance decoder, else AMG.
    diameter : None, "off" or float
        The objects' diameter in image pixels (None: estimated; "off": the whole image
        resized to the model input, no zoom).
    points_per_side, pred_iou_thresh, stability_thresh, min_area : optional
        AMG grid density and thresholds, smallest object (pixels); None: from the objects'
        size and the model's calibrated thresholds.
    channels : sequence of int, optional
        Up to 3 channels of a (Y, X, C) image.
    value_range : (float, float), optional
        Intensity range mapped to 0..255 (default: robust percentiles).
    progress : callable(done, total, message), optional
    device : str
        "auto", "cpu", "cuda", ...
    **kw
        Passed to `AutoSegmenter` (AMG, AIS or APG keywords).

    Returns
    -------
    labels : ndarray, (Y, X) uint32
        0 is background; ids 1..N, in the image's own pixel grid.
    """
    seg = AutoSegmenter(model, mode=mode, diameter=diameter, points_per_side=points_per_side,
                        pred_iou_thresh=pred_iou_thresh, stability_thresh=stability_thresh,
                        min_area=min_area, device=device, **kw)
    return seg(image, channels, value_range, progress).labels
