"""Accuracy of a model on annotated images: 1-click and box mean IoU (and automask F1).

The prompts follow fixed rules so figures are comparable between models: one positive
click at the most interior point of each object (best of the multimask outputs by
predicted score) and the object's tight bounding box (single output).
"""

from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

from ..progress import null_progress
from .prompts import bounding_box, interior_point


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks.

    Parameters
    ----------
    a, b : ndarray, (Y, X) bool
        The masks, of the same shape.

    Returns
    -------
    float
        |a & b| / |a | b|; 1.0 when both are empty.
    """
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def prompt_ious(predictor, image: np.ndarray, labels: np.ndarray, max_objects: int = 0,
                min_area: int = 4):
    """Per-object IoUs for the click prompt and the box prompt on one annotated image.

    Parameters
    ----------
    predictor : Predictor
        Its image is set to `image`.
    image : ndarray, (Y, X) or (Y, X, C)
        Any image the predictor accepts.
    labels : ndarray, (Y, X) int
        Instance labels, 0 for background.
    max_objects : int
        Use only the first this many ids (by value); 0: all.
    min_area : int
        Objects with fewer pixels are skipped.

    Returns
    -------
    click, box : list of float
        One IoU per evaluated object: the click at its interior (row, col) point (best
        multimask output by score) and its bounding box (single output).
    """
    predictor.set_image(image)
    ids = [i for i in np.unique(labels) if i]
    if max_objects:
        ids = ids[:max_objects]
    click, box = [], []
    for i in ids:
        truth = labels == i
        if truth.sum() < min_area:
            continue
        masks, scores, _ = predictor.predict(points=[interior_point(truth)], point_labels=[1],
                                             multimask=True)
        click.append(iou(masks[int(np.argmax(scores))], truth))
        b = bounding_box(truth)
        b[2:] = np.maximum(b[2:], b[:2] + 1)  # a one-pixel-wide object still gets a box
        masks, _, _ = predictor.predict(box=b, multimask=False)
        box.append(iou(masks[0], truth))
    return click, box


def evaluate_prompts(predictor, pairs: Iterable[Tuple[np.ndarray, np.ndarray]],
                     max_objects: int = 0, progress=null_progress) -> dict:
    """Mean 1-click and box IoU over the objects of annotated images.

    Parameters
    ----------
    predictor : Predictor
    pairs : iterable of (ndarray, ndarray)
        (image (Y, X) or (Y, X, C), labels (Y, X) int) pairs.
    max_objects : int
        Objects per image (see `prompt_ious`); 0: all.
    progress : callable
        Called as ``progress(done, total, "")`` after each image.

    Returns
    -------
    dict
        "click_miou", "box_miou" (float, NaN without objects), "objects", "images" (int).
    """
    pairs = list(pairs)
    click, box = [], []
    for n, (image, labels) in enumerate(pairs):
        c, b = prompt_ious(predictor, image, labels, max_objects)
        click += c
        box += b
        progress(n + 1, len(pairs), "")
    return {"click_miou": float(np.mean(click)) if click else float("nan"),
            "box_miou": float(np.mean(box)) if box else float("nan"),
            "objects": len(click), "images": len(pairs)}


def match_f1(pred: np.ndarray, truth: np.ndarray, thresholds=(0.5, 0.75)) -> dict:
    """F1 of predicted vs true instance labels at IoU thresholds (one-to-one matching).

    Pairs are matched greedily from the highest IoU down; above 0.5 a match is unique anyway.

    Parameters
    ----------
    pred, truth : ndarray, same shape (e.g. (Y, X)), int
        Predicted and true instance labels, 0 for background.
    thresholds : sequence of float
        The IoU thresholds.

    Returns
    -------
    dict
        "n_pred", "n_true" (int) and "f1@<threshold>" (float, 1.0 when both are empty).
    """
    pred = np.asarray(pred).ravel()
    truth = np.asarray(truth).ravel()
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    inter = np.zeros((len(p_ids), len(t_ids)), dtype=np.int64)
    np.add.at(inter, (p_inv, t_inv), 1)
    p_area, t_area = inter.sum(1), inter.sum(0)
    pi, ti = np.nonzero(inter)
    keep = (p_ids[pi] != 0) & (t_ids[ti] != 0)
    pi, ti = pi[keep], ti[keep]
    ious = inter[pi, ti] / (p_area[pi] + t_area[ti] - inter[pi, ti])
    n_pred, n_true = int((p_ids != 0).sum()), int((t_ids != 0).sum())
    out = {"n_pred": n_pred, "n_true": n_true}
    for th in thresholds:
        order = np.argsort(-ious)
        used_p, used_t, tp = set(), set(), 0
        for k in order:
            if ious[k] < th:
                break
            if pi[k] in used_p or ti[k] in used_t:
                continue
            used_p.add(pi[k])
            used_t.add(ti[k])
            tp += 1
        denom = n_pred + n_true
        out[f"f1@{th}"] = 2 * tp / denom if denom else 1.0
    return out


def evaluate_automask(pairs, model, progress=null_progress, **automask_kw) -> dict:
    """Mean automatic-segmentation F1 at IoU 0.5 and 0.75 over annotated images.

    Parameters
    ----------
    pairs : iterable of (ndarray, ndarray)
        (image (Y, X) or (Y, X, C), labels (Y, X) int) pairs.
    model : Sam or Predictor
        Passed to `automask`.
    progress : callable
        Called as ``progress(done, total, "")`` after each image.
    **automask_kw
        Further arguments of `automask`.

    Returns
    -------
    dict
        "f1@0.5" and "f1@0.75", float means over the images.
    """
    from ..automask.segmenter import automask

    scores = []
    pairs = list(pairs)
    for n, (image, labels) in enumerate(pairs):
        pred = automask(image, model=model, **automask_kw)
        scores.append(match_f1(pred, labels))
        progress(n + 1, len(pairs), "")
    return {k: float(np.mean([s[k] for s in scores])) for k in ("f1@0.5", "f1@0.75")}


SWEEP_IOU = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.88)
SWEEP_STABILITY = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def sweep_automask(pairs, model, pred_iou=SWEEP_IOU, stability=SWEEP_STABILITY,
                   progress=null_progress, **generator_kw) -> list:
    """Automask F1 for every (pred_iou_thresh, stability_thresh) pair, best first.

    Each image is embedded and its point grid decoded once (with the candidate floors at
    zero); every pair of thresholds then only re-filters, as the widget's sliders do.
    Use it to choose thresholds for a model whose IoU head is calibrated differently
    from SAM's (the defaults 0.88 / 0.95 are SAM's).

    Parameters
    ----------
    pairs : iterable of (ndarray, ndarray)
        (image (Y, X) or (Y, X, C), labels (Y, X) int) pairs.
    model : Sam
        Passed to `AutoMaskGenerator`.
    pred_iou, stability : sequence of float
        The thresholds to try.
    progress : callable
        Called as ``progress(done, total, "")`` after each image.
    **generator_kw
        Further arguments of `AutoMaskGenerator`.

    Returns
    -------
    list of dict
        One row per pair: "pred_iou_thresh", "stability_thresh", "f1@0.5", "f1@0.75"
        (means over the images), sorted by F1@0.5 then F1@0.75, best first.
    """
    from ..automask import AutoMaskGenerator

    generator_kw.setdefault("min_candidate_iou", 0.0)
    generator_kw.setdefault("min_candidate_stability", 0.0)
    gen = AutoMaskGenerator(model, **generator_kw)
    pairs = list(pairs)
    scores = {(a, b): [] for a in pred_iou for b in stability}
    for n, (image, labels) in enumerate(pairs):
        gen.initialize(image)
        for (a, b), found in scores.items():
            found.append(match_f1(gen.generate(a, b).labels, labels))
        progress(n + 1, len(pairs), "")
    rows = [{"pred_iou_thresh": a, "stability_thresh": b,
             **{k: float(np.mean([s[k] for s in found])) for k in ("f1@0.5", "f1@0.75")}}
            for (a, b), found in scores.items()]
    return sorted(rows, key=lambda r: (-r["f1@0.5"], -r["f1@0.75"]))


def heldout_set(n: int = 20, size: int = 256, seed: int = 10_000_019):
    """Synthetic test images from seeds disjoint from training (training uses seed < 10**6).

    Parameters
    ----------
    n : int
        The number of images.
    size : int
        S, their side.
    seed : int
        The set's seed (`synthetic.sample_rng`).

    Returns
    -------
    list of (ndarray, ndarray)
        (image, labels (S, S) uint32): image (S, S) uint16 for grayscale samples, (S, S, 3)
        uint8 for RGB ones.
    """
    from .synthetic import generate_sample, sample_rng, to_dtype

    out = []
    for i in range(n):
        rng = sample_rng(seed, i)
        img, lab = generate_sample(rng, (size, size))
        img = to_dtype(img, "uint16" if img.ndim == 2 else "uint8", rng)
        out.append((img, lab))
    return out
