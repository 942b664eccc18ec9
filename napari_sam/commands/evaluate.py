"""`napari-sam evaluate`: accuracy of a model on annotated images (or the held-out synthetic set)."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    """Add the `evaluate` subcommand.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        What `ArgumentParser.add_subparsers()` returned.
    """
    p = sub.add_parser(
        "evaluate", help="measure 1-click / box mean IoU and automask F1 on annotated images",
        description="Prompts follow fixed rules: one click at the most interior point of each "
                    "object, and its tight bounding box. Give images and their instance label "
                    "images in the same order, or --synthetic N for the held-out synthetic set.")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--masks", nargs="*", default=[], help="instance label files, one per image")
    p.add_argument("--model", default=None, help="registry name or checkpoint path (default: bundled)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="also evaluate on N held-out synthetic images")
    p.add_argument("--automask", action="store_true", help="also measure automask F1")
    p.add_argument("--sweep", action="store_true",
                   help="with --automask: F1 over a grid of IoU / stability thresholds "
                        "(each image decoded once), best first")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    p.set_defaults(func=run)


def _pairs(images, masks):
    import tifffile

    from ..io.images import read_image

    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} mask files: give one per image")
    for img_path, mask_path in zip(images, masks):
        image, _ = read_image(img_path)
        labels = tifffile.imread(mask_path)
        if labels.shape != image.shape[:2]:
            raise ValueError(f"{mask_path} has shape {labels.shape}, its image {image.shape[:2]}")
        yield image, labels


def run(args) -> int:
    """Evaluate the model on the given images and/or the synthetic set; print the figures.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed `evaluate` arguments.

    Returns
    -------
    int
        Exit status 0.
    """
    from ..predictor import Predictor
    from ..progress import cli_progress as tqdm_progress
    from ..training.evaluate import (evaluate_automask, evaluate_prompts, heldout_set,
                                     sweep_automask)

    if not args.images and not args.synthetic:
        raise ValueError("give annotated images with --masks, or --synthetic N")
    pred = Predictor(args.model, device=args.device, precision=args.precision)
    sets = {}
    if args.images:
        sets["images"] = list(_pairs(args.images, args.masks))
    if args.synthetic:
        sets["synthetic"] = heldout_set(args.synthetic)
    results = {}
    for name, pairs in sets.items():
        res = evaluate_prompts(pred, pairs, progress=tqdm_progress(f"{name}: prompts"))
        if args.automask:
            res.update(evaluate_automask(pairs, pred.model, progress=tqdm_progress(f"{name}: automask")))
        if args.automask and args.sweep:
            rows = sweep_automask(pairs, pred, progress=tqdm_progress(f"{name}: sweep"))
            res["sweep"] = rows
            print(f"{name}: automask F1 by threshold (pred IoU, stability), best first")
            for r in rows[:10]:
                print(f"  {r['pred_iou_thresh']:.2f} {r['stability_thresh']:.2f}  "
                      f"f1@0.5={r['f1@0.5']:.3f} f1@0.75={r['f1@0.75']:.3f}")
        results[name] = res
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in res.items() if k != "sweep"))
    if args.json:  # atomic: a full disk never leaves a stub
        from ..io.atomic import atomic_write

        with atomic_write(args.json, overwrite=True, mode="w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0
