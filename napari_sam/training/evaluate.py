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
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def prompt_ious(predictor, image: np.ndarray, labels: np.ndarray, max_objects: int = 0,
                min_area: int = 4):
    """Per-object IoUs for the click prompt and the box prompt on one annotated image."""
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
        masks, _, _ = predictor.predict(box=bounding_box(truth), multimask=False)
        box.append(iou(masks[0], truth))
    return click, box


def evaluate_prompts(predictor, pairs: Iterable[Tuple[np.ndarray, np.ndarray]],
                     max_objects: int = 0, progress=null_progress) -> dict:
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


def heldout_set(n: int = 20, size: int = 256, seed: int = 10_000_019):
    """Synthetic test images from seeds disjoint from training (training uses seed < 10**6)."""
    from .synthetic import generate_sample, sample_rng, to_dtype

    out = []
    for i in range(n):
        rng = sample_rng(seed, i)
        img, lab = generate_sample(rng, (size, size))
        img = to_dtype(img, "uint16" if img.ndim == 2 else "uint8", rng)
        out.append((img, lab))
    return out
