"""How a model's accuracy depends on the objects' size as it sees them.

`size_curve` measures 1-click and box mean IoU and automask F1@0.5 / 0.75 on synthetic
nuclei and cells (`multiscale.scaled_sample`) whose median diameter is set in model-input
pixels (images of the model's input size, so no zoom is involved). `choose_preferred`
turns the curve into the model's preferred diameter and usable range, stored with the
weights as `object_size` (see `scale.preferred_diameter`).

    python -m napari_sam.training.size_sweep --model bundled --images 4 \
        --write napari_sam/weights/bundled.pt
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, List, Sequence

import numpy as np

DIAMETERS = (8, 12, 16, 20, 24, 32, 40, 48, 64, 80)
KINDS = ("nuclei", "cells")


def size_curve(model, diameters: Sequence[float] = DIAMETERS, images: int = 4,
               kinds: Sequence[str] = KINDS, max_objects: int = 16, log=print) -> List[dict]:
    """One row per diameter: {"diameter", "click", "box", "f1@0.5", "f1@0.75"} averaged over
    `kinds` x `images` synthetic images of the model's input size.

    Parameters
    ----------
    model : Sam
        Run on the CPU with `diameter="off"`.
    diameters : sequence of float
        Median object diameters in model-input pixels.
    images : int
        Images per kind and diameter.
    kinds : sequence of str
        `multiscale.scaled_sample` kinds.
    max_objects : int
        Objects per image for the prompt figures; 0: all.
    log : callable
        Called with each row as a JSON string.

    Returns
    -------
    list of dict
        {"diameter", "click", "box", "f1@0.5", "f1@0.75"} per diameter (floats, 4 decimals).
    """
    from ..predictor import Predictor
    from .evaluate import evaluate_automask, evaluate_prompts
    from .multiscale import scaled_sample

    pred = Predictor(model, device="cpu", diameter="off")  # objects are sized in model px
    size = (pred.model.image_size,) * 2
    rows = []
    for d in diameters:
        parts = []
        for kind in kinds:
            pairs = [scaled_sample(kind, d, size, seed) for seed in range(images)]
            p = evaluate_prompts(pred, pairs, max_objects=max_objects)
            a = evaluate_automask(pairs, pred, diameter="off")
            parts.append((p["click_miou"], p["box_miou"], a["f1@0.5"], a["f1@0.75"]))
        m = np.mean(parts, axis=0)
        row = {"diameter": float(d), "click": round(float(m[0]), 4), "box": round(float(m[1]), 4),
               "f1@0.5": round(float(m[2]), 4), "f1@0.75": round(float(m[3]), 4)}
        log(json.dumps(row))
        rows.append(row)
    return rows


def choose_preferred(rows: List[dict], tolerance: float = 0.05) -> Dict[str, object]:
    """Preferred diameter: the best mean of click IoU and automask F1@0.75 (the figures
    that suffer most at the wrong scale); usable range: the diameters whose mean lies within
    `tolerance` of the best.

    Parameters
    ----------
    rows : list of dict
        `size_curve`'s rows.
    tolerance : float
        How far below the best score a diameter may be and stay in the range.

    Returns
    -------
    dict
        {"diameter": float, "range": [min, max] float, "curve": rows}, in model-input pixels.
    """
    score = np.array([(r["click"] + r["f1@0.75"]) / 2 for r in rows])
    diam = np.array([r["diameter"] for r in rows])
    best = int(np.argmax(score))
    ok = np.flatnonzero(score >= score[best] - tolerance)
    return {"diameter": float(diam[best]), "range": [float(diam[ok].min()), float(diam[ok].max())],
            "curve": rows}


def store_object_size(path, info: dict) -> None:
    """Rewrite the napari-sam checkpoint at `path` with `info` as its `object_size`.

    Parameters
    ----------
    path : str or os.PathLike
        A napari-sam checkpoint (one with a config; else ValueError), rewritten in place.
    info : dict
        The object size (as `choose_preferred` returns it).
    """
    from ..model import save_checkpoint
    from ..model.checkpoints import read_checkpoint
    from ..model.registry import model_from_checkpoint

    ck = read_checkpoint(path)
    if ck.config is None:
        raise ValueError(f"{path} is not a napari-sam checkpoint (no config): object sizes "
                         "are stored only in napari-sam's own files")
    model = model_from_checkpoint(ck, str(path))
    save_checkpoint(path, model, {**ck.extra, "object_size": info})


def main(argv=None) -> int:
    """Command line: measure (or read) the size curve and print or store the object size.

    Parameters
    ----------
    argv : list of str or None
        The arguments; None: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status, 0.
    """
    from ..model import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--diameters", default=",".join(str(d) for d in DIAMETERS))
    ap.add_argument("--write", metavar="CHECKPOINT",
                    help="store the preferred size and the curve in this napari-sam file")
    ap.add_argument("--from-log", metavar="FILE",
                    help="take the rows from a log of an earlier run instead of measuring")
    a = ap.parse_args(argv)
    if a.from_log:
        rows = [json.loads(line) for line in open(a.from_log) if line.startswith("{")]
        rows = [r for r in rows if "click" in r]
    else:
        rows = size_curve(load_model(a.model), [float(v) for v in a.diameters.split(",")],
                          a.images)
    info = choose_preferred(rows)
    info.update(images_per_kind=a.images, kinds=list(KINDS), seed="multiscale 30_000_000+")
    print(json.dumps(info))
    if a.write:
        store_object_size(a.write, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
