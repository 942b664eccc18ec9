"""Validation scores of a model being fine-tuned (`finetune.py`) on the user's samples, and
the recalibration of its automatic segmentation, both at the zoom of the default inference.

Every validation sample is seen as the scale-aware default sees it: its objects' diameter
(`augment.sample_zoom`, the same rule as the training views) sets the zoom, and images that
are larger than the model input at that zoom are answered tile by tile. Calibration cuts
the validation images into pieces of one tile (one model input at that zoom) and, on each,
decodes the AMG point grid once and predicts the instance maps once; every candidate
setting then only re-filters (AMG thresholds) or re-runs the watershed (AIS parameters).
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Sequence

import numpy as np
import torch

from .evaluate import SWEEP_IOU, SWEEP_STABILITY, match_f1, prompt_ious

# AIS parameters tried by the calibration (the watershed of `ais.watershed_from_maps`)
AIS_GRID = {"center_distance_threshold": (0.4, 0.5, 0.6),
            "boundary_distance_threshold": (0.4, 0.5, 0.6),
            "foreground_threshold": (0.4, 0.5),
            "distance_smoothing": (1.0, 1.6)}
# at most this many one-tile pieces of each validation image are used for calibration
CALIBRATION_PIECES = 6


def _predictor(model, amp):
    from ..predictor import Predictor

    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    return Predictor(model, device=model.device, precision=precision, diameter="off")


def _diameter(diameters, i):
    d = diameters[i] if diameters is not None else None
    return float(d) if d else "off"


def validate(model, samples: List, max_objects: int = 40, automask: bool = False,
             amp: Optional[torch.dtype] = None, diameters: Optional[Sequence] = None,
             calibrate: bool = False) -> dict:
    """Scores on validation samples (`user_data.Sample`: uint8 (Y, X, 3) pixels, labels).

    diameters[i]: the objects' diameter (image px) in sample i, which sets the zoom as in
    the default inference (`scale.plan_zoom`); None (or a None entry): no zoom.
    click_miou / box_miou: `evaluate.prompt_ious` over the first `max_objects` objects of
    each sample (0: all); score: their mean. With `calibrate`: `calibrate_automask` first,
    its choices set on `model` and returned under "calibration" (and "automask", "ais",
    "automask_mode"). With `automask`: "automask_f1@0.5" / "@0.75", the F1 of the default
    automatic segmentation (`automask.AutoSegmenter`, mode "auto", the model's thresholds).

    Parameters
    ----------
    model : Sam
        Evaluated in eval mode; its training mode is restored afterwards.
    samples : list of Sample
        pixels (Y, X, 3) uint8, labels (Y, X) uint32.
    max_objects : int
        Objects scored per sample; 0: all.
    automask : bool
        Add the automatic segmentation's F1.
    amp : torch.dtype or None
        The predictor's autocast dtype (bfloat16 or float16); None: fp32.
    diameters : sequence of (float or None) or None
        Per sample, its objects' diameter in image pixels; None: no zoom.
    calibrate : bool
        Calibrate the automatic segmentation first (changes `model`'s defaults).

    Returns
    -------
    dict
        "click_miou", "box_miou", "score" (floats, 4 decimals), "objects" (int), and the
        automask and calibration keys described above when asked for.
    """
    was_training = model.training
    model.eval()
    pred = _predictor(model, amp)
    try:
        click, box = [], []
        for i, s in enumerate(samples):
            pred.diameter = _diameter(diameters, i)
            c, b = prompt_ious(pred, s.pixels, s.labels, max_objects)
            click += c
            box += b
        res = {"click_miou": round(float(np.mean(click)), 4),
               "box_miou": round(float(np.mean(box)), 4), "objects": len(click)}
        res["score"] = round((res["click_miou"] + res["box_miou"]) / 2, 4)
        if calibrate:
            cal = calibrate_automask(pred, samples, diameters)
            res.update({k: cal[k] for k in ("automask", "ais", "automask_mode") if k in cal})
            res["calibration"] = cal["scores"]
        if automask or calibrate:
            res.update(automask_f1(pred, samples, diameters))
        return res
    finally:
        model.train(was_training)


def automask_f1(pred, samples: List, diameters: Optional[Sequence] = None) -> dict:
    """F1@0.5 / 0.75 of the default automatic segmentation (mode "auto", the model's own
    thresholds and AIS parameters) on the samples, at their diameters (see `validate`).

    Parameters
    ----------
    pred : Predictor
    samples : list of Sample
        pixels (Y, X, 3) uint8, labels (Y, X) uint32.
    diameters : sequence of (float or None) or None
        Per sample, its objects' diameter in image pixels; None: no zoom.

    Returns
    -------
    dict
        "automask_f1@0.5", "automask_f1@0.75" (mean floats, 4 decimals) and
        "automask_mode" ("ais" or "amg", what mode "auto" resolves to).
    """
    from ..automask.segmenter import AutoSegmenter, resolve_mode

    seg = AutoSegmenter(pred, mode="auto")
    f = [match_f1(seg(s.pixels, diameter=_diameter(diameters, i)).labels, s.labels)
         for i, s in enumerate(samples)]
    return {"automask_f1@0.5": round(float(np.mean([x["f1@0.5"] for x in f])), 4),
            "automask_f1@0.75": round(float(np.mean([x["f1@0.75"] for x in f])), 4),
            "automask_mode": resolve_mode("auto", pred.model)}


def calibration_pieces(model, samples: List, diameters: Optional[Sequence] = None,
                       limit: int = CALIBRATION_PIECES) -> list:
    """Pieces of the samples that the default inference sees in one model input each:
    [(pixels (h, w, 3), labels (h, w), zoom or None, diameter or None)]. A sample that
    fits whole is one piece; a tiled one is cut into tiles of the plan's side (up to
    `limit` evenly spread ones holding objects).

    Parameters
    ----------
    model : Sam
        Its input size and preferred diameter set the plan (`scale.plan_zoom`).
    samples : list of Sample
        pixels (Y, X, 3) uint8, labels (Y, X) uint32.
    diameters : sequence of (float or None) or None
        Per sample, its objects' diameter in image pixels; None: no zoom.
    limit : int
        The most pieces taken from one tiled sample.

    Returns
    -------
    list of tuple
        (pixels (h, w, 3) uint8, labels (h, w) uint32, zoom float or None, diameter float
        or None) per piece; tiles start at (row, col) multiples of the tile side.
    """
    from ..scale import plan_zoom

    out = []
    for i, s in enumerate(samples):
        d = diameters[i] if diameters is not None and diameters[i] else None
        plan = plan_zoom(s.labels.shape, model, d)
        if not plan.tiled:
            out.append((s.pixels, s.labels, plan.zoom, d))
            continue
        h, w = s.labels.shape
        t = plan.tile
        corners = [(r, c) for r in range(0, max(1, h - t // 2), t)
                   for c in range(0, max(1, w - t // 2), t)]
        corners = [rc for rc in corners if s.labels[rc[0]:rc[0] + t, rc[1]:rc[1] + t].any()]
        pick = np.unique(np.linspace(0, len(corners) - 1, min(limit, len(corners))).round())
        for k in pick.astype(int) if corners else []:
            r, c = corners[k]
            out.append((s.pixels[r:r + t, c:c + t], s.labels[r:r + t, c:c + t], plan.zoom, d))
    return out


def _best(scores: dict):
    """The key of the best mean F1@0.5 (then F1@0.75) -> (key, {"f1@0.5", "f1@0.75"})."""
    mean = {k: {t: float(np.mean([f[t] for f in v])) for t in ("f1@0.5", "f1@0.75")}
            for k, v in scores.items()}
    key = max(mean, key=lambda k: (mean[k]["f1@0.5"], mean[k]["f1@0.75"]))
    return key, {t: round(v, 4) for t, v in mean[key].items()}


def calibrate_automask(pred, samples: List, diameters: Optional[Sequence] = None) -> dict:
    """Choose the automatic segmentation's settings for `pred.model` on annotated samples
    and set them on the model: AMG thresholds (`automask_defaults`), AIS parameters
    (`ais_defaults`, models with an instance decoder) and the better mode (`automask_mode`).
    -> {"automask": {...}, "ais": {...}, "automask_mode": "ais" | "amg", "scores": {mode:
    {"f1@0.5", "f1@0.75"}} (on the calibration pieces)}.

    Parameters
    ----------
    pred : Predictor
        Its model's defaults are changed.
    samples : list of Sample
        pixels (Y, X, 3) uint8, labels (Y, X) uint32.
    diameters : sequence of (float or None) or None
        Per sample, its objects' diameter in image pixels; None: no zoom.

    Returns
    -------
    dict
        "automask" {"pred_iou_thresh", "stability_thresh"}, "ais" (the `AIS_GRID` choice,
        models with an instance decoder only), "automask_mode" and "scores" (F1 per mode
        and "pieces", the number of pieces).
    """
    from ..automask.ais import labels_and_records
    from ..automask import AutoMaskGenerator
    from ..scale import ZoomPlan
    from ..automask.segmenter import auto_min_area, auto_points_per_side

    model = pred.model
    pieces = calibration_pieces(model, samples, diameters)
    amg = {(a, b): [] for a in SWEEP_IOU for b in SWEEP_STABILITY}
    grid = [dict(zip(AIS_GRID, v)) for v in itertools.product(*AIS_GRID.values())]
    ais = {k: [] for k in range(len(grid))} if model.has_instance_head else None
    gens = {}
    for pixels, labels, zoom, d in pieces:
        min_area = auto_min_area(d)
        n = auto_points_per_side(model, ZoomPlan(zoom, diameter=d), labels.shape)
        gen = gens.get(n) or gens.setdefault(n, AutoMaskGenerator(
            pred, points_per_side=n, min_candidate_iou=0.0, min_candidate_stability=0.0))
        gen.initialize(pixels, zoom=zoom)
        for (a, b), found in amg.items():
            found.append(match_f1(gen.generate(a, b, min_area).labels, labels))
        if ais is not None:
            pred.set_image(pixels, zoom=zoom, diameter="off")
            maps = pred.instance_maps()
            for k, found in ais.items():
                lab = labels_and_records(pred, min_area=min_area, maps=maps, **grid[k]).labels
                found.append(match_f1(lab, labels))
    (a, b), amg_f1 = _best(amg)
    out = {"automask": {"pred_iou_thresh": a, "stability_thresh": b},
           "scores": {"amg": amg_f1, "pieces": len(pieces)}, "automask_mode": "amg"}
    model.automask_defaults = dict(out["automask"])
    if ais is not None:
        k, ais_f1 = _best(ais)
        out["ais"] = dict(grid[k])
        out["scores"]["ais"] = ais_f1
        model.ais_defaults = dict(grid[k])
        if (ais_f1["f1@0.5"], ais_f1["f1@0.75"]) >= (amg_f1["f1@0.5"], amg_f1["f1@0.75"]):
            out["automask_mode"] = "ais"
    model.automask_mode = out["automask_mode"]
    return out
