"""Where a model loses box IoU on the held-out synthetic set, and how much the images allow.

    python -m napari_sam.training.headroom --model bundled --images 30

For every object of the grayscale held-out images (nuclei and cells) it compares the model's
box-prompt IoU with an oracle: the best IoU that any single threshold of the lightly smoothed
image reaches inside the object's box (the component under the object's most interior
point), chosen per object with the true mask in hand. No method could pick that threshold
blindly, so it is an optimistic bar for boundary placement on isolated objects; on touching
objects a threshold cannot separate neighbours and the bar means little. The table splits
objects by size and by whether they touch another object. A second table gives 1-click and
box mean IoU (the rules of `napari-sam evaluate`) by kind of synthetic scene.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage as ndi

from .evaluate import iou
from .prompts import bounding_box, interior_point

SIZES = ((4, 100), (100, 300), (300, 1000), (1000, 10**9))


def oracle_threshold_iou(image: np.ndarray, truth: np.ndarray, steps: int = 40) -> float:
    """Best IoU over thresholds of the smoothed image inside the object's box (see above).

    Parameters
    ----------
    image : ndarray, (Y, X) float
        The smoothed image, objects brighter than the background.
    truth : ndarray, (Y, X) bool
        The object's true mask (non-empty).
    steps : int
        Evenly spaced thresholds between the box's min and max (ends excluded).

    Returns
    -------
    float
        The best IoU of the component under the object's interior point; 0.0 if none.
    """
    box = bounding_box(truth).astype(int)
    sl = (slice(box[0], box[2] + 1), slice(box[1], box[3] + 1))
    sub, t = image[sl], truth[sl]
    r, c = (interior_point(truth).astype(int) - box[:2])
    best = 0.0
    for th in np.linspace(sub.min(), sub.max(), steps)[1:-1]:
        lab, _ = ndi.label(sub > th)
        if lab[r, c]:
            best = max(best, iou(lab == lab[r, c], t))
    return best


def object_records(predictor, n_images: int, seed: int = 10_000_019) -> list:
    """One pass over the held-out set: (kind, area, touches another object, 1-click IoU,
    box IoU, oracle IoU) per object, with the prompts of `napari-sam evaluate`
    (`evaluate.prompt_ious`); touch and oracle are None on RGB (shapes) scenes.

    Parameters
    ----------
    predictor : Predictor
    n_images : int
        Held-out images to use (`evaluate.heldout_set`).
    seed : int
        The held-out set's seed.

    Returns
    -------
    list of tuple
        (kind str, area int px, touch bool or None, click IoU float, box IoU float, oracle
        IoU float or None) per object of at least 4 pixels.
    """
    from .evaluate import heldout_set, prompt_ious

    records = []
    for n, (image, labels) in enumerate(heldout_set(n_images, seed=seed)):
        kind = heldout_kind(n, seed)
        click, box = prompt_ious(predictor, image, labels)
        ids = [i for i in np.unique(labels) if i and (labels == i).sum() >= 4]  # prompt_ious's
        smooth = None
        if image.ndim == 2:
            smooth = ndi.gaussian_filter(image.astype(np.float32), 1.0)
            if np.median(smooth) > 0.5 * (smooth.min() + smooth.max()):
                smooth = -smooth  # inverted (dark objects on a bright background)
        for i, c, b in zip(ids, click, box):
            truth = labels == i
            touch = oracle = None
            if smooth is not None:
                ring = ndi.binary_dilation(truth, iterations=2) & ~truth
                touch = bool(((labels[ring] != 0) & (labels[ring] != i)).mean() > 0.1)
                oracle = oracle_threshold_iou(smooth, truth)
            records.append((kind, int(truth.sum()), touch, c, b, oracle))
    return records


def _mean(x: np.ndarray) -> str:
    return f"{x.mean():.3f}" if len(x) else "-"


def table(rows) -> str:
    """Box IoU by size, isolated vs touching; rows: (area, touch, box IoU, oracle IoU).

    Parameters
    ----------
    rows : sequence of (int, bool, float, float)
        (area px, touches another object, box IoU, oracle IoU) per object.

    Returns
    -------
    str
        A Markdown table, one line per size class and one for all.
    """
    a = np.array([r[0] for r in rows])
    touch = np.array([r[1] for r in rows])
    model = np.array([r[2] for r in rows])
    oracle = np.array([r[3] for r in rows])
    lines = ["| object area (px) | isolated: n | model | oracle threshold | touching: n | model |",
             "|---|---|---|---|---|---|"]
    for lo, hi in SIZES + ((4, 10**9),):
        s = (a >= lo) & (a < hi)
        iso, tch = s & ~touch, s & touch
        name = "all" if (lo, hi) == (4, 10**9) else f"{lo}-{hi - 1}" if hi < 10**9 else f">= {lo}"
        lines.append(f"| {name} | {iso.sum()} | {_mean(model[iso])} | {_mean(oracle[iso])} | "
                     f"{tch.sum()} | {_mean(model[tch])} |")
    return "\n".join(lines)


def heldout_kind(index: int, seed: int = 10_000_019) -> str:
    """The kind of scene of held-out image `index`: generate_sample's first draw, replayed
    on a fresh copy of that image's rng.

    Parameters
    ----------
    index : int
        The image's index in the held-out set.
    seed : int
        The held-out set's seed.

    Returns
    -------
    str
        "nuclei", "cells" or "shapes".
    """
    from .synthetic import KIND_WEIGHTS, KINDS, sample_rng

    return KINDS[sample_rng(seed, index).choice(len(KINDS), p=KIND_WEIGHTS)]


def kind_table(records) -> str:
    """1-click and box mean IoU per kind of held-out scene (nuclei, cells, shapes).

    Parameters
    ----------
    records : list of tuple
        `object_records`'s rows.

    Returns
    -------
    str
        A Markdown table, one line per kind that has objects.
    """
    from .synthetic import KINDS

    lines = ["| scene kind | objects | 1-click mean IoU | box mean IoU |", "|---|---|---|---|"]
    for kind in KINDS:
        c = [r[3] for r in records if r[0] == kind]
        b = [r[4] for r in records if r[0] == kind]
        if c:
            lines.append(f"| {kind} | {len(c)} | {np.mean(c):.3f} | {np.mean(b):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: print the headroom table and the per-kind table for a model.

    Parameters
    ----------
    argv : list of str or None
        The arguments; None: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status, 0.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--images", type=int, default=30)
    args = ap.parse_args(argv)
    from ..predictor import Predictor

    records = object_records(Predictor(args.model, diameter="off"), args.images)
    print(table([(a, t, b, o) for _, a, t, _, b, o in records if o is not None]))
    print()
    print(kind_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
